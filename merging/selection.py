"""Exact order statistics of task-vector magnitudes, without sorting.

TIES keeps the k largest |delta| of each task vector. mergekit sorts every task
vector for that. A selection algorithm finds the k-th largest value in linear time
instead: numpy's introselect on CPU (torch.kthvalue is a quickselect there too, but
about ten times slower per element), torch.kthvalue's radix select on GPUs.
"""

import math
from collections.abc import Sequence

import numpy
import torch

from merging.chunks import as_float32, flat, scratch, spans


def magnitudes(source: torch.Tensor, base: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """|source - base| in float32, written into `buffer` (flat, at least as large)."""
    model, origin, result = flat(source), flat(base), buffer[: base.numel()]
    copies = scratch(origin.numel(), origin.device, 2)
    for span in spans(origin.numel(), origin.device):
        # In float32, even from bfloat16 inputs, whose own arithmetic would round the
        # difference; chunk by chunk, so that abs_ finds the difference in cache.
        difference = torch.sub(as_float32(model[span], copies[0]), as_float32(origin[span], copies[1]),
                               out=result[span])
        difference.abs_()
    return result


def order_statistics(values: torch.Tensor, ranks: Sequence[int]) -> list[float]:
    """The values at these ascending 1-based ranks from the smallest, of non-negative
    float32 `values` (magnitudes). Reorders `values`."""
    if values.device.type != "cpu":
        return [torch.kthvalue(values, rank).values.item() for rank in ranks]
    # Non-negative floats order as their bit patterns do, and numpy partitions
    # integers faster than floats (no NaN rules to honour).
    floats = values.numpy()
    bits, start, result = floats.view(numpy.uint32), 0, []
    for rank in ranks:
        # Partitioning puts everything above the previous rank after it: select the
        # next rank among those only, rather than asking numpy for several at once.
        if rank > start:
            bits[start:].partition(rank - 1 - start)
        result.append(float(floats[rank - 1]))
        start = rank
    return result


def next_below(value: float) -> float:
    """The largest float32 below `value`: |x| > next_below(v) exactly when |x| >= v."""
    # Comparisons cast a Python scalar to the tensor's float32, so step in float32.
    return float(numpy.nextafter(numpy.float32(value), numpy.float32(-math.inf)))
