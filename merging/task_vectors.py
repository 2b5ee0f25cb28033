"""The task-vector family: task arithmetic, TIES, DARE, Model Breadcrumbs, DELLA.

As in mergekit's GeneralizedTaskArithmeticMerge, each parent's task vector
(model - base) is sparsified, multiplied by its weight, optionally put to a sign
vote, summed, optionally normalised, scaled by lambda and added to the base. Here
that runs chunk by chunk in float32 and writes into the destination in place.
"""

from collections.abc import Callable, Sequence

import numpy
import torch

from merging import checks, sparsify
from merging.chunks import as_float32, chunk_size, flat, spans, total, whole_scratch
from merging.selection import magnitude_bounds, magnitudes, order_statistics

# How each method sparsifies and whether it votes on signs is its record's (merging/methods.py: Method.sparsify,
# Method.votes), as in mergekit's registry.
SPARSIFICATIONS = (None, "magnitude", "random", "magnitude_outliers", "della_magprune")
CONSENSUS_METHODS = ("sum", "count")


def prepare(
    method,
    name: str,
    base: torch.Tensor | None,
    tensors: Sequence[torch.Tensor],
    out: torch.Tensor | None,
    *,
    weight,
    density=1.0,
    lambda_=1.0,
    normalize: bool,
    rescale: bool,
    int8_mask: bool = False,
    consensus_method: str = "sum",
    gamma=0.01,
    epsilon=0.15,
    seed: int | None = None,
    untouched: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, Callable[[dict | None], None]]:
    """Check everything for one tensor; return the destination and a function that
    merges into it (taking an optional dict for diagnostics). `untouched`, when given,
    says whether every fine-tune's tensor is bitwise the base's (a MergeTarget finds
    that once for parents it serves), instead of comparing them on every run. `method` is the method's record
    (merging/methods.py): its name, how it sparsifies and whether it votes."""
    kind, votes = method.sparsify, method.votes
    if base is None:
        raise ValueError(f"{name}: {method.name} merges task vectors relative to a base model; give one")
    count = len(tensors)
    weights = checks.per_model(name, "weight", weight, count)
    densities = checks.densities(name, density, count)
    lambda_ = checks.finite(name, "lambda", lambda_)
    # int8_mask only shrinks mergekit's sign masks; the merged values are the same.
    for flag, value in (("normalize", normalize), ("rescale", rescale), ("int8_mask", int8_mask)):
        checks.boolean(name, flag, value)
    if consensus_method not in CONSENSUS_METHODS:
        raise ValueError(f"{name}: consensus_method is {consensus_method!r}; use 'sum' or 'count'")
    if normalize:
        checks.weights_total(name, weights)
    gammas = _gammas(name, gamma, count) if kind == "magnitude_outliers" else None
    epsilons = _epsilons(name, epsilon, densities) if kind == "della_magprune" else None
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"{name}: seed must be an integer, got {seed!r}")
    checks.same_shapes(name, [base, *tensors], ["base", *checks.model_roles(count)])
    out = checks.output(name, out, [base, *tensors])

    def run(stats: dict | None) -> None:
        if kind in UNTOUCHED_SHORTCUT and (untouched() if untouched else equal_to_base(base, tensors)):
            _untouched(out, base, densities, gammas, kind, count, stats)
            return
        size = chunk_size(base.device)
        if kind == "della_magprune":
            size = sparsify.della_rows(base.shape, size)
        sparsifiers = _sparsifiers(kind, base, tensors, densities, gammas, epsilons, rescale, seed, size)
        keeps = [keep for keep, _ in sparsifiers]
        _combine(out, base, tensors, keeps, weights, votes, consensus_method, normalize, lambda_, size, stats)
        if stats is not None:
            stats["numel"] = base.numel()
            stats["kept"] = [survivors for _, survivors in sparsifiers]

    return out, run


# Sparsifications whose survivor count does not depend on the values, so a tensor that no fine-tune changed can
# skip the work (a LoRA pair leaves embeddings and norms as they were: a fifth of the default model).
UNTOUCHED_SHORTCUT = (None, "magnitude", "magnitude_outliers")


def equal_to_base(base: torch.Tensor, tensors: Sequence[torch.Tensor]) -> bool:
    return all(torch.equal(t, base) for t in tensors)


def _untouched(out, base, densities, gammas, kind, count, stats) -> None:
    """Every task vector is zero: every method of the family gives the base exactly (mergekit's sign vote keeps
    nothing and divides by 1), and the diagnostics are what the full pass would count."""
    out.copy_(base)
    if stats is None:
        return
    numel = base.numel()
    kept = []
    for i in range(count):
        if kind is None or densities[i] >= 1:
            kept.append(numel)
        elif kind == "magnitude":
            kept.append(sparsify.survivors(numel, sparsify.magnitude_ranks(numel, densities[i])))
        else:
            kept.append(sparsify.survivors(numel, sparsify.outlier_ranks(numel, densities[i], gammas[i])))
    stats.update(numel=numel, kept=kept, voted=0, conflicts=0, agreed=[0] * count)


def _sparsifiers(kind, base, tensors, densities, gammas, epsilons, rescale, seed, size):
    """(keep, survivors) per model, measured in model order, which is also the
    order of the random draws."""
    numel = base.numel()
    if kind is None or min(densities) >= 1:
        return [sparsify.nothing(numel) for _ in tensors]
    if kind in ("magnitude", "magnitude_outliers"):
        return _trims(kind, base, tensors, densities, gammas, rescale)
    generator = _generator(seed, base.device)
    result = []
    for i, source in enumerate(tensors):
        if densities[i] >= 1:
            result.append(sparsify.nothing(numel))
            continue
        deltas = _deltas(source, base, size)
        if kind == "random":
            result.append(sparsify.random(deltas, numel, densities[i], rescale, generator))
        else:
            result.append(sparsify.della_magprune(deltas, base.shape, densities[i], epsilons[i], rescale, generator))
    return result


def _trims(kind, base, tensors, densities, gammas, rescale):
    """Magnitude trims, one task vector after another in one scratch tensor."""
    numel = base.numel()
    result = []
    # Room for one whole task vector's magnitudes, for the exact selection of thresholds; a trim keeps only its
    # thresholds, so the buffer is free again when this returns.
    with whole_scratch(numel, base.device) as buffer:
        for source, density, gamma in zip(tensors, densities, gammas or [None] * len(tensors)):
            if density >= 1:
                result.append(sparsify.nothing(numel))
                continue
            if kind == "magnitude":
                ranks = sparsify.magnitude_ranks(numel, density)
            else:
                ranks = sparsify.outlier_ranks(numel, density, gamma)
            # Without rescaling only the bounds are needed, and one pass finds them (CPU, larger tensors).
            bounds = None if rescale else magnitude_bounds(source, base, ranks)
            values = magnitude_sum = None
            if bounds is None:
                values = magnitudes(source, base, buffer)
                # Summed before selection reorders them, in the order mergekit sums them.
                magnitude_sum = values.sum().item() if rescale else None
                bounds = order_statistics(values, ranks)
            result.append(sparsify.trim(numel, ranks, bounds, values, magnitude_sum))
    return result


def _gammas(name, gamma, count):
    values = checks.per_model(name, "gamma", gamma, count)
    for i, value in enumerate(values):
        if not 0 <= value < 1:
            raise ValueError(f"{name}: gamma for model {i + 1} is {value!r}; it must lie in [0, 1)")
    return values


def _epsilons(name, epsilon, densities):
    values = checks.per_model(name, "epsilon", epsilon, len(densities))
    for i, (value, density) in enumerate(zip(values, densities)):
        if density < 1 and not (density - value > 0 and density + value < 1):
            raise ValueError(
                f"{name}: epsilon {value!r} with density {density!r} for model {i + 1} gives keep "
                "probabilities outside (0, 1); choose epsilon < min(density, 1 - density)"
            )
    return values


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    if seed is not None:
        return torch.Generator(device=device).manual_seed(seed)
    # Draw from torch's global stream for the device, as mergekit does.
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


def _deltas(source: torch.Tensor, base: torch.Tensor, size: int) -> sparsify.Deltas:
    model, origin = flat(source), flat(base)

    def chunks():
        buffers = [torch.empty(min(size, origin.numel()), dtype=torch.float32, device=origin.device) for _ in range(2)]
        for span in spans(origin.numel(), origin.device, size):
            delta = buffers[0][: span.stop - span.start]
            yield span, torch.sub(as_float32(model[span], delta), as_float32(origin[span], buffers[1]), out=delta)

    return chunks


def _combine(out, base, tensors, keeps, weights, votes, consensus, normalize, lambda_, size, stats) -> None:
    """The chunk loop: sparsify, weight, vote, sum, normalise, add to the base."""
    device, numel, count = base.device, base.numel(), len(tensors)
    origin, sources, target = flat(base), [flat(t) for t in tensors], out.view(-1)
    width = min(size, numel)
    buffers = [torch.empty(width, dtype=torch.float32, device=device) for _ in range(2 * count + 6)]
    vectors, signs = buffers[:count], buffers[count : 2 * count]
    base_copy, model_copy, elected, spare, mixed, divisor = buffers[2 * count :]
    tallies = {"voted": [], "conflicts": [], "agreed": [[] for _ in tensors]} if stats is not None else None
    for span in spans(numel, device, size):
        length = span.stop - span.start
        b = as_float32(origin[span], base_copy)
        v = [vector[:length] for vector in vectors]
        m, d, x = mixed[:length], divisor[:length], spare[:length]
        for i, source in enumerate(sources):
            torch.sub(as_float32(source[span], model_copy), b, out=v[i])
            keeps[i](v[i], span).mul_(weights[i])
        if votes or tallies is not None:
            s = [sign[:length] for sign in signs]
            _vote(v, s, elected[:length], x, m, d, weights, consensus, votes and normalize, tallies)
        # From here on mergekit's operations in mergekit's order, so that float32
        # rounds alike even where the base and the merged delta nearly cancel.
        if not votes:
            _sum_into(m, v)
        if normalize and votes:
            d.add_(torch.eq(d, 0, out=x))  # mergekit divides by 1 where no parent agrees
            m.div_(d)
        elif normalize:
            m.div_(_float32_sum(weights))
        if lambda_ != 1:
            m.mul_(lambda_)
        if out.dtype == torch.float32:
            torch.add(b, m, out=target[span])
        else:
            target[span].copy_(m.add_(b))
    if stats is not None:
        stats["voted"] = int(total(tallies["voted"]))
        stats["conflicts"] = int(total(tallies["conflicts"]))
        stats["agreed"] = [int(total(parts)) for parts in tallies["agreed"]]


def _vote(v, s, e, spare, mixed, divisor, weights, consensus, weigh, tallies) -> None:
    """mergekit's sign election over one chunk of the weighted task vectors `v`.

    Leaves in `mixed` the sum of the deltas with the elected sign, in `divisor` (if
    `weigh`) the sum of their weights, and counts into `tallies` (if given) the
    elements voted on, those with a losing sign, and each parent's agreements.
    """
    # The elected sign, +1 or -1: that of the weighted sum ('sum', TIES) or of
    # the sign count ('count'); +1 where it is zero, as mergekit's `>= 0`.
    if consensus == "count":
        torch.sign(v[0], out=e)
        for vector in v[1:]:
            e.add_(torch.sign(vector, out=spare))
    else:
        _sum_into(e, v)
    torch.ge(e, 0, out=e).mul_(2).sub_(1)
    # s: positive where a parent has the elected sign, negative where the other.
    for vector, agreement in zip(v, s):
        torch.mul(vector, e, out=agreement)
    if tallies is not None:
        _minimum_into(spare, s)
        tallies["conflicts"].append(torch.lt(spare, 0, out=spare).sum())
    for i, (vector, agreement) in enumerate(zip(v, s)):
        a = torch.gt(agreement, 0, out=agreement)  # mergekit's mask
        if tallies is not None:
            tallies["agreed"][i].append(a.sum())
        if i == 0:
            torch.mul(vector, a, out=mixed)
        else:
            mixed.addcmul_(vector, a)
        if weigh and i == 0:
            torch.mul(a, weights[0], out=divisor)
        elif weigh:
            divisor.add_(a, alpha=weights[i])
    if tallies is not None:
        # Agreeing deltas share a sign, so their sum is zero only where none is kept.
        tallies["voted"].append(torch.ne(mixed, 0, out=spare).sum())


def _minimum_into(out: torch.Tensor, vectors: list[torch.Tensor]) -> None:
    if len(vectors) == 1:
        out.copy_(vectors[0])
        return
    torch.minimum(vectors[0], vectors[1], out=out)
    for vector in vectors[2:]:
        torch.minimum(out, vector, out=out)


def _sum_into(out: torch.Tensor, vectors: list[torch.Tensor]) -> None:
    if len(vectors) == 1:
        out.copy_(vectors[0])
        return
    torch.add(vectors[0], vectors[1], out=out)
    for vector in vectors[2:]:
        out.add_(vector)


def _float32_sum(values: Sequence[float]) -> float:
    """The sum as mergekit takes it, of a float32 tensor, so that it rounds alike."""
    return float(numpy.array(values, dtype=numpy.float32).sum())


def _now(method, name, base, tensors, out, stats, **parameters) -> torch.Tensor:
    # Imported here: the records (merging/methods.py) name this module's functions, so it imports this module.
    from merging.methods import METHODS

    out, run = prepare(METHODS[method], name, base, tensors, out, **parameters)
    with torch.no_grad():
        run(stats)
    return out


def task_arithmetic_rule(name, p, figures, stats):
    """The merge-free rule (merging/coefficients.py): task arithmetic of two fine-tunes as
    (c_base, c_model1, c_model2)."""
    weights = checks.per_model(name, "weight", p["weight"], 2)
    lambda_ = checks.finite(name, "lambda", p["lambda"])
    divisor = checks.weights_total(name, weights) if checks.boolean(name, "normalize", p["normalize"]) else 1.0
    c = [lambda_ * w / divisor for w in weights]
    return 1 - c[0] - c[1], c[0], c[1]


# The public functions: mergekit's parameters and per-method defaults. A per-model
# parameter (weight, density, gamma, epsilon) is a list or one number for all;
# `lambda_` is mergekit's `lambda`. `stats` (if given) receives `numel`, `kept` per
# model, `voted` (elements with a nonzero weighted delta), `conflicts` (of those,
# elements where some parent's sign loses the vote) and `agreed` per model.


def task_arithmetic(base, tensors, *, weight, density=1.0, lambda_=1.0, normalize=False, rescale=False,
                    int8_mask=False, out=None, stats=None, name="tensor"):
    """base + lambda * sum_i weight_i (tensor_i - base)."""
    return _now("task_arithmetic", name, base, tensors, out, stats, weight=weight, density=density,
                lambda_=lambda_, normalize=normalize, rescale=rescale, int8_mask=int8_mask)


def ties(base, tensors, *, weight, density=1.0, lambda_=1.0, normalize=True, rescale=False, int8_mask=False,
         consensus_method="sum", out=None, stats=None, name="tensor"):
    """TIES: keep each task vector's largest magnitudes, elect a sign per element,
    average the agreeing deltas."""
    return _now("ties", name, base, tensors, out, stats, weight=weight, density=density, lambda_=lambda_,
                normalize=normalize, rescale=rescale, int8_mask=int8_mask, consensus_method=consensus_method)


def dare_linear(base, tensors, *, weight, density=1.0, lambda_=1.0, normalize=False, rescale=True,
                int8_mask=False, seed=None, out=None, stats=None, name="tensor"):
    """DARE: drop random elements of each task vector, rescale, add."""
    return _now("dare_linear", name, base, tensors, out, stats, weight=weight, density=density, lambda_=lambda_,
                normalize=normalize, rescale=rescale, int8_mask=int8_mask, seed=seed)


def dare_ties(base, tensors, *, weight, density=1.0, lambda_=1.0, normalize=False, rescale=True,
              int8_mask=False, consensus_method="sum", seed=None, out=None, stats=None, name="tensor"):
    """DARE's random drop with TIES's sign vote."""
    return _now("dare_ties", name, base, tensors, out, stats, weight=weight, density=density, lambda_=lambda_,
                normalize=normalize, rescale=rescale, int8_mask=int8_mask, consensus_method=consensus_method,
                seed=seed)


def breadcrumbs(base, tensors, *, weight, density=1.0, gamma=0.01, lambda_=1.0, normalize=False,
                rescale=False, int8_mask=False, out=None, stats=None, name="tensor"):
    """Model Breadcrumbs: drop the largest (gamma) and smallest magnitudes, add."""
    return _now("breadcrumbs", name, base, tensors, out, stats, weight=weight, density=density, gamma=gamma,
                lambda_=lambda_, normalize=normalize, rescale=rescale, int8_mask=int8_mask)


def breadcrumbs_ties(base, tensors, *, weight, density=1.0, gamma=0.01, lambda_=1.0, normalize=False,
                     rescale=False, int8_mask=False, consensus_method="sum", out=None, stats=None, name="tensor"):
    """Model Breadcrumbs with TIES's sign vote."""
    return _now("breadcrumbs_ties", name, base, tensors, out, stats, weight=weight, density=density,
                gamma=gamma, lambda_=lambda_, normalize=normalize, rescale=rescale, int8_mask=int8_mask,
                consensus_method=consensus_method)


def della(base, tensors, *, weight, density=1.0, epsilon=0.15, lambda_=1.0, normalize=True, rescale=True,
          int8_mask=False, consensus_method="sum", seed=None, out=None, stats=None, name="tensor"):
    """DELLA: drop elements at random, less likely the larger they rank in their
    row; rescale; TIES's sign vote."""
    return _now("della", name, base, tensors, out, stats, weight=weight, density=density, epsilon=epsilon,
                lambda_=lambda_, normalize=normalize, rescale=rescale, int8_mask=int8_mask,
                consensus_method=consensus_method, seed=seed)


def della_linear(base, tensors, *, weight, density=1.0, epsilon=0.15, lambda_=1.0, normalize=False,
                 rescale=True, int8_mask=False, seed=None, out=None, stats=None, name="tensor"):
    """DELLA's magnitude-ranked random drop, without a sign vote."""
    return _now("della_linear", name, base, tensors, out, stats, weight=weight, density=density,
                epsilon=epsilon, lambda_=lambda_, normalize=normalize, rescale=rescale, int8_mask=int8_mask,
                seed=seed)
