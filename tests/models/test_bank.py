"""The weight bank on tiny random GPT-2, Llama (tied and untied heads) and Gemma 3 models.

Gemma 3 is not Llama: its RMSNorm scales by (1 + weight), its embedding is scaled by sqrt(hidden size), it has
q/k norms, and most of its layers attend within a sliding window (4 tokens here, shorter than the prompt, so
the window matters in every test).

The models and the bank are built in tests/tiny_models.py, shared with the serving room.
"""

import pytest
import torch

from models.bank import WeightBank
from tests.tiny_models import ARCHS, MERGED, PARENTS, logits, perturbed, reference_model, tiny_bank, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("arch", ARCHS)
def test_build_holds_every_variant_in_one_tensor_per_parameter(arch):
    template = tiny_model(arch)
    names = [n for n, _ in template.named_parameters()]
    bank, weights = tiny_bank(arch, template)

    assert bank.variants == [*PARENTS, *MERGED]
    assert list(bank.tensors) == names
    assert ("lm_head.weight" in bank.tensors) == (arch == "llama-untied")  # a tied head is banked once
    for name, tensor in bank.tensors.items():
        assert tensor.shape == (6, *weights["base"][name].shape)
        for i, variant in enumerate(bank.variants):
            assert torch.equal(tensor[i], weights[variant][name]), (variant, name)
    assert bank.nbytes == sum(t.numel() * 4 for t in bank.tensors.values())


def test_merged_slices_start_as_the_base():
    template = tiny_model("llama-tied")
    base = {n: p.detach().clone() for n, p in template.named_parameters()}
    bank = WeightBank.build(template, {"base": dict(base), "model1": perturbed(base, 1),
                                       "model2": perturbed(base, 2)}, ["soup"])
    for name, tensor in bank.tensors.items():
        assert torch.equal(tensor[3], base[name])
        assert not torch.equal(tensor[1], base[name])


@pytest.mark.parametrize("arch", ARCHS)
def test_template_keeps_no_copy_of_the_weights(arch):
    template = tiny_model(arch)
    bank, _ = tiny_bank(arch, template)
    for name, param in template.named_parameters():
        assert param.data_ptr() == bank.tensors[name][0].data_ptr(), name
    if arch == "llama-tied":
        assert template.lm_head.weight is template.model.embed_tokens.weight
    assert bank.module("base") is template


def test_build_empties_the_state_dicts_it_is_handed():
    template = tiny_model("gpt2")
    base = {n: p.detach().clone() for n, p in template.named_parameters()}
    parents = {"base": base, "model1": perturbed(base, 1), "model2": perturbed(base, 2)}
    WeightBank.build(template, parents, MERGED)
    assert [len(state) for state in parents.values()] == [0, 0, 0]


@pytest.mark.parametrize("arch", ARCHS)
def test_module_of_a_variant_computes_with_that_variants_weights(arch):
    bank, weights = tiny_bank(arch)
    for variant in ("model1", "ties"):
        assert torch.allclose(logits(bank.module(variant)), logits(reference_model(arch, weights[variant])),
                              atol=1e-5)
    assert not torch.allclose(logits(bank.module("model1")), logits(bank.module("ties")), atol=1e-2)
    assert bank.module("ties") is bank.module("ties")


@pytest.mark.parametrize("arch", ARCHS)
def test_writing_a_slice_changes_that_variants_module_only(arch):
    bank, weights = tiny_bank(arch)
    soup, slerp = bank.module("soup"), bank.module("slerp")
    slerp_before = logits(slerp)
    new = perturbed(weights["base"], 99)
    for name, view in bank.slice("soup").items():
        view.copy_(new[name])  # as the merge engine writes: in place, through the slice

    assert torch.allclose(logits(soup), logits(reference_model(arch, new)), atol=1e-5)
    assert torch.equal(logits(slerp), slerp_before)
    for name, param in soup.named_parameters():
        assert param.data_ptr() == bank.tensors[name][bank.index("soup")].data_ptr(), name


def test_errors_name_the_parent_and_the_tensor():
    template = tiny_model("gpt2")
    base = {n: p.detach().clone() for n, p in template.named_parameters()}
    missing = {n: t for n, t in base.items() if n != "transformer.h.1.mlp.c_fc.weight"}
    with pytest.raises(KeyError, match="'model1' has no tensor 'transformer.h.1.mlp.c_fc.weight'"):
        WeightBank.build(tiny_model("gpt2"), {"base": dict(base), "model1": missing}, [])

    wrong = dict(base, **{"transformer.wpe.weight": torch.zeros(65, 32)})
    with pytest.raises(ValueError, match=r"'model2' tensor 'transformer.wpe.weight' has shape \(65, 32\)"):
        WeightBank.build(tiny_model("gpt2"), {"base": dict(base), "model1": dict(base), "model2": wrong}, [])

    bank, _ = tiny_bank("gpt2")
    with pytest.raises(KeyError, match="'extra' is not in the weight bank"):
        bank.slice("extra")
    with pytest.raises(ValueError, match="unique"):
        WeightBank.build(tiny_model("gpt2"), {"base": dict(base)}, ["base"])
