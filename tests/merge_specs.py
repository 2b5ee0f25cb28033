"""Merge specs the merging and serving rooms both test, and the two ways a bank computes one: materialised into
a merged slice, or merge-free as a row mixing its parents' slices."""

from merging import MergeSpec, merge_model
from merging.coefficients import ParentFigures, coefficients
from serving.batched import Mix

SPECS = {
    "soup": {"merge_method": "linear", "parameters": {"normalize": True},
             "models": [{"parameters": {"weight": 0.7}}, {"parameters": {"weight": 0.2}}]},
    "soup, not normalised": {"merge_method": "linear", "parameters": {"normalize": False},
                             "models": [{"parameters": {"weight": 0.7}}, {"parameters": {"weight": 0.5}}]},
    "slerp": {"merge_method": "slerp", "parameters": {"t": 0.3}},
    "slerp, schedules and filters": {"merge_method": "slerp", "parameters": {"t": [
        {"filter": "attn", "value": [0, 0.5, 0.3, 0.7, 1]}, {"filter": "mlp", "value": [1, 0.2]}, {"value": 0.6}]}},
    "task arithmetic": {"merge_method": "task_arithmetic", "parameters": {"lambda": 0.8},
                        "models": [{"parameters": {"weight": 1.0}}, {"parameters": {"weight": 0.6}}]},
    "task arithmetic, normalised": {"merge_method": "task_arithmetic", "parameters": {"normalize": True},
                                    "models": [{"parameters": {"weight": 0.3}}, {"parameters": {"weight": 0.6}}]},
    "model stock": {"merge_method": "model_stock", "models": [{}, {}]},
    "nuslerp": {"merge_method": "nuslerp",
                "models": [{"parameters": {"weight": 0.3}}, {"parameters": {"weight": 0.9}}]},
}


def mix_for(bank, spec: MergeSpec, num_layers: int) -> Mix:
    base, first, second = (bank.slice(v) for v in ("base", "model1", "model2"))
    found = coefficients(spec, list(bank.tensors), num_layers, ParentFigures(base, first, second))
    return Mix.of(found.table, [bank.index(v) for v in ("base", "model1", "model2")])


def materialised(bank, spec: MergeSpec, num_layers: int, into: str = "soup") -> None:
    base, first, second = (bank.slice(v) for v in ("base", "model1", "model2"))
    merge_model(bank.slice(into), base, [first, second], spec, num_layers)
