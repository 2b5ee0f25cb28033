"""Exact order statistics of task-vector magnitudes, without sorting.

TIES keeps the k largest |delta| of each task vector. mergekit sorts every task
vector for that. A selection algorithm finds the k-th largest value in linear time
instead: on CPU, a random sample brackets the rank, one pass counts what lies below
the bracket and keeps what lies inside, and numpy's introselect partitions only that
(torch.kthvalue is a quickselect too, but about ten times slower per element);
torch.kthvalue's radix select on GPUs.
"""

import math
from collections.abc import Sequence

import numpy
import torch

from merging.chunks import CPU_CHUNK, as_float32, flat, scratch, spans

# From this many values up, a random sample of them brackets each rank first (Floyd and Rivest's idea): partitioning
# everything cost 5.6 ns a value on the development machine, the bracketing pass about 1.
BRACKETED_FROM = 1 << 16
# Each bracket spans this many standard deviations of its sample quantile's rank either side; a miss (about one
# sample in 10^4) falls back to partitioning everything, so the result is exact either way.
SPREAD = 4.0


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
    float32 `values` (magnitudes). May reorder `values`."""
    if values.device.type != "cpu":
        return [torch.kthvalue(values, rank).values.item() for rank in ranks]
    # Non-negative floats order as their bit patterns do, and numpy compares and
    # partitions integers faster than floats (no NaN rules to honour).
    bits = values.numpy().view(numpy.uint32)
    found = [None]
    if bits.size >= BRACKETED_FROM:
        brackets = _brackets(bits[_sample_positions(bits.size)], bits.size, ranks)
        for start in range(0, bits.size, CPU_CHUNK):
            for bracket in brackets:
                bracket.take(bits[start : start + CPU_CHUNK])
        found = [bracket.value_at(rank) for bracket, rank in zip(brackets, ranks)]
    if None in found:
        found = partitioned(bits, ranks)
    return [_as_float(value) for value in found]


def magnitude_bounds(source: torch.Tensor, base: torch.Tensor, ranks: Sequence[int]) -> list[float] | None:
    """order_statistics(|source - base|, ranks) in one pass over both tensors, without writing the magnitudes
    anywhere: on CPU, for tensors of BRACKETED_FROM elements or more. None where it does not apply or a bracket
    missed; the caller then takes the magnitudes whole."""
    model, origin = flat(source), flat(base)
    size = origin.numel()
    if origin.device.type != "cpu" or size < BRACKETED_FROM:
        return None
    positions = torch.from_numpy(_sample_positions(size))
    # The same float32 arithmetic as `magnitudes`, on the sampled elements.
    sample = torch.sub(model[positions].float(), origin[positions].float()).abs_()
    brackets = _brackets(sample.numpy().view(numpy.uint32), size, ranks)
    copies = scratch(size, origin.device, 3)
    for span in spans(size, origin.device):
        difference = torch.sub(as_float32(model[span], copies[0]), as_float32(origin[span], copies[1]),
                               out=copies[2][: span.stop - span.start])
        bits = difference.abs_().numpy().view(numpy.uint32)
        for bracket in brackets:
            bracket.take(bits)
    found = [bracket.value_at(rank) for bracket, rank in zip(brackets, ranks)]
    return None if None in found else [_as_float(value) for value in found]


def partitioned(bits: numpy.ndarray, ranks: Sequence[int]) -> list[int]:
    """The bit patterns at these ranks, by partitioning all of `bits` (reordered)."""
    start, result = 0, []
    for rank in ranks:
        # Partitioning puts everything above the previous rank after it: select the
        # next rank among those only, rather than asking numpy for several at once.
        if rank > start:
            bits[start:].partition(rank - 1 - start)
        result.append(int(bits[rank - 1]))
        start = rank
    return result


class Bracket:
    """Counts the bit patterns below [low, high] and keeps those inside, chunk by chunk."""

    def __init__(self, low: int, high: int):
        self.low, self.width = numpy.uint32(low), numpy.uint32(high - low)
        self.below, self.inside = 0, []
        self.offset = numpy.empty(CPU_CHUNK, dtype=numpy.uint32)

    def take(self, chunk: numpy.ndarray) -> None:
        # Unsigned subtraction wraps what lies below `low` to above `width`: one comparison finds the bracket.
        shifted = numpy.subtract(chunk, self.low, out=self.offset[: chunk.size])
        self.inside.append(chunk[shifted <= self.width])
        self.below += numpy.count_nonzero(chunk < self.low)

    def value_at(self, rank: int) -> int | None:
        """The bit pattern at `rank` of everything taken, or None if it lies outside the bracket."""
        inside = numpy.concatenate(self.inside)
        if not self.below < rank <= self.below + inside.size:
            return None
        inside.partition(rank - self.below - 1)
        return int(inside[rank - self.below - 1])


def _sample_positions(size: int) -> numpy.ndarray:
    """About size^(2/3) positions, from a fixed seed (Floyd and Rivest's sample size): the bracket's share of the
    values then shrinks as size^(-1/3), so that a larger tensor is also partitioned less."""
    count = min(size, max(4096, round(size ** (2 / 3))))
    return numpy.random.default_rng(0).integers(0, size, count)


def _brackets(sample: numpy.ndarray, size: int, ranks: Sequence[int]) -> list[Bracket]:
    """One bracket per rank, from the bit patterns of a sample of `size` values."""
    sample, count, brackets = numpy.sort(sample), sample.size, []
    for rank in ranks:
        share = rank / size
        spread = SPREAD * math.sqrt(count * share * (1 - share)) + 2
        low, high = math.floor(share * count - spread) - 1, math.ceil(share * count + spread)
        brackets.append(Bracket(int(sample[low]) if low >= 0 else 0, int(sample[high]) if high < count else 0xFFFFFFFF))
    return brackets


def _as_float(bits: int) -> float:
    return float(numpy.uint32(bits).view(numpy.float32))


def next_below(value: float) -> float:
    """The largest float32 below `value`: |x| > next_below(v) exactly when |x| >= v."""
    # Comparisons cast a Python scalar to the tensor's float32, so step in float32.
    return float(numpy.nextafter(numpy.float32(value), numpy.float32(-math.inf)))
