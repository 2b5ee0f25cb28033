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
from merging.selection import magnitudes, next_below, order_statistics

Deltas = Callable[[], Iterator[tuple[slice, torch.Tensor]]]
Keep = Callable[[torch.Tensor, slice], torch.Tensor]

_RESCALE_EPS = 1e-7


def nothing(numel: int) -> tuple[Keep, int]:
    """density >= 1: mergekit leaves the task vector as it is, without rescaling."""
    return (lambda chunk, span: chunk), numel


def magnitude(source, base, buffer, density: float, rescale: bool) -> tuple[Keep, int]:
    """The k = max(1, int(density * numel)) largest magnitudes (TIES). `buffer` is
    float32 scratch with room for the whole tensor."""
    numel = base.numel()
    k = max(1, int(density * numel))
    values = magnitudes(source, base, buffer)
    magnitude_sum = values.sum().item() if rescale else 0.0
    (threshold,) = order_statistics(values, [numel - k + 1])
    bound = next_below(threshold)
    scale = _scale(magnitude_sum, torch.hardshrink(values, bound, out=values).sum().item()) if rescale else 1.0

    def keep(chunk, span):
        torch.hardshrink(chunk, bound, out=chunk)
        return chunk.mul_(scale) if scale != 1.0 else chunk

    return keep, k


def magnitude_outliers(source, base, buffer, density: float, gamma: float, rescale: bool) -> tuple[Keep, int]:
    """Drops the `gamma` share of largest magnitudes, then the smallest ones, to keep
    int(density * numel) (Model Breadcrumbs)."""
    numel = base.numel()
    target = int(density * numel)
    if target == 0:
        return (lambda chunk, span: chunk.zero_()), 0
    # Kept: ranks bottom + 1 .. bottom + target from the smallest.
    bottom = max(0, numel - target - int(gamma * numel))
    values = magnitudes(source, base, buffer)
    magnitude_sum = values.sum().item() if rescale else 0.0
    lower, upper = order_statistics(values, [bottom + 1, bottom + target])
    lower_bound = next_below(lower)

    def band(chunk):
        """Keep lower <= |x| <= upper: x minus its part beyond `upper`."""
        beyond = torch.hardshrink(chunk, upper)
        return torch.hardshrink(chunk, lower_bound, out=chunk).sub_(beyond)

    scale = _scale(magnitude_sum, band(values).sum().item()) if rescale else 1.0

    def keep(chunk, span):
        band(chunk)
        return chunk.mul_(scale) if scale != 1.0 else chunk

    return keep, target


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
