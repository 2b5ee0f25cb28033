"""Whole-model merges into resident weights: in place, tensor by tensor.

Every tensor's parameters are resolved (schedules, filters, per-model overrides)
and checked before the first one is written, so a bad spec writes nothing.
"""

import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from merging import task_vectors
from merging.methods import METHODS, PER_MODEL, REQUIRED, Method
from merging.parents import ParentStats, parent_stats
from merging.schedule import evaluate, layer_index, layer_position
from merging.spec import MergeSpec

Weights = Mapping[str, torch.Tensor]


@dataclass
class MergeReport:
    """What a merge did. Fractions are of elements, summed over all tensors."""

    method: str
    ms: float
    merged: int  # tensors written by this merge
    tensors: dict[str, dict] = field(repr=False)  # per-tensor diagnostics, as the methods give them
    # SLERP: how many tensors fell back to linear interpolation (|cos| > 0.9995), and
    # the mean angle between the parents in degrees per layer index.
    slerp_fallbacks: int | None = None
    slerp_fallback_share: float | None = None
    slerp_angle_by_layer: dict[int, float] | None = None
    # Task-vector family: the share of task-vector elements kept by sparsification;
    # of the elements with a nonzero weighted delta, the share where some parent's
    # sign lost the vote, and per parent the share that carries the elected sign.
    kept_fraction: float | None = None
    sign_conflict_fraction: float | None = None
    parent_sign_share: tuple[float, ...] | None = None
    # Linear: |merged - parent| / |parent| over the whole model, per parent.
    distance_to_parents: tuple[float, ...] | None = None


@dataclass(frozen=True)
class _Job:
    name: str
    key: tuple  # equal keys merge to equal results
    run: Callable[[dict | None], None]


def merge_model(
    dest: Weights,
    base: Weights | None,
    models: Sequence[Weights],
    spec: MergeSpec,
    num_layers: int,
    *,
    parents: dict[str, ParentStats] | None = None,
) -> MergeReport:
    """Merge `models` (and `base`, for methods that take one) into `dest[name]` for
    every name in `dest`, in place; compute in float32, store in dest's dtype.

    SLERP runs from models[0] (t=0) to models[1] (t=1) and ignores `base`. Pass the
    same `parents` dict to successive merges of the same parents to skip measuring
    them again (SLERP angles, linear distances); drop it when their weights change.
    """
    start = time.perf_counter()
    jobs = plan(dest, base, models, spec, num_layers, parents)
    tensors = {}
    with torch.no_grad():
        for job in jobs:
            tensors[job.name] = {}
            job.run(tensors[job.name])
    return summarize(spec.method, tensors, (time.perf_counter() - start) * 1e3, len(jobs))


class MergeTarget:
    """Destination tensors that remember the merge they hold, so a merge with the
    same spec does nothing, and one with a new spec rewrites only the tensors whose
    resolved parameters changed.

    Targets merging the same parents may share one `parents` dict (see merge_model).
    """

    def __init__(
        self,
        dest: Weights,
        base: Weights | None,
        models: Sequence[Weights],
        num_layers: int,
        parents: dict[str, ParentStats] | None = None,
    ):
        self.dest, self.base, self.models, self.num_layers = dest, base, list(models), num_layers
        self.spec: MergeSpec | None = None
        self._keys: dict[str, tuple] = {}
        self._tensors: dict[str, dict] = {}
        self._parents = {} if parents is None else parents
        self._untouched: dict[str, bool] = {}  # tensor name -> every model's tensor is the base's

    def merge(self, spec: MergeSpec, progress: Callable[[int, int], None] | None = None) -> MergeReport | None:
        """Apply `spec`; None when that rewrites nothing. `progress(merged, total)` is called after each tensor
        it rewrites (a page shows how far a long merge is)."""
        if spec == self.spec:
            return None
        start = time.perf_counter()
        jobs = plan(self.dest, self.base, self.models, spec, self.num_layers, self._parents, self._untouched)
        stale = [job for job in jobs if self._keys.get(job.name) != job.key]
        # Until every stale tensor is written this target holds no spec: a merge that fails part-way must not
        # leave it claiming the old one, or the next merge of the old spec would find "nothing changed".
        self.spec = None
        with torch.no_grad():
            for merged, job in enumerate(stale, 1):
                # Forget first: should this job fail halfway, its tensor must not count as merged.
                self._keys.pop(job.name, None)
                self._tensors[job.name] = {}
                job.run(self._tensors[job.name])
                self._keys[job.name] = job.key
                if progress is not None:
                    progress(merged, len(stale))
        self.spec = spec
        if not stale:
            return None
        tensors = {name: self._tensors[name] for name in self.dest}
        return summarize(spec.method, tensors, (time.perf_counter() - start) * 1e3, len(stale))


def plan(dest, base, models, spec: MergeSpec, num_layers: int, parents=None, untouched=None) -> list[_Job]:
    """Resolve and check every tensor's merge; nothing is written. `parents` and `untouched` keep what is
    measured of parents that do not change between merges (their statistics; whether they equal the base)."""
    method = METHODS[spec.method]
    _check_models(method, spec, base, models)
    jobs = []
    for name, out in dest.items():
        inputs = [_tensor(weights, name, f"model {i + 1}") for i, weights in enumerate(models)]
        origin = _tensor(base, name, "the base model") if base is not None and method.base != "unused" else None
        parameters = resolve(spec, method, name, layer_position(name, num_layers), len(models))
        seed = _tensor_seed(spec.seed, name) if method.random and spec.seed is not None else None
        measured = _cached(parents, name, inputs) if method.parents and parents is not None else None
        same = _cached_untouched(untouched, name, origin, inputs) if untouched is not None and origin is not None \
            else None
        _, run = method.prepare(name, out, origin, inputs, parameters, seed=seed, parents=measured, untouched=same)
        key = (spec.method, tuple(sorted((k, _hashable(v)) for k, v in parameters.items())), seed)
        jobs.append(_Job(name, key, run))
    return jobs


def resolve(spec: MergeSpec, method: Method, name: str, position: float, model_count: int) -> dict:
    """Every parameter's value for one tensor, by mergekit's precedence: the model's
    own setting, then the global one, then the method's default."""
    shared = dict(spec.parameters)
    values = {}
    for key, default in method.defaults.items():
        if key in PER_MODEL:
            values[key] = [
                _first(name, key, (spec.settings_for_model(i).get(key), shared.get(key)), default, position, i)
                for i in range(model_count)
            ]
        else:
            values[key] = _first(name, key, (shared.get(key),), default, position, None)
    return values


def _first(name, key, settings, default, position, model):
    for setting in settings:
        if setting is not None:
            value = evaluate(setting, name, position)
            if value is not None:
                return value
    if default is REQUIRED:
        whose = f" for model {model + 1}" if model is not None else ""
        raise ValueError(f"{name}: no setting of {key!r}{whose} applies to this tensor; add one without a filter")
    return default


def _check_models(method: Method, spec: MergeSpec, base, models) -> None:
    if method.base == "required" and base is None:
        raise ValueError(f"{spec.method} merges relative to a base model; pass base weights")
    if method.models is not None and len(models) != method.models:
        raise ValueError(f"{spec.method} merges exactly {method.models} models, got {len(models)}")
    if not models:
        raise ValueError(f"{spec.method}: no models to merge")
    if len(spec.model_parameters) > len(models):
        raise ValueError(
            f"{spec.method}: the spec has parameters for {len(spec.model_parameters)} models "
            f"but {len(models)} are given"
        )


def _tensor(weights: Weights, name: str, whose: str) -> torch.Tensor:
    if name not in weights:
        raise ValueError(f"{name}: missing from {whose}; all models must share the destination's tensor names")
    return weights[name]


def _cached(parents: dict, name: str, inputs) -> Callable[[], ParentStats]:
    def lookup() -> ParentStats:
        if name not in parents:
            parents[name] = parent_stats(inputs)
        return parents[name]

    return lookup


def _cached_untouched(known: dict, name: str, origin, inputs) -> Callable[[], bool]:
    def lookup() -> bool:
        if name not in known:
            known[name] = task_vectors.equal_to_base(origin, inputs)
        return known[name]

    return lookup


def _tensor_seed(seed: int, name: str) -> int:
    # From the name, not the position, so a tensor's draws do not depend on which
    # other tensors are merged or in what order.
    return (seed * 0x9E3779B1 + zlib.crc32(name.encode())) % (1 << 63)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def summarize(method: str, tensors: dict[str, dict], ms: float, merged: int) -> MergeReport:
    report = MergeReport(method=method, ms=ms, merged=merged, tensors=tensors)
    stats = list(tensors.values())
    if stats and all("linear_fallback" in s for s in stats):
        report.slerp_fallbacks = sum(s["linear_fallback"] for s in stats)
        report.slerp_fallback_share = report.slerp_fallbacks / len(stats)
        by_layer: dict[int, list[float]] = {}
        for name, s in tensors.items():
            index = layer_index(name)
            if index is not None:
                by_layer.setdefault(index, []).append(s["angle"])
        report.slerp_angle_by_layer = {i: sum(a) / len(a) for i, a in sorted(by_layer.items())}
    if stats and all("kept" in s for s in stats):
        elements = sum(s["numel"] * len(s["kept"]) for s in stats)
        report.kept_fraction = sum(sum(s["kept"]) for s in stats) / elements
        voted = sum(s["voted"] for s in stats)
        report.sign_conflict_fraction = sum(s["conflicts"] for s in stats) / voted if voted else 0.0
        shares = zip(*(s["agreed"] for s in stats))
        report.parent_sign_share = tuple(sum(agreed) / voted if voted else 0.0 for agreed in shares)
    if stats and all("squared_distance" in s for s in stats):
        distances = zip(*(s["squared_distance"] for s in stats))
        norms = zip(*(s["parent_squared_norm"] for s in stats))
        report.distance_to_parents = tuple(
            math.sqrt(sum(d)) / math.sqrt(sum(n)) if sum(n) else math.sqrt(sum(d))
            for d, n in zip(distances, norms)
        )
    return report
