"""What one request asks for: the page's (or the API's) control values, validated on the server, turned into a
merge spec per merged column and the generation settings.

The API is public, so nothing here trusts the browser's slider limits.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from merging import MergeSpec
from models.generation import GenerationSettings
from models.presets import GenerationDefaults

# The merged columns and the extra column's choices, as mergekit names the methods.
EXTRA_METHODS = ("task_arithmetic", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della",
                 "della_linear", "model_stock", "nuslerp")
# mergekit filters match a substring of the tensor name: "attn" covers GPT-2's attn.c_attn and Llama's self_attn.
ATTENTION_FILTER = "attn"
MLP_FILTER = "mlp"


class RequestError(ValueError):
    """A control value the server refuses; the message names the control and the allowed range."""


@dataclass(frozen=True)
class Controls:
    """Every control of the page, with the labels the API shows."""
    question: str
    soup_w1: float = 0.5
    soup_w2: float = 0.5
    slerp_t: float = 0.5
    ties_density: float = 0.5
    ties_w1: float = 1.0
    ties_w2: float = 1.0
    ties_density1: float | None = None  # None: the main TIES density
    ties_density2: float | None = None
    ties_lambda: float = 1.0
    slerp_attn_schedule: str = ""  # mergekit list syntax, e.g. "[0, 0.5, 0.3, 0.7, 1]"; empty: t everywhere
    slerp_mlp_schedule: str = ""
    extra_method: str = ""  # empty: no extra column
    extra_density: float = 0.5
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    greedy: bool = True
    seed: int = 0


def _number(name: str, value, lo: float, hi: float, *, lo_open: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise RequestError(f"{name}: {value!r} is not a finite number")
    if x > hi or x < lo or (lo_open and x == lo):
        bracket = "(" if lo_open else "["
        raise RequestError(f"{name}: {x:g} is outside the allowed range {bracket}{lo:g}, {hi:g}]")
    return x


def _integer(name: str, value, lo: int, hi: int) -> int:
    x = _number(name, value, lo, hi)
    if x != int(x):
        raise RequestError(f"{name}: expected a whole number, got {value!r}")
    return int(x)


def parse_schedule(name: str, text: str) -> list[float] | None:
    """A per-layer schedule in mergekit's list syntax, ``[0, 0.5, 1]``: anchors interpolated over the layers."""
    if not text or not text.strip():
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        raise RequestError(f"{name}: {text!r} is not a list like [0, 0.5, 1]") from None
    if isinstance(values, (int, float)):
        values = [values]
    if not isinstance(values, list) or not values or len(values) > 64:
        raise RequestError(f"{name}: expected a list of 1 to 64 numbers like [0, 0.5, 1], got {text!r}")
    return [_number(f"{name}[{i}]", v, 0.0, 1.0) for i, v in enumerate(values)]


def merge_specs(c: Controls) -> dict[str, MergeSpec]:
    """The merge spec of every merged column these controls ask for."""
    w1 = _number("soup w1", c.soup_w1, 0.0, 1.0)
    w2 = _number("soup w2", c.soup_w2, 0.0, 1.0)
    if w1 + w2 == 0:
        raise RequestError("soup weights: w1 and w2 are both 0; give at least one model a weight above 0")
    t = _number("SLERP t", c.slerp_t, 0.0, 1.0)
    density = _number("TIES density", c.ties_density, 0.0, 1.0, lo_open=True)
    d1 = density if c.ties_density1 is None else _number("TIES density (Model 1)", c.ties_density1, 0, 1, lo_open=True)
    d2 = density if c.ties_density2 is None else _number("TIES density (Model 2)", c.ties_density2, 0, 1, lo_open=True)
    tw1 = _number("TIES weight (Model 1)", c.ties_w1, 0.0, 2.0)
    tw2 = _number("TIES weight (Model 2)", c.ties_w2, 0.0, 2.0)
    if tw1 + tw2 == 0:
        raise RequestError("TIES weights: both are 0; give at least one model a weight above 0")
    lam = _number("lambda", c.ties_lambda, 0.0, 2.0)

    t_value: object = t
    attn = parse_schedule("SLERP attention schedule", c.slerp_attn_schedule)
    mlp = parse_schedule("SLERP MLP schedule", c.slerp_mlp_schedule)
    if attn or mlp:
        t_value = ([{"filter": ATTENTION_FILTER, "value": attn}] if attn else []) + (
            [{"filter": MLP_FILTER, "value": mlp}] if mlp else []) + [{"value": t}]

    specs = {
        "soup": MergeSpec.from_dict({
            "merge_method": "linear", "parameters": {"normalize": True},
            "models": [{"parameters": {"weight": w1}}, {"parameters": {"weight": w2}}]}),
        "slerp": MergeSpec.from_dict({"merge_method": "slerp", "parameters": {"t": t_value}}),
        "ties": MergeSpec.from_dict({
            "merge_method": "ties", "parameters": {"normalize": True, "lambda": lam},
            "models": [{"parameters": {"weight": tw1, "density": d1}},
                       {"parameters": {"weight": tw2, "density": d2}}]}),
    }
    if c.extra_method:
        if c.extra_method not in EXTRA_METHODS:
            raise RequestError(f"extra method: {c.extra_method!r} is not one of {', '.join(EXTRA_METHODS)}")
        specs["extra"] = extra_spec(c.extra_method, tw1, tw2,
                                    _number("extra density", c.extra_density, 0.0, 1.0, lo_open=True), lam, c.seed)
    return specs


def extra_spec(method: str, w1: float, w2: float, density: float, lam: float, seed: int) -> MergeSpec:
    if method == "model_stock":
        return MergeSpec.from_dict({"merge_method": method, "models": [{}, {}]})
    if method == "nuslerp":
        return MergeSpec.from_dict({"merge_method": method,
                                    "models": [{"parameters": {"weight": w1}}, {"parameters": {"weight": w2}}]})
    per_model = {"weight": None, "density": density}
    if method in ("della", "della_linear"):
        # DELLA keeps each delta with a probability within density ± epsilon, which must stay inside (0, 1): the
        # page has no epsilon control, so it follows from the density (mergekit's 0.15 where that fits).
        per_model["epsilon"] = della_epsilon(density)
    if method == "task_arithmetic":
        per_model = {}
    models = [{"parameters": {**per_model, "weight": w}} for w in (w1, w2)]
    parameters = {"lambda": lam}
    return MergeSpec.from_dict({"merge_method": method, "parameters": parameters, "models": models,
                                "seed": seed})


def check_question(question: str, tokenizer, max_chars: int, max_tokens: int) -> str:
    """The question, refused (not cut) over the owner's limits: a huge question would fill the context and hold
    the shared decoding loop for minutes while every column prefills it."""
    if not isinstance(question, str):
        raise RequestError(f"question: expected text, got {type(question).__name__}")
    if len(question) > max_chars:
        raise RequestError(f"question: {len(question)} characters is over this deployment's limit of {max_chars}; "
                           "ask a shorter question")
    tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    if tokens > max_tokens:
        raise RequestError(f"question: {tokens} tokens is over this deployment's limit of {max_tokens}; "
                           "ask a shorter question")
    return question


def della_epsilon(density: float) -> float:
    """The largest of mergekit's default 0.15 and what keeps density ± epsilon strictly inside (0, 1)."""
    if density >= 1:
        return 0.15  # nothing is dropped at density 1: epsilon is unused
    return min(0.15, density / 2, (1 - density) / 2)


def generation_settings(c: Controls, defaults: GenerationDefaults) -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=_integer("max new tokens", c.max_new_tokens, 1, defaults.max_new_tokens_cap),
        temperature=_number("temperature", c.temperature, 0.0, 2.0, lo_open=True),
        top_p=_number("top-p", c.top_p, 0.0, 1.0, lo_open=True),
        repetition_penalty=_number("repetition penalty", c.repetition_penalty, 1.0, 2.0),
        greedy=bool(c.greedy),
        seed=_integer("seed", c.seed, 0, 2**31 - 1),
        eos_token_ids=(),
        stop_strings=(),
    )
