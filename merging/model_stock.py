"""Model Stock: move from the base toward the average of the fine-tunes, as far as
the angle between their task vectors suggests (mergekit's model_stock)."""

from collections.abc import Sequence

import torch

from merging import checks
from merging.chunks import task_vector_sum_into
from merging.parents import ParentStats, parent_stats


def prepare(name, base, tensors, out, *, filter_wise=False):
    """Check everything for one tensor; return the destination and a function that
    merges into it (taking an optional dict for diagnostics)."""
    if base is None:
        raise ValueError(f"{name}: model_stock needs a base model; give one")
    if len(tensors) < 2:
        raise ValueError(f"{name}: model_stock needs at least two models besides the base, got {len(tensors)}")
    checks.boolean(name, "filter_wise", filter_wise)
    checks.same_shapes(name, [base, *tensors], ["base", *checks.model_roles(len(tensors))])
    out = checks.output(name, out, [base, *tensors])

    def run(stats: dict | None) -> None:
        if filter_wise:
            ratio = _row_ratios(base, tensors)
            average = sum(t.float() for t in tensors) / len(tensors)
            out.copy_(ratio * average + (1 - ratio) * base.float())
            ratio = ratio.mean().item()
        else:
            ratio = stock_ratio(parent_stats(tensors, origin=base), len(tensors))
            task_vector_sum_into(out, base, tensors, [ratio / len(tensors)] * len(tensors))
        if stats is not None:
            stats["ratio"] = ratio

    return out, run


def stock_ratio(measured: ParentStats, count: int) -> float:
    """t = N cos / (1 + (N - 1) cos), cos the mean angle between the task vectors;
    0 (keep the base) where that is singular, as in mergekit."""
    cosines = [
        min(max(measured.gram[i][j] / max(measured.norm(i) * measured.norm(j), 1e-6), -1.0), 1.0)
        for i in range(count)
        for j in range(i + 1, count)
    ]
    cos = sum(cosines) / len(cosines)
    denominator = 1 + (count - 1) * cos
    return 0.0 if abs(denominator) < 1e-6 else count * cos / denominator


def model_stock_rule(name, p, figures, stats):
    """The merge-free rule (merging/coefficients.py): whole-tensor model stock of two fine-tunes as
    (c_base, c_model1, c_model2), from their task vectors' figures."""
    ratio = stock_ratio(figures(name, True), 2)
    stats["ratio"] = ratio
    return 1 - ratio, ratio / 2, ratio / 2


def _row_ratios(base: torch.Tensor, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """`stock_ratio` per row (filter-wise), with whole-tensor temporaries."""
    origin = base.float()
    origin = origin.unsqueeze(0) if origin.dim() == 1 else origin
    offsets = [t.float().reshape(origin.shape) - origin for t in tensors]
    cosines = []
    for i, first in enumerate(offsets):
        for second in offsets[i + 1 :]:
            norms = torch.norm(first, dim=-1) * torch.norm(second, dim=-1)
            cosines.append(((first * second).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    count = len(tensors)
    denominator = 1 + (count - 1) * cos
    singular = denominator.abs() < 1e-6
    ratio = torch.where(singular, 0, count * cos / torch.where(singular, 1, denominator))
    return ratio.squeeze(0) if base.dim() == 1 else ratio


def model_stock(base, tensors, *, filter_wise=False, out=None, stats=None, name="tensor") -> torch.Tensor:
    """mergekit's model_stock; `stats` receives the (mean) interpolation `ratio`.
    Filter-wise, it uses whole-tensor float32 temporaries."""
    out, run = prepare(name, base, tensors, out, filter_wise=filter_wise)
    with torch.no_grad():
        run(stats)
    return out
