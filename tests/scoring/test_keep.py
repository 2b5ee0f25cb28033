"""Keeping a merge: the exported mergekit config reproduces the in-app weights, a saved checkpoint answers like
the column, and scores and sweeps on a held-out set behave."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from models import model_set, saving
from page import views
from scoring import turkish
from scoring import variants as scoring
from scoring.heldout import load_heldout
from serving.comparison import Comparison
from serving.generation import GenerationSettings, generate
from serving.requests import Controls, RequestError, merge_specs
from tests import tiny_models
from tests.mergekit_oracle import assert_close, run_mergekit_yaml


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("keep")
    dirs = tiny_models.model_set_dirs(root, "llama")
    preset = tiny_models.preset(dirs)
    return Comparison(model_set.load(preset))


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "qa.tsv"
    rows = [("Türkiye'nin başkenti neresidir?", "Türkiye'nin başkenti Ankara'dır.", "Ankara"),
            ("Işık saniyede ne kadar yol alır?", "Işık saniyede yaklaşık üç yüz bin kilometre yol alır.", "300000 km"),
            ("Çayın vatanı neresidir?", "Çay ilk olarak Çin'de yetiştirilmiştir.", "Çin")]
    path.write_text("soru\tinsan\tmakine\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return load_heldout(path)


CASES = {
    "soup": Controls(question="q", soup_w1=0.3, soup_w2=0.9),
    "slerp": Controls(question="q", slerp_t=0.4, slerp_attn_schedule="[0, 0.5, 1]",
                      slerp_mlp_schedule="[1, 0.2, 0.6, 0]"),
    "ties": Controls(question="q", ties_density=0.6, ties_w1=1.0, ties_w2=0.7, ties_lambda=0.9),
}


@pytest.mark.parametrize("variant", sorted(CASES))
def test_exported_yaml_reproduces_the_in_app_variant_with_mergekit(comparison, variant, tmp_path):
    spec = merge_specs(CASES[variant])[variant]
    with comparison.holding({variant: spec}, materialise=True) as held:
        in_app = {n: t.clone() for n, t in comparison.model_set.bank.slice(held.variants[variant]).items()}
    yaml_text = saving.recipe_yaml(comparison.model_set, spec)
    assert f"merge_method: {'linear' if variant == 'soup' else variant}" in yaml_text
    theirs = run_mergekit_yaml(yaml_text, tmp_path / "out")
    for name, tensor in in_app.items():
        assert_close(tensor, theirs[name], name)


def test_saved_checkpoint_loads_and_answers_like_the_column(comparison, tmp_path):
    spec = merge_specs(CASES["ties"])["ties"]
    ms = comparison.model_set
    with comparison.holding({"ties": spec}, materialise=True) as held:
        folder = saving.save_variant(ms, held.variants["ties"], tmp_path, "tiny-ties", saving.recipe_yaml(ms, spec),
                                     scores={"perplexity": 12.5}, label="ties")
        prompt = comparison.prompt("Türkiye'nin başkenti neresidir?", 12)
        settings = GenerationSettings(max_new_tokens=12, greedy=True)
        column = comparison.generate(held, ["ties"], prompt.ids, settings)["ties"]
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([prompt.ids])
    out = reloaded.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert out[0, len(prompt.ids):].tolist() == column.token_ids
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "merge_method: ties" in card and "| perplexity | 12.5000 |" in card
    assert (folder / "tokenizer.json").is_file() and (folder / "mergekit_config.yml").is_file()


def test_save_refuses_outside_the_allowed_directory_and_never_overwrites(tmp_path):
    for bad in ("../escape", "/etc/passwd", "a/b", ""):
        with pytest.raises(saving.SaveError):
            saving.target_folder(tmp_path, bad)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "model.safetensors").write_bytes(b"keep me")
    with pytest.raises(saving.SaveError, match="already exists and is not empty"):
        saving.target_folder(tmp_path, "taken")
    assert (tmp_path / "taken" / "model.safetensors").read_bytes() == b"keep me"
    assert saving.target_folder(tmp_path, "new-merge") == (tmp_path / "new-merge").resolve()


def test_sweep_returns_the_points_and_marks_the_minimum(comparison, heldout):
    outcome = scoring.sweep_parameter(comparison, heldout, Controls(question="q"), "slerp_t", 5, cap=21)
    points = outcome.result.points
    assert [round(v, 6) for v, _ in points] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert outcome.result.best == min(points, key=lambda p: p[1])
    # The curve's ends are the parents themselves: SLERP t=0 is Model 1 and t=1 is Model 2.
    assert points[0][1] == pytest.approx(outcome.references["model1"], rel=1e-5)
    assert points[-1][1] == pytest.approx(outcome.references["model2"], rel=1e-5)


def test_a_sweep_can_carry_the_turkish_check_as_its_second_curve(comparison, heldout):
    outcome = scoring.sweep_parameter(comparison, heldout, Controls(question="q"), "slerp_t", 3, cap=21,
                                      turkish=True)
    assert [round(v, 6) for v, _, _ in outcome.turkish] == [0.0, 0.5, 1.0]
    # SLERP's ends are the parents: their answers, so their Turkish figures, are the parents' own.
    nan_equal = lambda a, b: a == pytest.approx(b, nan_ok=True)  # noqa: E731 (a tiny model may check no word)
    assert nan_equal(outcome.turkish[0][1:], outcome.turkish_references["model1"])
    assert nan_equal(outcome.turkish[-1][1:], outcome.turkish_references["model2"])
    assert all(0 <= r <= 1 for _, _, r in outcome.turkish)


@pytest.mark.parametrize("parameter, points, message", [
    ("slerp_t", 1, "at least 2"),
    ("slerp_t", 500, "at most 21"),
    ("top_k", 5, "'top_k' is not a parameter harman can sweep"),
    ("extra_density", 5, "choose an extra method first"),
])
def test_bad_sweeps_say_why(comparison, heldout, parameter, points, message):
    with pytest.raises(RequestError, match=message):
        scoring.sweep_parameter(comparison, heldout, Controls(question="q"), parameter, points, cap=21)


def test_scores_cover_every_variant_and_qa_metrics(comparison, heldout):
    rows = scoring.score_variants(comparison, heldout, ["model1", "model2", "soup"], Controls(question="q"),
                                  max_new_tokens=8)
    assert [r.variant for r in rows] == ["model1", "model2", "soup"]
    for r in rows:
        assert r.perplexity > 1
        assert set(r.metrics) == {"chrf", "bleu", "rouge_l", "exact_match", "token_f1", "turkish_words",
                                  "repeated_3grams"}
        assert 0 <= r.metrics["chrf"] <= 100


def test_turkish_figures_pool_words_and_average_repeats():
    answers = ["Ankara güzel bir şehirdir.", "bazılım ikiçi köylerek", "bir iki üç bir iki üç"]
    figures = scoring.turkish_figures(answers, ["", "", ""])
    checks = [turkish.check(a) for a in answers]
    assert checks[0].word_share == 1.0 and checks[1].word_share < 0.5
    pooled = sum(c.word_share * c.words_checked for c in checks) / sum(c.words_checked for c in checks)
    assert figures["turkish_words"] == pytest.approx(pooled)
    assert figures["repeated_3grams"] == pytest.approx(sum(c.repeated_share for c in checks) / 3)
    assert figures["repeated_3grams"] > 0  # the third answer repeats "bir iki üç"


def test_a_finished_columns_footer_carries_the_turkish_check():
    from serving.comparison import Column

    looped = "gök cisimlerinden biri olan gök cisimlerinden biri olan gök cisimlerinden biri"
    done = Column("soup", text=looped, n_tokens=12, seconds=1.0, done=True)
    footer = views.column_footer(done, "En büyük gök cismi hangisidir?", "tr")
    assert "Türkçe sözcük %100" in footer and "tekrar %" in footer
    assert int(footer.split("tekrar %")[1].split()[0]) == round(100 * turkish.repeated_trigram_share(looped))
    english = views.column_footer(done, "En büyük gök cismi hangisidir?", "en")
    assert "Turkish words 100%" in english and "repeated" in english and "Türkçe" not in english
    streaming = views.column_footer(Column("soup", text="Bazılım", n_tokens=1, seconds=1.0), "", "tr")
    assert "Türkçe" not in streaming  # judged once the answer is finished


def test_a_footer_counts_the_words_it_judged_and_says_how_the_answer_ended():
    from serving.comparison import Column

    question = "Dünyanın en soğuk yeri neresidir?"
    misspelt = Column("model1", text="Dünyanın en soğuk yeri Alaska'dir.", n_tokens=12, seconds=1.0, done=True,
                      finish_reason="stop_string")
    footer = views.column_footer(misspelt, question, "tr")
    assert "Türkçe sözcük %0 (0/1)" in footer and "bitti" in footer  # one word of its own, and it breaks harmony
    echo = Column("model1", text="Dünyanın en soğuk yeri", n_tokens=5, seconds=1.0, done=True, finish_reason="eos")
    assert "no words beyond the question's" in views.column_footer(echo, question, "en")
    cut = Column("model2", text="Bu harita, Osmanlı İmparatorluğu döneminde", n_tokens=64, seconds=1.0, done=True,
                 finish_reason="length")
    assert "token sınırında kesildi" in views.column_footer(cut, question, "tr")
    assert "cut at the token limit" in views.column_footer(cut, question, "en")
    waiting = Column("ties", pending="waiting")
    assert "boş birleştirme yuvası bekleniyor" in views.column_footer(waiting, question, "tr")
    assert "merging" in views.column_footer(Column("ties", pending="merging"), question, "en")


def test_greedy_soup_keeps_the_soup_only_if_it_helps(comparison, heldout):
    result = scoring.greedy_soup_of(comparison, heldout, Controls(question="q"))
    assert result.ingredients[0] == min(result.individual_scores, key=result.individual_scores.get)
    assert result.score <= min(result.individual_scores.values())


class FakeHub:
    """Stands in for huggingface_hub.HfApi (the Hub is out of reach here): records calls, can fail on upload."""

    calls: list = []
    fail_with: Exception | None = None

    def __init__(self, token):
        self.token = token

    def create_repo(self, repo_id, **options):
        FakeHub.calls.append(("create_repo", repo_id, self.token, options))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **options):
        if FakeHub.fail_with is not None:
            raise FakeHub.fail_with
        FakeHub.calls.append(("upload_folder", repo_id, self.token, sorted(p.name for p in folder_path.iterdir())))


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHub.calls, FakeHub.fail_with = [], None
    monkeypatch.setattr(saving, "HfApi", FakeHub)
    return FakeHub


def test_push_uploads_the_saved_folder_to_a_private_repo(comparison, tmp_path, fake_hub):
    spec = merge_specs(CASES["soup"])["soup"]
    ms = comparison.model_set
    with comparison.holding({"soup": spec}, materialise=True) as held:
        folder = saving.save_variant(ms, held.variants["soup"], tmp_path, "soup", saving.recipe_yaml(ms, spec),
                                     label="soup")
    assert saving.push_to_hub(folder, "someone/harman-soup", "hf_secret") == "https://huggingface.co/someone/harman-soup"
    (create, repo, token, options), (upload, repo2, token2, files) = fake_hub.calls
    assert (create, repo, token, options["private"], options["exist_ok"]) == (
        "create_repo", "someone/harman-soup", "hf_secret", True, True)
    assert (upload, repo2, token2) == ("upload_folder", "someone/harman-soup", "hf_secret")
    assert {"model.safetensors", "config.json", "README.md", "mergekit_config.yml", "tokenizer.json"} <= set(files)


def test_a_failed_push_keeps_the_saved_folder_and_says_how_to_retry(tmp_path, fake_hub):
    folder = tmp_path / "kept"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    fake_hub.fail_with = ConnectionError("Name or service not known")
    with pytest.raises(saving.PushError) as err:
        saving.push_to_hub(folder, "someone/kept", "hf_secret")
    message = str(err.value)
    assert str(folder) in message and "Name or service not known" in message and "hf upload someone/kept" in message
    assert (folder / "model.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize("repo, token, message", [
    ("someone/merge", None, "needs a Hub token"),
    ("someone/merge", "", "needs a Hub token"),
    ("not a repo id!", "hf_secret", "not a valid repo id"),
    ("a/b/c", "hf_secret", "not a valid repo id"),
])
def test_bad_push_requests_are_refused_before_anything_is_written(repo, token, message):
    with pytest.raises(saving.SaveError, match=message):
        saving.check_hub_repo(repo, token)


@pytest.mark.parametrize("variant", ["soup", "slerp"])
def test_a_merge_free_columns_perplexity_is_its_materialised_merges(comparison, heldout, variant):
    spec = merge_specs(CASES[variant])[variant]
    prompts = scoring.prompt_texts(comparison, heldout)
    with comparison.holding({variant: spec}) as held:
        assert variant not in held.variants  # coefficients, no pool slice
        free = scoring.heldout_perplexity(comparison, held, variant, heldout, prompts)
    with comparison.holding({variant: spec}, materialise=True) as held:
        materialised = scoring.heldout_perplexity(comparison, held, variant, heldout, prompts)
    assert free == pytest.approx(materialised, rel=1e-5)
