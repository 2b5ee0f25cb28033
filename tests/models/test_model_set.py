"""Loading a model set from tiny random checkpoints, the compatibility check, and `app.py --check`."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import compat, model_set, presets, sources
from tests import tiny_models

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def llama_dirs(tmp_path_factory):
    return tiny_models.model_set_dirs(tmp_path_factory.mktemp("llama"), "llama")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_loads_every_variant_into_one_bank(arch, gpt2_dirs, llama_dirs):
    dirs = gpt2_dirs if arch == "gpt2" else llama_dirs
    ms = model_set.load(tiny_models.preset(dirs))
    assert ms.bank.variants == ["base", "model1", "model2", "pool0", "pool1", "pool2", "pool3"]
    assert ms.dtype == torch.float32 and ms.device == "cpu" and ms.num_layers == 3
    for role in ("model1", "model2"):
        on_disk = type(ms.bank.template).from_pretrained(dirs[role]).state_dict()
        for name, tensor in ms.bank.slice(role).items():
            assert torch.equal(tensor, on_disk[name]), (role, name)
    # The variant modules read the bank (no copy).
    name, tensor = next(iter(ms.bank.slice("model1").items()))
    assert ms.bank.module("model1").get_parameter(name).data_ptr() == tensor.data_ptr()
    summary = ms.summary()
    assert "4 pool slices" in summary and "float32 on cpu" in summary and ms.architecture in summary
    # A tiny model has no tensor wide enough to be packed; the line says what would be.
    assert "packed (CPU)" in summary and "0.00 GiB of tensors of 64 MiB or more read by 4+ rows" in summary


def test_the_pool_is_the_owners_to_size_and_costs_nothing_until_used(gpt2_dirs):
    ms = model_set.load(tiny_models.preset(gpt2_dirs), pool=2)
    assert ms.bank.variants == ["base", "model1", "model2", "pool0", "pool1"]
    assert "2 pool slices" in ms.summary() and "SLERP" in ms.summary()


def test_one_extra_token_in_the_finetunes_is_resolved_like_mergekit(tmp_path):
    dirs = tiny_models.model_set_dirs(tmp_path, "gpt2", extra_token_in_finetunes=True)
    ms = model_set.load(tiny_models.preset(dirs))
    base_vocab = len(tiny_models.tokenizer())
    assert len(ms.tokenizer) == base_vocab + 1
    assert ms.tokenizer.convert_tokens_to_ids(tiny_models.STOP) == base_vocab
    emb = "transformer.wte.weight"
    bank = ms.bank.tensors[emb]
    assert bank.shape[1] == base_vocab + 1
    # Both fine-tunes have the token; the base lacks it: mergekit averages the models that have it.
    m1 = type(ms.bank.template).from_pretrained(dirs["model1"]).state_dict()[emb][-1]
    m2 = type(ms.bank.template).from_pretrained(dirs["model2"]).state_dict()[emb][-1]
    assert torch.allclose(bank[0, -1], (m1 + m2) / 2)
    assert torch.equal(bank[1, -1], m1) and torch.equal(bank[2, -1], m2)
    assert any("lacks 1 token" in n and "<|stop|>" in n for n in ms.notes)


def test_fill_rows_prefers_the_only_donor_then_the_base():
    t = {"base": torch.zeros(3, 2), "model1": torch.ones(4, 2), "model2": torch.full((5, 2), 2.0)}
    compat.fill_vocab_rows(t, "emb", 5)
    # row 3: model1 and model2 have it, the base does not -> the mean of the two (1.5)
    assert t["base"][3].tolist() == [1.5, 1.5] and t["model1"][3].tolist() == [1.0, 1.0]
    # row 4: only model2 has it -> its row for everyone
    assert t["base"][4].tolist() == [2.0, 2.0] and t["model1"][4].tolist() == [2.0, 2.0]
    t = {"base": torch.zeros(4, 2), "model1": torch.ones(3, 2), "model2": torch.full((4, 2), 2.0)}
    compat.fill_vocab_rows(t, "emb", 4)
    assert t["model1"][3].tolist() == [0.0, 0.0]  # base and model2 have it -> the base's row


def test_shape_mismatch_names_tensor_shapes_and_sources(tmp_path, gpt2_dirs):
    wide = tiny_models.model("gpt2", len(tiny_models.tokenizer()), n_inner=200)
    odd = tiny_models.save(wide, tiny_models.tokenizer(), tmp_path / "odd")
    with pytest.raises(compat.CompatibilityError) as err:
        model_set.load(tiny_models.preset({**gpt2_dirs, "model2": odd}))
    message = str(err.value)
    assert "shape mismatch at 'transformer.h.0.mlp.c_fc.weight'" in message
    assert "(32, 128)" in message and "(32, 200)" in message and str(odd) in message


def test_architecture_mismatch_is_refused(gpt2_dirs, llama_dirs):
    with pytest.raises(compat.CompatibilityError, match="architecture mismatch: base .* GPT2LMHeadModel, model1 .* "
                                                        "LlamaForCausalLM"):
        model_set.load(tiny_models.preset({**gpt2_dirs, "model1": llama_dirs["model1"]}))


def test_vocabulary_mismatch_is_refused(tmp_path, gpt2_dirs):
    other = tiny_models.tokenizer(corpus=[s[::-1] for s in tiny_models.CORPUS])  # other merges, other ids
    m = tiny_models.model("gpt2", len(tiny_models.tokenizer()))
    m.resize_token_embeddings(len(other))
    folder = tiny_models.save(m, other, tmp_path / "othervocab")
    with pytest.raises(compat.CompatibilityError, match=r"tokenizer mismatch: token id \d+ is"):
        model_set.load(tiny_models.preset({**gpt2_dirs, "model1": folder}))


def test_pickle_only_checkpoint_is_refused_unless_allowed(tmp_path, gpt2_dirs):
    m = tiny_models.finetune_of(type(tiny_models.model("gpt2", 10)).from_pretrained(gpt2_dirs["base"]), seed=5)
    folder = tiny_models.save(m, tiny_models.tokenizer(), tmp_path / "pickled", safe=False)
    assert not list(folder.glob("*.safetensors"))
    with pytest.raises(sources.SourceError, match="no safetensors weights .* --allow-pickle"):
        model_set.load(tiny_models.preset({**gpt2_dirs, "model2": folder}))
    ms = model_set.load(tiny_models.preset({**gpt2_dirs, "model2": folder}, allow_pickle=True))
    assert torch.equal(ms.bank.slice("model2")["transformer.h.0.attn.c_attn.weight"],
                       m.state_dict()["transformer.h.0.attn.c_attn.weight"])


def test_missing_folder_and_bad_hub_id_name_the_source(tmp_path, gpt2_dirs):
    with pytest.raises(sources.SourceError, match=r"source '\./nowhere': no such folder"):
        model_set.load(tiny_models.preset({**gpt2_dirs, "model1": "./nowhere"}))
    with pytest.raises(sources.SourceError, match=r"source 'nobody/no-such-model-harman'.*Hub id"):
        model_set.load(tiny_models.preset({**gpt2_dirs, "model1": "nobody/no-such-model-harman"}))


def run_check(*args, env=None):
    import os
    return subprocess.run([sys.executable, "app.py", "--check", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_check_command_prints_summary_and_exits_zero(gpt2_dirs):
    preset = tiny_models.write_preset(gpt2_dirs["base"].parent / "p.yaml", gpt2_dirs)
    done = run_check("--preset", str(preset), "--pool", "2")
    assert done.returncode == 0, done.stderr
    assert "GPT2LMHeadModel, 3 layers" in done.stdout and "weight bank   base + 2 parents" in done.stdout
    assert "+ 2 pool slices for materialised merges" in done.stdout


def test_check_command_fails_clearly_with_a_bad_source(gpt2_dirs):
    preset = tiny_models.write_preset(gpt2_dirs["base"].parent / "p.yaml", gpt2_dirs)
    done = run_check("--preset", str(preset), "--model2", str(gpt2_dirs["base"].parent / "missing"))
    assert done.returncode == 2
    assert "harman: source" in done.stderr and "missing" in done.stderr and "no such folder" in done.stderr


def test_serving_with_a_bad_source_says_which_and_exits(gpt2_dirs):
    """`python app.py` (not --check) serves the page before the models load; a source that cannot load still
    ends the process with the one-line message and exit status 2, not a traceback or a page that never answers."""
    import os

    from tests.browser.running_app import free_port

    preset = tiny_models.write_preset(gpt2_dirs["base"].parent / "p.yaml", gpt2_dirs)
    done = subprocess.run([sys.executable, "app.py", "--preset", str(preset), "--port", str(free_port()),
                           "--model2", str(gpt2_dirs["base"].parent / "missing")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2
    assert "harman: source" in done.stderr and "no such folder" in done.stderr
    assert "Traceback" not in done.stderr


def without_chat_template(dirs: dict, root) -> dict:
    """Copies of checkpoint folders whose tokenizers have no chat template, as GPT-2 checkpoints ship."""
    import json
    import shutil

    out = {}
    for role, folder in dirs.items():
        target = root / f"plain-{role}"
        shutil.copytree(folder, target)
        (target / "chat_template.jinja").unlink(missing_ok=True)
        config = target / "tokenizer_config.json"
        data = json.loads(config.read_text(encoding="utf-8"))
        data.pop("chat_template", None)
        config.write_text(json.dumps(data), encoding="utf-8")
        out[role] = target
    return out


def test_own_checkpoints_without_a_chat_template_answer_on_the_page(gpt2_dirs, tmp_path):
    """`python app.py --base X --model1 Y --model2 Z` with GPT-2 checkpoints (no chat template, as the seed's
    turkish-gpt2 models ship): the format is resolved at load, and a question asked through the served page's
    API is answered in every column."""
    import app
    from gradio_client import Client
    from tests.browser.running_app import running_app

    plain = without_chat_template(gpt2_dirs, tmp_path)
    sources = ["--base", str(plain["base"]), "--model1", str(plain["model1"]), "--model2", str(plain["model2"]),
               "--device", "cpu"]
    ms = app.load_model_set(app.parse_args(sources))
    assert ms.preset.prompt_format == "plain_qa"
    assert "prompt format plain_qa" in ms.summary() and "resolved to plain_qa" in ms.summary()
    env = {"HARMAN_GEN_MAX_NEW_TOKENS": "4", "HARMAN_SAVE_DIR": str(tmp_path / "saved")}
    with running_app(*sources, log=tmp_path / "app.log", env=env, timeout=300) as url:
        client = Client(url, verbose=False)
        try:
            api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/compare"]
            values = {p["parameter_name"]: p["parameter_default"] for p in api["parameters"]}
            values["question"] = "Türkiye'nin başkenti neresidir?"
            out = client.predict(*values.values(), api_name="/compare")
        finally:
            client.close()
    answers = dict(zip(app.COLUMNS, out[1 + len(app.COLUMNS):1 + 2 * len(app.COLUMNS)]))
    assert all(answers[c] for c in app.COLUMNS[:5]), answers

    forced = app.parse_args(["--base", str(plain["base"]), "--model1", str(plain["model1"]), "--model2",
                             str(plain["model2"]), "--device", "cpu", "--prompt-format", "chat_template"])
    with pytest.raises(presets.PresetError, match="no chat template.*--prompt-format plain_qa"):
        app.load_model_set(forced)
