"""Tiny random checkpoints for tests: a base and two "fine-tunes" (the base plus small random updates), saved as
safetensors with a byte-level BPE tokenizer trained here on a few Turkish sentences. Nothing is downloaded."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
