"""What one request asks for: the page's (or the API's) control values, validated on the server, turned into a
merge spec per merged column and the generation settings.

The API is public, so nothing here trusts the browser's slider limits.
"""

from __future__ import annotations

import json

from errors import Refusal, Term
from merging import EXTRA_METHODS, METHODS, MergeSpec
from models.presets import GenerationDefaults
from serving.controls import BY_NAME, Control, Controls, check_number, follows
from serving.generation import GenerationSettings

# mergekit filters match a substring of the tensor name: "attn" covers GPT-2's attn.c_attn and Llama's self_attn.
ATTENTION_FILTER = "attn"
MLP_FILTER = "mlp"


class RequestError(Refusal):
    """A control value the server refuses; the message names the control and the allowed range."""


def _value(c: Control | str, value, cap: float | None = None, name: Term | None = None):
    """A control's value as the server accepts it (its range from serving/controls.py)."""
    try:
        return check_number(BY_NAME[c] if isinstance(c, str) else c, value, cap, name)
    except Refusal as err:
        raise RequestError(err.key, **err.values) from None


def parse_schedule(control: str, text: str) -> list[float] | None:
    """A per-layer schedule in mergekit's list syntax, ``[0, 0.5, 1]``: anchors interpolated over the layers."""
    if not text or not text.strip():
        return None
    name = Term(f"name_{control}")
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        raise RequestError("err_schedule_syntax", name=name, text=text) from None
    if isinstance(values, (int, float)):
        values = [values]
    if not isinstance(values, list) or not values or len(values) > 64:
        raise RequestError("err_schedule_length", name=name, text=text)
    anchor = Control(control, "slider", None, "", "", "", 0.0, 1.0)  # each anchor is a t in [0, 1]
    return [_value(anchor, v, name=Term(name.key, f"[{i}]")) for i, v in enumerate(values)]


def merge_specs(c: Controls) -> dict[str, MergeSpec]:
    """The merge spec of every merged column these controls ask for."""
    w1, w2 = _value("soup_w1", c.soup_w1), _value("soup_w2", c.soup_w2)
    if w1 + w2 == 0:
        raise RequestError("err_soup_zero")
    t = _value("slerp_t", c.slerp_t)
    d1, d2 = ties_densities(c)
    tw1, tw2 = _value("ties_w1", c.ties_w1), _value("ties_w2", c.ties_w2)
    if tw1 + tw2 == 0:
        raise RequestError("err_ties_zero")
    lam = _value("ties_lambda", c.ties_lambda)

    t_value: object = t
    attn = parse_schedule("slerp_attn_schedule", c.slerp_attn_schedule)
    mlp = parse_schedule("slerp_mlp_schedule", c.slerp_mlp_schedule)
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
            raise RequestError("err_extra_method", method=c.extra_method, choices=", ".join(EXTRA_METHODS))
        specs["extra"] = extra_spec(c.extra_method, tw1, tw2, _value("extra_density", c.extra_density), lam,
                                    _value("seed", c.seed))
    return specs


def ties_densities(c: Controls) -> tuple[float, float]:
    """Model 1's and Model 2's TIES density: ``ties_density`` for both, unless a per-model one is given (not None,
    not 0: serving/controls.py's ``follows``).

    Both per-model densities given override ``ties_density`` only while it is at its default (the page's slider
    untouched, or left out of an API call); a ``ties_density`` moved to a value that neither of them has asks for
    two different things, and is refused rather than one of them silently winning."""
    density = _value("ties_density", c.ties_density)
    d1 = density if follows(c.ties_density1) else _value("ties_density1", c.ties_density1)
    d2 = density if follows(c.ties_density2) else _value("ties_density2", c.ties_density2)
    given = not follows(c.ties_density1) and not follows(c.ties_density2)
    if given and density != BY_NAME["ties_density"].default and density not in (d1, d2):
        raise RequestError("err_ties_density_conflict", density=density, d1=d1, d2=d2,
                           default=BY_NAME["ties_density"].default)
    return d1, d2


def extra_spec(method: str, w1: float, w2: float, density: float, lam: float, seed: int) -> MergeSpec:
    """The extra column's spec: of the TIES weights (ties_w1, ties_w2), the extra density (extra_density), TIES's
    lambda (ties_lambda) and the seed, what the method's record reads (merging/methods.py: Method.reads)."""
    reads = METHODS[method].reads
    per_model = {"density": density} if "density" in reads else {}
    if "epsilon" in reads:
        # DELLA keeps each delta with a probability within density ± epsilon, which must stay inside (0, 1): the
        # page has no epsilon control, so it follows from the density (mergekit's 0.15 where that fits).
        per_model["epsilon"] = della_epsilon(density)
    models = [{"parameters": {**per_model, **({"weight": w} if "weight" in reads else {})}} for w in (w1, w2)]
    data = {"merge_method": method, "models": models}
    if "lambda" in reads:
        data["parameters"] = {"lambda": lam}
    if "seed" in reads:
        data["seed"] = seed
    return MergeSpec.from_dict(data)


def check_question(question: str, tokenizer, max_chars: int, max_tokens: int) -> str:
    """The question, refused (not cut) over the owner's limits: a huge question would fill the context and hold
    the shared decoding loop for minutes while every column prefills it."""
    if not isinstance(question, str):
        raise RequestError("err_question_type", kind=type(question).__name__)
    if len(question) > max_chars:
        raise RequestError("err_question_chars", n=len(question), limit=max_chars)
    tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    if tokens > max_tokens:
        raise RequestError("err_question_tokens", n=tokens, limit=max_tokens)
    return question


def della_epsilon(density: float) -> float:
    """The largest of mergekit's default 0.15 and what keeps density ± epsilon strictly inside (0, 1)."""
    if density >= 1:
        return 0.15  # nothing is dropped at density 1: epsilon is unused
    return min(0.15, density / 2, (1 - density) / 2)


def generation_settings(c: Controls, defaults: GenerationDefaults) -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=_value("max_new_tokens", c.max_new_tokens, cap=defaults.max_new_tokens_cap),
        temperature=_value("temperature", c.temperature),
        top_p=_value("top_p", c.top_p),
        repetition_penalty=_value("repetition_penalty", c.repetition_penalty),
        greedy=bool(c.greedy),
        seed=_value("seed", c.seed),
        eos_token_ids=(),
        stop_strings=(),
    )
