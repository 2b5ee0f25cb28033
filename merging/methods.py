"""The merge methods by mergekit name: their functions, their parameters with
mergekit's defaults (read off the functions' signatures, so they are written down
once), which take a base model, and how many models they merge."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from merging import interpolation, model_stock, task_vectors

REQUIRED = inspect.Parameter.empty
# Parameters that take one value per model in mergekit (the others are shared).
PER_MODEL = frozenset({"weight", "density", "gamma", "epsilon"})
# How mergekit's YAML spells the parameters whose names Python reserves, and back.
_YAML_NAMES = {"lambda_": "lambda"}
_PYTHON_NAMES = {yaml: python for python, yaml in _YAML_NAMES.items()}


@dataclass(frozen=True)
class Method:
    name: str
    function: Callable
    base: str  # "required", "optional" (nuslerp: task vectors if given) or "unused"
    models: int | None  # exactly this many models, or None for any number
    random: bool  # draws random numbers: takes a seed
    parents: bool  # merges faster given the parents' statistics (ParentStats)
    defaults: dict  # YAML parameter name -> default, or REQUIRED

    def prepare(self, name, dest, base, models, parameters: dict, seed=None, parents=None, untouched=None):
        """Check one tensor's merge; return the destination and the function doing it.

        `parameters` are keyed by YAML name and already resolved to scalars; `untouched` (the task-vector
        family) says whether every model's tensor is the base's."""
        keywords = {_PYTHON_NAMES.get(key, key): value for key, value in parameters.items()}
        if self.random:
            keywords["seed"] = seed
        if self.name == "linear":
            return interpolation.prepare_linear(name, models, dest, parents=parents, **keywords)
        if self.name == "slerp":
            return interpolation.prepare_slerp(name, models[0], models[1], dest, parents=parents, **keywords)
        if self.name == "nuslerp":
            return interpolation.prepare_nuslerp(name, models[0], models[1], base, dest, **keywords)
        if self.name == "model_stock":
            return model_stock.prepare(name, base, models, dest, **keywords)
        return task_vectors.prepare(self.name, name, base, models, dest, untouched=untouched, **keywords)


def _defaults(function: Callable) -> dict:
    skip = {"out", "stats", "name", "seed", "base"}
    return {
        _YAML_NAMES.get(p.name, p.name): p.default
        for p in inspect.signature(function).parameters.values()
        if p.kind == inspect.Parameter.KEYWORD_ONLY and p.name not in skip
    }


def _method(name, function, base, models=None, random=False, parents=False) -> Method:
    return Method(name, function, base, models, random, parents, _defaults(function))


METHODS = {
    m.name: m
    for m in (
        _method("linear", interpolation.linear, "unused", parents=True),
        _method("slerp", interpolation.slerp, "unused", models=2, parents=True),
        _method("nuslerp", interpolation.nuslerp, "optional", models=2),
        _method("task_arithmetic", task_vectors.task_arithmetic, "required"),
        _method("ties", task_vectors.ties, "required"),
        _method("dare_linear", task_vectors.dare_linear, "required", random=True),
        _method("dare_ties", task_vectors.dare_ties, "required", random=True),
        _method("breadcrumbs", task_vectors.breadcrumbs, "required"),
        _method("breadcrumbs_ties", task_vectors.breadcrumbs_ties, "required"),
        _method("della", task_vectors.della, "required", random=True),
        _method("della_linear", task_vectors.della_linear, "required", random=True),
        _method("model_stock", model_stock.model_stock, "required"),
    )
}
