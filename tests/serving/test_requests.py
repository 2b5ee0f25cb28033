"""Server-side validation of control values: the API is public, so nothing trusts the browser's limits."""

import math

import pytest

from models.presets import GenerationDefaults
from serving.requests import Controls, RequestError, generation_settings, merge_specs, parse_schedule


@pytest.mark.parametrize("changes, message", [
    ({"soup_w1": 0.0, "soup_w2": 0.0}, "soup weights: w1 and w2 are both 0"),
    ({"slerp_t": 1.5}, r"SLERP t: 1.5 is outside the allowed range \[0, 1\]"),
    ({"slerp_t": math.inf}, "SLERP t: inf is not a finite number"),
    ({"soup_w2": "abc"}, "soup w2: expected a number, got 'abc'"),
    ({"ties_density": 0.0}, r"TIES density: 0 is outside the allowed range \(0, 1\]"),
    ({"ties_density2": 1.2}, r"TIES density \(Model 2\): 1.2 is outside"),
    ({"ties_w1": 0.0, "ties_w2": 0.0}, "TIES weights: both are 0"),
    ({"ties_lambda": math.nan}, "lambda: nan is not a finite number"),
    ({"slerp_mlp_schedule": "[0, 2]"}, r"SLERP MLP schedule\[1\]: 2 is outside"),
    ({"extra_method": "passthrough"}, "extra method: 'passthrough' is not one of"),
])
def test_bad_merge_controls_name_the_control_and_the_range(changes, message):
    with pytest.raises(RequestError, match=message):
        merge_specs(Controls(question="q", **changes))


@pytest.mark.parametrize("changes, message", [
    ({"max_new_tokens": 0}, r"max new tokens: 0 is outside the allowed range \[1, 128\]"),
    ({"max_new_tokens": 12.5}, "max new tokens: expected a whole number"),
    ({"temperature": 0.0}, r"temperature: 0 is outside the allowed range \(0, 2\]"),
    ({"top_p": math.nan}, "top-p: nan is not a finite number"),
    ({"seed": -1}, "seed: -1 is outside"),
])
def test_bad_generation_controls(changes, message):
    with pytest.raises(RequestError, match=message):
        generation_settings(Controls(question="q", **changes), GenerationDefaults(max_new_tokens_cap=128))


def test_schedule_becomes_mergekit_filtered_gradient():
    specs = merge_specs(Controls(question="q", slerp_t=0.25, slerp_attn_schedule="[0, 0.5, 1]",
                                 slerp_mlp_schedule="[1, 0]"))
    t = specs["slerp"].to_dict()["parameters"]["t"]
    assert t == [{"filter": "attn", "value": [0, 0.5, 1]}, {"filter": "mlp", "value": [1, 0]}, {"value": 0.25}]
    assert parse_schedule("x", "  ") is None and parse_schedule("x", "0.3") == [0.3]


def test_soup_and_ties_specs_carry_the_controls():
    specs = merge_specs(Controls(question="q", soup_w1=0.2, soup_w2=0.6, ties_density=0.4, ties_w1=1.0,
                                 ties_w2=0.5, ties_lambda=0.9))
    soup = specs["soup"].to_dict()
    assert soup["merge_method"] == "linear"
    assert [m["parameters"]["weight"] for m in soup["models"]] == [0.2, 0.6]
    ties = specs["ties"].to_dict()
    assert ties["parameters"]["lambda"] == 0.9
    assert [m["parameters"] for m in ties["models"]] == [{"density": 0.4, "weight": 1.0},
                                                         {"density": 0.4, "weight": 0.5}]
    assert "extra" not in specs
    assert merge_specs(Controls(question="q", extra_method="dare_ties"))["extra"].method == "dare_ties"


@pytest.mark.parametrize("method", ["della", "della_linear"])
def test_every_extra_density_the_slider_allows_gives_a_della_merge(method):
    """The page has no epsilon control: it follows from the density, so no density fails with an epsilon error."""
    from merging import merge_model
    from tests.tiny_models import STATE_LAYERS as LAYERS, sentinel, state_family as family

    base, first, second = family()
    for step in range(1, 21):  # the extra-density slider: 0.05 to 1 in steps of 0.05
        density = round(0.05 * step, 2)
        spec = merge_specs(Controls(question="q", extra_method=method, extra_density=density))["extra"]
        merge_model(sentinel(base), base, [first, second], spec, LAYERS)


def ties_densities_of(**changes) -> list[float]:
    return [m["parameters"]["density"] for m in merge_specs(Controls(question="q", **changes))["ties"]
            .to_dict()["models"]]


def test_the_ties_density_alone_governs_both_models_unless_per_model_ones_are_given():
    assert Controls(question="q").ties_density1 is None  # the per-model densities follow unless given
    assert ties_densities_of(ties_density=0.35) == [0.35, 0.35]
    assert ties_densities_of(ties_density=0.35, ties_density2=0.8) == [0.35, 0.8]
    # 0, which no density can be, follows too: the page's number box sends it when left alone.
    assert ties_densities_of(ties_density=0.35, ties_density1=0, ties_density2=0.0) == [0.35, 0.35]
    assert ties_densities_of(ties_density=0.35, ties_density1=0, ties_density2=0.8) == [0.35, 0.8]
    assert ties_densities_of(ties_density1=0.2, ties_density2=0.8) == [0.2, 0.8]  # the density at its default
    assert ties_densities_of(ties_density=0.2, ties_density1=0.2, ties_density2=0.8) == [0.2, 0.8]


def test_a_ties_density_that_neither_per_model_density_has_is_refused_in_both_languages():
    with pytest.raises(RequestError) as refused:
        merge_specs(Controls(question="q", ties_density=0.35, ties_density1=0.2, ties_density2=0.8))
    assert refused.value.text("en") == (
        "the TIES density is 0.35 but the two models' own densities are 0.2 and 0.8: which one holds is unclear. "
        "Set one per-model density to 0 (it then follows the TIES density) or the TIES density back to its default "
        "(0.5)")
    assert refused.value.text("tr").startswith("TIES yoğunluğu 0.35, iki modelin kendi yoğunlukları ise 0.2 ve 0.8")


def test_moving_the_ties_density_leaves_the_per_model_densities_following_it():
    from serving.controls import controls_at

    moved = controls_at(Controls(question="q", ties_density1=0.2, ties_density2=0.8), "ties_density", 0.3)
    assert (moved.ties_density, moved.ties_density1, moved.ties_density2) == (0.3, None, None)
    assert ties_densities_of(ties_density=moved.ties_density) == [0.3, 0.3]
