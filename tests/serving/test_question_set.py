"""The question set (serving/question_set.py, page/question_set.py): every question × column a row of the one
decoding loop, cells equal to single-question answers, a slider release redoing one column, the "= Soup" marks,
the exports, the limits, Stop, and the compare_set endpoint."""

import csv
import io
import threading
from dataclasses import replace
from types import SimpleNamespace

import gradio as gr
import pytest

import app
from errors import Refusal
from models import model_set, presets
from scoring import question_set as set_scores
from serving import question_set as sets
from serving.comparison import Column, Comparison, Request
from serving.controls import CONTROLS, Controls
from serving.requests import generation_settings, merge_specs
from tests import tiny_models

QUESTIONS = ("Türkiye'nin başkenti neresidir?", "Dünyanın en soğuk yeri neresidir?", "Işık nedir?")
COLUMNS = ("model1", "model2", "soup", "slerp", "ties")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A Comparison of a tiny GPT-2 pair whose columns answer differently, and the page's default controls."""
    dirs = tiny_models.model_set_dirs(tmp_path_factory.mktemp("qset"), "gpt2")
    preset = tiny_models.preset(dirs, generation={"max_new_tokens": 12, "max_new_tokens_cap": 64})
    return Comparison(model_set.load(preset)), preset


def set_request(preset, questions=QUESTIONS, tokens=12, **changes):
    controls = Controls(question="", repetition_penalty=1.0, **changes)
    settings = replace(generation_settings(controls, preset.generation), max_new_tokens=tokens, greedy=True)
    return sets.SetRequest(tuple(questions), COLUMNS, merge_specs(controls), settings)


def fresh(comparison):
    comparison._answers.clear()
    return comparison


def recording(comparison):
    """The columns of every job the loop is given, in order."""
    submitted, real = [], comparison.loop.submit
    comparison.loop.submit = lambda job: submitted.append(tuple(job.columns)) or real(job)
    return submitted, lambda: setattr(comparison.loop, "submit", real)


def test_set_cells_are_the_single_question_answers_token_for_token(tiny):
    comparison, preset = tiny
    request = set_request(preset)
    *_, grid = sets.run_set(fresh(comparison), request)
    assert grid.done and len(grid.token_ids) == len(QUESTIONS) * len(COLUMNS)
    assert len({grid.text(0, c) for c in COLUMNS}) >= 3, "the tiny columns must differ for this test to mean much"
    for i, question in enumerate(QUESTIONS):
        prompt = comparison.prompt(question, 12)
        settings = replace(request.settings, eos_token_ids=prompt.eos_token_ids, stop_strings=prompt.stop_strings)
        with comparison.holding(request.specs) as held:
            alone = comparison.generate(held, list(COLUMNS), prompt.ids, settings)
        for c in COLUMNS:
            assert grid.token_ids[i, c] == alone[c].token_ids, (question, c)
        fresh(comparison)
        *_, single = comparison.run(Request(question, COLUMNS, request.specs, request.settings))
        assert {c: single.columns[c].text.lstrip() for c in COLUMNS} == {c: grid.text(i, c) for c in COLUMNS}


def test_all_questions_are_submitted_together_and_share_the_loop(tiny, batches):
    comparison, preset = tiny
    submitted, restore = recording(fresh(comparison))
    # The rows of every decoding step, read in the loop itself: the set's snapshots are throttled and may all fall
    # where few rows are left, which a busy machine made happen.
    steps = batches(comparison.loop)
    try:
        list(sets.run_set(comparison, set_request(preset, tokens=16)))
    finally:
        restore()
    # TIES is pooled (merged on first use, or already held): its jobs may come after the merge-free ones.
    assert sorted(submitted) == sorted([("model1", "model2", "soup", "slerp", "ties")] * 3) or \
        sorted(submitted) == sorted([("model1", "model2", "soup", "slerp")] * 3 + [("ties",)] * 3)
    assert max(len(step) for step in steps) > len(COLUMNS)  # more than one question's rows in the batch at once


def test_a_slider_release_on_a_set_redoes_only_its_column(tiny):
    comparison, preset = tiny
    *_, before = sets.run_set(fresh(comparison), set_request(preset, slerp_t=0.3))
    submitted, restore = recording(comparison)
    try:
        *_, after = sets.run_set(comparison, set_request(preset, slerp_t=0.7))
    finally:
        restore()
    assert submitted == [("slerp",)] * len(QUESTIONS)  # one job per question, the SLERP row only
    for i in range(len(QUESTIONS)):
        for c in ("model1", "model2", "soup", "ties"):
            assert after.cells[i, c].reused and after.text(i, c) == before.text(i, c)
        assert not after.cells[i, "slerp"].reused and after.cells[i, "slerp"].merge_free


def known_grid(texts):
    questions = tuple(f"Soru {i + 1}?" for i in range(len(texts)))
    cells = {(i, c): Column(c, text=" " + t, done=True) for i, row in enumerate(texts) for c, t in zip(COLUMNS, row)}
    return sets.SetSnapshot(questions, COLUMNS, cells)


def test_identical_cells_are_marked_with_the_earlier_column():
    grid = known_grid([["a", "b", "c", "c", "b"], ["x", "x", "x", "y", "z"]])
    assert sets.same_as(grid) == {(0, "slerp"): "soup", (0, "ties"): "model2", (1, "model2"): "model1",
                                  (1, "soup"): "model1"}
    grid.cells[0, "slerp"].done = False  # a cell still being written is not judged
    assert (0, "slerp") not in sets.same_as(grid)
    from page.question_set import grid_html

    names = {c: c.upper() for c in COLUMNS}
    page = grid_html(known_grid([["a", "b", "c", "c", "b"]]), names, "en")
    assert page.count('class="set-same"') == 2 and "= SOUP" in page and "= MODEL2" in page
    summary = set_scores.summaries(known_grid([["a", "b", "c", "c", "b"], ["x", "x", "x", "y", "z"]]))
    assert [s.identical for s in summary] == [0, 1, 1, 1, 1]


def test_markdown_and_csv_exports_of_a_known_grid():
    grid = known_grid([["Ankara'dır.", "Başkent | Ankara", "Ankara", "Ankara", "İki\nsatır"]])
    assert sets.markdown(grid) == (
        "| Soru | Cevap Model 1 | Cevap Model 2 | Linear Merged Cevap | Slerp Merged Cevap | Ties Merged Cevap |\n"
        "|---|---|---|---|---|---|\n"
        "| Soru 1? | Ankara'dır. | Başkent \\| Ankara | Ankara | Ankara | İki<br>satır |\n")
    rows = list(csv.reader(io.StringIO(sets.csv_text(grid))))
    assert rows == [["Soru", "Cevap Model 1", "Cevap Model 2", "Linear Merged Cevap", "Slerp Merged Cevap",
                     "Ties Merged Cevap"],
                    ["Soru 1?", "Ankara'dır.", "Başkent | Ankara", "Ankara", "Ankara", "İki\nsatır"]]
    extra = sets.SetSnapshot(grid.questions, (*COLUMNS, "extra"),
                             {**grid.cells, (0, "extra"): Column("extra", text="e", done=True)})
    assert sets.markdown(extra, "dare_ties").splitlines()[0].endswith("| dare_ties Merged Cevap |")


def test_empty_lines_are_skipped_and_limits_are_refused_with_their_messages(tiny):
    comparison, _ = tiny
    assert sets.parse_questions("\n  Bir?\n\n İki? \n") == [(2, "Bir?"), (4, "İki?")]
    with pytest.raises(Refusal) as err:
        sets.parse_questions("\n".join(f"Soru {i}?" for i in range(11)))
    assert err.value.text("en") == ("question set: 11 questions is over this deployment's limit of 10 per set; "
                                    "ask fewer")
    assert "10 soruluk sınırını aşıyor" in err.value.text("tr")
    with pytest.raises(Refusal) as err:
        sets.parse_questions(" \n\n")
    assert err.value.text("en") == "question set: it is empty; write one question per line"
    lines = sets.parse_questions("Kısa?\n\n" + "uzun " * 30)
    with pytest.raises(Refusal) as err:
        sets.check_questions(lines, comparison.model_set.tokenizer, max_chars=100, max_tokens=512)
    assert err.value.text("en") == ("question set, line 3: 149 characters is over this deployment's limit of 100; "
                                    "shorten this question")
    with pytest.raises(Refusal) as err:
        sets.check_questions(lines, comparison.model_set.tokenizer, max_chars=2000, max_tokens=10)
    assert err.value.text("tr").startswith("soru seti, satır 3: ") and "10 tokenlik sınırını" in err.value.text("tr")
    assert app.parse_args(["--max-set-questions", "4"]).max_set_questions == 4


def test_stop_ends_the_whole_set_and_keeps_the_cells_written(tiny):
    comparison, preset = tiny
    stop = threading.Event()
    request = set_request(preset, tokens=60)
    snaps = sets.run_set(fresh(comparison), request, stop)
    for snap in snaps:
        if sum(cell.n_tokens for cell in snap.cells.values()) >= 20:
            written = {cell: snap.text(*cell) for cell in snap.cells}
            stop.set()
            break
    for snap in snaps:
        pass
    assert any(written.values())
    assert all(cell.done for cell in snap.cells.values())
    for cell, text in written.items():
        assert snap.text(*cell).startswith(text)  # nothing written is lost
    assert any(c.finish_reason == "stopped" for c in snap.cells.values())
    assert comparison.loop.rows == 0 or stop.is_set()
    # Stopped cells are not cached: asking again decodes them.
    submitted, restore = recording(comparison)
    try:
        *_, again = sets.run_set(comparison, request)
    finally:
        restore()
    assert submitted and again.done


def set_part(preset, limits):
    """The page's question set part on its own (its handlers read only the context's limits and defaults)."""
    from page.context import page_context
    from page.question_set import QuestionSetPart

    with gr.Blocks():
        return QuestionSetPart(page_context(None, preset, limits, []), [])


def test_a_link_with_too_many_questions_opens_with_a_message(tiny):
    comparison, preset = tiny
    components = set_part(preset, app.Limits(max_set_questions=3))
    request = SimpleNamespace(query_params={"set": "Bir?\nİki?\nÜç?\nDört?"},
                              headers={"accept-language": "en"})
    shown = components.restore(request)
    assert shown[components.from_link] is False and shown[components.questions] == "Bir?\nİki?\nÜç?\nDört?"
    assert shown[components.message].startswith("⚠️ This link's set has 4 questions; this deployment answers at "
                                                 "most 3")
    request.query_params["set"] = "Bir?\n\nİki?"
    assert components.restore(request)[components.from_link] is True


@pytest.fixture(scope="module")
def served(tiny):
    comparison, preset = tiny
    page, options = app.build_page(comparison, list(QUESTIONS), preset=preset)
    app.queue_quietly(page.queue(max_size=16, default_concurrency_limit=4))
    _, url, _ = page.launch(prevent_thread_lock=True, quiet=True, show_error=True, **options)
    from gradio_client import Client

    client = Client(url, verbose=False, headers={"Accept-Language": "en"})
    yield client
    client.close()
    page.close()


def test_compare_set_takes_questions_then_compares_parameters_and_answers_alike(served):
    client = served
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    compare = [p["parameter_name"] for p in api["/compare"]["parameters"]]
    assert [p["parameter_name"] for p in api["/compare_set"]["parameters"]] == ["questions", *compare[1:]]
    assert compare[0] == "question" and compare[1:] == [c.name for c in CONTROLS[1:]]
    values = {c.name: c.default for c in CONTROLS[1:]}
    values.update(ties_density1=0.5, ties_density2=0.5, max_new_tokens=10, greedy=True, repetition_penalty=1.0)
    out = client.predict("\n".join(QUESTIONS[:2]) + "\n\n", *values.values(), api_name="/compare_set")
    table = out[3]
    assert table["headers"] == ["question", "Model 1", "Model 2", "Soup", "SLERP", "TIES"]
    assert [row[0] for row in table["data"]] == list(QUESTIONS[:2])
    answers = slice(1 + len(app.COLUMNS), 1 + len(app.COLUMNS) + 5)
    for row in table["data"]:
        single = client.predict(row[0], *values.values(), api_name="/compare")
        assert row[1:] == list(single[answers])
    files = out[4]["value"] if isinstance(out[4], dict) else out[4]  # shown on the page with its update
    names = sorted(str(f.get("path", f) if isinstance(f, dict) else f).rsplit("/", 1)[-1] for f in files)
    assert names == ["harman-soru-seti.csv", "harman-soru-seti.md"], out[4]


def test_on_the_default_pair_set_cells_are_the_single_question_answers():
    """Two of the seed's questions on Gemma 3 270M + its LoRA pair: each greedy cell, token for token, what the
    same question's column gives asked alone; SLERP's cells repeat the soup's (it falls back to linear)."""
    from prompts import examples
    from training import finetune

    preset = presets.load("default", environ={})
    if not all((finetune.adapter_dir(preset, t) / "adapter_model.safetensors").is_file() for t in finetune.TASKS):
        pytest.skip("the default adapters are not trained yet (python -m training.finetune)")
    comparison = Comparison(model_set.load(preset), answer_cache=0)
    questions = examples.seed_questions()[1:3]
    request = set_request(preset, questions, tokens=16)
    *_, grid = sets.run_set(comparison, request)
    for i, question in enumerate(questions):
        prompt = comparison.prompt(question, 16)
        settings = replace(request.settings, eos_token_ids=prompt.eos_token_ids, stop_strings=prompt.stop_strings)
        with comparison.holding(request.specs) as held:
            alone = comparison.generate(held, list(COLUMNS), prompt.ids, settings)
        assert {c: grid.token_ids[i, c] for c in COLUMNS} == {c: alone[c].token_ids for c in COLUMNS}, question
        assert sets.same_as(grid).get((i, "slerp")) == "soup"
    assert set_scores.summaries(grid)[COLUMNS.index("slerp")].fallback_share == 1.0


def test_example_and_held_out_questions_are_added_to_the_list(tiny):
    limits = app.Limits(heldout=app.default_heldout(), max_set_questions=4)
    components = set_part(tiny[1], limits)
    added = components.add_example("Işık nedir?", "Bir?\n")
    assert added == {components.questions: "Bir?\nIşık nedir?", components.example: None}
    request = SimpleNamespace(headers={"accept-language": "en"})
    qa = limits.heldout[0]
    shown = components.add_heldout(qa, 2, "Bir?", request)[components.questions].splitlines()
    from scoring.heldout import load_heldout

    assert shown == ["Bir?", *(r.question for r in load_heldout(qa, limit=2).rows)]
    with pytest.raises(gr.Error) as err:
        components.add_heldout(qa, 5, "", request)
    assert err.value.message.startswith("Request refused: question set: 5 questions is over this deployment's "
                                        "limit of 4")
