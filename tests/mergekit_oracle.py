"""mergekit as the oracle for harman's merge engine (tests only).

mergekit's tensor functions and its whole-model merge run on the same inputs as harman's (the tiny
families saved for it are in tests/tiny_models.py); comparisons that report how far apart two results are.
"""

import math
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file


def load(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / "model.safetensors"))


def run_mergekit_yaml(config: str, out: Path) -> dict[str, torch.Tensor]:
    """mergekit's whole-model merge of a YAML config, in process (as mergekit-yaml does)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    options = MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False, lazy_unpickle=False)
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(config)), str(out), options=options)
    return load(out)


def mergekit_merge(method: str, tensors, parameters: dict, base_index: int | None = None, dtype=torch.float32):
    """mergekit's own merge of one tensor: inputs cast to float32, result to `dtype`."""
    from mergekit.merge_methods import merge_tensors

    return merge_tensors(list(tensors), method, parameters=parameters, base_index=base_index,
                         dtype=torch.float32, out_dtype=dtype)


def relative_error(result: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest elementwise difference over the largest magnitude expected."""
    scale = expected.float().abs().max().item()
    return (result.float() - expected.float()).abs().max().item() / (scale or 1.0)


def bfloat16_ulps(result: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest difference in units in the last place of bfloat16 (8 significant bits)."""
    difference = (result.float() - expected.float()).abs()
    magnitude = torch.maximum(result.float().abs(), expected.float().abs())
    exponent = torch.floor(torch.log2(magnitude.clamp(min=2.0**-126)))
    return (difference / torch.exp2(exponent - 7)).max().item()


def assert_close(result, expected, name: str = "tensor", tolerance: float = 1e-5) -> None:
    if expected.dtype == torch.bfloat16:
        ulps = bfloat16_ulps(result, expected)
        assert ulps <= 1, f"{name}: {ulps} bfloat16 ulps from mergekit"
    else:
        error = relative_error(result, expected)
        assert error <= tolerance and not math.isnan(error), f"{name}: relative error {error:.3g} from mergekit"
