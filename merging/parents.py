"""What a merge needs to know about its parents, whatever the merge's parameters.

Per tensor: the inner products of the parents and their pairwise squared distances.
SLERP takes its angle from them and linear its distances to the parents, so a
re-merge of the same resident weights with new parameters can reuse them
(`MergeTarget` keeps them) and touch the weights only once, to write the result.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from merging.chunks import as_float32, flat, scratch, spans, total


@dataclass(frozen=True)
class ParentStats:
    gram: tuple[tuple[float, ...], ...]  # <p_i, p_j>
    squared_distance: tuple[tuple[float, ...], ...]  # |p_i - p_j|^2, measured directly for accuracy

    def norm(self, i: int) -> float:
        return math.sqrt(self.gram[i][i])


def parent_stats(tensors: Sequence[torch.Tensor], origin: torch.Tensor | None = None) -> ParentStats:
    """The statistics of `tensors`, or of their differences from `origin` (task vectors)."""
    count = len(tensors)
    sources = [flat(t) for t in tensors]
    buffers = scratch(sources[0].numel(), sources[0].device, count + 2)
    pairs = [(i, j) for i in range(count) for j in range(i, count)]
    # Chunk-sized float32 dot products summed in float64: one float32 dot over a whole
    # embedding matrix is off by 1e-4, which would blur small SLERP angles.
    dots = {pair: [] for pair in pairs}
    differences = {pair: [] for pair in pairs if pair[0] != pair[1]}
    for span in spans(sources[0].numel(), sources[0].device):
        chunks = [as_float32(s[span], b) for s, b in zip(sources, buffers)]
        if origin is not None:
            start = as_float32(flat(origin)[span], buffers[-2])
            chunks = [torch.sub(c, start, out=b[: c.numel()]) for c, b in zip(chunks, buffers)]
        difference = buffers[-1][: span.stop - span.start]
        for i, j in pairs:
            dots[(i, j)].append(torch.dot(chunks[i], chunks[j]))
            if i != j:
                torch.sub(chunks[j], chunks[i], out=difference)
                differences[(i, j)].append(torch.dot(difference, difference))
    totals = {pair: total(parts) for pair, parts in dots.items()}
    squared = {pair: total(parts) for pair, parts in differences.items()}
    gram = tuple(tuple(totals[min(i, j), max(i, j)] for j in range(count)) for i in range(count))
    distance = tuple(
        tuple(0.0 if i == j else squared[min(i, j), max(i, j)] for j in range(count))
        for i in range(count)
    )
    return ParentStats(gram, distance)


def squared_distances(stats: ParentStats, coefficients: Sequence[float]) -> list[float]:
    """|sum_j c_j p_j - p_i|^2 for every parent i, without touching the weights."""
    count = len(coefficients)
    result = []
    for i in range(count):
        u = [c - (1.0 if j == i else 0.0) for j, c in enumerate(coefficients)]
        if abs(sum(u)) < 1e-12:
            # u sums to zero, so u'Gu = -1/2 sum u_j u_k |p_j - p_k|^2: no cancellation
            # between large norms when the parents are close.
            value = -0.5 * sum(
                u[j] * u[k] * stats.squared_distance[j][k] for j in range(count) for k in range(count)
            )
        else:
            value = sum(u[j] * u[k] * stats.gram[j][k] for j in range(count) for k in range(count))
        result.append(max(value, 0.0))
    return result
