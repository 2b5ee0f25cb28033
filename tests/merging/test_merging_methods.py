"""Every merge method against mergekit's own functions, on the same tensors.

float32: relative error at most 1e-5 (largest difference over largest magnitude).
bfloat16 inputs and destination: at most one unit in the last place, with both
sides computing in float32 (mergekit with dtype=float32, out_dtype=bfloat16).
Random methods draw from the same generator state as mergekit: our `seed=s`
against mergekit after torch.manual_seed(s).
"""

import pytest
import torch

import merging
from tests.mergekit_oracle import assert_close, mergekit_merge
from tests.tiny_models import tensor_family as family

SHAPES = [(7,), (33, 20)]
# Just over one CPU chunk (2**18 elements), so chunk boundaries are exercised.
MULTI_CHUNK = (520, 510)

# method, our keyword arguments. Per-model values are lists, as mergekit takes them.
CASES = [
    ("linear", {"weight": [0.3, 0.7]}),
    ("linear", {"weight": [1.0, 2.0], "normalize": False}),
    ("linear", {"weight": [2.0, -0.5]}),
    ("slerp", {"t": 0.0}),
    ("slerp", {"t": 0.3}),
    ("slerp", {"t": 1.0}),
    ("slerp", {"t": 1.4}),
    ("nuslerp", {"weight": [0.3, 0.7]}),
    ("nuslerp", {"weight": [0.6, 0.2], "nuslerp_flatten": False}),
    ("nuslerp", {"weight": [0.6, 0.2], "nuslerp_flatten": False, "nuslerp_row_wise": True}),
    ("task_arithmetic", {"weight": [0.5, 0.8], "lambda_": 0.7}),
    ("task_arithmetic", {"weight": [0.3, 0.7], "normalize": True}),
    ("ties", {"weight": [0.6, 0.4], "density": 0.3}),
    ("ties", {"weight": [0.6, 0.4], "density": 0.7}),
    ("ties", {"weight": [0.6, 0.4], "density": 1.0}),
    ("ties", {"weight": [1.0, 0.5], "density": [0.2, 0.9], "rescale": True}),
    ("ties", {"weight": [0.5, 0.5], "density": 0.5, "normalize": False, "lambda_": 1.3}),
    ("ties", {"weight": [0.8, -0.3], "density": 0.6}),
    ("dare_linear", {"weight": [0.5, 0.7], "density": 0.4}),
    ("dare_linear", {"weight": [0.5, 0.7], "density": 0.4, "rescale": False, "normalize": True}),
    ("breadcrumbs", {"weight": [0.5, 0.5], "density": 0.8, "gamma": 0.05}),
    ("breadcrumbs", {"weight": [0.5, 0.5], "density": 0.5, "gamma": 0.6}),
    ("breadcrumbs_ties", {"weight": [0.7, 0.4], "density": 0.7, "gamma": 0.02, "rescale": True}),
    ("della_linear", {"weight": [0.5, 0.5], "density": 0.4, "epsilon": 0.15}),
    ("model_stock", {}),
    ("model_stock", {"filter_wise": True}),
]
# Random methods with a sign vote after rescaling: data whose vote is never a near
# tie (see `separated_family`), since the rescale factors may differ in the last bit.
VOTING_RANDOM_CASES = [
    ("dare_ties", {"weight": [0.5, 0.5], "density": 0.6}),
    ("dare_ties", {"weight": [1.0, 0.2], "density": [0.3, 0.8], "normalize": True}),
    ("della", {"weight": [0.5, 0.5], "density": 0.5, "epsilon": 0.1}),
]
MAGNITUDE_METHODS = {"ties", "breadcrumbs", "breadcrumbs_ties"}
RANDOM_METHODS = {"dare_linear", "dare_ties", "della", "della_linear"}


def separated_family(shape, seed=0):
    """Task vectors with random signs whose magnitudes never come close: model 1's
    in [1, 2], model 2's in [3, 4] (times 0.01), so no sign vote is a near tie."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=generator)

    def delta(low):
        sign = torch.randint(0, 2, shape, generator=generator) * 2 - 1
        return 0.01 * sign * (low + torch.rand(shape, generator=generator))

    return base, base + delta(1.0), base + delta(3.0)


def distinct_bfloat16_family(seed=0):
    """bfloat16 tensors whose task vectors have distinct magnitudes, exactly: the
    base on a grid of 1/8, the deltas distinct multiples of 1/128, all sums exact."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randint(-4, 5, (8, 15), generator=generator) / 8

    def delta():
        magnitude = (torch.randperm(120, generator=generator) + 1).reshape(8, 15) / 128
        return magnitude * (torch.randint(0, 2, (8, 15), generator=generator) * 2 - 1)

    first, second = base + delta(), base + delta()
    return tuple(t.to(torch.bfloat16) for t in (base, first, second))


def ours(method, base, first, second, arguments, out=None, seed=None):
    function = getattr(merging, method)
    if method in RANDOM_METHODS:
        arguments = {**arguments, "seed": seed}
    if method == "linear":
        return function([first, second], **arguments, out=out)
    if method == "slerp":
        return function(first, second, **arguments, out=out)
    if method == "nuslerp":
        return function(first, second, base=base, **arguments, out=out)
    return function(base, [first, second], **arguments, out=out)


def theirs(method, base, first, second, arguments, dtype=torch.float32, seed=None):
    parameters = {("lambda" if k == "lambda_" else k): v for k, v in arguments.items()}
    if seed is not None:
        torch.manual_seed(seed)
    if method == "linear":
        return mergekit_merge(method, [first, second], parameters, dtype=dtype)
    if method == "slerp":
        return mergekit_merge(method, [first, second], parameters, base_index=0, dtype=dtype)
    return mergekit_merge(method, [base, first, second], parameters, base_index=0, dtype=dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("method,arguments", CASES, ids=lambda c: str(c))
def test_float32_matches_mergekit(method, arguments, shape):
    base, first, second = family(shape)
    expected = theirs(method, base, first, second, arguments, seed=7)
    result = ours(method, base, first, second, arguments, seed=7)
    assert result.dtype == torch.float32
    assert_close(result, expected, f"{method} {arguments}")


@pytest.mark.parametrize("method,arguments", [
    ("linear", {"weight": [0.3, 0.7]}),
    ("slerp", {"t": 0.3}),
    ("nuslerp", {"weight": [0.6, 0.2], "nuslerp_flatten": False, "nuslerp_row_wise": True}),
    ("task_arithmetic", {"weight": [0.3, 0.7], "normalize": True}),
    ("ties", {"weight": [1.0, 0.5], "density": [0.2, 0.9], "rescale": True}),
    ("ties", {"weight": [0.6, 0.4], "density": 0.3}),
    ("dare_linear", {"weight": [0.5, 0.7], "density": 0.4}),
    ("breadcrumbs", {"weight": [0.5, 0.5], "density": 0.8, "gamma": 0.05}),
    ("breadcrumbs_ties", {"weight": [0.7, 0.4], "density": 0.7, "gamma": 0.02, "rescale": True}),
    ("della_linear", {"weight": [0.5, 0.5], "density": 0.4, "epsilon": 0.15}),
    ("model_stock", {"filter_wise": True}),
], ids=lambda c: str(c))
def test_float32_matches_mergekit_across_chunks(method, arguments):
    base, first, second = family(MULTI_CHUNK)
    expected = theirs(method, base, first, second, arguments, seed=3)
    assert_close(ours(method, base, first, second, arguments, seed=3), expected, f"{method} {arguments}")


@pytest.mark.parametrize("shape", [*SHAPES, MULTI_CHUNK], ids=str)
@pytest.mark.parametrize("method,arguments", VOTING_RANDOM_CASES, ids=lambda c: str(c))
def test_random_voting_methods_match_mergekit_draw_for_draw(method, arguments, shape):
    base, first, second = separated_family(shape)
    expected = theirs(method, base, first, second, arguments, seed=11)
    assert_close(ours(method, base, first, second, arguments, seed=11), expected, f"{method} {arguments}")


@pytest.mark.parametrize("method,arguments", CASES + VOTING_RANDOM_CASES, ids=lambda c: str(c))
def test_bfloat16_within_one_ulp_of_mergekit(method, arguments):
    if method in MAGNITUDE_METHODS:
        # Tied magnitudes, common in bfloat16, would make the kept set ambiguous.
        base, first, second = distinct_bfloat16_family()
    elif method in ("dare_ties", "della"):
        base, first, second = (t.to(torch.bfloat16) for t in separated_family((33, 20)))
    else:
        base, first, second = (t.to(torch.bfloat16) for t in family((33, 20)))
    expected = theirs(method, base, first, second, arguments, dtype=torch.bfloat16, seed=5)
    out = torch.empty_like(base)
    result = ours(method, base, first, second, arguments, out=out, seed=5)
    assert result is out and out.dtype == torch.bfloat16
    assert_close(out, expected, f"{method} {arguments}")


def test_the_distinct_bfloat16_family_is_exact_and_untied():
    base, first, second = distinct_bfloat16_family()
    for model in (first, second):
        delta = model.float() - base.float()
        assert delta.abs().unique().numel() == delta.numel() == 120
        assert torch.equal((base.float() + delta).to(torch.bfloat16), model)


@pytest.mark.parametrize("consensus", ["sum", "count"])
def test_consensus_methods_match_mergekit(consensus):
    from mergekit.merge_methods import merge_tensors
    from mergekit.merge_methods.generalized_task_arithmetic import ConsensusMethod, GeneralizedTaskArithmeticMerge
    from mergekit.sparsify import SparsificationMethod

    # mergekit registers only 'sum'; its engine builds a 'count' TIES just as well.
    oracle = GeneralizedTaskArithmeticMerge(
        consensus_method=ConsensusMethod(consensus), sparsification_method=SparsificationMethod.magnitude,
        default_normalize=True, default_rescale=False, method_name=f"ties_{consensus}", method_pretty_name=None,
        method_reference_url=None,
    )
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(40, 30, generator=generator)
    # Three models, so that the sign count and the weighted sum can disagree.
    models = [base + 0.1 * torch.randn(40, 30, generator=generator) * s for s in (1.0, 2.0, 3.0)]
    weights, density = [0.2, 0.3, 1.5], 0.6
    expected = merge_tensors([base, *models], oracle, parameters={"weight": weights, "density": density},
                             base_index=0, dtype=torch.float32)
    result = merging.ties(base, models, weight=weights, density=density, consensus_method=consensus)
    assert_close(result, expected, f"ties consensus {consensus}")
    other = merging.ties(base, models, weight=weights, density=density,
                         consensus_method="count" if consensus == "sum" else "sum")
    assert (other - result).abs().max() > 1e-3  # the two votes really differ on this data


def test_slerp_falls_back_to_linear_like_mergekit():
    base, first, _ = family((50, 40))
    nearly_parallel = first + 1e-3 * base  # cos > 0.9995
    stats = {}
    result = merging.slerp(first, nearly_parallel, t=0.25, stats=stats)
    assert stats["linear_fallback"] is True
    assert_close(result, mergekit_merge("slerp", [first, nearly_parallel], {"t": 0.25}, base_index=0))
    assert_close(result, 0.75 * first + 0.25 * nearly_parallel)
    orthogonal = torch.randn(50, 40, generator=torch.Generator().manual_seed(9))
    merging.slerp(first, orthogonal, t=0.25, stats=stats)
    assert stats["linear_fallback"] is False and 80 < stats["angle"] < 100


@pytest.mark.parametrize("cos,falls_back", [(0.9996, True), (0.9994, False), (-0.9996, True)])
def test_slerp_falls_back_exactly_above_mergekits_threshold(cos, falls_back):
    a = torch.zeros(100)
    a[0] = 2.0
    b = torch.zeros(100)
    b[0], b[1] = 3.0 * cos, 3.0 * (1 - cos**2) ** 0.5
    stats = {}
    result = merging.slerp(a, b, t=0.4, stats=stats)
    assert stats["linear_fallback"] is falls_back
    assert_close(result, mergekit_merge("slerp", [a, b], {"t": 0.4}, base_index=0))


def test_slerp_of_zero_tensors_is_zero_like_mergekit():
    zeros = torch.zeros(4, 6)
    result = merging.slerp(zeros, zeros, t=0.3)
    assert torch.equal(result, mergekit_merge("slerp", [zeros, zeros], {"t": 0.3}, base_index=0))
    assert torch.equal(result, zeros)


def test_nuslerp_without_a_base_matches_mergekit():
    _, first, second = family((20, 30))
    expected = mergekit_merge("nuslerp", [first, second], {"weight": [0.25, 0.75]})
    assert_close(merging.nuslerp(first, second, weight=[0.25, 0.75]), expected)


def test_a_float32_destination_is_written_in_place_and_returned():
    base, first, second = family((33, 20))
    out = torch.full((33, 20), float("nan"))
    result = merging.ties(base, [first, second], weight=0.5, density=0.5, out=out)
    assert result is out and not out.isnan().any()
    assert torch.equal(out, merging.ties(base, [first, second], weight=0.5, density=0.5))


@pytest.mark.parametrize("ranks", [[1], [500], [1000], [3, 3], [10, 11, 999]])
def test_order_statistics_are_exact(ranks):
    from merging.selection import order_statistics

    values = torch.randn(1000, generator=torch.Generator().manual_seed(1)).abs()
    values[::7] = values[3]  # ties too
    ordered = values.sort().values
    assert order_statistics(values.clone(), ranks) == [ordered[rank - 1].item() for rank in ranks]


@pytest.mark.parametrize("ranks", [[1], [2000], [131072], [262143, 262144], [5, 200000]])
def test_bracketed_order_statistics_are_exact(ranks):
    """Above BRACKETED_FROM values a sample brackets each rank; ties and both ends included."""
    from merging.selection import BRACKETED_FROM, order_statistics

    values = torch.randn(262144, generator=torch.Generator().manual_seed(2)).abs()
    values[::5] = values[11]
    assert values.numel() >= BRACKETED_FROM
    ordered = values.sort().values
    assert order_statistics(values.clone(), ranks) == [ordered[rank - 1].item() for rank in ranks]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_pass_magnitude_bounds_equal_the_whole_selection(dtype):
    from merging.selection import magnitude_bounds, magnitudes, order_statistics

    base, first, _ = (t.to(dtype) for t in family(MULTI_CHUNK))
    ranks = [1000, 200000]
    whole = order_statistics(magnitudes(first, base, torch.empty(base.numel())), ranks)
    assert magnitude_bounds(first, base, ranks) == whole


def test_a_sample_that_misses_falls_back_to_the_whole_selection(monkeypatch):
    """A sample of the smallest magnitudes only brackets the wrong values: the pass says so, and TIES and the
    order statistics still come out exact."""
    from merging import selection

    base, first, second = family(MULTI_CHUNK)
    smallest = (first - base).abs().reshape(-1).argsort()[:5000].numpy()
    monkeypatch.setattr(selection, "_sample_positions", lambda size: smallest)
    assert selection.magnitude_bounds(first, base, [200000]) is None
    values = (first - base).abs().reshape(-1)
    assert selection.order_statistics(values.clone(), [200000]) == [values.sort().values[199999].item()]
    arguments = {"weight": [0.6, 0.4], "density": 0.3}
    expected = theirs("ties", base, first, second, arguments)
    assert_close(ours("ties", base, first, second, arguments), expected, "ties with a missing bracket")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method, parameters", [
    ("ties", {"weight": [0.7, 0.4], "density": 0.3}),
    ("breadcrumbs", {"weight": 0.5, "density": 0.6, "gamma": 0.1}),
    ("breadcrumbs_ties", {"weight": [1.0, 0.5], "density": 0.4}),
    ("task_arithmetic", {"weight": [0.3, 0.9], "lambda_": 1.5}),
])
def test_tensors_no_fine_tune_changed_give_the_base_and_the_same_diagnostics(method, parameters, dtype, monkeypatch):
    from merging import task_vectors

    generator = torch.Generator().manual_seed(7)
    base = torch.randn(64, 48, generator=generator).to(dtype)
    untouched = [base.clone(), base.clone()]
    fast_stats, full_stats = {}, {}
    fast = getattr(merging, method)(base, untouched, stats=fast_stats, **parameters)
    monkeypatch.setattr(task_vectors, "UNTOUCHED_SHORTCUT", ())
    full = getattr(merging, method)(base, untouched, stats=full_stats, **parameters)
    assert torch.equal(fast, base.float()) and torch.equal(full, fast)
    assert fast_stats == full_stats
    theirs = mergekit_merge(method, [base, *untouched], {k.rstrip("_"): v for k, v in parameters.items()}, base_index=0)
    assert torch.equal(theirs.float(), fast)
