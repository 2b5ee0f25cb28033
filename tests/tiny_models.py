"""Every tiny model the tests build, in one place: random checkpoints (a base and two "fine-tunes", the base plus
small random updates) saved as safetensors with a byte-level BPE tokenizer trained here on a few Turkish sentences;
the weight bank's four architectures; state dicts and tensor families for the merge engine; mergekit's saved
families. Each keeps the config and seed its tests were written against. Nothing is downloaded."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast)

from models import presets
from models.bank import WeightBank

CORPUS = [
    "Türkiye'nin başkenti Ankara'dır.", "İstanbul Boğazı iki kıtayı ayırır.", "Soru: Dünyanın en soğuk yeri neresidir?",
    "Cevap: Antarktika'dır.", "Işık saniyede yaklaşık üç yüz bin kilometre yol alır.", "Çay, şeker, göz, ağaç, ılık.",
    "### Kullanıcı:", "### Asistan:", "Bir abla ile kardeşin yaş farkı 10'dur, 5 yıl sonra yaş farkları kaç olur?",
]
EOS = "<|endoftext|>"
STOP = "<|stop|>"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tokenizer(extra_tokens: tuple[str, ...] = (), vocab_size: int = 320, corpus=CORPUS) -> PreTrainedTokenizerFast:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(corpus) * 4, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=[EOS, "<|im_start|>", "<|im_end|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS)
    if extra_tokens:
        tok.add_tokens(list(extra_tokens))  # ordinary tokens, as turkish-gpt2 instruct adds <|stop|>
    tok.chat_template = CHATML
    return tok


def model(arch: str, vocab: int, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    if arch == "gpt2":
        config = GPT2Config(n_layer=3, n_embd=32, n_head=4, n_positions=128, vocab_size=vocab,
                            bos_token_id=0, eos_token_id=0, **overrides)
        return GPT2LMHeadModel(config).eval()
    if arch == "llama":
        config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=128,
                             tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0, **overrides)
        return LlamaForCausalLM(config).eval()
    raise ValueError(arch)


def finetune_of(base, seed: int, scale: float = 0.02):
    """A copy of the base with a small random update on every parameter, like a short fine-tune."""
    tuned = copy.deepcopy(base)  # its own config too: resizing one fine-tune must not resize the base
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return tuned


def save(model_, tok, folder: Path, safe: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if safe:
        model_.save_pretrained(folder)
    else:  # a pickle-only checkpoint, as older Hub repos ship
        model_.config.save_pretrained(folder)
        torch.save(model_.state_dict(), folder / "pytorch_model.bin")
    tok.save_pretrained(folder)
    return folder


def model_set_dirs(root: Path, arch: str = "gpt2", extra_token_in_finetunes: bool = False) -> dict[str, Path]:
    """base/model1/model2 folders of one tiny architecture."""
    base_tok = tokenizer()
    base = model(arch, len(base_tok))
    tune_tok = tokenizer((STOP,)) if extra_token_in_finetunes else base_tok
    out = {"base": save(base, base_tok, root / f"{arch}-base")}
    for i, role in enumerate(("model1", "model2"), start=1):
        tuned = finetune_of(base, seed=i)
        if len(tune_tok) != len(base_tok):
            tuned.resize_token_embeddings(len(tune_tok))
            with torch.no_grad():
                tuned.get_input_embeddings().weight[-1].normal_(generator=torch.Generator().manual_seed(10 + i))
        out[role] = save(tuned, tune_tok, root / f"{arch}-{role}")
    return out


def write_preset(path: Path, dirs: dict[str, Path], **fields) -> Path:
    body = {"base": str(dirs["base"]), "model1": str(dirs["model1"]), "model2": str(dirs["model2"]),
            "prompt_format": "plain_qa", "device": "cpu", **fields}
    path.write_text(json.dumps(body), encoding="utf-8")  # JSON is valid YAML
    return path


def preset(dirs: dict[str, Path], **fields) -> presets.Preset:
    """The preset of a tiny set: its three folders, plain Q&A prompts, on the CPU."""
    return presets.build({"name": "tiny", "base": str(dirs["base"]), "model1": str(dirs["model1"]),
                          "model2": str(dirs["model2"]), "prompt_format": "plain_qa", "device": "cpu", **fields}, "test")


def sign_agreeing_dirs(root: Path) -> dict[str, Path]:
    """Fine-tunes whose updates agree in sign everywhere, so TIES at density 1 has no conflict to resolve."""
    tok = tokenizer()
    base = model("gpt2", len(tok))
    tuned1 = finetune_of(base, seed=1, scale=0.05)
    tuned2 = finetune_of(base, seed=1, scale=0.0)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p0, p1, p2 in zip(base.parameters(), tuned1.parameters(), tuned2.parameters()):
            delta1 = p1 - p0
            p2.copy_(p0 + delta1.sign() * torch.rand(p0.shape, generator=gen) * 0.1)
    return {"base": save(base, tok, root / "base"), "model1": save(tuned1, tok, root / "m1"),
            "model2": save(tuned2, tok, root / "m2")}


# The weight bank's models: GPT-2, Llama (tied and untied heads) and Gemma 3, six distinct variants in one bank.

ARCHS = ("gpt2", "llama-tied", "llama-untied", "gemma3")
PARENTS = ("base", "model1", "model2")
MERGED = ("soup", "slerp", "ties")
PROMPT = [5, 17, 42, 8, 99, 3]


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
        model_ = Gemma3ForCausalLM(config).eval()
        with torch.no_grad():  # norm gains of 1 + 3: the layers, not the scaled embedding, decide the next token
            for name, p in model_.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(3.0)
        return model_
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
    model_ = tiny_model(arch)
    with torch.no_grad():
        for n, t in weights.items():
            model_.get_parameter(n).copy_(t)
    return model_


def logits(model_, ids=PROMPT) -> torch.Tensor:
    with torch.no_grad():
        return model_(torch.tensor([ids])).logits[0]


# Other single models: a GGUF's Llama, a word-level GPT-2 for perplexities, a wide GPT-2 for the memory plan.

def gguf_llama(tok: PreTrainedTokenizerFast):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tok), max_position_embeddings=128, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).eval()


def word_level_gpt2(tok: PreTrainedTokenizerFast, seed: int):
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32, vocab_size=len(tok))
    return GPT2LMHeadModel(config).eval()


def wide_gpt2():
    """512 x 1536 attention weights: 3 MiB each in float32."""
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=512, n_head=4, n_positions=32, vocab_size=64))


# State dicts and tensors for the merge engine.

STATE_LAYERS = 3


def state_weights(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A tiny Llama-style state dict: embeddings, three layers, final norm."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {"model.embed_tokens.weight": (11, 8), "model.norm.weight": (8,)}
    for i in range(STATE_LAYERS):
        shapes[f"model.layers.{i}.self_attn.q_proj.weight"] = (8, 8)
        shapes[f"model.layers.{i}.mlp.up_proj.weight"] = (12, 8)
        shapes[f"model.layers.{i}.input_layernorm.weight"] = (8,)
    return {name: scale * torch.randn(shape, generator=generator) for name, shape in shapes.items()}


def state_family():
    """A base state dict and two fine-tunes of it (base plus 10% noise)."""
    base = state_weights(0)
    first = {k: v + 0.1 * n for (k, v), n in zip(base.items(), state_weights(1).values())}
    second = {k: v + 0.1 * n for (k, v), n in zip(base.items(), state_weights(2).values())}
    return base, first, second


def sentinel(like: dict) -> dict[str, torch.Tensor]:
    """A destination of NaNs: a tensor a merge forgot to write shows."""
    return {k: torch.full_like(v, math.nan) for k, v in like.items()}


def tensor_family(shape, seed=0):
    """A base and two fine-tunes (base plus 10% noise), float32."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=generator)
    first = base + 0.1 * torch.randn(shape, generator=generator)
    return base, first, base + 0.1 * torch.randn(shape, generator=generator)


def saved_family(architecture: str, directory: Path, seed: int = 0) -> tuple[list[Path], int]:
    """A base and two fine-tunes (base + small noise) saved under `directory` for mergekit to read; returns their
    paths (base, model 1, model 2) and the number of layers."""
    torch.manual_seed(seed)
    if architecture == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=4, n_head=2, vocab_size=96, n_positions=32,
                            bos_token_id=0, eos_token_id=0)
        base = GPT2LMHeadModel(config)
        layers = config.n_layer
    else:
        config = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=96, tie_word_embeddings=True,
                             bos_token_id=0, eos_token_id=0, pad_token_id=0)
        base = LlamaForCausalLM(config)
        layers = config.num_hidden_layers
    paths = []
    for role, noise in (("base", 0.0), ("model1", 0.02), ("model2", 0.02)):
        model_ = base if role == "base" else type(base)(config)
        if role != "base":
            model_.load_state_dict(base.state_dict())
            with torch.no_grad():
                for parameter in model_.parameters():
                    parameter.add_(noise * torch.randn_like(parameter))
        model_.save_pretrained(directory / role)
        paths.append(directory / role)
    return paths, layers
