"""Merge specs, schedules, the YAML export, and what importing the engine imports."""

import subprocess
import sys

import pytest
import torch
import yaml

from merging import MergeSpec, to_mergekit_yaml
from merging.schedule import Conditional, evaluate, layer_index, layer_position

SCHEDULED = {
    "merge_method": "ties",
    "parameters": {"lambda": 1.1, "density": [{"filter": "mlp", "value": [0.2, 0.8]}, {"value": 0.5}]},
    "models": [{"model": "ignored/path", "parameters": {"weight": 0.7}}, {"parameters": {"weight": [0.1, 0.3]}}],
    "seed": 4,
}


def test_a_spec_round_trips_through_mergekits_yaml_structure():
    spec = MergeSpec.from_dict(SCHEDULED)
    data = spec.to_dict()
    assert data == {
        "merge_method": "ties",
        "parameters": {"density": [{"filter": "mlp", "value": [0.2, 0.8]}, {"value": 0.5}], "lambda": 1.1},
        "models": [{"parameters": {"weight": 0.7}}, {"parameters": {"weight": [0.1, 0.3]}}],
        "seed": 4,
    }
    assert MergeSpec.from_dict(yaml.safe_load(yaml.safe_dump(data))) == spec


def test_equal_specs_are_equal_and_hash_alike_however_they_are_written():
    spec = MergeSpec.from_dict(SCHEDULED)
    same = MergeSpec(
        "ties",
        (("density", (Conditional((0.2, 0.8), "mlp"), Conditional(0.5))), ("lambda", 1.1)),
        ((("weight", 0.7),), {"weight": [0.1, 0.3]}),
        seed=4,
    )
    assert same == spec and hash(same) == hash(spec)
    assert MergeSpec.from_dict({**SCHEDULED, "seed": 5}) != spec
    assert len({spec, same, MergeSpec("slerp", {"t": 0.5})}) == 2


@pytest.mark.parametrize("data,message", [
    ({"merge_method": "soup"}, "unknown merge_method 'soup'"),
    ({"merge_method": "slerp"}, "slerp needs 't'"),
    ({"merge_method": "slerp", "parameters": {"t": float("nan")}}, "t must be a finite number, got nan"),
    ({"merge_method": "slerp", "parameters": {"tt": 0.5}}, "slerp has no parameter 'tt'"),
    ({"merge_method": "ties", "parameters": {"weight": 1, "density": [0.5, 1.2]}},
     r"density must lie in \(0, 1\], got 1.2"),
    ({"merge_method": "ties", "parameters": {"weight": 1, "normalize": "yes"}}, "normalize must be true or false"),
    ({"merge_method": "ties", "models": [{"parameters": {"weight": 1, "lambda": 2}}]},
     "'lambda' is shared by all models"),
    ({"merge_method": "ties", "parameters": {"weight": 1, "consensus_method": "max"}}, "consensus_method must be"),
    ({"merge_method": "ties", "parameters": {"weight": [{"filters": "mlp", "value": 1}]}}, "has 'filter' and 'value'"),
    ({"merge_method": "dare_ties", "parameters": {"weight": 1}, "seed": 1.5}, "seed must be an integer"),
    ({"merge_method": "slerp", "parameters": {"t": 0.5}, "models": [{}, {}, {}]}, "slerp merges 2 models"),
])
def test_invalid_specs_say_what_is_wrong(data, message):
    with pytest.raises(ValueError, match=message):
        MergeSpec.from_dict(data)


@pytest.mark.parametrize("name,index", [
    ("transformer.h.7.attn.c_attn.weight", 7),
    ("model.layers.12.mlp.up_proj.weight", 12),
    ("encoder.block.3.layer.0.weight", 3),
    ("model.embed_tokens.weight", None),
    ("lm_head.weight", None),
])
def test_the_layer_index_comes_from_the_name(name, index):
    assert layer_index(name) == index


def test_layer_positions_follow_mergekit():
    assert [layer_position(f"h.{i}.w", 5) for i in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert layer_position("wte.weight", 5) == 0.0
    assert layer_position("h.0.w", 1) == 1.0


def test_settings_evaluate_like_mergekits():
    assert evaluate(0.3, "x", 0.7) == 0.3
    assert evaluate((0.0, 1.0, 0.5), "x", 0.75) == pytest.approx(0.75)  # between anchors 1 and 2
    assert evaluate((0.0, 1.0, 0.5), "x", 1.0) == 0.5
    assert evaluate((True, False), "x", 0.4) is True  # flags pick, not interpolate
    conditionals = (Conditional(0.1, "mlp"), Conditional((0.2, 0.4), "attn"), Conditional(0.9))
    assert evaluate(conditionals, "h.0.mlp.c_fc.weight", 0.5) == 0.1
    assert evaluate(conditionals, "h.0.attn.c_attn.weight", 0.5) == pytest.approx(0.3)
    assert evaluate(conditionals, "h.0.ln_1.weight", 0.5) == 0.9
    assert evaluate((Conditional(0.1, "mlp"),), "h.0.ln_1.weight", 0.5) is None  # defers to the next setting
    assert evaluate((Conditional(0.2, "*"),), "anything", 0.0) == 0.2


def test_the_export_names_models_and_dtypes_as_mergekit_expects():
    text = to_mergekit_yaml(MergeSpec.from_dict(SCHEDULED), "b", ["m1", "m2"], torch.bfloat16)
    assert text.startswith("# harman seed 4: mergekit-yaml --random-seed 4")
    config = yaml.safe_load(text)
    assert config == {
        "merge_method": "ties",
        "base_model": "b",
        "models": [
            {"model": "m1", "parameters": {"weight": 0.7}},
            {"model": "m2", "parameters": {"weight": [0.1, 0.3]}},
        ],
        "parameters": {"density": [{"filter": "mlp", "value": [0.2, 0.8]}, {"value": 0.5}], "lambda": 1.1},
        "dtype": "float32",
        "out_dtype": "bfloat16",
    }
    slerp = yaml.safe_load(to_mergekit_yaml(MergeSpec("slerp", {"t": 0.2}), "b", ["m1", "m2"], "float32"))
    assert slerp["base_model"] == "m1" and [m["model"] for m in slerp["models"]] == ["m1", "m2"]
    linear = yaml.safe_load(to_mergekit_yaml(MergeSpec("linear", {"weight": 1.0}), "b", ["m1", "m2"], "float32"))
    assert "base_model" not in linear


def test_the_export_refuses_what_mergekit_yaml_cannot_do():
    spec = MergeSpec("ties", {"weight": 1.0, "consensus_method": "count"})
    with pytest.raises(ValueError, match="no 'count' consensus"):
        to_mergekit_yaml(spec, "b", ["m1", "m2"], "float32")
    with pytest.raises(ValueError, match="not torch.int8"):
        to_mergekit_yaml(MergeSpec("slerp", {"t": 0.5}), "b", ["m1", "m2"], torch.int8)


def test_importing_the_engine_imports_neither_gradio_transformers_nor_mergekit():
    code = ("import sys, merging; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'gradio', 'transformers', 'mergekit'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
