"""A page for the owner's own models: sources given on the command line (or as Space variables) get a title
from their names, generic column labels and a generation cap from their own context length, never the offline
default's; the owner's --title, --label1 and --label2 win."""

import app
from models import presets
from page import views

OWN = {"base": "/models/my-base", "model1": "org/qa-finetune", "model2": "/models/instruct-ft/"}


def test_sources_given_on_the_command_line_get_their_own_title_labels_and_cap():
    p = presets.load("default", overrides=OWN, environ={}, context=lambda base: 1024)
    assert p.title == "my-base · qa-finetune · instruct-ft" and p.title_en == ""
    assert (p.model1_label, p.model2_label, p.model1_label_en, p.model2_label_en) == ("Model 1", "Model 2", "", "")
    assert p.generation.max_new_tokens_cap == 512 and p.generation.max_new_tokens == 96
    assert p.base_model == ""  # the default's google/gemma-3-270m is not this base
    for lang in ("tr", "en"):
        assert views.parent_label(p, "model2", lang) == "Model 2"
    short = presets.load("default", overrides=OWN, environ={}, context=lambda base: 128)
    assert short.generation.max_new_tokens_cap == 64 and short.generation.max_new_tokens == 64


def test_the_owners_words_and_caps_win():
    env = {"HARMAN_LABEL1": "ignored: only app.py reads it", "HARMAN_GEN_MAX_NEW_TOKENS_CAP": "200"}
    p = presets.load("default", overrides={**OWN, "title": "Benim birleşimlerim", "model1_label": "Soru-cevap"},
                     environ=env, context=lambda base: 4096)
    assert p.title == "Benim birleşimlerim" and p.title_en == ""
    assert views.parent_label(p, "model1", "en") == "Soru-cevap" and p.model2_label == "Model 2"
    assert p.generation.max_new_tokens_cap == 200 and p.generation.max_new_tokens == 96
    # On a preset's own models an owner's title replaces both languages' titles; the labels stay the preset's.
    kept = presets.load("default", overrides={"title": "Ekibimizin sayfası"}, environ={})
    assert kept.title == "Ekibimizin sayfası" and kept.title_en == ""
    assert kept.model1_label_en == "Model 1 (question answering)" and kept.generation.max_new_tokens_cap == 256


def test_a_presets_empty_sources_filled_keep_its_page():
    p = presets.load("turkish-gpt2-large", overrides={"model1": "org/qa", "model2": "org/instruct"}, environ={},
                     context=lambda base: 1024)
    assert p.title_en == "turkish-gpt2-large: question-answer and instruction fine-tunes"
    assert p.model1_label == "Model 1 (V1 soru-cevap)" and p.generation.max_new_tokens_cap == 512


def test_the_command_line_and_space_variables_reach_the_page(gpt2_dirs, monkeypatch):
    flags = ["--base", str(gpt2_dirs["base"]), "--model1", str(gpt2_dirs["model1"]), "--model2",
             str(gpt2_dirs["model2"])]
    p = app.preset_of(app.parse_args(flags))
    assert p.title == "gpt2-base · gpt2-model1 · gpt2-model2"
    assert p.generation.max_new_tokens_cap == 64  # the tiny GPT-2's 128 positions, halved
    assert views.column_title("model1", p, None, "en") == "**Model 1**"
    monkeypatch.setenv("HARMAN_TITLE", "Space başlığı")
    monkeypatch.setenv("HARMAN_LABEL2", "Talimat")
    p = app.preset_of(app.parse_args(flags + ["--label1", "QA"]))
    assert (p.title, p.model1_label, p.model2_label) == ("Space başlığı", "QA", "Talimat")
    assert views.parent_label(p, "model2", "en") == "Talimat"
