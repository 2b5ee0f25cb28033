"""The page without a browser: its text in both languages, the controls table everything follows from, shared
links, and the per-visitor Stop and request limit."""

import string
import threading
from types import SimpleNamespace

import pytest

from page import links, tasks
from serving import controls as table
from serving.controls import CONTROLS, Control
from words import TEXT, language, say


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_languages_have_every_entry_with_the_same_blanks():
    assert set(TEXT["tr"]) == set(TEXT["en"])
    for key in TEXT["tr"]:
        assert fields(TEXT["tr"][key]) == fields(TEXT["en"][key]), key
    assert set(c.label for c in CONTROLS) <= set(TEXT["tr"])  # every control has a label in both


def test_every_refusal_the_code_raises_has_words_in_both_languages():
    """A refusal names a key of words.py; one without an entry would reach the visitor as a KeyError."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = "\n".join(p.read_text() for folder in ("models", "page", "prompts", "scoring", "merging")
                     for p in (root / folder).glob("*.py")) + (root / "app.py").read_text()
    keys = set(re.findall(r'"(err_\w+)"', code))
    assert len(keys) > 30 and keys <= set(TEXT["tr"])
    numbers = [c.name for c in CONTROLS if c.kind in ("slider", "number") or c.name.endswith("_schedule")]
    assert {f"name_{n}" for n in numbers} <= set(TEXT["tr"])  # what check_number and schedules name them


def test_a_refusal_speaks_the_visitors_language():
    from errors import Refusal, Term

    refusal = Refusal("err_range", name=Term("name_slerp_t"), x=1.5, lo=0.0, hi=1.0, bracket="[")
    assert refusal.text("tr") == "SLERP t: 1.5 izin verilen [0, 1] aralığının dışında"
    assert refusal.text("en") == str(refusal) == "SLERP t: 1.5 is outside the allowed range [0, 1]"
    assert Refusal("err_sweep_extra").text("tr").startswith("tarama: extra_density ek sütuna ait")


@pytest.mark.parametrize("header, lang", [("tr-TR,tr;q=0.9,en;q=0.8", "tr"), ("en-US,en;q=0.9", "en"),
                                          ("de-DE,tr;q=0.5", "tr"), ("", "en"), (None, "en")])
def test_the_visitors_language_comes_from_the_request(header, lang):
    request = SimpleNamespace(headers={} if header is None else {"accept-language": header})
    assert language(request) == lang
    assert say(lang, "done") == {"tr": "bitti", "en": "done"}[lang]


def test_a_shared_link_sets_the_controls_it_names_and_keeps_the_rest():
    defaults = {c.name: c.default for c in CONTROLS}
    keep = object()
    values = links.values_from_query({"q": "Çay?", "t": "0.8", "greedy": "false", "w1": "abc"}, defaults, keep)
    by_name = dict(zip((c.name for c in CONTROLS), values))
    assert by_name["question"] == "Çay?" and by_name["slerp_t"] == 0.8 and by_name["greedy"] is False
    assert by_name["soup_w1"] == 0.5  # a number that does not parse: the default
    assert by_name["ties_density"] is keep


def test_one_visitors_stop_stops_only_their_requests():
    visitors = tasks.Visitors(max_requests=2)
    with visitors.request("a") as a, visitors.request("b") as b:
        assert visitors.stop("a") == 1
        assert a.is_set() and not b.is_set()
    assert visitors.running("a") == visitors.running("b") == 0


def test_a_visitor_over_the_request_limit_is_refused():
    visitors = tasks.Visitors(max_requests=1)
    with visitors.request("a"):
        with pytest.raises(tasks.TooMany, match="already has 1 requests running"):
            with visitors.request("a"):
                pass
        with visitors.request("b"):  # another visitor is not affected
            pass


def test_background_work_keeps_the_handler_yielding_and_a_closed_handler_cancels_it():
    cancel, reported = threading.Event(), threading.Event()

    def work(report):
        while not cancel.is_set():
            report(0.5, "working")
            reported.set()
            cancel.wait(0.01)
        return "stopped"

    seen = []
    runner = tasks.background(work, cancel, "idle", lambda f, what: seen.append(what), poll=0.01)
    assert next(runner) == "idle"
    assert reported.wait(timeout=60)  # the timeout only bounds a hang
    assert next(runner) == "idle"  # its progress now carries what the work reported
    runner.close()  # the visitor closed the tab
    assert cancel.is_set() and "working" in seen

    done = tasks.background(lambda report: 42, threading.Event(), "idle", poll=0.01)
    with pytest.raises(StopIteration) as finished:
        while True:
            next(done)
    assert finished.value.value == 42


def test_a_new_control_row_reaches_the_page_the_api_the_link_and_the_sweep_list(monkeypatch, tmp_path):
    """One row in serving/controls.py: a slider on the page, a parameter of the compare endpoint, a key of the
    shared link and a choice of the sweep, with no other edit."""
    import app
    from models import model_set
    from scoring import variants
    from serving import requests
    from serving.comparison import Comparison
    from tests import tiny_models

    row = Control("slerp_t_extra", "slider", 0.25, "slerp_t", "t2", "advanced", 0, 1, 0.05,
                  merge="slerp", sweep=True)
    rows = (*CONTROLS, row)
    derived = table.derive(rows)
    monkeypatch.setattr(table, "CONTROLS", rows)
    for name, value in derived.items():
        monkeypatch.setattr(table, name, value)
    monkeypatch.setattr(requests, "BY_NAME", derived["BY_NAME"])
    monkeypatch.setattr(variants, "SWEEPABLE", derived["SWEEPABLE"])

    dirs = tiny_models.model_set_dirs(tmp_path, "gpt2")
    preset = tiny_models.preset(dirs)
    page, options = app.build_page(Comparison(model_set.load(preset)), [])
    config = page.get_config_file()
    sliders = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "slerp_t_extra"]
    assert sliders and sliders[0]["props"]["value"] == 0.25
    api = page.get_api_info()
    compare = api["named_endpoints"]["/compare"]["parameters"]
    assert [p["parameter_name"] for p in compare][-1] == "slerp_t_extra"
    sweep_choices = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "sweep_param"]
    assert "slerp_t_extra" in [choice[1] for choice in sweep_choices[0]["props"]["choices"]]
    copy_link = [d["js"] for d in config["dependencies"] if d.get("js") and "URLSearchParams" in d["js"]]
    assert copy_link and "'t2'" in copy_link[0]  # the shared link carries it
    assert derived["Controls"](question="q").slerp_t_extra == 0.25
    assert table.from_values([*(c.default for c in CONTROLS), 0.75]).slerp_t_extra == 0.75


def test_loading_hands_its_value_or_its_error_to_every_waiting_request():
    started, errors = threading.Event(), []
    loading = tasks.Loading(lambda: started.wait(60) and "models")
    assert not loading.ready()
    with pytest.raises(TimeoutError):
        loading.get(timeout=0.01)
    loading.start()
    started.set()
    assert loading.get(timeout=60) == "models" and loading.ready()

    failing = tasks.Loading(lambda: 1 / 0, errors.append)
    failing.start()
    for _ in range(2):  # every request that waited gets the load's own error
        with pytest.raises(ZeroDivisionError):
            failing.get(timeout=60)
    assert isinstance(errors[0], ZeroDivisionError)
    assert tasks.Loading.done("ready").get(timeout=0) == "ready"


def test_the_scores_table_and_progress_speak_the_pages_language():
    from page import views
    from scoring.variants import ScoreRow

    preset = SimpleNamespace(model1_label="Model 1 (soru-cevap)", model1_label_en="Model 1 (QA)",
                             model2_label="Model 2 (talimat)", model2_label_en="Model 2 (instructions)")
    result = [ScoreRow("model1", 7.7241, {"chrf": 47.2686, "turkish_words": 0.9722, "repeated_3grams": 0.0}),
              ScoreRow("slerp", 11.4, {"chrf": 18.89, "turkish_words": 1.0, "repeated_3grams": 0.1304}),
              ScoreRow("extra", 9.0, {"chrf": 20.0, "turkish_words": 0.5, "repeated_3grams": 0.0})]
    headers, rows = views.score_table(result, preset, "tr", "dare_ties")
    assert headers == ["Sütun", "perplexity", "chrF", "Türkçe sözcük %", "tekrarlanan 3-gram %"]  # no EM/F1 here
    assert rows == [["Model 1 (soru-cevap)", 7.724, 47.27, 97.2, 0.0], ["SLERP", 11.4, 18.89, 100.0, 13.0],
                    ["dare_ties", 9.0, 20.0, 50.0, 0.0]]
    headers, rows = views.score_table(result, preset, "en")
    assert headers[0] == "Column" and headers[-1] == "repeated 3-grams %" and rows[0][0] == "Model 1 (QA)"
    assert views.progress_text(("progress_perplexity", {"column": "model2"}), preset, "tr") == \
        "perplexity: Model 2 (talimat)"
    assert views.progress_text(("progress_point", {"parameter": "slerp_t", "i": 3, "n": 11}), preset, "tr") == \
        "SLERP t: nokta 3/11"
    assert views.progress_text(("progress_answers", {"i": 1, "n": 2}), preset, "en") == "greedy answers: row 1/2"


@pytest.mark.parametrize("lang, expected", [
    ("tr", "Türkçe sözcük %20 (1/5) · tanınmayan: ikiçi, köylerek, okulleri +1 · tekrar %0"),
    ("en", "Turkish words 20% (1/5) · not recognised: ikiçi, köylerek, okulleri +1 · repeated 0%")])
def test_a_finished_footer_names_the_words_the_turkish_check_did_not_accept(lang, expected):
    from page import views
    from serving.comparison import Column

    column = Column("model2", text="ikiçi köylerek okulleri kitaplerin ve", n_tokens=9, seconds=3.0, done=True,
                    finish_reason="eos", merge_free=True)
    assert views.column_footer(column, "Nedir?", lang).endswith(expected)
    column.text = "Dünyanın en soğuk yeri Antarktika'dır."
    assert "tanınmayan" not in views.column_footer(column, "Dünyanın en soğuk yeri neresidir?", "tr")


def test_an_answer_box_starts_at_the_first_word():
    from page import views
    from serving.comparison import Column

    assert views.answer_text(Column("soup", text=" Dünyanın en soğuk yeri\n Sibirya'dır.")) == \
        "Dünyanın en soğuk yeri\n Sibirya'dır."
    assert views.answer_text(None) == ""
