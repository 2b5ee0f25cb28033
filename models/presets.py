"""Presets: one small YAML file per model set, overridable by command-line flags and environment variables.

A Hugging Face Space cannot pass flags, so every field can also come from the environment:
``HARMAN_<FIELD>`` for a top-level field (``HARMAN_MODEL1=org/my-qa-finetune``) and
``HARMAN_GEN_<FIELD>`` for a generation default (``HARMAN_GEN_TEMPERATURE=0.3``).
Precedence: flags > environment > preset file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prompts.formats import CHOICES

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "default"


class PresetError(ValueError):
    """A preset file or override that does not describe a usable model set."""


@dataclass(frozen=True)
class GenerationDefaults:
    max_new_tokens: int = 96
    max_new_tokens_cap: int = 512  # the owner's ceiling for the slider and the API
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    greedy: bool = True
    seed: int = 0


@dataclass(frozen=True)
class Preset:
    name: str
    base: str
    model1: str
    model2: str
    title: str = ""
    title_en: str = ""  # the title on an English page (empty: the title)
    model1_label: str = "Model 1"
    model2_label: str = "Model 2"
    model1_label_en: str = ""  # the column labels on an English page (empty: the labels above)
    model2_label_en: str = ""
    base_model: str = ""  # the base's Hub id for saved model cards, when the base source is not one
    prompt_format: str = "chat_template"
    system: str | None = None
    device: str | None = None  # None: CUDA when present, else CPU
    dtype: str | None = None  # None: bfloat16/float16 on CUDA, float32 on CPU
    allow_pickle: bool = False  # a pickled .bin can run code when loaded
    trust_remote_code: bool = False
    device_map: str | None = None  # e.g. "auto" to spread a large model with accelerate
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    source_file: str = ""


_REQUIRED = ("base", "model1", "model2")
# What a preset says about its own models, dropped when other models are given in their place.
_DESCRIBES = ("title", "title_en", "model1_label", "model2_label", "model1_label_en", "model2_label_en",
              "base_model", "system")


def available() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load(name_or_path: str = DEFAULT_PRESET, overrides: dict | None = None,
         environ: dict | None = None, context: Callable[[str], int | None] | None = None) -> Preset:
    """Read a preset by name (``models/presets/NAME.yaml``) or path, then apply env and flag overrides.

    Sources given instead of the preset's own make a page for those models (``own_sources``); ``context(base)``
    is their context length, from which their generation cap follows."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise PresetError(
            f"preset {name_or_path!r} not found (looked for {path}); available presets: {', '.join(available())}"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise PresetError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise PresetError(f"{path}: expected a mapping of fields at the top level, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    env = _from_env(environ if environ is not None else os.environ)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    # A preset's prompt format belongs to its own models: sources given instead of them, without a format, get
    # 'auto' (their tokenizer decides at load, models.model_set). Filling a preset's empty source keeps its format.
    given = {**env, **overrides}
    replaced = any(raw.get(k) and k in given and given[k] != raw[k] for k in _REQUIRED)
    if replaced and "prompt_format" not in given:
        overrides["prompt_format"] = "auto"
    if replaced:
        raw = own_sources(raw, {**raw, **given}, given, context)
    for key in ("title", "model1_label", "model2_label"):  # the owner's words, on both languages' pages
        if given.get(key) and not given.get(f"{key}_en"):
            raw[f"{key}_en"] = ""
    raw = _merge(raw, env)
    raw = _merge(raw, overrides)
    return _build(raw, str(path))


def build(fields: dict, source: str = "fields") -> Preset:
    """A preset from its fields as a preset file holds them, checked as a file's are, with no file, environment
    or flags read: for callers that made their checkpoints themselves. ``source`` names the fields in errors."""
    return _build(dict(fields), source)


def own_sources(raw: dict, sources: dict, given: dict, context: Callable[[str], int | None] | None) -> dict:
    """A preset whose models were replaced, without what described them: its title (one from the sources' names
    instead), column labels (Model 1, Model 2), the base's Hub id for model cards, and generation settings (the
    generic ones, capped by the models' own context length). What the owner gives keeps its place."""
    out = {k: v for k, v in raw.items() if k not in _DESCRIBES and k != "generation"}
    out["title"] = " · ".join(source_name(sources[k]) for k in _REQUIRED)
    generation = dict(given.get("generation") or {})
    length = context(sources["base"]) if context is not None and "max_new_tokens_cap" not in generation else None
    if length:
        # Half the context for the answer, half for the prompt: a longer answer would cut the question.
        generation["max_new_tokens_cap"] = max(1, length // 2)
    cap = _coerce(generation.get("max_new_tokens_cap", GenerationDefaults.max_new_tokens_cap), int,
                  "generation.max_new_tokens_cap")
    if "max_new_tokens" not in generation:
        generation["max_new_tokens"] = min(GenerationDefaults.max_new_tokens, cap)
    out["generation"] = generation
    return out


def source_name(source: str) -> str:
    """A source's short name: a folder's or Hub id's last part, an adapter's folder, a GGUF file's stem."""
    name = source.split(":", 1)[1] if source.startswith(("lora:", "pypi-gguf:")) else source
    last = Path(name.rstrip("/")).name
    return Path(last).stem if last.endswith(".gguf") else last


def _merge(raw: dict, extra: dict) -> dict:
    out = dict(raw)
    for key, value in extra.items():
        if value is None:
            continue
        if key == "generation":
            out["generation"] = {**(out.get("generation") or {}), **{k: v for k, v in value.items() if v is not None}}
        else:
            out[key] = value
    return out


def _from_env(environ) -> dict:
    top = {f.name for f in dataclasses.fields(Preset)} - {"generation", "source_file", "name"}
    gen = {f.name for f in dataclasses.fields(GenerationDefaults)}
    found: dict = {}
    for key in top:
        if f"HARMAN_{key.upper()}" in environ:
            found[key] = environ[f"HARMAN_{key.upper()}"]
    generation = {k: environ[f"HARMAN_GEN_{k.upper()}"] for k in gen if f"HARMAN_GEN_{k.upper()}" in environ}
    if generation:
        found["generation"] = generation
    return found


def _coerce(value, expected: type, where: str):
    """Accept the YAML value, or a string from the environment, of the expected type."""
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif expected is str:
        if isinstance(value, str):
            return value
    raise PresetError(f"{where}: expected {expected.__name__}, got {value!r}")


def _build(raw: dict, source: str) -> Preset:
    known = {f.name: f for f in dataclasses.fields(Preset)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise PresetError(
            f"{source}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(sorted(known))}"
        )
    missing = [k for k in _REQUIRED if not raw.get(k)]
    if missing:
        raise PresetError(
            f"{source}: no source given for {', '.join(missing)}; set it in the file, with --{missing[0]} "
            f"or with HARMAN_{missing[0].upper()}"
        )
    gen_raw = raw.pop("generation", None) or {}
    if not isinstance(gen_raw, dict):
        raise PresetError(f"{source}: 'generation' must be a mapping, got {gen_raw!r}")
    gen_fields = {f.name: f for f in dataclasses.fields(GenerationDefaults)}
    unknown = sorted(set(gen_raw) - set(gen_fields))
    if unknown:
        raise PresetError(
            f"{source}: unknown key(s) generation.{', generation.'.join(unknown)}; "
            f"allowed: {', '.join(sorted(gen_fields))}"
        )
    generation = GenerationDefaults(**{
        k: _coerce(v, _type_of(gen_fields[k]), f"{source}: generation.{k}") for k, v in gen_raw.items()
    })
    values = {}
    for key, value in raw.items():
        expected = _type_of(known[key])
        values[key] = None if value is None else _coerce(value, expected, f"{source}: {key}")
    fmt = values.get("prompt_format", "chat_template")
    if fmt not in CHOICES:
        raise PresetError(f"{source}: prompt_format {fmt!r} is not one of {', '.join(CHOICES)}")
    if generation.max_new_tokens > generation.max_new_tokens_cap:
        raise PresetError(
            f"{source}: generation.max_new_tokens={generation.max_new_tokens} exceeds "
            f"generation.max_new_tokens_cap={generation.max_new_tokens_cap}"
        )
    return Preset(**values, generation=generation, source_file=source)


def _type_of(f: dataclasses.Field) -> type:
    text = str(f.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if text.startswith(name):
            return kind
    raise TypeError(f"preset field {f.name} has an unsupported type {f.type}")
