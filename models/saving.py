"""Keep a merge: write one variant of the bank as a Hugging Face checkpoint folder.

The folder holds safetensors weights, config, tokenizer, generation config and a model card with the recipe
(the mergekit YAML that reproduces it) and the scores, if any were computed. It is written only inside the
directory the owner allows (``--save-dir`` / ``HARMAN_SAVE_DIR``), never over an existing non-empty folder.
Where the owner has configured a Hub token (``HF_TOKEN``), a saved folder can also be pushed to a Hub model repo.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import save_file

from merging import to_mergekit_yaml
from models import sources
from errors import Refusal


class SaveError(Refusal):
    """A save refused before anything was written."""


class PushError(Refusal):
    """The merge was saved but not pushed; the message says where the folder is."""


def check_hub_repo(repo_id: str, token: str | None) -> None:
    """Refuse a push before anything is written: no token configured, or a repo id the Hub would reject."""
    if not token:
        raise SaveError("err_hub_token", repo=repo_id)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise SaveError("err_hub_repo", repo=repo_id, detail=str(err)) from None


def push_to_hub(folder: Path, repo_id: str, token: str) -> str:
    """Upload a saved folder to a private Hub model repo (made if missing); the repo's URL."""
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=True, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                          commit_message=f"harman: upload {folder.name}")
    except Exception as err:  # network, auth, quota: all leave the saved folder as it is
        raise PushError("err_push", folder=folder, repo=repo_id, detail=str(err)) from None
    return str(url)


def mergekit_path(source: str, base_folder: str) -> str:
    """How mergekit names a source: a folder or Hub id, and ``base+adapter`` for a LoRA fine-tune."""
    if source.startswith(sources.LORA):
        adapter = Path(source[len(sources.LORA):])
        return f"{base_folder}+{adapter if adapter.is_absolute() else sources.ROOT / adapter}"
    return sources.folder_of(source)


def recipe_yaml(model_set, spec) -> str:
    """The mergekit-yaml config that reproduces one merged variant of this model set."""
    base = sources.folder_of(model_set.preset.base)
    models = [mergekit_path(model_set.preset.model1, base), mergekit_path(model_set.preset.model2, base)]
    return to_mergekit_yaml(spec, base, models, model_set.dtype)


def target_folder(allowed_root: Path, name: str) -> Path:
    """The folder a save may write: inside the allowed root, new or empty."""
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise SaveError("err_save_name", name=name)
    root = allowed_root.resolve()
    target = (root / name).resolve()
    if target.parent != root:
        raise SaveError("err_save_outside", name=name, root=root)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SaveError("err_save_exists", target=target)
    return target


def check_quota(allowed_root: Path, max_saves: int) -> None:
    """Refuse a save once the allowed directory holds ``max_saves`` saved merges (each is a whole checkpoint)."""
    root = allowed_root.resolve()
    saved = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")] if root.is_dir() else []
    if len(saved) >= max_saves:
        raise SaveError("err_save_quota", limit=max_saves, root=root, n=len(saved))


def archive(folder: Path, downloads: Path, keep: int) -> Path:
    """A zip of a saved folder for download, in ``downloads``; only the newest ``keep`` zips are kept there."""
    downloads.mkdir(parents=True, exist_ok=True)
    made = Path(shutil.make_archive(str(downloads / folder.name), "zip", folder))
    zips = sorted(downloads.glob("*.zip"), key=lambda z: z.stat().st_mtime, reverse=True)
    for old in zips[keep:]:
        old.unlink(missing_ok=True)
    return made


def save_variant(model_set, variant: str, allowed_root: Path, name: str, recipe_yaml: str,
                 scores: dict | None = None, label: str | None = None) -> Path:
    """Write bank variant ``variant`` (a materialised merge) as a checkpoint folder; ``label``: the column's name
    for the model card."""
    target = target_folder(allowed_root, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        module = model_set.bank.module(variant)
        weights = {n: t.detach().contiguous().cpu() for n, t in model_set.bank.slice(variant).items()}
        save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
        config = module.config
        config.architectures = [type(module).__name__]
        config.save_pretrained(staging)
        if module.generation_config is not None:
            module.generation_config.save_pretrained(staging)
        model_set.tokenizer.save_pretrained(staging)
        (staging / "mergekit_config.yml").write_text(recipe_yaml, encoding="utf-8")
        (staging / "README.md").write_text(card(model_set, label or variant, recipe_yaml, scores),
                                              encoding="utf-8")
        if target.exists():
            target.rmdir()  # empty, checked above
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def base_model_id(preset) -> str | None:
    """The base's Hub id for the model card: the preset's ``base_model``, or the base itself when it is one."""
    if preset.base_model:
        return preset.base_model
    base = preset.base
    if ":" not in base and re.fullmatch(r"[\w.-]+/[\w.-]+", base) and not Path(base).exists():
        return base
    return None


def card(model_set, variant: str, recipe_yaml: str, scores: dict | None) -> str:
    p = model_set.preset
    base_model = base_model_id(p)
    lines = ["---", "library_name: transformers"]
    if base_model:
        lines.append(f"base_model: {base_model}")
    lines += [
        "tags: [merge, mergekit, harman]", "---", "",
        f"# {variant} merge of {p.model1} and {p.model2}", "",
        f"Made with harman from base `{p.base}`. The recipe below reproduces these weights "
        "with `mergekit-yaml`.", "", "```yaml", recipe_yaml.rstrip(), "```", "",
    ]
    if scores:
        lines += ["## Held-out scores", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in scores.items()]
    return "\n".join(lines) + "\n"
