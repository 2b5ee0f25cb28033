"""The weight bank on tiny random GPT-2, Llama (tied and untied heads) and Gemma 3 models.

Gemma 3 is not Llama: its RMSNorm scales by (1 + weight), its embedding is scaled by sqrt(hidden size), it has
q/k norms, and most of its layers attend within a sliding window (4 tokens here, shorter than the prompt, so
the window matters in every test).

tiny_bank() and reference_model() are shared with tests/test_batched.py and tests/test_generation.py.
"""

import pytest
import torch
from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM)

from models.bank import WeightBank

ARCHS = ("gpt2", "llama-tied", "llama-untied", "gemma3")
PARENTS = ("base", "model1", "model2")
MERGED = ("soup", "slerp", "ties")
PROMPT = [5, 17, 42, 8, 99, 3]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine every parallel region (the CPU
    attention kernel opens one even for a handful of tokens) waits for a time slice: 7x slower here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64)).eval()
    if arch == "gemma3":
        config = Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8, vocab_size=100,
                                  max_position_embeddings=64, sliding_window=4,
                                  layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                  tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1)
        model = Gemma3ForCausalLM(config).eval()
        with torch.no_grad():  # norm gains of 1 + 3: the layers, not the scaled embedding, decide the next token
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(3.0)
        return model
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100, max_position_embeddings=64,
                         tie_word_embeddings=arch == "llama-tied")
    return LlamaForCausalLM(config).eval()


def perturbed(state: dict, seed: int) -> dict:
    # Large changes, so that every variant answers differently and a row reading the wrong slice shows.
    gen = torch.Generator().manual_seed(seed)
    return {n: t + 0.5 * torch.randn(t.shape, generator=gen) for n, t in state.items()}


def tiny_bank(arch: str, template=None) -> tuple[WeightBank, dict[str, dict[str, torch.Tensor]]]:
    """A bank of six distinct variants, and each variant's weights as a plain state dict."""
    template = template if template is not None else tiny_model(arch)
    base = {n: p.detach().clone() for n, p in template.named_parameters()}
    weights = {"base": base, "model1": perturbed(base, 1), "model2": perturbed(base, 2)}
    bank = WeightBank.build(template, {r: dict(weights[r]) for r in PARENTS}, MERGED)
    for i, name in enumerate(MERGED):
        weights[name] = perturbed(base, 10 + i)
        for n, view in bank.slice(name).items():
            view.copy_(weights[name][n])
    return bank, weights


def reference_model(arch: str, weights: dict[str, torch.Tensor]):
    """A plain Hugging Face model with the given weights, owning its own memory."""
    model = tiny_model(arch)
    with torch.no_grad():
        for n, t in weights.items():
            model.get_parameter(n).copy_(t)
    return model


def logits(model, ids=PROMPT) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


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
