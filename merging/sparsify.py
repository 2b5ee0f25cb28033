"""How much of a task vector survives: mergekit's sparsification methods.

Each function measures one task vector (model - base) as its method needs and
returns `keep(chunk, span)`, which sparsifies and rescales a chunk (the task
vector's elements `span`) in place, plus how many elements survive. The random
methods read the task vector from `deltas()`, which yields (span, chunk) pairs of
it, freshly computed, in float32.
"""

from collections.abc import Callable, Iterator

import torch

from merging.chunks import total
from merging.selection import next_below

Deltas = Callable[[], Iterator[tuple[slice, torch.Tensor]]]
Keep = Callable[[torch.Tensor, slice], torch.Tensor]

_RESCALE_EPS = 1e-7


def nothing(numel: int) -> tuple[Keep, int]:
    """density >= 1: mergekit leaves the task vector as it is, without rescaling."""
    return (lambda chunk, span: chunk), numel


def magnitude_ranks(numel: int, density: float) -> list[int]:
    """TIES keeps the k = max(1, int(density * numel)) largest magnitudes: those from
    rank numel - k + 1 up, counting from the smallest."""
    return [numel - max(1, int(density * numel)) + 1]


def outlier_ranks(numel: int, density: float, gamma: float) -> list[int]:
    """Model Breadcrumbs drops the `gamma` share of largest magnitudes, then the
    smallest, keeping int(density * numel): ranks bottom + 1 .. bottom + target.
    No ranks when it keeps nothing."""
    target = int(density * numel)
    bottom = max(0, numel - target - int(gamma * numel))
    return [bottom + 1, bottom + target] if target else []


def survivors(numel: int, ranks: list[int]) -> int:
    """How many magnitudes a trim at these ranks keeps: from the first rank to the top, or to the second rank."""
    if not ranks:
        return 0
    return ranks[-1] - ranks[0] + 1 if len(ranks) > 1 else numel - ranks[0] + 1


def trim(numel: int, ranks: list[int], bounds: list[float], values: torch.Tensor | None = None,
         magnitude_sum: float | None = None) -> tuple[Keep, int]:
    """Keeps the magnitudes from bounds[0] (the value at ranks[0]) up, or up to
    bounds[1] as well; rescales when given the sum of all magnitudes and `values`,
    the task vector's magnitudes (scratch, in any order)."""
    if not ranks:
        return (lambda chunk, span: chunk.zero_()), 0
    lower = next_below(bounds[0])
    upper = bounds[1] if len(bounds) > 1 else None

    def band(chunk):
        """lower <= |x| (<= upper): x, less its part beyond `upper`."""
        beyond = torch.hardshrink(chunk, upper) if upper is not None else None
        torch.hardshrink(chunk, lower, out=chunk)
        return chunk.sub_(beyond) if beyond is not None else chunk

    scale = 1.0 if magnitude_sum is None else _scale(magnitude_sum, band(values).sum().item())

    def keep(chunk, span):
        band(chunk)
        return chunk.mul_(scale) if scale != 1.0 else chunk

    return keep, survivors(numel, ranks)


def random(deltas: Deltas, numel: int, density: float, rescale: bool, generator) -> tuple[Keep, int]:
    """Keeps each element with probability `density` (DARE)."""
    return _drop_at_random(deltas, numel, lambda chunk: density, rescale, generator)


def della_magprune(deltas: Deltas, shape, density: float, epsilon: float, rescale: bool, generator) -> tuple[Keep, int]:
    """Keeps each element with a probability from density - epsilon to density +
    epsilon by its magnitude rank within its row (DELLA). Chunks must hold whole
    rows; see `della_rows`."""
    probabilities = lambda chunk: _della_probabilities(chunk, shape, density, epsilon)  # noqa: E731
    return _drop_at_random(deltas, shape.numel(), probabilities, rescale, generator)


def _drop_at_random(deltas: Deltas, numel: int, probabilities, rescale: bool, generator) -> tuple[Keep, int]:
    """Draws what mergekit's torch.bernoulli over the whole task vector draws from the
    same generator state: on CPU, bernoulli(p) is uniform < p, one draw per element
    in order, however the tensor is chunked. The masks are kept, one byte per element."""
    masks = torch.empty(numel, dtype=torch.bool, device=generator.device)
    kept, magnitude_sums, kept_sums = [], [], []
    for span, chunk in deltas():
        draws = torch.rand(chunk.numel(), generator=generator, device=chunk.device)
        mask = torch.lt(draws, probabilities(chunk), out=masks[span])
        kept.append(mask.sum())
        if rescale:
            magnitude_sums.append(chunk.abs_().sum())
            kept_sums.append(chunk.mul_(mask).sum())
    scale = _scale(total(magnitude_sums), total(kept_sums)) if rescale else 1.0

    def keep(chunk, span):
        chunk.mul_(masks[span])
        return chunk.mul_(scale) if scale != 1.0 else chunk

    return keep, int(total(kept))


def della_rows(shape: torch.Size, chunk: int) -> int:
    """A chunk size holding whole rows as DELLA ranks them: mergekit ranks along
    dim 1, treating a vector as one row."""
    if len(shape) == 2:
        return max(1, chunk // shape[1]) * shape[1]
    return shape.numel()


def _della_probabilities(chunk, shape, density, epsilon):
    if len(shape) < 2:
        rows = chunk.view(1, -1)
    elif len(shape) == 2:
        rows = chunk.view(-1, shape[1])
    else:
        rows = chunk.view(shape).movedim(1, -1)
    order = torch.argsort(rows.abs(), dim=-1)
    width = order.shape[-1]
    # Scattering 1..width by the sort order inverts it: rank 1 is the smallest magnitude.
    positions = torch.arange(1, width + 1, dtype=torch.float32, device=chunk.device)
    ranks = torch.empty(order.shape, dtype=torch.float32, device=chunk.device)
    ranks.scatter_(-1, order, positions.expand_as(order))
    rank_share = ((ranks - 1) / (width - 1)).clamp(0, 1)
    # The same expression, hence the same float32 rounding, as mergekit's della_magprune.
    probabilities = (density - epsilon) + rank_share * 2 * epsilon
    if len(shape) > 2:
        probabilities = probabilities.movedim(-1, 1)
    return probabilities.reshape(-1)


def _scale(magnitude_sum: float, kept_sum: float) -> float:
    """mergekit's L1 rescaling, skipped where either sum is negligible."""
    if magnitude_sum < _RESCALE_EPS or kept_sum < _RESCALE_EPS:
        return 1.0
    return magnitude_sum / kept_sum
