"""Input checks shared by the merge methods. Each error names the tensor, the
parameter and the offending value, and is raised before anything is written."""

import math
from collections.abc import Sequence

import torch


def finite(name: str, parameter: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: {parameter} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: {parameter} must be finite, got {value!r}")
    return float(value)


def per_model(name: str, parameter: str, value, count: int) -> list[float]:
    """One finite number per model, from a list or one scalar for all."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f"{name}: {parameter} has {len(value)} values {list(value)!r} "
                f"for {count} models; give one per model or a single number"
            )
        return [finite(name, f"{parameter}[{i}]", v) for i, v in enumerate(value)]
    return [finite(name, parameter, value)] * count


def densities(name: str, value, count: int) -> list[float]:
    values = per_model(name, "density", value, count)
    for i, density in enumerate(values):
        if not 0 < density <= 1:
            raise ValueError(
                f"{name}: density for model {i + 1} is {density!r}; it must lie in (0, 1]"
            )
    return values


def weights_total(name: str, weights: Sequence[float]) -> float:
    """The sum that normalisation divides by; zero would divide by zero."""
    total = sum(weights)
    if abs(total) < 1e-8:
        raise ValueError(
            f"{name}: weights {list(weights)!r} sum to {total!r}, and normalize divides "
            "by their sum; change a weight or set normalize to false"
        )
    return total


def boolean(name: str, parameter: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: {parameter} must be true or false, got {value!r}")
    return value


def same_shapes(name: str, tensors: Sequence[torch.Tensor], roles: Sequence[str]) -> None:
    """All inputs share shape and device and are floating point."""
    first = tensors[0]
    for tensor, role in zip(tensors, roles):
        if tensor.shape != first.shape:
            shapes = ", ".join(f"{r} {tuple(t.shape)}" for t, r in zip(tensors, roles))
            raise ValueError(f"{name}: shape mismatch between inputs: {shapes}")
        if tensor.device != first.device:
            devices = ", ".join(f"{r} on {t.device}" for t, r in zip(tensors, roles))
            raise ValueError(f"{name}: inputs live on different devices: {devices}")
        if not tensor.is_floating_point():
            raise ValueError(f"{name}: {role} has dtype {tensor.dtype}; only floating-point tensors merge")


def output(name: str, out: torch.Tensor | None, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensor to write into: `out` after checking it, else a new float32 tensor."""
    like = inputs[0]
    if out is None:
        return torch.empty(like.shape, dtype=torch.float32, device=like.device)
    if out.shape != like.shape or out.device != like.device:
        raise ValueError(
            f"{name}: destination is {tuple(out.shape)} on {out.device} but inputs are "
            f"{tuple(like.shape)} on {like.device}"
        )
    if not out.is_floating_point():
        raise ValueError(f"{name}: destination has dtype {out.dtype}; it must be floating point")
    if not out.is_contiguous():
        raise ValueError(
            f"{name}: destination is not contiguous (strides {out.stride()}); merge into a "
            "contiguous tensor, e.g. a slice of the weight bank"
        )
    if any(_overlap(out, tensor) for tensor in inputs):
        raise ValueError(
            f"{name}: destination shares memory with an input; merges read inputs in "
            "several passes, so write into a separate tensor"
        )
    return out


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    a_start, b_start = a.data_ptr(), b.data_ptr()
    a_end = a_start + a.numel() * a.element_size()
    b_end = b_start + b.numel() * b.element_size()
    return a_start < b_end and b_start < a_end


def model_roles(count: int) -> list[str]:
    return [f"model {i + 1}" for i in range(count)]
