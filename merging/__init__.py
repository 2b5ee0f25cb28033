"""harman's merge engine: mergekit's merge methods in torch, in place, on any device.

Tensor level, one function per method, named and parameterised as in mergekit:
`linear`, `slerp`, `nuslerp`, `task_arithmetic`, `ties`, `dare_linear`,
`dare_ties`, `breadcrumbs`, `breadcrumbs_ties`, `della`, `della_linear`,
`model_stock`, each described by one record in `METHODS` (merging/methods.py).
Model level: `MergeSpec` (mergekit's YAML, hashable), `merge_model` (in place,
tensor by tensor), `MergeTarget` (re-merges only what changed), `to_mergekit_yaml`
(the same merge for mergekit-yaml).
"""

from merging.apply import MergeReport, MergeTarget, merge_model
from merging.export import to_mergekit_yaml
from merging.interpolation import linear, nuslerp, slerp
from merging.methods import EXTRA_METHODS, METHODS, Method
from merging.model_stock import model_stock
from merging.spec import MergeSpec
from merging.task_vectors import (
    breadcrumbs,
    breadcrumbs_ties,
    dare_linear,
    dare_ties,
    della,
    della_linear,
    task_arithmetic,
    ties,
)

__all__ = [
    "EXTRA_METHODS",
    "METHODS",
    "Method",
    "MergeReport",
    "MergeSpec",
    "MergeTarget",
    "breadcrumbs",
    "breadcrumbs_ties",
    "dare_linear",
    "dare_ties",
    "della",
    "della_linear",
    "linear",
    "merge_model",
    "model_stock",
    "nuslerp",
    "slerp",
    "task_arithmetic",
    "ties",
    "to_mergekit_yaml",
]
