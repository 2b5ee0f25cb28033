"""Merges that interpolate between models: linear (model soups), SLERP and NuSLERP."""

import math
from collections.abc import Callable, Sequence

import torch

from merging import checks
from merging.chunks import as_float32, flat, scratch, spans, task_vector_sum_into, weighted_sum_into
from merging.parents import ParentStats, parent_stats, squared_distances

# mergekit's SLERP falls back to linear interpolation above this |cos|.
SLERP_DOT_THRESHOLD = 0.9995
_NORM_EPS = 1e-8


def linear(
    tensors: Sequence[torch.Tensor],
    *,
    weight,
    normalize: bool = True,
    out: torch.Tensor | None = None,
    stats: dict | None = None,
    name: str = "tensor",
) -> torch.Tensor:
    """sum_i weight_i * tensor_i, divided by sum(weight) when `normalize`.

    `stats` (if given) receives `squared_distance`, |result - tensor_i|^2, and
    `parent_squared_norm`, |tensor_i|^2, per input.
    """
    out, run = prepare_linear(name, tensors, out, weight=weight, normalize=normalize)
    with torch.no_grad():
        run(stats)
    return out


def prepare_linear(name, tensors, out, *, weight, normalize=True, parents: Callable[[], ParentStats] | None = None):
    """Check everything for one tensor; return the destination and a function that
    merges into it (taking an optional dict for diagnostics). `parents` (say, a
    cache lookup) spares measuring the parents again for the diagnostics."""
    weights = checks.per_model(name, "weight", weight, len(tensors))
    checks.boolean(name, "normalize", normalize)
    coefficients = [w / checks.weights_total(name, weights) for w in weights] if normalize else weights
    checks.same_shapes(name, tensors, checks.model_roles(len(tensors)))
    out = checks.output(name, out, tensors)

    def run(stats: dict | None) -> None:
        if len(tensors) == 2 and abs(coefficients[0] + coefficients[1] - 1.0) < 1e-12:
            _lerp_into(out, tensors[0], tensors[1], coefficients[1])
        else:
            weighted_sum_into(out, tensors, coefficients)
        if stats is not None:
            measured = parents() if parents else parent_stats(tensors)
            stats["squared_distance"] = squared_distances(measured, coefficients)
            stats["parent_squared_norm"] = [measured.gram[i][i] for i in range(len(tensors))]

    return out, run


def slerp(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    t,
    out: torch.Tensor | None = None,
    stats: dict | None = None,
    name: str = "tensor",
) -> torch.Tensor:
    """Spherical interpolation from `a` (t=0) to `b` (t=1), mergekit's way.

    The whole tensor is one vector; the angle comes from normalised copies, the
    coefficients apply to the originals, and nearly parallel tensors
    (|cos| > 0.9995) interpolate linearly. `stats` receives `angle` (degrees) and
    `linear_fallback`.
    """
    out, run = prepare_slerp(name, a, b, out, t=t)
    with torch.no_grad():
        run(stats)
    return out


def prepare_slerp(name, a, b, out, *, t, parents: Callable[[], ParentStats] | None = None):
    """Like `prepare_linear`; `parents` spares the pass that measures the angle."""
    t = checks.finite(name, "t", t)
    checks.same_shapes(name, [a, b], ["a", "b"])
    out = checks.output(name, out, [a, b])

    def run(stats: dict | None) -> None:
        angle, fallback = slerp_angle(parents() if parents else parent_stats([a, b]))
        if fallback:
            _lerp_into(out, a, b, t)
        else:
            weighted_sum_into(out, [a, b], spherical(angle, t))
        if stats is not None:
            stats["angle"] = math.degrees(angle)
            stats["linear_fallback"] = fallback

    return out, run


def spherical(angle: float, t: float) -> tuple[float, float]:
    """The coefficients of the two ends of a spherical interpolation at t across ``angle`` (radians)."""
    return math.sin((1 - t) * angle) / math.sin(angle), math.sin(t * angle) / math.sin(angle)


def slerp_angle(parents: ParentStats) -> tuple[float, bool]:
    """The angle between the two parents, and whether SLERP falls back to linear."""
    norm_a, norm_b = parents.norm(0), parents.norm(1)
    # (|a|^2 + |b|^2 - |a-b|^2) / 2 is <a, b>, accurate even when a and b nearly coincide.
    dot = (parents.gram[0][0] + parents.gram[1][1] - parents.squared_distance[0][1]) / 2
    # Like mergekit, a zero vector keeps norm 1 rather than dividing by zero.
    norm_a = norm_a if norm_a > _NORM_EPS else 1.0
    norm_b = norm_b if norm_b > _NORM_EPS else 1.0
    cos = min(max(dot / (norm_a * norm_b), -1.0), 1.0)
    return math.acos(cos), abs(cos) > SLERP_DOT_THRESHOLD


def nuslerp(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    weight,
    base: torch.Tensor | None = None,
    nuslerp_row_wise: bool = False,
    nuslerp_flatten: bool = True,
    out: torch.Tensor | None = None,
    stats: dict | None = None,
    name: str = "tensor",
) -> torch.Tensor:
    """mergekit's NuSLERP: SLERP at t = weight[1] / sum(weight) between `a` and `b`,
    or between their task vectors when `base` is given; per row (or per column
    with `nuslerp_row_wise`) unless `nuslerp_flatten`. `stats` receives the mean
    `angle` (degrees). Row by row, it uses whole-tensor float32 temporaries.
    """
    out, run = prepare_nuslerp(
        name, a, b, base, out, weight=weight, nuslerp_row_wise=nuslerp_row_wise, nuslerp_flatten=nuslerp_flatten
    )
    with torch.no_grad():
        run(stats)
    return out


def prepare_nuslerp(name, a, b, base, out, *, weight, nuslerp_row_wise=False, nuslerp_flatten=True):
    """Like `prepare_linear`."""
    weights = checks.per_model(name, "weight", weight, 2)
    checks.boolean(name, "nuslerp_row_wise", nuslerp_row_wise)
    checks.boolean(name, "nuslerp_flatten", nuslerp_flatten)
    inputs, roles = ([a, b], ["a", "b"]) if base is None else ([a, b, base], ["a", "b", "base"])
    checks.same_shapes(name, inputs, roles)
    out = checks.output(name, out, inputs)
    t = nuslerp_t(weights)

    def run(stats: dict | None) -> None:
        if nuslerp_flatten:
            angle = _flat_nuslerp_into(out, a, b, base, t)
        else:
            angle = _nuslerp_rows_into(out, a, b, base, t, nuslerp_row_wise)
        if stats is not None:
            stats["angle"] = math.degrees(angle)

    return out, run


def nuslerp_t(weights) -> float:
    """NuSLERP's t from its two weights, as mergekit takes it."""
    total = sum(weights)
    return 0.5 if abs(total) < 1e-6 else weights[1] / total


def nuslerp_coefficients(measured: ParentStats, t: float) -> tuple[float, float, float]:
    """(angle, first, second) of whole-tensor NuSLERP from the two inputs' figures (task vectors with a base).

    mergekit normalises with norms clamped at 1e-7 and calls the pair collinear only when 1 - cos^2 <= 1e-16.
    """
    norm_a, norm_b = max(measured.norm(0), 1e-7), max(measured.norm(1), 1e-7)
    dot = (measured.gram[0][0] + measured.gram[1][1] - measured.squared_distance[0][1]) / 2
    cos = min(max(dot / (norm_a * norm_b), -1.0), 1.0)
    angle = math.acos(cos)
    if 1 - cos * cos <= 1e-16:
        return angle, 1 - t, t
    return angle, *spherical(angle, t)


# The merge-free rules (merging/coefficients.py): one tensor's (c_base, c_model1, c_model2) from its parameters and
# the parents' figures (``figures(name, relative)``), writing the diagnostics the materialised merge gives into
# ``stats``.


def linear_rule(name, p, figures, stats):
    weights = checks.per_model(name, "weight", p["weight"], 2)
    normalize = checks.boolean(name, "normalize", p["normalize"])
    c = [w / checks.weights_total(name, weights) for w in weights] if normalize else weights
    measured = figures(name, False)
    stats["squared_distance"] = squared_distances(measured, c)
    stats["parent_squared_norm"] = [measured.gram[i][i] for i in range(2)]
    return 0.0, c[0], c[1]


def slerp_rule(name, p, figures, stats):
    t = checks.finite(name, "t", p["t"])
    angle, fallback = slerp_angle(figures(name, False))
    stats["angle"], stats["linear_fallback"] = math.degrees(angle), fallback
    return (0.0, 1 - t, t) if fallback else (0.0, *spherical(angle, t))


def nuslerp_rule(name, p, figures, stats):
    t = nuslerp_t(checks.per_model(name, "weight", p["weight"], 2))
    # The page's nuslerp has a base: the figures of the task vectors.
    angle, first, second = nuslerp_coefficients(figures(name, True), t)
    stats["angle"] = math.degrees(angle)
    return 1 - first - second, first, second


def _flat_nuslerp_into(out, a, b, base, t: float) -> float:
    """NuSLERP of whole tensors: measure, then one weighted sum, chunk by chunk."""
    angle, first, second = nuslerp_coefficients(parent_stats([a, b], origin=base), t)
    if base is None:
        weighted_sum_into(out, [a, b], [first, second])
    else:
        task_vector_sum_into(out, base, [a, b], [first, second])
    return angle


def _nuslerp_rows_into(out, a, b, base, t: float, row_wise: bool) -> float:
    """NuSLERP row by row (or column by column), with whole-tensor temporaries."""
    x, y = a.float(), b.float()
    if base is not None:
        x, y = x - base.float(), y - base.float()
    if row_wise:
        x, y = x.transpose(0, -1), y.transpose(0, -1)
    result, angles = _nuslerp_rows(t, x, y)
    if row_wise:
        result = result.transpose(0, -1)
    if base is not None:
        result += base
    out.copy_(result)
    return angles.mean().item()


def _nuslerp_rows(t: float, v0: torch.Tensor, v1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    unit0 = v0 / v0.norm(dim=-1, keepdim=True).clamp(min=1e-7)
    unit1 = v1 / v1.norm(dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (unit0 * unit1).sum(dim=-1, keepdim=True).clamp(-1, 1)
    # mergekit's test for collinear rows, which interpolate linearly instead.
    collinear = (1 - cos.square()) <= 1e-16
    angle = torch.acos(torch.where(collinear, 0, cos))
    sin_angle = torch.where(collinear, 1, torch.sin(angle))
    spherical = (torch.sin((1 - t) * angle) * v0 + torch.sin(t * angle) * v1) / sin_angle
    return torch.where(collinear, (1 - t) * v0 + t * v1, spherical), torch.acos(cos)


def _lerp_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, t: float) -> None:
    """(1 - t) a + t b in one pass; torch.lerp computes in float32 even on bfloat16."""
    if a.dtype == b.dtype == out.dtype:
        torch.lerp(a, b, t, out=out)
        return
    target, x, y = out.view(-1), flat(a), flat(b)
    buffers = scratch(x.numel(), x.device, 3)
    for span in spans(x.numel(), x.device):
        result = buffers[2][: span.stop - span.start]
        torch.lerp(as_float32(x[span], buffers[0]), as_float32(y[span], buffers[1]), t, out=result)
        target[span].copy_(result)
