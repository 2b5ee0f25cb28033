"""A merge spec as a mergekit-yaml config that reproduces the same merge."""

from collections.abc import Sequence

import torch
import yaml

from merging.methods import METHODS
from merging.schedule import anchors
from merging.spec import MergeSpec


def to_mergekit_yaml(
    spec: MergeSpec, base_path: str | None, model_paths: Sequence[str], dtype: torch.dtype | str
) -> str:
    """mergekit-yaml config for `spec` on models saved at these paths.

    Like harman, mergekit then computes in float32 and stores `dtype`. SLERP's t=0
    end is model_paths[0], which mergekit calls the base model. DARE and DELLA draw
    random numbers in mergekit's own order, so their result matches in distribution
    only (the seed goes into a comment, for `mergekit-yaml --random-seed`).
    """
    method = METHODS[spec.method]
    data = spec.to_dict()
    seed = data.pop("seed", None)
    parameters = data.get("parameters", {})
    consensus = [a for key, setting in spec.parameters if key == "consensus_method" for a in anchors(setting)]
    if "count" in consensus:
        raise ValueError(
            f"{spec.method}: mergekit-yaml has no 'count' consensus (its registry only votes by sum); "
            "set consensus_method to 'sum' to export"
        )
    parameters.pop("consensus_method", None)
    if not parameters:
        data.pop("parameters", None)

    config = {"merge_method": method.name}
    if method.first_is_base:
        config["base_model"] = model_paths[0]
    elif method.base == "required" or (method.base == "optional" and base_path is not None):
        if base_path is None:
            raise ValueError(f"{spec.method} needs a base model; give base_path")
        config["base_model"] = base_path
    given = data.get("models", [])
    config["models"] = [
        {"model": path, **(given[i] if i < len(given) and given[i]["parameters"] else {})}
        for i, path in enumerate(model_paths)
    ]
    if "parameters" in data:
        config["parameters"] = data["parameters"]
    config["dtype"] = "float32"
    config["out_dtype"] = _dtype_name(dtype)
    text = yaml.safe_dump(config, sort_keys=False)
    if seed is not None:
        text = f"# harman seed {seed}: mergekit-yaml --random-seed {seed} draws differently\n" + text
    return text


def _dtype_name(dtype: torch.dtype | str) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"mergekit stores float32, float16 or bfloat16, not {dtype!r}")
    return name
