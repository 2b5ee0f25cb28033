"""Prompt formats and preset files: what a question becomes, and what a bad preset says."""

import pytest

from models import presets
from prompts import formats
from tests import tiny_models


@pytest.fixture(scope="module")
def tok():
    return tiny_models.tokenizer((tiny_models.STOP,))


def test_turkish_gpt2_instruct_format_and_stop(tok):
    text = formats.render("turkish_gpt2_instruct", "  Dünyanın en soğuk yeri neresidir? ", tok)
    assert text == "### Kullanıcı:\nDünyanın en soğuk yeri neresidir?\n### Asistan:\n"
    prompt = formats.build("turkish_gpt2_instruct", "Soru?", tok, max_context=128, max_new_tokens=16)
    stop_id = tok.convert_tokens_to_ids(tiny_models.STOP)
    assert stop_id == len(tok) - 1  # an ordinary added token at the end, as in turkish-gpt2 instruct
    assert prompt.eos_token_ids == (tok.eos_token_id, stop_id)
    assert prompt.stop_strings == ("<|stop|>",)
    assert formats.cut_at_stop("Antarktika'dır.<|stop|>### Kullanıcı:", prompt.stop_strings) == "Antarktika'dır."


def test_plain_qa_and_chat_template(tok):
    assert formats.render("plain_qa", "Işık nedir?", tok) == "Soru: Işık nedir?\nCevap:"
    chat = formats.render("chat_template", "Işık nedir?", tok)
    assert chat == "<|im_start|>user\nIşık nedir?<|im_end|>\n<|im_start|>assistant\n"
    assert formats.cut_at_stop(" Bir dalga.\nSoru: başka", formats.stop_strings("plain_qa")) == " Bir dalga."


@pytest.mark.parametrize("question", ["", "   \n\t ", None])
def test_empty_question_is_refused(tok, question):
    with pytest.raises(formats.PromptError, match="empty"):
        formats.build("plain_qa", question, tok, max_context=64, max_new_tokens=8)


def test_long_prompt_is_cut_from_the_left_and_counted(tok):
    question = "Türkiye'nin başkenti Ankara'dır. " * 40
    full = len(tok(formats.render("plain_qa", question, tok))["input_ids"])
    prompt = formats.build("plain_qa", question, tok, max_context=64, max_new_tokens=16)
    assert len(prompt.ids) == 48
    assert prompt.dropped_tokens == full - 48
    # The end of the prompt (where the answer starts) survives the cut.
    assert tok.decode(prompt.ids).endswith("\nCevap:")


def test_shipped_presets_load_and_carry_their_family_defaults():
    default = presets.load("default", environ={})
    assert default.prompt_format == "plain_qa" and default.base.startswith("pypi-gguf:")
    smollm2 = presets.load("smollm2", environ={})
    assert smollm2.prompt_format == "chat_template" and smollm2.model1 == "lora:models/adapters/smollm2-qa"
    medium = presets.load("turkish-gpt2-medium-instruct", environ={"HARMAN_MODEL1": "a/b", "HARMAN_MODEL2": "c/d"})
    assert (medium.generation.temperature, medium.generation.top_p, medium.generation.repetition_penalty) == (
        0.3, 0.9, 1.1)
    assert medium.prompt_format == "turkish_gpt2_instruct"
    assert (medium.model1, medium.model2) == ("a/b", "c/d")


def test_private_finetunes_must_be_named():
    with pytest.raises(presets.PresetError, match="no source given for model1, model2.*HARMAN_MODEL1"):
        presets.load("turkish-gpt2-large", environ={})


def test_overrides_flags_beat_environment_beat_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("base: b\nmodel1: m1\nmodel2: m2\ngeneration:\n  temperature: 0.5\n", encoding="utf-8")
    env = {"HARMAN_MODEL1": "env-m1", "HARMAN_GEN_TEMPERATURE": "0.25", "HARMAN_GEN_GREEDY": "false"}
    p = presets.load(str(path), overrides={"model1": "flag-m1"}, environ=env)
    assert p.model1 == "flag-m1" and p.generation.temperature == 0.25 and p.generation.greedy is False
    assert presets.load(str(path), environ=env).model1 == "env-m1"


@pytest.mark.parametrize("body, message", [
    ("base: b\nmodel1: m\nmodel2: m\ncolour: red\n", r"p.yaml: unknown key\(s\) colour"),
    ("base: b\nmodel1: m\nmodel2: m\ngeneration:\n  temperature: hot\n", r"generation.temperature: expected float, got 'hot'"),
    ("base: b\nmodel1: m\nmodel2: m\ngeneration:\n  top_k: 5\n", r"unknown key\(s\) generation.top_k"),
    ("base: b\nmodel1: m\nmodel2: m\nallow_pickle: 3\n", r"allow_pickle: expected bool, got 3"),
    ("base: b\nmodel1: m\nmodel2: m\nprompt_format: alpaca\n", r"prompt_format 'alpaca' is not one of"),
    ("- a\n- b\n", r"expected a mapping"),
])
def test_bad_preset_files_name_file_key_and_expectation(tmp_path, body, message):
    path = tmp_path / "p.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(presets.PresetError, match=message):
        presets.load(str(path), environ={})


def test_sources_given_instead_of_a_presets_own_get_the_auto_format():
    replaced = presets.load("default", overrides={"base": "/my/base", "model1": "/my/one", "model2": "/my/two"},
                            environ={})
    assert replaced.prompt_format == "auto"
    chosen = presets.load("default", overrides={"base": "/my/base", "prompt_format": "plain_qa"}, environ={})
    assert chosen.prompt_format == "plain_qa"
    assert presets.load("default", overrides={"base": None}, environ={}).prompt_format == "plain_qa"


def test_a_preset_built_from_its_fields_is_checked_as_a_files_are():
    fields = {"name": "mine", "base": "/b", "model1": "/m1", "model2": "/m2", "prompt_format": "plain_qa",
              "generation": {"max_new_tokens": "8"}}
    p = presets.build(fields, "my fields")
    assert (p.name, p.base, p.prompt_format, p.generation.max_new_tokens, p.source_file) == \
        ("mine", "/b", "plain_qa", 8, "my fields")
    assert fields["generation"] == {"max_new_tokens": "8"}  # the caller's fields are left as they were
    with pytest.raises(presets.PresetError, match="my fields: unknown key.s. colour"):
        presets.build({**fields, "colour": "red"}, "my fields")
    with pytest.raises(presets.PresetError, match="fields: no source given for model2"):
        presets.build({"base": "/b", "model1": "/m1"})
