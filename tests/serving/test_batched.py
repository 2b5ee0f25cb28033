"""The batched forward: one row per variant gives each variant's own logits, with no copy of the weights."""

import logging

import pytest
import torch
from torch import nn

from serving import batched
from serving.batched import BankedLinear, Rows, UnsupportedModel, batched_model, selected_rows
from serving.generation import GenerationSettings, generate
from tests.tiny_models import ARCHS, PROMPT, logits, tiny_bank, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def batched_logits(bank, variants, ids=PROMPT) -> torch.Tensor:
    model = batched_model(bank)
    with selected_rows(Rows([bank.index(v) for v in variants], bank.device)), torch.no_grad():
        return model(torch.tensor([ids] * len(variants))).logits


SELECTIONS = [
    ("base", "model1", "model2", "soup", "slerp", "ties"),  # the whole bank
    ("model2", "soup", "slerp"),  # consecutive slices: read as one view
    ("model1", "slerp"),  # not consecutive
    ("ties", "base", "soup"),  # out of bank order
    ("slerp",),
    ("model2", "soup", "model2"),  # two runs from one slice, of two rows and of one (two visitors' battles)
]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("products", ["stored order", "per run"])  # per run: x @ W^T for every step, as on GPUs
@pytest.mark.parametrize("variants", SELECTIONS)
def test_each_row_computes_its_own_variant(arch, products, variants, monkeypatch):
    monkeypatch.setattr(batched, "STORED_ORDER_DECODE", {"cpu": products == "stored order"})
    bank, _ = tiny_bank(arch)
    for ids in (PROMPT, PROMPT[:1]):  # on CPU a single token per row takes W @ x^T
        out = batched_logits(bank, variants, ids)
        atol = 1e-6 * out.abs().max()  # float32 summation order; Gemma's tiny logits run to tens
        for row, variant in enumerate(variants):
            assert torch.allclose(out[row], logits(bank.module(variant), ids), atol=atol), variant
        if len(variants) > 1:
            assert not torch.allclose(out[0], out[1], atol=1e-2)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_model_reads_the_bank_itself(arch):
    bank, _ = tiny_bank(arch)
    model = batched_model(bank)
    assert list(model.parameters()) == []
    heads = [m for name, m in model.named_modules() if name == "lm_head"]
    assert isinstance(heads[0], BankedLinear)
    expected = "lm_head.weight" if arch == "llama-untied" else next(iter(bank.tensors))
    assert heads[0].weight_bank is bank.tensors[expected]
    assert batched_model(bank) is model  # built once per bank

    before = batched_logits(bank, ["soup", "slerp"])
    for view in bank.slice("soup").values():
        view.mul_(0.5)  # a merge writing in place
    after = batched_logits(bank, ["soup", "slerp"])
    assert not torch.allclose(after[0], before[0], atol=1e-3)
    assert torch.equal(after[1], before[1])


def test_batched_model_refuses_to_run_without_a_selection():
    bank, _ = tiny_bank("gpt2")
    with pytest.raises(RuntimeError, match="outside selected_rows"):
        batched_model(bank)(torch.tensor([PROMPT]))
    with selected_rows(Rows([1, 2], "cpu")), pytest.raises(RuntimeError, match="3 rows but 2 variants"):
        batched_model(bank)(torch.tensor([PROMPT] * 3))


class ScaledHead(nn.Linear):
    """A head type the batched forward does not know."""


def test_unknown_parameterised_module_falls_back_to_one_thread_per_variant(caplog):
    template = tiny_model("llama-untied")
    head = ScaledHead(32, 100, bias=False)
    head.weight = template.lm_head.weight
    template.lm_head = head
    bank, _ = tiny_bank("llama-untied", template)

    with pytest.raises(UnsupportedModel, match=r"lm_head \(ScaledHead\) holds parameters \['weight'\]"):
        batched_model(bank)
    settings = GenerationSettings(max_new_tokens=6, greedy=True)
    with caplog.at_level(logging.WARNING, logger="serving.generation"):
        fallback = generate(bank, ["model1", "soup"], PROMPT, settings, {}, batched=True)
    assert "lm_head (ScaledHead)" in caplog.text
    threads = generate(bank, ["model1", "soup"], PROMPT, settings, {}, batched=False)
    assert {v: r.token_ids for v, r in fallback.items()} == {v: r.token_ids for v, r in threads.items()}
    assert fallback["model1"].token_ids != fallback["soup"].token_ids


def test_a_model_spread_over_devices_is_not_batched():
    bank, _ = tiny_bank("gpt2")
    name = next(iter(bank.tensors))
    # As a device_map would leave it: one weight elsewhere (the meta device stands in for a second GPU).
    bank.tensors[name] = torch.empty(bank.tensors[name].shape, device="meta")
    with pytest.raises(UnsupportedModel, match=r"spread over cpu, meta \(device_map\)"):
        batched_model(bank)


@pytest.mark.parametrize("arch", ARCHS)
def test_generating_with_one_product_per_run_matches_each_variant_alone(arch, monkeypatch):
    monkeypatch.setattr(batched, "STORED_ORDER_DECODE", {"cpu": False})
    bank, _ = tiny_bank(arch)
    settings = GenerationSettings(max_new_tokens=8, greedy=True)
    variants = ["ties", "model1", "model2"]  # runs of slices (1, 2) and (5)
    together = generate(bank, variants, PROMPT, settings, {})
    alone = generate(bank, variants, PROMPT, settings, {}, batched=False)
    assert {v: r.token_ids for v, r in together.items()} == {v: r.token_ids for v, r in alone.items()}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("copies, expected", [
    (["model1", "model2", "soup", "slerp", "ties"], [0, 1, 2, 3, 4]),  # every row reads the base's head
    (["model1", "model2", "soup", "ties"], [0, 1, 2, 4]),  # four rows share it, SLERP reads its own
    (["model2", "ties"], None),  # four distinct slices for five rows: batched as usual
])
def test_rows_that_share_a_weight_read_it_once_and_answer_as_alone(arch, copies, expected, monkeypatch):
    """As with a LoRA pair: untouched tensors are bitwise equal in every variant, and rows read them once."""
    bank, _ = tiny_bank(arch)
    variants = ["model1", "model2", "soup", "slerp", "ties"]
    for name, tensor in bank.tensors.items():
        if "embed" in name or "wte" in name or "lm_head" in name:
            for v in copies:
                tensor[bank.index(v)].copy_(tensor[bank.index("base")])
    shared = []
    original = batched._shared_product
    monkeypatch.setattr(batched, "_shared_product", lambda *a: shared.append(a[3]) or original(*a))

    out = batched_logits(bank, variants, PROMPT[:1])
    for row, variant in enumerate(variants):
        assert torch.allclose(out[row], logits(bank.module(variant), PROMPT[:1]), atol=1e-5), variant
    groups = [members for found in shared for _, members in found]
    assert (expected in groups) if expected else not groups

    settings = GenerationSettings(max_new_tokens=8, greedy=True)
    together = generate(bank, variants, PROMPT, settings, {})
    alone = {v: generate(bank, [v], PROMPT, settings, {}, batched=False)[v] for v in variants}
    assert {v: r.token_ids for v, r in together.items()} == {v: r.token_ids for v, r in alone.items()}


def test_slices_that_differ_are_not_grouped():
    weight = torch.randn(4, 3, 2)
    weight[2] = weight[0]
    weight[3] = weight[0]
    assert batched._identical_slices(weight, [0, 1, 3]) == []  # 2 distinct slices for 3 rows
    assert batched._identical_slices(weight, [0, 1, 2, 3]) == [(0, [0, 2, 3]), (1, [1])]
    assert batched._identical_slices(weight, [0, 2, 3]) == [(0, [0, 1, 2])]
    assert batched._identical_slices(weight, [3, 2, 0]) == [(0, [0, 1, 2])]  # the lowest slice, whatever the order


def test_what_one_selection_found_equal_serves_the_next_of_the_same_generation():
    weight = torch.randn(3, 4, 2)
    weight[1] = weight[0]
    weight[2] = weight[0]
    same, versions = {}, [0, 0, 0]
    assert batched._identical_slices(weight, [0, 1, 2], same, versions) == [(0, [0, 1, 2])]
    weight[2] += 1  # cannot happen while rows read it; shows that the finding is reused, not recomputed
    assert batched._identical_slices(weight, [0, 2], same, versions) == [(0, [0, 1])]
    assert batched._identical_slices(weight, [0, 2]) == []
    versions[2] += 1  # a pool slice rewritten: found anew
    assert batched._identical_slices(weight, [0, 2], same, versions) == []
