"""One record per merge method, by mergekit name: everything harman knows of a method that is not its math.

A record gives the method's tensor function and its parameters with mergekit's defaults (read off the function's
signature, so they are written down once), its family and how it prepares one tensor, which take a base model and
how many models they merge, whether it is a weighted sum of its inputs (merge-free: merging/coefficients.py reads
its rule) or materialised, the page's inputs it reads, its name on the page, and how the
mergekit export writes it. The merge engine (merging/apply.py, task_vectors.py, coefficients.py, export.py),
request validation (serving/requests.py) and the column titles (page/views.py) read these records: adding a method
is one record here and its math.
"""

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
FAMILIES = ("interpolation", "task_vectors", "model_stock")
# The inputs a column of the page sets (serving/requests.py maps them to the page's controls); "epsilon" follows
# from the density there, the page having no epsilon control.
PAGE_INPUTS = ("weight", "t", "density", "epsilon", "lambda", "seed")


@dataclass(frozen=True)
class Method:
    name: str  # mergekit's name (merge_method in its YAML), harman's key
    function: Callable  # the tensor function, mergekit's parameters as keywords
    family: str  # "interpolation", "task_vectors" (sparsify and votes say which) or "model_stock"
    preparer: Callable  # (method, name, dest, base, models, keywords, parents, untouched) -> (dest, run)
    base: str  # "required", "optional" (nuslerp: task vectors if given) or "unused"
    models: int | None  # exactly this many models, or None for any number
    random: bool  # draws random numbers: takes a seed
    parents: bool  # merges faster given the parents' statistics (ParentStats)
    defaults: dict  # YAML parameter name -> default, or REQUIRED
    sparsify: str | None = None  # the task-vector family: how it sparsifies (mergekit's sparsification_method)
    votes: bool = False  # the task-vector family: elects a sign per element (TIES's consensus)
    rule: Callable | None = None  # merge-free: (name, parameters, figures, stats) -> (c_base, c_model1, c_model2)
    free_flag: str | None = None  # a flag that, moved off its default (or scheduled), changes merge-freeness
    display: str = ""  # its name on the page (a column's title); "" for its mergekit name
    menu: int | None = None  # its place in the extra column's choices; None: not offered there
    reads: tuple[str, ...] = ()  # the page's inputs it reads (PAGE_INPUTS), as the extra column for those offered
    first_is_base: bool = False  # mergekit-yaml calls Model 1 its base model (SLERP's t = 0 end)

    @property
    def title(self) -> str:
        return self.display or self.name

    def prepare(self, name, dest, base, models, parameters: dict, seed=None, parents=None, untouched=None):
        """Check one tensor's merge; return the destination and the function doing it.

        `parameters` are keyed by YAML name and already resolved to scalars; `untouched` (the task-vector
        family) says whether every model's tensor is the base's."""
        keywords = {_PYTHON_NAMES.get(key, key): value for key, value in parameters.items()}
        if self.random:
            keywords["seed"] = seed
        return self.preparer(self, name, dest, base, models, keywords, parents, untouched)


# How each family's tensor preparation is called (their signatures differ as mergekit's methods do).


def _linear(method, name, dest, base, models, keywords, parents, untouched):
    return interpolation.prepare_linear(name, models, dest, parents=parents, **keywords)


def _slerp(method, name, dest, base, models, keywords, parents, untouched):
    return interpolation.prepare_slerp(name, models[0], models[1], dest, parents=parents, **keywords)


def _nuslerp(method, name, dest, base, models, keywords, parents, untouched):
    return interpolation.prepare_nuslerp(name, models[0], models[1], base, dest, **keywords)


def _model_stock(method, name, dest, base, models, keywords, parents, untouched):
    return model_stock.prepare(name, base, models, dest, **keywords)


def _task_vectors(method, name, dest, base, models, keywords, parents, untouched):
    return task_vectors.prepare(method, name, base, models, dest, untouched=untouched, **keywords)


def _defaults(function: Callable) -> dict:
    skip = {"out", "stats", "name", "seed", "base"}
    return {
        _YAML_NAMES.get(p.name, p.name): p.default
        for p in inspect.signature(function).parameters.values()
        if p.kind == inspect.Parameter.KEYWORD_ONLY and p.name not in skip
    }


def _method(name, function, family, preparer, base, models=None, random=False, parents=False, **rest) -> Method:
    method = Method(name, function, family, preparer, base, models, random, parents, _defaults(function), **rest)
    # A record that cannot work is a mistake in this file: say so on import, not on the first merge.
    wrong = [f"family {family!r} (known: {', '.join(FAMILIES)})"] if family not in FAMILIES else []
    if method.sparsify not in task_vectors.SPARSIFICATIONS:
        wrong.append(f"sparsify {method.sparsify!r} (known: {task_vectors.SPARSIFICATIONS})")
    if method.free_flag is not None and not isinstance(method.defaults.get(method.free_flag), bool):
        wrong.append(f"free_flag {method.free_flag!r}, not one of its flags")
    wrong += [f"reads {key!r} (known: {', '.join(PAGE_INPUTS)})" for key in method.reads if key not in PAGE_INPUTS]
    if wrong:
        raise ValueError(f"merging/methods.py: the record of {name} has " + "; ".join(wrong))
    return method


_TASK_VECTOR_INPUTS = ("weight", "density", "lambda", "seed")

METHODS = {
    m.name: m
    for m in (
        _method("linear", interpolation.linear, "interpolation", _linear, "unused", parents=True,
                rule=interpolation.linear_rule, display="Soup", reads=("weight",)),
        _method("slerp", interpolation.slerp, "interpolation", _slerp, "unused", models=2, parents=True,
                rule=interpolation.slerp_rule, display="SLERP", reads=("t",), first_is_base=True),
        # Row by row (nuslerp_flatten off), every row has its own angle: not a scalar per tensor.
        _method("nuslerp", interpolation.nuslerp, "interpolation", _nuslerp, "optional", models=2,
                rule=interpolation.nuslerp_rule, free_flag="nuslerp_flatten", menu=8, reads=("weight",)),
        _method("task_arithmetic", task_vectors.task_arithmetic, "task_vectors", _task_vectors, "required",
                rule=task_vectors.task_arithmetic_rule, menu=0, reads=("weight", "lambda", "seed")),
        _method("ties", task_vectors.ties, "task_vectors", _task_vectors, "required", sparsify="magnitude",
                votes=True, display="TIES", reads=("weight", "density", "lambda")),
        _method("dare_linear", task_vectors.dare_linear, "task_vectors", _task_vectors, "required", random=True,
                sparsify="random", menu=2, reads=_TASK_VECTOR_INPUTS),
        _method("dare_ties", task_vectors.dare_ties, "task_vectors", _task_vectors, "required", random=True,
                sparsify="random", votes=True, menu=1, reads=_TASK_VECTOR_INPUTS),
        _method("breadcrumbs", task_vectors.breadcrumbs, "task_vectors", _task_vectors, "required",
                sparsify="magnitude_outliers", menu=3, reads=_TASK_VECTOR_INPUTS),
        _method("breadcrumbs_ties", task_vectors.breadcrumbs_ties, "task_vectors", _task_vectors, "required",
                sparsify="magnitude_outliers", votes=True, menu=4, reads=_TASK_VECTOR_INPUTS),
        _method("della", task_vectors.della, "task_vectors", _task_vectors, "required", random=True,
                sparsify="della_magprune", votes=True, menu=5, reads=(*_TASK_VECTOR_INPUTS, "epsilon")),
        _method("della_linear", task_vectors.della_linear, "task_vectors", _task_vectors, "required", random=True,
                sparsify="della_magprune", menu=6, reads=(*_TASK_VECTOR_INPUTS, "epsilon")),
        # Filter-wise (filter_wise on), every row has its own ratio: not a scalar per tensor.
        _method("model_stock", model_stock.model_stock, "model_stock", _model_stock, "required",
                rule=model_stock.model_stock_rule, free_flag="filter_wise", menu=7),
    )
}
# The extra column's choices, in the order its menu lists them.
EXTRA_METHODS = tuple(m.name for m in sorted((m for m in METHODS.values() if m.menu is not None),
                                              key=lambda m: m.menu))
