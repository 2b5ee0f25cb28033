"""Merges that are, tensor by tensor, a weighted sum of their inputs: the coefficients instead of the weights.

Linear (model soups), SLERP, NuSLERP (whole tensors), task arithmetic and model stock (not filter-wise) write
``c_base·base + c_1·model1 + c_2·model2`` into every tensor, with scalar coefficients that depend only on the
spec and on figures of the parents measured once (their Gram matrix: SLERP's and NuSLERP's angles, model stock's
cosine). A layer that is linear in its weights then computes the merged layer's output as the same weighted sum
of the parents' outputs, so such a merge needs no merged copy at all (serving/batched.py reads the coefficients).

Each method's rule is in its record (merging/methods.py: Method.rule, next to the method's math).
``coefficients()`` gives them, in microseconds once the figures are measured; ``materialise()`` writes the same
merge from them, which the tests hold against merging.apply's merge (itself held against mergekit).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from merging.apply import MergeReport, resolve, summarize
from merging.methods import METHODS
from merging.parents import ParentStats, parent_stats
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
    """Whether ``spec`` is a weighted sum of its inputs in every tensor (so needs no merged copy): its method has a
    rule (merging/methods.py), and the flag that would give every row its own angle or ratio is at its default."""
    method = METHODS[spec.method]
    if method.rule is None:
        return False
    if method.free_flag is None:
        return True
    value = dict(spec.parameters).get(method.free_flag, method.defaults[method.free_flag])
    # A schedule of flags counts as set.
    return (value if isinstance(value, bool) else True) == method.defaults[method.free_flag]


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
        table[name] = method.rule(name, parameters, figures, stats)
        tensors[name] = stats
    report = summarize(spec.method, tensors, (time.perf_counter() - start) * 1e3, 0)
    return Coefficients(spec.method, table, report)


def materialise(table: Mapping[str, tuple[float, float, float]], dest: Mapping[str, torch.Tensor],
                inputs: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Write ``Σ c·input`` into ``dest`` in float32 (inputs: base, Model 1, Model 2), for tests and checks."""
    with torch.no_grad():
        for name, out in dest.items():
            total = sum(c * weights[name].float() for c, weights in zip(table[name], inputs) if c != 0)
            out.copy_(total)
