"""Whole-model merges against mergekit's, on tiny random GPT-2 and Llama families.

Each config is written as mergekit YAML; mergekit merges the saved checkpoints
from it, and harman merges the same weights in memory from MergeSpec.from_dict of
the same YAML. Every tensor of mergekit's output is compared.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from merging import MergeSpec, merge_model, to_mergekit_yaml
from tests.mergekit_oracle import assert_close, load, run_mergekit_yaml
from tests.tiny_models import saved_family

# {base}, {m1}, {m2} become the checkpoint paths.
SLERP_SCHEDULE = """
merge_method: slerp
base_model: {m1}
models:
  - model: {m1}
  - model: {m2}
parameters:
  t:
    - filter: attn
      value: [0, 0.5, 1]
    - filter: mlp
      value: [1, 0.5, 0]
    - value: 0.3
dtype: float32
"""
TIES = """
merge_method: ties
base_model: {base}
models:
  - model: {m1}
    parameters:
      weight: 0.7
      density: [0.3, 0.9]
  - model: {m2}
    parameters:
      weight: [{{filter: mlp, value: 0.2}}, {{value: 0.5}}]
parameters:
  density: 0.5
  lambda: 1.2
dtype: float32
"""
LINEAR = """
merge_method: linear
models:
  - model: {m1}
    parameters:
      weight: 0.3
  - model: {m2}
    parameters:
      weight: [0.2, 0.9]
dtype: float32
"""
TASK_ARITHMETIC = """
merge_method: task_arithmetic
base_model: {base}
models:
  - model: {m1}
  - model: {m2}
parameters:
  weight: 0.5
  lambda: [{{filter: self_attn, value: [0.5, 1.5]}}, {{value: 1.0}}]
dtype: float32
"""
DARE_TIES = """
merge_method: dare_ties
base_model: {base}
models:
  - model: {m1}
  - model: {m2}
parameters:
  weight: 0.5
  density: 0.3
dtype: float32
"""


_FAMILIES = {}


def family(architecture, tmp_path_factory):
    """Saved once per test session and architecture."""
    if architecture not in _FAMILIES:
        directory = tmp_path_factory.mktemp(architecture)
        (base, first, second), layers = saved_family(architecture, directory)
        paths = {"base": base, "m1": first, "m2": second}
        _FAMILIES[architecture] = directory, paths, {role: load(path) for role, path in paths.items()}, layers
    return _FAMILIES[architecture]


@pytest.fixture(params=["gpt2", "llama"])
def checkpoints(request, tmp_path_factory):
    return family(request.param, tmp_path_factory)


def merge_both(checkpoints, config_template: str, name: str, dest_dtype=torch.float32):
    directory, paths, weights, layers = checkpoints
    config = config_template.format(**{role: str(path) for role, path in paths.items()})
    if dest_dtype != torch.float32:
        config += f"out_dtype: {str(dest_dtype).removeprefix('torch.')}\n"
    expected = run_mergekit_yaml(config, directory / name)
    spec = MergeSpec.from_dict(yaml.safe_load(config))
    dest = {key: torch.empty_like(tensor, dtype=dest_dtype) for key, tensor in weights["base"].items()}
    report = merge_model(dest, weights["base"], [weights["m1"], weights["m2"]], spec, layers)
    assert set(expected) == set(dest)
    return dest, expected, report


@pytest.mark.parametrize("config,name", [(SLERP_SCHEDULE, "slerp"), (TIES, "ties"), (LINEAR, "linear"),
                                         (TASK_ARITHMETIC, "task_arithmetic")])
def test_every_tensor_matches_mergekit_yaml(checkpoints, config, name):
    dest, expected, report = merge_both(checkpoints, config, name)
    for key, tensor in expected.items():
        assert_close(dest[key], tensor, key)
    assert report.merged == len(dest)


def test_the_schedule_really_varies_by_layer_and_filter(checkpoints):
    """The SLERP case above would pass with a constant t if the schedule were ignored
    on both sides; check that the tensors really got different t."""
    dest, _, report = merge_both(checkpoints, SLERP_SCHEDULE, "slerp_check")
    _, _, weights, layers = checkpoints
    first, second = weights["m1"], weights["m2"]
    attention_first = next(k for k in dest if ".0." in k and "attn" in k and k.endswith("weight"))
    attention_last = attention_first.replace(".0.", f".{layers - 1}.")
    assert torch.equal(dest[attention_first], first[attention_first])  # t = 0 at the first layer
    assert torch.equal(dest[attention_last], second[attention_last])  # t = 1 at the last
    mlp_first = next(k for k in dest if ".0." in k and "mlp" in k and k.endswith("weight"))
    assert torch.equal(dest[mlp_first], second[mlp_first])  # the mlp schedule runs the other way
    assert 0 < report.slerp_fallback_share < 1  # norms fall back, random matrices do not
    assert sorted(report.slerp_angle_by_layer) == list(range(layers))


def test_bfloat16_destination_within_one_ulp_of_mergekit(checkpoints):
    dest, expected, _ = merge_both(checkpoints, SLERP_SCHEDULE, "slerp_bf16", dest_dtype=torch.bfloat16)
    for key, tensor in expected.items():
        assert tensor.dtype == dest[key].dtype == torch.bfloat16
        assert_close(dest[key], tensor, key)


def test_dare_ties_agrees_with_mergekit_in_distribution(checkpoints):
    """Random drops cannot match draw for draw across whole models (mergekit's
    order of tensors is its own), so compare what the draws produce."""
    dest, expected, report = merge_both(checkpoints, DARE_TIES, "dare_ties")
    base = checkpoints[2]["base"]
    ours = torch.cat([(dest[k] - base[k]).flatten() for k in base])
    theirs = torch.cat([(expected[k] - base[k]).flatten() for k in base])
    # An element stays at the base only when neither parent keeps it: (1 - 0.3)^2.
    assert abs((ours == 0).float().mean().item() - 0.49) < 0.02
    assert abs((ours == 0).float().mean().item() - (theirs == 0).float().mean().item()) < 0.02
    # Rescaling by 1 / density makes the merged deltas as large as mergekit's.
    assert ours.abs().mean().item() == pytest.approx(theirs.abs().mean().item(), rel=0.05)
    assert abs(report.kept_fraction - 0.3) < 0.01
    # The vote: how often the merged delta takes the sign of the summed task vectors.
    first = torch.cat([(checkpoints[2]["m1"][k] - base[k]).flatten() for k in base])
    second = torch.cat([(checkpoints[2]["m2"][k] - base[k]).flatten() for k in base])
    agreement = [
        (torch.sign(merged[merged != 0]) == torch.sign(first + second)[merged != 0]).float().mean().item()
        for merged in (ours, theirs)
    ]
    assert agreement[0] > 0.7 and abs(agreement[0] - agreement[1]) < 0.02


def test_export_reproduces_the_merge_with_the_mergekit_yaml_cli(tmp_path_factory, tmp_path):
    _, paths, weights, layers = family("llama", tmp_path_factory)
    spec = MergeSpec.from_dict(yaml.safe_load(TIES.format(**{k: str(v) for k, v in paths.items()})))
    config = tmp_path / "config.yml"
    config.write_text(to_mergekit_yaml(spec, str(paths["base"]), [str(paths["m1"]), str(paths["m2"])],
                                       torch.bfloat16))
    out = tmp_path / "merged"
    command = [str(Path(sys.executable).parent / "mergekit-yaml"), str(config), str(out), "--no-copy-tokenizer",
               "--no-lazy-unpickle", "--quiet", "--no-write-model-card"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    expected = load(out)
    dest = {key: torch.empty_like(tensor, dtype=torch.bfloat16) for key, tensor in weights["base"].items()}
    merge_model(dest, weights["base"], [weights["m1"], weights["m2"]], spec, layers)
    assert set(expected) == set(dest)
    for key, tensor in expected.items():
        assert_close(dest[key], tensor, key)
