"""One record per merge method (merging/methods.py): what the engine, the requests, the page's titles, the vote's
names and the export read from it is what they wrote themselves before, and a new method is one record."""

import dataclasses

import pytest
import torch

from merging import EXTRA_METHODS, METHODS, MergeSpec, merge_model, to_mergekit_yaml
from merging.coefficients import ParentFigures, coefficients, materialise, merge_free
from page import views
from scoring.battles import variant_name
from serving.columns import COLUMN_METHODS, COLUMNS, FIXED, MERGED, request_columns
from serving.controls import Controls
from serving.requests import RequestError, extra_spec, merge_specs
from tests.tiny_models import STATE_LAYERS as LAYERS, sentinel, state_family as family


def test_the_extra_columns_choices_keep_their_order():
    assert EXTRA_METHODS == ("task_arithmetic", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties",
                             "della", "della_linear", "model_stock", "nuslerp")


def test_the_columns_and_their_titles():
    assert COLUMNS == ("model1", "model2", "soup", "slerp", "ties", "extra")
    assert FIXED == COLUMNS[:5] and MERGED == ("soup", "slerp", "ties")
    assert request_columns("") == FIXED and request_columns("della") == COLUMNS
    assert views.METHOD_NAMES == {"soup": "Soup", "slerp": "SLERP", "ties": "TIES"}
    # The requests build each merged column with the method the columns' home names.
    assert {c: s.method for c, s in merge_specs(Controls(question="q")).items()} == COLUMN_METHODS
    c = Controls(question="q", extra_method="dare_ties", extra_density=0.3)
    assert views.column_title("soup", None, c, "en") == "**Soup** · w 0.50/0.50"
    assert views.column_title("extra", None, c, "en") == "**dare_ties** · density 0.30"
    assert views.column_name("extra", None, "en", "model_stock") == "model_stock"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_merge_free_is_the_old_table(method):
    """Linear, SLERP and task arithmetic always; model stock unless filter-wise; NuSLERP unless row by row."""
    free = {"linear", "slerp", "task_arithmetic", "model_stock", "nuslerp"}
    assert (METHODS[method].rule is not None) == (method in free)
    if method == "model_stock":
        assert merge_free(MergeSpec(method, {}, ({}, {})))
        assert not merge_free(MergeSpec(method, {"filter_wise": True}, ({}, {})))
        assert not merge_free(MergeSpec(method, {"filter_wise": [{"filter": "attn", "value": True},
                                                                  {"value": False}]}, ({}, {})))
    if method == "nuslerp":
        weights = ({"weight": 1.0}, {"weight": 0.5})
        assert merge_free(MergeSpec(method, {}, weights))
        assert not merge_free(MergeSpec(method, {"nuslerp_flatten": False}, weights))


@pytest.mark.parametrize("method", EXTRA_METHODS)
def test_the_extra_column_reads_what_its_record_says(method):
    spec = extra_spec(method, 1.0, 0.5, 0.3, 1.2, 7).to_dict()
    reads = METHODS[method].reads
    per_model = [m["parameters"] for m in spec["models"]]
    assert len(per_model) == 2
    assert [p.get("weight") for p in per_model] == ([1.0, 0.5] if "weight" in reads else [None, None])
    assert all(p.get("density") == (0.3 if "density" in reads else None) for p in per_model)
    assert all(("epsilon" in p) == method.startswith("della") for p in per_model)
    assert spec.get("parameters") == ({"lambda": 1.2} if "lambda" in reads else None)
    assert spec.get("seed") == (7 if "seed" in reads else None)
    assert ("density" in reads) == (method not in ("task_arithmetic", "model_stock", "nuslerp"))


def test_the_votes_names_follow_what_a_method_reads():
    c = Controls(question="q", ties_w1=0.5, ties_lambda=1.3, extra_density=0.3)
    name = {m: variant_name("extra", dataclasses.replace(c, extra_method=m)) for m in EXTRA_METHODS}
    assert name["dare_ties"] == "dare_ties d=0.30 w=0.50/1.00 λ=1.30"
    assert name["task_arithmetic"] == "task_arithmetic w=0.50/1.00 λ=1.30"
    assert name["nuslerp"] == "nuslerp w=0.50/1.00"
    assert name["model_stock"] == "model_stock"
    assert variant_name("ties", c) == "TIES d=0.50 w=0.50/1.00 λ=1.30"


def test_a_method_without_a_record_is_refused():
    with pytest.raises(RequestError):
        merge_specs(Controls(question="q", extra_method="soup"))


def test_a_new_method_is_one_record(monkeypatch):
    """A record added to METHODS (here task arithmetic's math under a new name and title) is a spec, a merge, a
    merge-free column, a title and an export, with nothing else written for it."""
    record = dataclasses.replace(METHODS["task_arithmetic"], name="summed", display="Summed")
    monkeypatch.setitem(METHODS, "summed", record)
    spec = extra_spec("summed", 1.0, 0.5, 0.3, 0.8, 7)
    assert spec.to_dict() == {"merge_method": "summed", "parameters": {"lambda": 0.8}, "seed": 7,
                              "models": [{"parameters": {"weight": 1.0}}, {"parameters": {"weight": 0.5}}]}
    assert views.method_title("summed") == "Summed"
    assert "merge_method: summed\nbase_model: base\n" in to_mergekit_yaml(spec, "base", ["a", "b"], "float32")
    base, first, second = family()
    merged, mixed, reference = sentinel(base), sentinel(base), sentinel(base)
    merge_model(merged, base, [first, second], spec, LAYERS)
    old = MergeSpec("task_arithmetic", spec.parameters, spec.model_parameters, spec.seed)
    merge_model(reference, base, [first, second], old, LAYERS)
    assert merge_free(spec)
    materialise(coefficients(spec, list(base), LAYERS, ParentFigures(base, first, second)).table, mixed,
                [base, first, second])
    for name in base:
        assert torch.equal(merged[name], reference[name]), name
        assert torch.allclose(mixed[name], merged[name], rtol=1e-5, atol=1e-6), name
