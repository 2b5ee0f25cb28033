"""Whole-model merges in memory: properties, diagnostics, validation, re-merging."""

import math

import pytest
import torch

import merging
from merging import MergeSpec, MergeTarget, merge_model
from tests.tiny_models import STATE_LAYERS as LAYERS, sentinel, state_family as family, state_weights as weights

def untouched(dest: dict) -> bool:
    return all(t.isnan().all() for t in dest.values())


# Properties


def test_slerp_t0_is_the_first_model_and_t1_the_second():
    base, first, second = family()
    for t, expected in ((0.0, first), (1.0, second)):
        dest = sentinel(base)
        merge_model(dest, base, [first, second], MergeSpec("slerp", {"t": t}), LAYERS)
        assert all(torch.equal(dest[k], expected[k]) for k in dest)


def test_linear_weights_one_and_zero_give_the_first_model():
    base, first, second = family()
    dest = sentinel(base)
    merge_model(dest, None, [first, second], MergeSpec("linear", {}, ({"weight": 1.0}, {"weight": 0.0})), LAYERS)
    assert all(torch.equal(dest[k], first[k]) for k in dest)


def test_ties_at_full_density_without_conflicts_is_the_task_vector_average():
    base, first, second = family()
    # Both task vectors positive everywhere: no sign conflicts.
    first = {k: base[k] + (first[k] - base[k]).abs() for k in base}
    second = {k: base[k] + (second[k] - base[k]).abs() for k in base}
    dest = sentinel(base)
    report = merge_model(dest, base, [first, second], MergeSpec("ties", {"weight": 0.5, "density": 1.0}), LAYERS)
    for k in dest:
        average = base[k] + ((first[k] - base[k]) + (second[k] - base[k])) / 2
        torch.testing.assert_close(dest[k], average, rtol=1e-6, atol=1e-6)
    assert report.sign_conflict_fraction == 0 and report.parent_sign_share == (1.0, 1.0)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs",
                                    "breadcrumbs_ties", "della", "della_linear"])
def test_zero_task_vectors_give_the_base(method):
    base = weights(0)
    copies = [{k: v.clone() for k, v in base.items()} for _ in range(2)]
    parameters = {"weight": 0.6, "density": 0.5}
    if method.startswith("della"):
        parameters["epsilon"] = 0.1
    dest = sentinel(base)
    merge_model(dest, base, copies, MergeSpec(method, parameters, seed=1), LAYERS)
    assert all(torch.equal(dest[k], base[k]) for k in dest)


def test_model_stock_and_nuslerp_of_zero_task_vectors_give_the_base():
    base = weights(0)
    copies = [dict(base), dict(base)]
    for spec in (MergeSpec("model_stock"), MergeSpec("nuslerp", {"weight": [0.3, 0.7]})):
        dest = sentinel(base)
        merge_model(dest, base, copies, spec, LAYERS)
        assert all(torch.equal(dest[k], base[k]) for k in dest)


# Schedules and filters


def test_a_gradient_and_filters_give_each_tensor_its_t():
    base, first, second = family()
    spec = MergeSpec("slerp", {"t": [{"filter": "mlp", "value": [0.0, 1.0]}, {"value": [0.2, 0.6]}]})
    dest = sentinel(base)
    merge_model(dest, base, [first, second], spec, LAYERS)
    expected_t = {
        "model.embed_tokens.weight": 0.2,  # outside the layers: the first anchor
        "model.norm.weight": 0.2,
        "model.layers.0.mlp.up_proj.weight": 0.0,
        "model.layers.1.mlp.up_proj.weight": 0.5,
        "model.layers.2.mlp.up_proj.weight": 1.0,
        "model.layers.1.self_attn.q_proj.weight": 0.4,  # the unfiltered fallback
        "model.layers.2.input_layernorm.weight": 0.6,
    }
    for name, t in expected_t.items():
        assert torch.equal(dest[name], merging.slerp(first[name], second[name], t=t)), name


def test_a_model_setting_overrides_the_global_one_and_defers_when_no_filter_matches():
    base, first, second = family()
    spec = MergeSpec("linear", {"weight": 1.0}, ({"weight": [{"filter": "mlp", "value": 3.0}]}, {}))
    dest = sentinel(base)
    merge_model(dest, None, [first, second], spec, LAYERS)
    mlp, attention = "model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(dest[mlp], (3 * first[mlp] + second[mlp]) / 4)
    torch.testing.assert_close(dest[attention], (first[attention] + second[attention]) / 2)


# Diagnostics


def test_linear_reports_distances_to_the_parents():
    base, first, second = family()
    dest = sentinel(base)
    report = merge_model(dest, None, [first, second], MergeSpec("linear", {}, ({"weight": 1}, {"weight": 3})),
                         LAYERS)
    for parent, distance in zip((first, second), report.distance_to_parents):
        expected = math.sqrt(sum(((dest[k] - parent[k]) ** 2).sum().item() for k in dest))
        expected /= math.sqrt(sum((parent[k] ** 2).sum().item() for k in dest))
        assert distance == pytest.approx(expected, rel=1e-4)
    assert report.distance_to_parents[0] == pytest.approx(3 * report.distance_to_parents[1], rel=0.2)


def test_slerp_reports_angles_and_fallbacks():
    base, first, second = family()
    second = dict(second, **{"model.norm.weight": first["model.norm.weight"] * 1.0001})  # parallel: falls back
    dest = sentinel(base)
    report = merge_model(dest, base, [first, second], MergeSpec("slerp", {"t": 0.5}), LAYERS)
    assert report.tensors["model.norm.weight"]["linear_fallback"] is True
    assert report.slerp_fallbacks == sum(s["linear_fallback"] for s in report.tensors.values()) >= 1
    assert report.slerp_fallback_share == report.slerp_fallbacks / len(dest)
    name = "model.layers.1.mlp.up_proj.weight"
    cos = torch.nn.functional.cosine_similarity(first[name].flatten(), second[name].flatten(), dim=0).item()
    assert report.tensors[name]["angle"] == pytest.approx(math.degrees(math.acos(cos)), rel=1e-4)
    layer = [s["angle"] for k, s in report.tensors.items() if ".1." in k]
    assert report.slerp_angle_by_layer[1] == pytest.approx(sum(layer) / len(layer))


def test_ties_reports_kept_fraction_sign_conflicts_and_the_dominant_parent():
    base, first, second = family()
    # Model 2's task vector is three times larger: it wins every conflict.
    second = {k: base[k] + 3 * (second[k] - base[k]) for k in base}
    dest = sentinel(base)
    report = merge_model(dest, base, [first, second], MergeSpec("ties", {"weight": 0.5, "density": 0.4}), LAYERS)
    numel = sum(t.numel() for t in base.values())
    kept = sum(2 * max(1, int(0.4 * t.numel())) for t in base.values())
    assert report.kept_fraction == pytest.approx(kept / (2 * numel))
    # Count directly: the kept task vectors, their conflicts and who wins them.
    voted = conflicts = 0
    agreed = [0, 0]
    for k in base:
        deltas = [first[k] - base[k], second[k] - base[k]]
        keeps = [d * (d.abs() >= d.abs().flatten().kthvalue(d.numel() - max(1, int(0.4 * d.numel())) + 1)
                      .values) for d in deltas]
        elected = torch.where(0.5 * keeps[0] + 0.5 * keeps[1] >= 0, 1.0, -1.0)
        voted += ((keeps[0] != 0) | (keeps[1] != 0)).sum().item()
        conflicts += (keeps[0] * keeps[1] < 0).sum().item()
        agreed = [a + (torch.sign(kept) == elected).sum().item() for a, kept in zip(agreed, keeps)]
    assert report.sign_conflict_fraction == pytest.approx(conflicts / voted)
    assert report.parent_sign_share == pytest.approx((agreed[0] / voted, agreed[1] / voted))
    assert report.parent_sign_share[1] > report.parent_sign_share[0]


# Random methods


def test_dare_keeps_the_density_rescales_the_l1_norm_and_is_reproducible():
    base = {"w": torch.zeros(400, 500)}
    model = {"w": torch.randn(400, 500, generator=torch.Generator().manual_seed(0))}
    spec = MergeSpec("dare_linear", {"weight": 1.0, "density": 0.3}, seed=42)
    dest, again = {"w": torch.empty(400, 500)}, {"w": torch.empty(400, 500)}
    report = merge_model(dest, base, [model], spec, 1)
    merge_model(again, base, [model], spec, 1)
    assert torch.equal(dest["w"], again["w"])
    assert abs(report.kept_fraction - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 200_000)
    assert (dest["w"] != 0).float().mean().item() == pytest.approx(report.kept_fraction)
    assert dest["w"].abs().sum().item() == pytest.approx(model["w"].abs().sum().item(), rel=1e-5)
    merge_model(again, base, [model], MergeSpec("dare_linear", {"weight": 1.0, "density": 0.3}, seed=43), 1)
    assert not torch.equal(dest["w"], again["w"])


def test_a_tensors_random_draws_do_not_depend_on_the_other_tensors():
    base, first, second = family()
    spec = MergeSpec("della", {"weight": 0.5, "density": 0.5, "epsilon": 0.2}, seed=3)
    dest = sentinel(base)
    merge_model(dest, base, [first, second], spec, LAYERS)
    name = "model.layers.1.mlp.up_proj.weight"
    alone = {name: torch.empty_like(base[name])}
    merge_model(alone, base, [first, second], spec, LAYERS)
    assert torch.equal(alone[name], dest[name])


def test_della_keep_probability_rises_with_magnitude():
    base = torch.zeros(200, 1000)
    ramp = torch.linspace(0.001, 1, 1000).expand(200, 1000).contiguous()  # magnitude rank = column
    result = merging.della_linear(base, [ramp], weight=1.0, density=0.5, epsilon=0.3, rescale=False, seed=0)
    kept = (result != 0).float().mean(dim=0)
    assert kept[:100].mean().item() == pytest.approx(0.2 + 0.03, abs=0.03)  # 0.5 - 0.3 at the smallest
    assert kept[-100:].mean().item() == pytest.approx(0.8 - 0.03, abs=0.03)  # 0.5 + 0.3 at the largest


# Validation


def test_a_shape_mismatch_names_the_tensor_and_writes_nothing():
    base, first, second = family()
    name = "model.layers.2.mlp.up_proj.weight"
    second = dict(second, **{name: torch.zeros(12, 9)})
    dest = sentinel(base)
    with pytest.raises(ValueError, match=r"model\.layers\.2\.mlp\.up_proj\.weight: shape mismatch.*\(12, 9\)"):
        merge_model(dest, base, [first, second], MergeSpec("ties", {"weight": 0.5, "density": 0.5}), LAYERS)
    assert untouched(dest)


def test_weights_summing_to_zero_under_normalize_fail_for_the_tensors_they_reach():
    base, first, second = family()
    # Only the mlp tensors see weights that cancel; the error is raised before any tensor is written.
    spec = MergeSpec("linear", {}, ({"weight": 1.0}, {"weight": [{"filter": "mlp", "value": -1.0}, {"value": 1.0}]}))
    dest = sentinel(base)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.up_proj\.weight: weights \[1\.0, -1\.0\] sum to 0"):
        merge_model(dest, None, [first, second], spec, LAYERS)
    assert untouched(dest)


@pytest.mark.parametrize("call,message", [
    (lambda b, x, y: merging.ties(b, [x, y], weight=0.5, density=1.5, name="w"), r"w: density .* 1\.5"),
    (lambda b, x, y: merging.ties(b, [x, y], weight=0.5, density=0.0, name="w"), r"w: density .* 0\.0"),
    (lambda b, x, y: merging.slerp(x, y, t=math.nan, name="w"), r"w: t must be finite, got nan"),
    (lambda b, x, y: merging.linear([x, y], weight=[1.0, math.inf], name="w"), r"w: weight\[1\] must be finite"),
    (lambda b, x, y: merging.ties(None, [x, y], weight=0.5, name="w"), r"w: ties .* base model"),
    (lambda b, x, y: merging.model_stock(None, [x, y], name="w"), r"w: model_stock needs a base"),
    (lambda b, x, y: merging.della(b, [x, y], weight=1, density=0.9, epsilon=0.2, name="w"), r"w: epsilon 0\.2"),
    (lambda b, x, y: merging.linear([x, y[:2]], weight=1.0, name="w"), r"w: shape mismatch"),
])
def test_bad_input_is_a_value_error_naming_the_tensor_and_value(call, message):
    base, first, second = (t["model.layers.0.mlp.up_proj.weight"] for t in family())
    with pytest.raises(ValueError, match=message):
        call(base, first, second)


def test_a_missing_base_or_tensor_is_named():
    base, first, second = family()
    with pytest.raises(ValueError, match="ties merges relative to a base model"):
        merge_model(sentinel(base), None, [first, second], MergeSpec("ties", {"weight": 1.0}), LAYERS)
    del second["model.norm.weight"]
    with pytest.raises(ValueError, match=r"model\.norm\.weight: missing from model 2"):
        merge_model(sentinel(base), base, [first, second], MergeSpec("ties", {"weight": 1.0}), LAYERS)


def test_an_out_of_range_layer_index_is_named():
    base, first, second = family()
    with pytest.raises(ValueError, match=r"layers\.2\..* layer index 2 is beyond num_layers=2"):
        merge_model(sentinel(base), base, [first, second], MergeSpec("slerp", {"t": 0.5}), 2)


# Re-merging


def test_a_merge_target_does_no_work_for_an_unchanged_spec():
    base, first, second = family()
    dest = sentinel(base)
    target = MergeTarget(dest, base, [first, second], LAYERS)
    spec = MergeSpec("slerp", {"t": 0.3})
    report = target.merge(spec)
    assert report.merged == len(dest)
    for tensor in dest.values():
        tensor.fill_(math.nan)
    assert target.merge(MergeSpec.from_dict(spec.to_dict())) is None
    assert untouched(dest)


def test_a_merge_target_rewrites_only_the_tensors_whose_parameters_changed():
    base, first, second = family()
    dest = sentinel(base)
    target = MergeTarget(dest, base, [first, second], LAYERS)
    target.merge(MergeSpec("slerp", {"t": [{"filter": "mlp", "value": 0.1}, {"value": 0.5}]}))
    before = {k: v.clone() for k, v in dest.items()}
    report = target.merge(MergeSpec("slerp", {"t": [{"filter": "mlp", "value": 0.9}, {"value": 0.5}]}))
    changed = {k for k in dest if not torch.equal(dest[k], before[k])}
    assert changed == {k for k in dest if "mlp" in k} and report.merged == len(changed) == LAYERS
    assert len(report.tensors) == len(dest)  # diagnostics cover every tensor, old and new
    assert torch.equal(dest["model.layers.0.mlp.up_proj.weight"],
                       merging.slerp(first["model.layers.0.mlp.up_proj.weight"],
                                     second["model.layers.0.mlp.up_proj.weight"], t=0.9))


def test_a_merge_target_compares_its_parents_with_the_base_once(monkeypatch):
    """As for a LoRA pair: tensors no fine-tune changed give the base, and a re-merge does not read the parents
    again to find them (comparing the default pair's parents with the base read 2.7 GB on every TIES release)."""
    from merging import task_vectors

    base, first, second = family()
    same = [k for k in base if "norm" in k]
    for k in same:
        first[k], second[k] = base[k].clone(), base[k].clone()
    dest = sentinel(base)
    target = MergeTarget(dest, base, [first, second], LAYERS)
    expected = {}
    for density in (0.5, 0.4):
        expected[density] = sentinel(base)
        merge_model(expected[density], base, [first, second], MergeSpec("ties", {"weight": 0.5, "density": density}),
                    LAYERS)
    compared = []
    real = task_vectors.equal_to_base
    monkeypatch.setattr(task_vectors, "equal_to_base", lambda b, ts: compared.append(b) or real(b, ts))
    for density in (0.5, 0.4):
        target.merge(MergeSpec("ties", {"weight": 0.5, "density": density}))
        assert all(torch.equal(dest[k], base[k]) for k in same)
        assert all(torch.equal(dest[k], expected[density][k]) for k in dest)
    assert len(compared) == len(dest)  # once per tensor, in the first merge


def test_a_failed_merge_leaves_a_merge_target_as_it_was():
    base, first, second = family()
    dest = sentinel(base)
    target = MergeTarget(dest, base, [first, second], LAYERS)
    good = MergeSpec("linear", {"weight": 1.0})
    target.merge(good)
    before = {k: v.clone() for k, v in dest.items()}
    with pytest.raises(ValueError):
        target.merge(MergeSpec("linear", {}, ({"weight": 1.0}, {"weight": -1.0})))
    assert all(torch.equal(dest[k], before[k]) for k in dest)
    assert target.merge(good) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["linear", "slerp", "ties", "dare_ties", "breadcrumbs", "della", "model_stock"])
def test_cuda_tensors_merge_like_cpu_tensors(method):
    base, first, second = family()
    parameters = {"t": 0.3} if method == "slerp" else {} if method == "model_stock" else {"weight": 0.5}
    if method in ("ties", "dare_ties", "breadcrumbs", "della"):
        parameters["density"] = 0.5
    spec = MergeSpec(method, parameters)
    on_cpu = sentinel(base)
    merge_model(on_cpu, base, [first, second], spec, LAYERS)
    cuda = lambda d: {k: v.cuda() for k, v in d.items()}  # noqa: E731
    on_gpu = cuda(sentinel(base))
    merge_model(on_gpu, cuda(base), [cuda(first), cuda(second)], spec, LAYERS)
    for k in on_cpu:
        if method not in ("dare_ties", "della"):  # their draws come from another generator
            torch.testing.assert_close(on_gpu[k].cpu(), on_cpu[k], rtol=1e-5, atol=1e-6)
        assert not on_gpu[k].isnan().any()


def test_merging_into_parameters_that_require_grad_works_in_place():
    base, first, second = family()
    dest = {k: torch.nn.Parameter(torch.zeros_like(v)) for k, v in base.items()}
    views = {k: p.data for k, p in dest.items()}
    merge_model(dest, base, [first, second], MergeSpec("ties", {"weight": 0.5, "density": 0.5}), LAYERS)
    assert all(not torch.equal(views[k], torch.zeros_like(views[k])) for k in dest)


def test_whole_tensor_scratch_is_reused_grown_and_never_shared():
    from merging.chunks import whole_scratch

    cpu = torch.device("cpu")
    with whole_scratch(1000, cpu) as first:
        pointer = first.data_ptr()
        with whole_scratch(1000, cpu) as nested:  # held: a second merge gets its own buffer
            assert nested.data_ptr() != pointer
    with whole_scratch(500, cpu) as again:
        assert again.data_ptr() == pointer and again.numel() == 500
    with whole_scratch(4000, cpu) as grown:
        assert grown.numel() == 4000
