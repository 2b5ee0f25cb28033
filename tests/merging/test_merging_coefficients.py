"""Merge-free merges: the coefficients times the inputs are the materialised merge, tensor by tensor, diagnostics
included; merges that are not weighted sums are refused."""

import pytest
import torch

from merging import MergeSpec, merge_model
from merging.coefficients import ParentFigures, coefficients, materialise, merge_free
from tests.merge_specs import SPECS
from tests.tiny_models import STATE_LAYERS as LAYERS, sentinel, state_family as family

def near_parallel():
    """Model 2 is Model 1 plus a hair in the attention tensors: SLERP falls back to linear there, not elsewhere."""
    base, first, second = family()
    for name in second:
        if "attn" in name:
            second[name] = first[name] + 1e-4 * torch.randn(first[name].shape, generator=torch.Generator().manual_seed(3))
    return base, first, second


@pytest.mark.parametrize("parents", [family, near_parallel], ids=["family", "near_parallel"])
@pytest.mark.parametrize("label", list(SPECS))
def test_coefficients_times_the_inputs_are_the_materialised_merge(label, parents):
    base, first, second = parents()
    spec = MergeSpec.from_dict(SPECS[label])
    assert merge_free(spec)
    found = coefficients(spec, list(base), LAYERS, ParentFigures(base, first, second))
    merged, mixed = sentinel(base), sentinel(base)
    report = merge_model(merged, base, [first, second], spec, LAYERS)
    materialise(found.table, mixed, [base, first, second])
    for name in base:
        assert torch.allclose(mixed[name], merged[name], rtol=1e-5, atol=1e-6), name
    # The diagnostics come from the same figures, without the merge.
    for field in ("slerp_fallbacks", "slerp_fallback_share", "slerp_angle_by_layer", "distance_to_parents"):
        assert getattr(found.report, field) == pytest.approx(getattr(report, field)), field


def test_slerp_falls_back_per_tensor_as_the_merge_does():
    base, first, second = near_parallel()
    found = coefficients(MergeSpec("slerp", {"t": 0.3}), list(base), LAYERS, ParentFigures(base, first, second))
    for name, (c_base, c1, c2) in found.table.items():
        assert c_base == 0
        if "attn" in name:
            assert (c1, c2) == (pytest.approx(0.7), pytest.approx(0.3))  # linear
        else:
            assert c1 + c2 > 1.0001  # spherical: the chord is shorter than the arc
    assert 0 < found.report.slerp_fallback_share < 1


def test_parent_figures_are_measured_once():
    base, first, second = family()
    figures = ParentFigures(base, first, second)
    names = list(base)
    coefficients(MergeSpec("slerp", {"t": 0.3}), names, LAYERS, figures)
    first.clear()  # nothing reads the weights a second time
    again = coefficients(MergeSpec("slerp", {"t": 0.8}), names, LAYERS, figures)
    assert len(again.table) == len(names)


@pytest.mark.parametrize("data", [
    {"merge_method": "ties", "models": [{"parameters": {"weight": 1, "density": 0.5}}] * 2},
    {"merge_method": "dare_linear", "models": [{"parameters": {"weight": 1, "density": 0.5}}] * 2},
    {"merge_method": "model_stock", "parameters": {"filter_wise": True}, "models": [{}, {}]},
    {"merge_method": "nuslerp", "parameters": {"nuslerp_flatten": False},
     "models": [{"parameters": {"weight": 1}}] * 2},
])
def test_merges_that_are_not_weighted_sums_are_refused(data):
    spec = MergeSpec.from_dict(data)
    assert not merge_free(spec)
    base, first, second = family()
    with pytest.raises(ValueError, match="not a weighted sum"):
        coefficients(spec, list(base), LAYERS, ParentFigures(base, first, second))


def test_a_bad_parameter_names_the_tensor():
    base, first, second = family()
    spec = MergeSpec.from_dict({"merge_method": "linear",
                                "models": [{"parameters": {"weight": 0.0}}, {"parameters": {"weight": 0.0}}]})
    with pytest.raises(ValueError, match="model.embed_tokens.weight"):
        coefficients(spec, list(base), LAYERS, ParentFigures(base, first, second))
