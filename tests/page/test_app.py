"""The page's `compare` endpoint, driven with gradio_client against the app launched in-process on tiny models."""

import queue
import threading
from collections import defaultdict

import pytest
import torch
from gradio_client import Client

import app
from models import model_set, presets
from serving.comparison import Comparison
from tests import tiny_models
from tests.page.defaults import DEFAULTS, QUESTION

ANSWERS = slice(1 + len(app.COLUMNS), 1 + 2 * len(app.COLUMNS))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    dirs = tiny_models.sign_agreeing_dirs(tmp_path_factory.mktemp("app"))
    preset = tiny_models.preset(dirs, generation={"max_new_tokens": 12, "max_new_tokens_cap": 64})
    comparison = Comparison(model_set.load(preset))
    page, options = app.build_page(comparison, ["Türkiye'nin başkenti neresidir?"])
    app.queue_quietly(page.queue(max_size=16, default_concurrency_limit=4))
    queue = page._queue  # Gradio still has the settings app.py relaxes (else an idle server polls every 1 ms)
    assert queue.sleep_when_free == queue.progress_update_sleep_when_free == app.IDLE_POLL_S
    _, url, _ = page.launch(prevent_thread_lock=True, quiet=True, show_error=True, **options)
    client = Client(url, verbose=False, headers={"Accept-Language": "tr-TR,tr;q=0.9"})
    yield client, comparison
    client.close()
    page.close()


def ask(client, **changes):
    values = {**DEFAULTS, **changes}
    out = client.predict(*values.values(), api_name="/compare")
    return dict(zip(app.COLUMNS, out[ANSWERS]))


def test_every_column_streams_more_than_one_update(served):
    client, _ = served
    job = client.submit(*{**DEFAULTS, "question": "Işık nedir?", "max_new_tokens": 16}.values(),
                        api_name="/compare")
    job.result(timeout=120)
    updates = job.outputs()
    for i, name in enumerate(app.COLUMNS[:5]):
        texts = [u[ANSWERS][i] for u in updates]
        assert len(set(texts)) > 1, f"column {name} got a single update"
        assert texts[-1], name


def test_merges_at_their_ends_equal_the_parents(served):
    client, _ = served
    at0 = ask(client, slerp_t=0.0, soup_w1=1.0, soup_w2=0.0)
    assert at0["model1"] != at0["model2"], "the tiny fine-tunes must answer differently for this test to mean much"
    assert at0["slerp"] == at0["model1"]
    assert at0["soup"] == at0["model1"]
    at1 = ask(client, slerp_t=1.0, soup_w1=0.0, soup_w2=1.0)
    assert at1["slerp"] == at1["model2"] and at1["soup"] == at1["model2"]


def test_ties_at_full_density_with_equal_weights_is_the_task_vector_average(served):
    client, _ = served
    out = ask(client, ties_density=1.0, ties_density1=1.0, ties_density2=1.0, soup_w1=0.5, soup_w2=0.5)
    assert out["ties"] == out["soup"]  # no sign conflicts: TIES = base + mean of task vectors = the 50/50 soup


def test_unchanged_columns_are_reused_not_regenerated(served):
    client, comparison = served
    ask(client, slerp_t=0.3, question="Ankara nerededir?")
    calls = []
    original = comparison.coefficients
    comparison.coefficients = lambda spec: calls.append(spec) or original(spec)
    try:
        out = client.predict(*{**DEFAULTS, "slerp_t": 0.7, "question": "Ankara nerededir?"}.values(),
                             api_name="/compare")
    finally:
        comparison.coefficients = original
    footers = dict(zip(app.COLUMNS, out[1 + 2 * len(app.COLUMNS):]))
    assert [spec.method for spec in calls] == ["slerp"]  # SLERP's coefficients only; nothing is merged
    for name in ("model1", "model2", "soup", "ties"):
        assert "önbellekten" in footers[name], (name, footers[name])
    assert "önbellekten" not in footers["slerp"] and "birleştirme yok (katsayılarla)" in footers["slerp"]
    # Each merged column says in brief why it answers as it does, also when its answer came from the cache.
    assert "doğrusala düşen tensör %" in footers["slerp"] and "ortalama açı" in footers["slerp"]
    assert "tutulan %" in footers["ties"] and "seçilen işarete uyan M1/M2 %" in footers["ties"]
    assert "uzaklık M1/M2 0." in footers["soup"]
    assert "<small>" not in footers["model1"]


@pytest.fixture
def no_answer_cache(served):
    _, comparison = served
    comparison.answer_cache, comparison._answers = 0, type(comparison._answers)()
    yield
    comparison.answer_cache = 256


def watch_runs(comparison):
    """Wraps comparison.run: per question, an event set once a snapshot with tokens has gone to the page, and one
    set once the request's generator has ended (its rows out of the loop, its slices let go); and the undo."""
    streaming, ended = defaultdict(threading.Event), defaultdict(threading.Event)
    run = comparison.run

    def watched(request, stop_event=None):
        snapshots = run(request, stop_event)
        try:
            for snapshot in snapshots:
                yield snapshot
                if any(c.n_tokens for c in snapshot.columns.values()):
                    streaming[request.question].set()
        finally:
            snapshots.close()  # its own cleanup first: the stop, the rows leaving, the slices let go
            ended[request.question].set()

    comparison.run = watched
    return streaming, ended, lambda: delattr(comparison, "run")


def first_output(job, timeout: float = 120):
    """A client job's first streamed output, waited for in a thread: the timeout only bounds a hang."""
    got = queue.Queue()
    threading.Thread(target=lambda: got.put(next(iter(job), None)), daemon=True).start()
    return got.get(timeout=timeout)


@pytest.mark.parametrize("clients", [2, 3])
def test_concurrent_clients_with_their_own_settings_get_what_they_get_alone(served, no_answer_cache, clients,
                                                                           batches):
    """No answer comes from the cache: every column of every request decodes, in one loop, next to the others'."""
    client, comparison = served
    asks = [dict(question="Çay nasıl demlenir?", slerp_t=0.2, soup_w1=0.9, soup_w2=0.1, ties_density=0.4),
            dict(question="Ankara nerededir?", slerp_t=0.8, soup_w1=0.3, soup_w2=0.7, ties_density=0.7),
            dict(question="Işık nedir?", slerp_t=0.5, soup_w1=0.6, soup_w2=0.6, ties_density=0.4)][:clients]
    alone = [ask(client, max_new_tokens=20, **a) for a in asks]
    assert len({a["slerp"] for a in alone}) == clients
    steps = batches(comparison.loop)  # the rows of every decoding step, read in the loop itself

    # The requests' first jobs reach the loop together (a barrier, not a timer): on busy cores one request could
    # otherwise finish its 20 tokens before the next one arrives, and nothing would share a batch.
    arrived, submit = threading.Barrier(clients, timeout=60), comparison.loop.submit
    first = iter(range(clients))

    def submit_together(job):
        if next(first, None) is not None:
            arrived.wait()
        return submit(job)

    comparison.loop.submit = submit_together
    try:
        jobs = [client.submit(*{**DEFAULTS, "max_new_tokens": 20, **a}.values(), api_name="/compare") for a in asks]
        together = [dict(zip(app.COLUMNS, job.result(timeout=120)[ANSWERS])) for job in jobs]
    finally:
        comparison.loop.submit = submit
    assert together == alone
    assert max(len(step) for step in steps) > len(app.COLUMNS[:5])  # more than one request's rows in one step


def test_cancelled_job_stops_generation_and_releases_the_variants(served):
    client, comparison = served
    question = "Uzun bir hikâye anlat."
    streaming, ended, restore = watch_runs(comparison)
    try:
        job = client.submit(*{**DEFAULTS, "question": question, "max_new_tokens": 64, "repetition_penalty": 1.0,
                              "slerp_t": 0.45}.values(), api_name="/compare")
        assert streaming[question].wait(timeout=120)  # the timeouts only bound a hang
        job.cancel()
        assert ended[question].wait(timeout=120)
    finally:
        restore()
    assert not any(s.readers for s in comparison.pool.slots) and not comparison.loop.rows
    assert ask(client, question="Ankara nerededir?")["model1"]  # and the app keeps serving


def test_stop_event_ends_every_column_at_the_next_step(served):
    from serving.comparison import Request
    from serving.requests import Controls, generation_settings, merge_specs

    _, comparison = served
    controls = Controls(question="Uzun bir hikâye anlat.", max_new_tokens=64, slerp_t=0.55, greedy=True)
    stop = threading.Event()
    request = Request(controls.question, app.COLUMNS[:5], merge_specs(controls),
                      generation_settings(controls, presets.GenerationDefaults(max_new_tokens_cap=64)))
    snapshots = comparison.run(request, stop)
    next(snapshots)
    stop.set()
    steps = comparison.loop.steps
    last = None
    for last in snapshots:
        pass
    assert comparison.loop.steps - steps <= 1  # the step under way when it came, if any, and no other
    assert all(c.done for c in last.columns.values())
    assert {c.finish_reason for c in last.columns.values()} <= {"stopped", "eos", "length"}


# The served client asks in Turkish (Accept-Language: tr), so harman's refusals are Turkish; Gradio's own checks of
# a slider's range run before the handler and stay in Gradio's English.
@pytest.mark.parametrize("changes, message", [
    ({"question": "   "}, "Soru boş"),
    ({"soup_w1": 0.0, "soup_w2": 0.0}, "ikisi de 0"),
    # Gradio checks a slider's range before the handler runs; harman checks again (see test_requests.py).
    ({"slerp_t": 1.5}, "1.5 is greater than maximum value 1"),
    ({"slerp_t": "nan"}, "Expected a `float`"),
    ({"max_new_tokens": 10_000}, "10000 is greater than maximum value 64"),
    ({"slerp_attn_schedule": "[0, oops]"}, "SLERP dikkat planı"),
    ({"extra_method": "frankenmerge"}, "frankenmerge"),
])
def test_bad_input_gets_a_message_and_the_app_keeps_serving(served, changes, message):
    client, _ = served
    with pytest.raises(Exception, match=message):
        ask(client, **changes)
    assert ask(client, question="Ankara nerededir?")["model2"]


def test_extra_column_runs_the_chosen_method(served):
    client, _ = served
    out = ask(client, extra_method="task_arithmetic", ties_w1=1.0, ties_w2=0.0)
    # task arithmetic with weights (1, 0) and lambda 1 is Model 1 itself
    assert out["extra"] == out["model1"]


def test_the_extra_column_answers_as_its_merge_where_it_differs_from_both_models(served):
    """Task arithmetic with weights 1 and 1 and lambda 1 (base -1, Model 1 +1, Model 2 +1: mergekit's
    task_arithmetic, which does not normalise): neither Model 1's answer nor Model 2's, but the greedy answer of
    plain transformers with the weights summed here by hand. (At weights 0.5 and 1 it is Model 2's answer.)"""
    from transformers import AutoModelForCausalLM

    client, comparison = served
    question = "Işık nedir?"
    out = ask(client, question=question, extra_method="task_arithmetic", ties_w1=1.0, ties_w2=1.0, ties_lambda=1.0)
    assert out["extra"] != out["model1"] and out["extra"] != out["model2"]
    preset, tok = comparison.model_set.preset, comparison.model_set.tokenizer
    base, first, second = (AutoModelForCausalLM.from_pretrained(getattr(preset, role)).eval()
                           for role in ("base", "model1", "model2"))
    with torch.no_grad():
        for name, weight in base.named_parameters():
            delta1, delta2 = first.get_parameter(name) - weight, second.get_parameter(name) - weight
            weight.add_(1.0 * (1.0 * delta1 + 1.0 * delta2))
    prompt = comparison.prompt(question, DEFAULTS["max_new_tokens"])
    ids = torch.tensor([prompt.ids])
    with torch.no_grad():
        tokens = base.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=DEFAULTS["max_new_tokens"], eos_token_id=list(prompt.eos_token_ids),
                               pad_token_id=prompt.eos_token_ids[0])[0, ids.shape[1]:]
    text = tok.decode(tokens, skip_special_tokens=True)
    for stop in prompt.stop_strings:  # the answer ends before a stop string, as the page's does
        text = text.split(stop)[0]
    assert out["extra"].strip() == text.strip() and text.strip()


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The app with a held-out file and a save directory, for the measure-and-keep endpoints."""
    root = tmp_path_factory.mktemp("measure")
    dirs = tiny_models.model_set_dirs(root, "gpt2")
    heldout = root / "qa.tsv"
    heldout.write_text("soru\tinsan\tmakine\n" + "".join(
        f"{q}\t{a}\t{a}\n" for q, a in [("Ankara nerededir?", "Ankara İç Anadolu'dadır."),
                                         ("Işık nedir?", "Işık bir dalgadır."), ("Çay nedir?", "Çay bir içecektir.")]),
        encoding="utf-8")
    preset = tiny_models.preset(dirs, generation={"max_new_tokens": 6, "max_new_tokens_cap": 64})
    limits = app.Limits(heldout=(str(heldout),), max_rows=10, max_sweep_points=7, save_dir=str(root / "saved"))
    page, options = app.build_page(Comparison(model_set.load(preset)), [], limits)
    page.queue()
    _, url, _ = page.launch(prevent_thread_lock=True, quiet=True, show_error=True, **options)
    client = Client(url, verbose=False, headers={"Accept-Language": "tr-TR,tr;q=0.9"})
    yield client, str(heldout), root
    client.close()
    page.close()


def test_score_endpoint_measures_turkmorfbench_for_every_column(measured):
    client, _, _ = measured
    controls = list({**DEFAULTS, "max_new_tokens": 6}.values())
    table, _, note = client.predict("turkmorfbench", 6, *controls, api_name="/score")
    table = table["value"]
    assert [r[0] for r in table["data"]][2:] == ["Soup", "SLERP", "TIES"]
    assert table["headers"][:2] == ["Sütun", "TurkMorfBench doğruluğu (%)"]
    # Six items: every accuracy is a whole number of them, and the note breaks it down per bucket.
    assert all(r[1] in [round(100 * k / 6, 1) for k in range(7)] for r in table["data"])
    assert "Kovaya göre doğruluk" in note and "6 madde" in note and "eCloud Tech." in note
    with pytest.raises(Exception):  # past the slider's top (the item cap): Gradio refuses it before the handler
        client.predict("turkmorfbench", 1837, *controls, api_name="/score")
    # A sweep may use the accuracy as its curve: the best point is the highest.
    curve, note, *_ = client.predict("turkmorfbench", 6, "slerp_t", 3, True, *controls, api_name="/sweep")
    points = [r for r in curve["value"]["data"] if r[2] == "SLERP t"]
    assert [r[0] for r in points] == [0.0, 0.5, 1.0]
    assert all(r[1] in [100 * k / 6 for k in range(7)] for r in points)
    best = max(points, key=lambda r: r[1])
    assert f"SLERP t = **{best[0]:.3f}** (TurkMorfBench doğruluğu %{best[1]:.1f})" in note


def test_score_sweep_export_and_save_endpoints(measured):
    client, heldout, root = measured
    controls = list({**DEFAULTS, "max_new_tokens": 6}.values())
    table, _, _ = client.predict(heldout, 3, *controls, api_name="/score")
    table = table["value"]  # an update: the table with its visibility (hidden until the first score)
    assert [r[0] for r in table["data"]][2:] == ["Soup", "SLERP", "TIES"]  # the columns' names on the page
    assert "tam eşleşme" in table["headers"] and "perplexity" in table["headers"]
    curve, note, *_, turkish_curve = client.predict(heldout, 3, "slerp_t", 3, True, *controls, api_name="/sweep")
    curve, turkish_curve = curve["value"], turkish_curve["value"]  # plot updates: the data with its axis titles
    sweep_rows = [r for r in curve["data"] if r[2] == "SLERP t"]
    assert [r[0] for r in sweep_rows] == [0.0, 0.5, 1.0]
    best = min(sweep_rows, key=lambda r: r[1])
    assert f"SLERP t = **{best[0]:.3f}**" in note
    words = [r for r in turkish_curve["data"] if r[2] == "Türkçe sözcük payı"]
    assert [r[0] for r in words] == [0.0, 0.5, 1.0]  # the Turkish check as the sweep's second curve
    marker = [r for r in curve["data"] if r[2].startswith("en iyi")]  # the Turkish page's words
    assert {r[0] for r in marker} == {best[0]} and len(marker) == 2  # a vertical line at the best point
    recipe = client.predict("ties", *controls, api_name="/export_mergekit")
    assert "merge_method: ties" in recipe and "density: 0.5" in recipe
    status, download = client.predict("slerp", "tiny-slerp", "", *controls, api_name="/save_merged")
    assert "tiny-slerp" in status and download and (root / "saved" / "tiny-slerp" / "model.safetensors").is_file()
    # No Hub token on this deployment: a push is refused before anything is written.
    with pytest.raises(Exception, match="Hub token'ı ister"):
        client.predict("slerp", "pushed", "someone/pushed", *controls, api_name="/save_merged")
    assert not (root / "saved" / "pushed").exists()
    with pytest.raises(Exception, match="zaten var ve boş değil"):
        client.predict("slerp", "tiny-slerp", "", *controls, api_name="/save_merged")
    with pytest.raises(Exception, match="kayıt adı '../escape'"):
        client.predict("slerp", "../escape", "", *controls, api_name="/save_merged")
    with pytest.raises(Exception, match="en fazla 7 nokta"):
        client.predict(heldout, 3, "slerp_t", 50, False, *controls, api_name="/sweep")
    with pytest.raises(Exception, match="not in the list of choices|bu kurulumun sunduklarından değil"):
        client.predict("/etc/passwd", 3, *controls, api_name="/score")


def test_a_question_over_the_limit_is_refused_at_once_and_the_next_is_answered(served):
    client, comparison = served
    submitted, submit = [], comparison.loop.submit
    comparison.loop.submit = lambda job: submitted.append(job) or submit(job)
    try:
        with pytest.raises(Exception, match="300000 karakter, bu kurulumun 2000 karakterlik sınırını aşıyor"):
            client.predict(*{**DEFAULTS, "question": "Ankara " * 42_857 + "?"}.values(), api_name="/compare")
    finally:
        comparison.loop.submit = submit
    assert submitted == []  # refused before anything is prefilled (it held the server 327 s)
    assert all(ask(client, question="Ankara nerededir?", max_new_tokens=4)[c] for c in app.COLUMNS[:5])


def test_one_visitors_stop_leaves_the_others_streaming(served, no_answer_cache):
    client, comparison = served
    other = dict(question="Işık nedir?", slerp_t=0.3, max_new_tokens=24, repetition_penalty=1.0)
    alone = ask(client, **other)
    visitor = Client(client.src, verbose=False)  # a second visitor, with a session of its own
    long = "Uzun bir hikâye anlat."
    streaming, ended, restore = watch_runs(comparison)
    try:
        stopped = visitor.submit(*{**DEFAULTS, "question": long, "max_new_tokens": 64,
                                   "repetition_penalty": 1.0}.values(), api_name="/compare")
        running = client.submit(*{**DEFAULTS, **other}.values(), api_name="/compare")
        assert streaming[long].wait(timeout=120)  # the timeouts only bound a hang
        stopped.cancel()
        assert dict(zip(app.COLUMNS, running.result(timeout=120)[ANSWERS])) == alone
        assert ended[long].wait(timeout=120) and ended[other["question"]].wait(timeout=120)
    finally:
        restore()
    assert comparison.loop.rows == 0
    visitor.close()


# Gradio checks a slider's range and a dropdown's choices before the handler runs, with its own message (the
# bound or the choices, not the control's name); everything else is the server's RequestError, naming the control.
@pytest.mark.parametrize("changes, names", [
    ({"slerp_t": "abc"}, "SLERP t|abc"), ({"soup_w1": 2.0}, "greater than maximum value 1"),
    ({"soup_w1": 0.0, "soup_w2": 0.0}, "soup ağırlıkları: w1 ve w2'nin ikisi de 0"),
    ({"ties_density": 0.0}, "less than minimum value 0.05"), ({"ties_lambda": -1.0}, "less than minimum value 0"),
    ({"slerp_attn_schedule": "[0, oops]"}, "SLERP dikkat planı"),
    ({"slerp_mlp_schedule": "[2]"}, r"SLERP MLP planı\[0\]: 2 izin verilen \[0, 1\] aralığının dışında"),
    ({"extra_method": "frankenmerge"}, "frankenmerge is not in the list of choices"),
    ({"max_new_tokens": 100_000}, "greater than maximum value 64"), ({"top_p": 0.0}, "less than minimum value 0.05"),
])
def test_a_bad_value_is_refused_naming_the_control_and_the_next_request_is_answered(served, changes, names):
    client, _ = served
    with pytest.raises(Exception, match=names):
        client.predict(*{**DEFAULTS, **changes}.values(), api_name="/compare")
    assert all(ask(client, question="Ankara nerededir?", max_new_tokens=4)[c] for c in app.COLUMNS[:5])


# A refusal is told in the visitor's language, the control named as that language names it; the English one is
# also what the logs and an API caller without a language get.
@pytest.mark.parametrize("changes, turkish, english", [
    ({"slerp_mlp_schedule": "[2]"}, r"İstek reddedildi: SLERP MLP planı\[0\]: 2 izin verilen \[0, 1\] aralığının",
     r"Request refused: SLERP MLP schedule\[0\]: 2 is outside the allowed range \[0, 1\]"),
    ({"ties_w1": 0.0, "ties_w2": 0.0}, "TIES ağırlıkları: ikisi de 0; en az bir modele",
     "TIES weights: both are 0; give at least one model"),
    ({"question": "Ankara " * 400}, "soru: 2800 karakter, bu kurulumun 2000 karakterlik sınırını aşıyor",
     "question: 2800 characters is over this deployment's limit of 2000"),
    ({"ties_density": 0.35, "ties_density1": 0.2, "ties_density2": 0.8},
     "TIES yoğunluğu 0.35, iki modelin kendi yoğunlukları ise 0.2 ve 0.8",
     "the TIES density is 0.35 but the two models' own densities are 0.2 and 0.8"),
])
def test_a_refusal_is_in_the_visitors_language(served, changes, turkish, english):
    client, _ = served
    with pytest.raises(Exception, match=turkish):
        client.predict(*{**DEFAULTS, **changes}.values(), api_name="/compare")
    visitor = Client(client.src, verbose=False, headers={"Accept-Language": "en-GB,en;q=0.8"})
    try:
        with pytest.raises(Exception, match=english):
            visitor.predict(*{**DEFAULTS, **changes}.values(), api_name="/compare")
    finally:
        visitor.close()


def test_the_page_is_served_before_its_models_and_a_question_waits_for_them(tmp_path):
    """A restart serves the page from the preset at once; a question asked while the models load says so,
    then is answered in every column once they are in."""
    from page.tasks import Loading

    dirs = tiny_models.model_set_dirs(tmp_path, "gpt2")
    preset = tiny_models.preset(dirs, generation={"max_new_tokens": 4, "max_new_tokens_cap": 64})
    release = threading.Event()

    def load():
        release.wait(60)
        return Comparison(model_set.load(preset))

    loading = Loading(load)
    page, options = app.build_page(loading, [], preset=preset)
    page.queue()
    _, url, _ = page.launch(prevent_thread_lock=True, quiet=True, show_error=True, **options)
    loading.start()
    client = Client(url, verbose=False, headers={"Accept-Language": "en"})
    try:
        job = client.submit(*{**DEFAULTS, "max_new_tokens": 4}.values(), api_name="/compare")
        assert not loading.ready() and "The models are loading" in first_output(job)[0]
        release.set()
        answers = dict(zip(app.COLUMNS, job.result(timeout=120)[ANSWERS]))
        assert all(answers[c] for c in app.COLUMNS[:5]), answers
    finally:
        release.set()
        client.close()
        page.close()


def test_the_ties_density_alone_governs_both_models_through_the_api(served):
    """Only the first five inputs, as the README's example gives them: the per-model densities follow."""
    client, _ = served
    out = client.predict(QUESTION, 0.5, 0.5, 0.5, 0.35, api_name="/compare")
    titles, answers = dict(zip(app.COLUMNS, out[1:1 + len(app.COLUMNS)])), dict(zip(app.COLUMNS, out[ANSWERS]))
    assert titles["ties"] == "**TIES** · yoğunluk 0.35"
    both = client.predict(question=QUESTION, ties_density=0.35, ties_density1=0.35, ties_density2=0.35,
                          api_name="/compare")
    assert answers["ties"] == dict(zip(app.COLUMNS, both[ANSWERS]))["ties"]
    assert answers["ties"] != ask(client)["ties"], "density 0.35 must answer otherwise than 0.5 for this to mean much"
    parameters = {p["parameter_name"]: p for p in client.view_api(print_info=False, return_format="dict")
                  ["named_endpoints"]["/compare"]["parameters"]}
    assert parameters["ties_density1"]["parameter_default"] is None
    assert parameters["ties_density2"]["parameter_default"] is None
    assert parameters["ties_density"]["parameter_default"] == 0.5


def test_the_readme_client_example_runs_as_written(served, capsys):
    """The README's `client.predict(...)` snippet, run as it is, against the app on tiny models."""
    import re
    from pathlib import Path

    client, _ = served
    readme = (Path(app.__file__).parent / "README.md").read_text()
    api = readme[readme.index("\n## API"):]
    snippet = re.search(r"```python\n(.*?)```", api, re.S).group(1)
    assert 'Client("http://127.0.0.1:7860/")' in snippet
    namespace = {}
    exec(snippet.replace("http://127.0.0.1:7860/", client.src), namespace)
    titles, answers, footers = namespace["titles"], namespace["answers"], namespace["footers"]
    assert titles[3] == "**SLERP** · t = 0.20" and titles[4] == "**TIES** · density 0.35"
    assert all(answers[:5]) and answers[5] == ""
    assert footers[4].startswith("12 tokens") and "kept 35%" in footers[4]  # TIES kept 35% of each task vector
    assert capsys.readouterr().out.endswith(f"\n{titles[4]} | {answers[4]}\n")
