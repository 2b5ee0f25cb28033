"""Parameter settings as mergekit's YAML writes them, resolved for one tensor.

A setting is a scalar; a gradient (a list of anchors, interpolated over the layer
index); or a list of conditionals `{filter, value}`, where the first whose filter
is a substring of the tensor name (or that has no filter, or "*") applies. A
conditional list that matches nothing defers to the next, more general setting.
Tensors outside the layers (embeddings, final norm, head) sit at position 0 and
so take a gradient's first anchor, as in mergekit.
"""

import re
from dataclasses import dataclass

Scalar = bool | int | float | str


@dataclass(frozen=True)
class Conditional:
    value: Scalar | tuple[Scalar, ...]
    filter: str | None = None


Setting = Scalar | tuple[Scalar, ...] | tuple[Conditional, ...]

# The first ".N." in a name: transformer.h.N. (GPT-2), model.layers.N. (Llama), ...
_LAYER_INDEX = re.compile(r"(?:^|\.)(\d+)\.")


def layer_index(tensor_name: str) -> int | None:
    match = _LAYER_INDEX.search(tensor_name)
    return int(match.group(1)) if match else None


def layer_position(tensor_name: str, num_layers: int) -> float:
    """Where a tensor sits along a gradient: layer i of n at i / (n - 1), anything
    outside the layers at 0, a lone layer at 1 (mergekit's convention)."""
    index = layer_index(tensor_name)
    if index is None:
        return 0.0
    if index >= num_layers:
        raise ValueError(
            f"{tensor_name}: layer index {index} is beyond num_layers={num_layers}; "
            "pass the model's number of layers"
        )
    return index / (num_layers - 1) if num_layers > 1 else 1.0


def evaluate(setting: Setting, tensor_name: str, position: float):
    """The value of `setting` for a tensor, or None when no filter matches."""
    if isinstance(setting, Conditional):
        setting = (setting,)
    if not isinstance(setting, tuple):
        return setting
    if not setting:
        return None
    if all(isinstance(entry, Conditional) for entry in setting):
        for entry in setting:
            if entry.filter in (None, "*") or (tensor_name and entry.filter in tensor_name):
                return evaluate(entry.value, tensor_name, position)
        return None
    return _interpolate(setting, position)


def _interpolate(anchors: tuple[Scalar, ...], position: float):
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in anchors):
        # Flags and names do not interpolate: take the anchor at or before the position.
        return anchors[int(position * (len(anchors) - 1))]
    # mergekit's arithmetic, step for step, so the same floats come out.
    scaled = position * (len(anchors) - 1)
    low = int(scaled)
    high = min(len(anchors) - 1, low + 1)
    fraction = scaled - low
    return (1 - fraction) * anchors[low] + fraction * anchors[high]


def anchors(setting: Setting) -> list[Scalar]:
    """Every scalar a setting can yield or interpolate between (for validation)."""
    if isinstance(setting, Conditional):
        return anchors(setting.value)
    if isinstance(setting, tuple):
        return [value for entry in setting for value in anchors(entry)]
    return [setting]
