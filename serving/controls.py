"""The page's controls, in one table: the sliders, the compare endpoint's inputs, ``Controls``, the ranges the server
checks, the keys of a shared link, the sweepable parameters and apply-best all follow from it. A new control is
one row here (and, if it feeds a merge, a line where serving/requests.py builds that merge's spec).

No Gradio here: app.py builds the components from the rows, the server validates with them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from errors import Refusal, Term


@dataclass(frozen=True)
class Control:
    name: str  # the Controls field and the API parameter
    kind: str  # "text" | "slider" | "number" | "checkbox" | "dropdown"
    default: object
    label: str  # key of the page text (words.py)
    link: str  # query key of a shared link
    group: str  # where the page shows it: "question" | "main" | "advanced" | "generation"
    lo: float | None = None  # slider range; the server accepts [lo, hi], or (lo, hi] with lo_open
    hi: float | None = None  # None with a generation control: the preset's cap
    step: float | None = None
    lo_open: bool = False
    valid_lo: float | None = None  # the server's lower bound when it is below the slider's (TIES density: (0, 1])
    merge: str | None = None  # the merged column it feeds; None: the question or generation
    sweep: bool = False  # a sweep may vary it over [lo, hi]
    sets: tuple[tuple[str, str], ...] = ()  # moving it also sets: (control, "same" | "complement" | "follow")
    whole: bool = False  # a whole number
    optional: bool = False  # None means "follow another control" (a per-model TIES density)
    preset: bool = False  # its default comes from the preset's generation defaults

    def bounds(self, cap: float | None = None) -> tuple[float, float]:
        lo = self.lo if self.valid_lo is None else self.valid_lo
        return lo, cap if self.hi is None else self.hi


CONTROLS: tuple[Control, ...] = (
    Control("question", "text", "", "question", "q", "question"),
    Control("soup_w1", "slider", 0.5, "soup_w1", "w1", "main", 0, 1, 0.05, merge="soup", sweep=True,
            sets=(("soup_w2", "complement"),)),
    Control("soup_w2", "slider", 0.5, "soup_w2", "w2", "main", 0, 1, 0.05, merge="soup"),
    Control("slerp_t", "slider", 0.5, "slerp_t", "t", "main", 0, 1, 0.05, merge="slerp", sweep=True),
    Control("ties_density", "slider", 0.5, "ties_density", "density", "main", 0.05, 1, 0.05, lo_open=True,
            valid_lo=0, merge="ties", sweep=True, sets=(("ties_density1", "follow"), ("ties_density2", "follow"))),
    Control("ties_w1", "slider", 1.0, "ties_w1", "tw1", "advanced", 0, 2, 0.05, merge="ties", sweep=True),
    Control("ties_w2", "slider", 1.0, "ties_w2", "tw2", "advanced", 0, 2, 0.05, merge="ties"),
    # None or 0: the model's density follows ties_density (a number box: None passes Gradio's check, where a
    # slider's does not).
    Control("ties_density1", "number", None, "ties_d1", "td1", "advanced", 0.05, 1, 0.05, lo_open=True, valid_lo=0,
            merge="ties", optional=True),
    Control("ties_density2", "number", None, "ties_d2", "td2", "advanced", 0.05, 1, 0.05, lo_open=True, valid_lo=0,
            merge="ties", optional=True),
    Control("ties_lambda", "slider", 1.0, "lambda", "lambda", "advanced", 0, 2, 0.05, merge="ties", sweep=True),
    Control("slerp_attn_schedule", "text", "", "attn_schedule", "attn", "advanced", merge="slerp"),
    Control("slerp_mlp_schedule", "text", "", "mlp_schedule", "mlp", "advanced", merge="slerp"),
    Control("extra_method", "dropdown", "", "extra_method", "extra", "advanced", merge="extra"),
    Control("extra_density", "slider", 0.5, "extra_density", "extra_density", "advanced", 0.05, 1, 0.05,
            lo_open=True, valid_lo=0, merge="extra", sweep=True),
    Control("max_new_tokens", "slider", 64, "max_new_tokens", "max_new_tokens", "generation", 1, None, 1,
            whole=True, preset=True),
    Control("temperature", "slider", 0.7, "temperature", "temperature", "generation", 0.05, 2, 0.05, lo_open=True,
            valid_lo=0, preset=True),
    Control("top_p", "slider", 0.9, "top_p", "top_p", "generation", 0.05, 1, 0.05, lo_open=True, valid_lo=0,
            preset=True),
    Control("repetition_penalty", "slider", 1.1, "repetition_penalty", "repetition_penalty", "generation", 1, 2,
            0.05, preset=True),
    Control("greedy", "checkbox", True, "greedy", "greedy", "generation", preset=True),
    Control("seed", "number", 0, "seed", "seed", "generation", 0, 2**31 - 1, 1, whole=True, preset=True),
)


def _annotation(c: Control) -> type:
    kind = {"text": str, "dropdown": str, "checkbox": bool}.get(c.kind, int if c.whole else float)
    return kind | None if c.optional else kind


def derive(rows: tuple[Control, ...]) -> dict:
    """Everything that follows from the table: by name, the link keys, the sweepable controls, and Controls,
    the dataclass of one request's values (its fields and defaults are the rows')."""
    controls = dataclasses.make_dataclass(
        "Controls", [("question", str)] + [(c.name, _annotation(c), dataclasses.field(default=c.default))
                                           for c in rows[1:]], frozen=True)
    controls.__module__ = __name__  # for pickling and reprs: it is defined here
    controls.__doc__ = "Every control of the page, as the API receives them (serving/controls.py: CONTROLS)."
    return {"BY_NAME": {c.name: c for c in rows}, "LINK_KEYS": tuple(c.link for c in rows),
            "SWEEPABLE": {c.name: (c.merge, c.lo, c.hi) for c in rows if c.sweep}, "Controls": controls}


_derived = derive(CONTROLS)
BY_NAME: dict[str, Control] = _derived["BY_NAME"]
LINK_KEYS: tuple[str, ...] = _derived["LINK_KEYS"]
SWEEPABLE: dict[str, tuple[str, float, float]] = _derived["SWEEPABLE"]  # name -> (column it re-merges, lo, hi)
Controls = _derived["Controls"]  # every control's value in one request (serving/requests.py validates them)


def controls_at(controls, name: str, value: float):
    """``controls`` with one control moved, and the controls it sets with it (soup w2 = 1 - w1; the per-model TIES
    densities follow the density: None)."""
    changes = {name: value}
    for other, how in BY_NAME[name].sets:
        changes[other] = {"same": value, "complement": 1.0 - value, "follow": None}[how]
    return dataclasses.replace(controls, **changes)


def from_values(values) -> Controls:
    """Controls from the compare endpoint's inputs, in table order; empty text stays empty."""
    fields = {}
    for c, value in zip(CONTROLS, values):
        fields[c.name] = (value or "") if c.kind in ("text", "dropdown") else value
    return Controls(**fields)


def follows(value) -> bool:
    """Whether an optional control's value means "follow the control it follows": None (left out of an API call)
    or 0, which no density can be and which the page sends for an empty number box (Gradio's box shows 0)."""
    return value is None or value == 0


def check_number(c: Control, value, cap: float | None = None, name: Term | None = None) -> float:
    """A slider or number value as the server accepts it; raises a Refusal naming the control (``name``, by
    default the control's own: words.py's ``name_<control>``) and the range."""
    lo, hi = c.bounds(cap)
    name = name or Term(f"name_{c.name}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise Refusal("err_number", name=name, value=value) from None
    if not math.isfinite(x):
        raise Refusal("err_finite", name=name, value=value)
    if x > hi or x < lo or (c.lo_open and x == lo):
        raise Refusal("err_range", name=name, x=x, lo=lo, hi=hi, bracket="(" if c.lo_open else "[")
    if c.whole and x != int(x):
        raise Refusal("err_whole", name=name, value=value)
    return int(x) if c.whole else x
