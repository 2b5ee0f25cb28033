"""Merges that are, tensor by tensor, a weighted sum of their inputs: the coefficients instead of the weights.

Linear (model soups), SLERP, NuSLERP (whole tensors), task arithmetic and model stock (not filter-wise) write
``c_base·base + c_1·model1 + c_2·model2`` into every tensor, with scalar coefficients that depend only on the
spec and on figures of the parents measured once (their Gram matrix: SLERP's and NuSLERP's angles, model stock's
cosine). A layer that is linear in its weights then computes the merged layer's output as the same weighted sum
of the parents' outputs, so such a merge needs no merged copy at all (models/batched.py reads the coefficients).

``coefficients()`` gives them, in microseconds once the figures are measured; ``materialise()`` writes the same
merge from them, which the tests hold against merging.apply's merge (itself held against mergekit).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from merging import checks
from merging.apply import MergeReport, resolve, summarize
from merging.interpolation import nuslerp_coefficients, nuslerp_t, slerp_angle, spherical
from merging.methods import METHODS
from merging.model_stock import stock_ratio
from merging.parents import ParentStats, parent_stats, squared_distances
from merging.schedule import layer_position
from merging.spec import MergeSpec

class ParentFigures:
    """The two fine-tunes' Gram figures per tensor, plain or relative to the base (task vectors), measured on
    first use and kept: the parents never change while they are served. Safe to share between threads (a race
    measures a tensor twice and keeps one). ``plain`` is keyed as merging.apply's ``parents`` dict, so a
    MergeTarget of the same parents can share it instead of measuring them again."""

    def __init__(self, base: Mapping[str, torch.Tensor], model1: Mapping[str, torch.Tensor],
                 model2: Mapping[str, torch.Tensor]):
        self.inputs = (base, model1, model2)
        self.plain: dict[str, ParentStats] = {}
        self.relative: dict[str, ParentStats] = {}

    def __call__(self, name: str, relative: bool) -> ParentStats:
        measured = self.relative if relative else self.plain
        if name not in measured:
            base, model1, model2 = self.inputs
            measured[name] = parent_stats([model1[name], model2[name]], origin=base[name] if relative else None)
        return measured[name]


Figures = Callable[[str, bool], ParentStats]  # (tensor name, relative to the base?) -> the parents' figures


@dataclass(frozen=True)
class Coefficients:
    """A merge as a weighted sum per tensor: ``table[name] = (c_base, c_model1, c_model2)``."""
    method: str
    table: Mapping[str, tuple[float, float, float]]
    report: MergeReport  # the diagnostics the materialised merge would give, from the same figures


def merge_free(spec: MergeSpec) -> bool:
    """Whether ``spec`` is a weighted sum of its inputs in every tensor (so needs no merged copy)."""
    if spec.method in ("linear", "slerp", "task_arithmetic"):
        return True
    if spec.method == "model_stock":
        return not _flag(spec, "filter_wise")
    if spec.method == "nuslerp":  # row by row, every row has its own angle: not a scalar per tensor
        return _flag(spec, "nuslerp_flatten", True)
    return False


def _flag(spec: MergeSpec, key: str, default: bool = False) -> bool:
    value = dict(spec.parameters).get(key, default)
    return value if isinstance(value, bool) else True  # a schedule of flags: not merge-free, stay materialised


def coefficients(spec: MergeSpec, names: Sequence[str], num_layers: int, figures: Figures) -> Coefficients:
    """The coefficients of every tensor in ``names`` (two fine-tunes and their base), checked as the materialised
    merge checks them; raises ValueError naming the tensor and the parameter otherwise."""
    if not merge_free(spec):
        raise ValueError(f"{spec.method}: this merge is not a weighted sum of its inputs; materialise it")
    start = time.perf_counter()
    method = METHODS[spec.method]
    if method.models is not None and method.models != 2 or len(spec.model_parameters) > 2:
        raise ValueError(f"{spec.method}: merge-free columns merge exactly two models")
    table, tensors = {}, {}
    for name in names:
        parameters = resolve(spec, method, name, layer_position(name, num_layers), 2)
        stats: dict = {}
        table[name] = _RULES[spec.method](name, parameters, figures, stats)
        tensors[name] = stats
    report = summarize(spec.method, tensors, (time.perf_counter() - start) * 1e3, 0)
    return Coefficients(spec.method, table, report)


def _linear(name, p, figures, stats):
    weights = checks.per_model(name, "weight", p["weight"], 2)
    normalize = checks.boolean(name, "normalize", p["normalize"])
    c = [w / checks.weights_total(name, weights) for w in weights] if normalize else weights
    measured = figures(name, False)
    stats["squared_distance"] = squared_distances(measured, c)
    stats["parent_squared_norm"] = [measured.gram[i][i] for i in range(2)]
    return 0.0, c[0], c[1]


def _slerp(name, p, figures, stats):
    t = checks.finite(name, "t", p["t"])
    angle, fallback = slerp_angle(figures(name, False))
    stats["angle"], stats["linear_fallback"] = math.degrees(angle), fallback
    return (0.0, 1 - t, t) if fallback else (0.0, *spherical(angle, t))


def _nuslerp(name, p, figures, stats):
    t = nuslerp_t(checks.per_model(name, "weight", p["weight"], 2))
    # The page's nuslerp has a base: the figures of the task vectors.
    angle, first, second = nuslerp_coefficients(figures(name, True), t)
    stats["angle"] = math.degrees(angle)
    return 1 - first - second, first, second


def _task_arithmetic(name, p, figures, stats):
    weights = checks.per_model(name, "weight", p["weight"], 2)
    lambda_ = checks.finite(name, "lambda", p["lambda"])
    divisor = checks.weights_total(name, weights) if checks.boolean(name, "normalize", p["normalize"]) else 1.0
    c = [lambda_ * w / divisor for w in weights]
    return 1 - c[0] - c[1], c[0], c[1]


def _model_stock(name, p, figures, stats):
    ratio = stock_ratio(figures(name, True), 2)
    stats["ratio"] = ratio
    return 1 - ratio, ratio / 2, ratio / 2


_RULES = {"linear": _linear, "slerp": _slerp, "nuslerp": _nuslerp, "task_arithmetic": _task_arithmetic,
          "model_stock": _model_stock}


def materialise(table: Mapping[str, tuple[float, float, float]], dest: Mapping[str, torch.Tensor],
                inputs: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Write ``Σ c·input`` into ``dest`` in float32 (inputs: base, Model 1, Model 2), for tests and checks."""
    with torch.no_grad():
        for name, out in dest.items():
            total = sum(c * weights[name].float() for c, weights in zip(table[name], inputs) if c != 0)
            out.copy_(total)
