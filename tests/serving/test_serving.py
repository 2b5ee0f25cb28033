"""Serving many visitors: the pool of materialised slices, and the one decoding loop whose batch rows of several
requests join and leave while it runs; each request gets the tokens it gets alone."""

import threading
import time

import pytest
import torch

from merging import MergeSpec, MergeTarget
from serving.batched import Mix
from serving.decoding_loop import DecodingLoop, Job
from serving.generation import GenerationSettings, generate
from serving.pool import PoolTooSmall, SlotPool
from tests.merge_specs import SPECS, materialised, mix_for
from tests.tiny_models import ARCHS, PROMPT, tiny_bank

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# The pool


class Merges:
    """A stand-in merge engine that records what it was asked to write."""

    def __init__(self, fail: set = frozenset(), delay: float = 0.0):
        self.calls, self.fail, self.delay = [], set(fail), delay

    def __call__(self, variant, spec, progress=None):
        self.calls.append((variant, spec))
        time.sleep(self.delay)
        if spec in self.fail:
            raise RuntimeError(f"merge of {spec} failed")
        return f"report {spec}"


def test_one_spec_is_merged_once_and_read_by_many():
    merges = Merges()
    pool = SlotPool(["p0", "p1"], merges)
    with pool.holding({"ties": "A"}) as first, pool.holding({"ties": "A"}) as second:
        assert first == {"ties": ("p0", "report A")} and second == {"ties": ("p0", None)}
        assert [s.readers for s in pool.slots] == [2, 0]
    assert merges.calls == [("p0", "A")]


def test_different_specs_take_free_slices_and_the_least_recently_used_is_reused():
    merges = Merges()
    pool = SlotPool(["p0", "p1"], merges)
    with pool.holding({"ties": "A"}), pool.holding({"ties": "B"}) as b:
        assert b["ties"][0] == "p1"  # no waiting while a slice is free
    with pool.holding({"ties": "A"}):  # A again: no merge, and A is now the most recent
        pass
    with pool.holding({"ties": "C"}) as c:
        assert c["ties"][0] == "p1"  # B was used least recently
    assert merges.calls == [("p0", "A"), ("p1", "B"), ("p1", "C")]


def test_with_every_slice_read_a_request_waits_and_says_so_once():
    pool = SlotPool(["p0"], Merges())
    waited, order, waiting = [], [], threading.Event()

    def later():
        with pool.holding({"ties": "B"}, on_wait=lambda: (waited.append(True), waiting.set())):
            order.append("B")

    with pool.holding({"ties": "A"}):
        thread = threading.Thread(target=later)
        thread.start()
        assert waiting.wait(timeout=60)  # the timeout only bounds a hang
        assert waited == [True] and order == []
        order.append("A done")
    thread.join(timeout=60)
    assert order == ["A done", "B"] and waited == [True]


def test_a_request_takes_all_its_slices_at_once_so_two_cannot_deadlock():
    merges = Merges(delay=0.05)
    pool = SlotPool(["p0", "p1"], merges)
    results, together = [], threading.Barrier(4, timeout=60)

    def ask(specs):
        together.wait()  # all four ask at once
        with pool.holding(specs) as held:
            results.append(sorted(v for v, _ in held.values()))
            time.sleep(0.05)

    threads = [threading.Thread(target=ask, args=({"ties": f"T{i}", "extra": f"E{i}"},)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)  # bounds a deadlock, which the assertion then shows
    assert results == [["p0", "p1"]] * 4


def test_more_distinct_merges_than_slices_is_refused_with_the_fix():
    with pytest.raises(PoolTooSmall, match="raise --pool"):
        with SlotPool(["p0"], Merges()).holding({"ties": "A", "extra": "B"}):
            pass


def test_a_failed_merge_leaves_no_spec_and_the_next_request_merges_again():
    merges = Merges(fail={"B"})
    pool = SlotPool(["p0"], merges)
    with pool.holding({"ties": "A"}):
        pass
    with pytest.raises(RuntimeError, match="merge of B failed"):
        with pool.holding({"ties": "B"}):
            pass
    assert pool.slots[0].spec is None and pool.slots[0].readers == 0
    with pool.holding({"ties": "A"}) as held:
        assert held["ties"] == ("p0", "report A")  # merged again, not "nothing changed"


def test_a_merge_that_fails_part_way_never_serves_half_rewritten_weights(monkeypatch):
    """MergeTarget used to keep claiming the old spec after a failed merge; the old spec then merged nothing."""
    bank, _ = tiny_bank("llama-tied")
    base, parents = bank.slice("base"), [bank.slice("model1"), bank.slice("model2")]
    target = MergeTarget(bank.slice("ties"), base, parents, 2)
    old = MergeSpec.from_dict({"merge_method": "ties", "models": [{"parameters": {"weight": 1, "density": 0.5}}] * 2})
    new = MergeSpec.from_dict({"merge_method": "ties", "models": [{"parameters": {"weight": 1, "density": 0.9}}] * 2})
    target.merge(old)
    expected = {n: t.clone() for n, t in bank.slice("ties").items()}
    from merging import apply

    real_plan = apply.plan

    def failing_plan(*args, **kwargs):
        jobs = real_plan(*args, **kwargs)
        broken = jobs[len(jobs) // 2]
        jobs[len(jobs) // 2] = apply._Job(broken.name, broken.key, lambda stats: (_ for _ in ()).throw(MemoryError()))
        return jobs

    monkeypatch.setattr(apply, "plan", failing_plan)
    with pytest.raises(MemoryError):
        target.merge(new)
    monkeypatch.setattr(apply, "plan", real_plan)
    assert target.merge(old) is not None  # something to rewrite
    assert all(torch.equal(bank.slice("ties")[n], expected[n]) for n in expected)


# The decoding loop


class Recorder:
    """A streamer that counts the tokens it got. With ``hold``, the loop waits (in put, its own thread) from the
    third token on until ``go`` is set: the next request is submitted while this one is still decoding."""

    def __init__(self, hold: bool = False):
        self.tokens, self.enough, self.go = [], threading.Event(), threading.Event()
        if not hold:
            self.go.set()

    def put(self, token_ids):
        self.tokens.extend(token_ids)
        if len(self.tokens) >= 3:
            self.enough.set()
            self.go.wait(timeout=60)  # only bounds a hang

    def end(self, result):
        self.enough.set()


def alone(bank, variant, prompt, settings):
    return generate(bank, [variant], prompt, settings, {}, batched=False)[variant].token_ids


@pytest.mark.parametrize("arch", ARCHS)
def test_requests_joining_and_leaving_a_running_batch_get_their_tokens_alone(arch, batches):
    bank, _ = tiny_bank(arch)
    layers = bank.template.config.num_hidden_layers
    slerp = MergeSpec.from_dict(SPECS["slerp"])
    materialised(bank, slerp, layers, into="slerp")  # the reference for the merge-free row
    mix = mix_for(bank, slerp, layers)
    loop = DecodingLoop(bank)
    steps = batches(loop)
    long_prompt = [7, 3, 55, 21, 9, 14, 60, 2, 33, 41, 12]  # longer than the running batch: it pads the others
    asks = [  # (recipes, prompt, tokens)
        ({"model1": 1, "slerp~": mix}, PROMPT, 20),
        ({"model2": 2, "ties": bank.index("ties")}, long_prompt, 6),
        ({"slerp~": mix, "base": 0}, PROMPT[:2], 12),
    ]
    jobs, previous = [], None
    for recipes, prompt, tokens in asks:
        recorder = Recorder(hold=len(jobs) < len(asks) - 1)
        settings = GenerationSettings(max_new_tokens=tokens, greedy=True)
        jobs.append(loop.submit(Job(recipes, prompt, settings, {c: recorder for c in recipes})))
        if previous is not None:
            previous.go.set()  # the previous request decodes on, and this one joins it
        assert recorder.enough.wait(timeout=60)
        previous = recorder
    for job, (recipes, prompt, tokens) in zip(jobs, asks):
        assert job.done.wait(timeout=60) and job.error is None
        settings = GenerationSettings(max_new_tokens=tokens, greedy=True)
        for column in recipes:
            variant = "slerp" if column == "slerp~" else column
            assert job.results[column].token_ids == alone(bank, variant, prompt, settings), (column, prompt)
    assert loop.rows == 0
    # Each request joined the one before it in the running batch: one forward decoded rows of both.
    assert steps.shared(jobs[0], jobs[1]) and steps.shared(jobs[1], jobs[2])


def test_sampled_rows_draw_as_they_do_alone():
    bank, _ = tiny_bank("gpt2")
    loop = DecodingLoop(bank)
    settings = GenerationSettings(max_new_tokens=10, temperature=1.3, top_p=0.95, repetition_penalty=1.2, seed=7)
    first = loop.submit(Job({"model1": 1}, PROMPT, GenerationSettings(max_new_tokens=30, greedy=True), {}))
    second = loop.run(Job({"model2": 2, "soup": bank.index("soup")}, PROMPT[:3], settings, {}))
    first.done.wait(timeout=60)
    for column in ("model2", "soup"):
        assert second[column].token_ids == alone(bank, column, PROMPT[:3], settings)


def test_one_requests_stop_leaves_the_others_decoding(batches):
    bank, _ = tiny_bank("llama-tied")
    loop = DecodingLoop(bank)
    steps = batches(loop)
    settings = GenerationSettings(max_new_tokens=40, greedy=True)
    recorder = Recorder()
    stopped = loop.submit(Job({"model1": 1, "model2": 2}, PROMPT, settings, {"model1": recorder}))
    running = loop.submit(Job({"ties": bank.index("ties")}, PROMPT[:4], settings, {}))
    assert recorder.enough.wait(timeout=60)
    stopped.stop_event.set()
    at_stop = len(steps)
    assert stopped.done.wait(timeout=60)  # the timeout only bounds a hang
    # Its rows left at the next step: at most the step under way when the stop came decoded them.
    assert sum(any(j is stopped for j in step) for step in steps[at_stop:]) <= 1
    assert {r.finish_reason for r in stopped.results.values()} == {"stopped"}
    assert running.done.wait(timeout=60)
    assert running.results["ties"].token_ids == alone(bank, "ties", PROMPT[:4], settings)


def test_a_failing_request_ends_alone_and_the_loop_keeps_serving():
    bank, _ = tiny_bank("gpt2")
    loop = DecodingLoop(bank)
    settings = GenerationSettings(max_new_tokens=12, greedy=True)
    running = loop.submit(Job({"model1": 1}, PROMPT, settings, {}))
    errors = []
    bad = loop.submit(Job({"model2": 2}, [5, 10_000], settings, {}, on_error=errors.append))  # not in the vocabulary
    assert bad.done.wait(timeout=60) and isinstance(bad.error, IndexError) and errors == [bad.error]
    assert running.done.wait(timeout=60) and running.error is None
    assert running.results["model1"].token_ids == alone(bank, "model1", PROMPT, settings)
    after = loop.run(Job({"model2": 2}, PROMPT, settings, {}))
    assert after["model2"].token_ids == alone(bank, "model2", PROMPT, settings)


def test_an_idle_loop_runs_no_steps():
    """Its thread ends once nothing is left to decode: no thread, no steps, until the next submit."""
    bank, _ = tiny_bank("gpt2")
    loop = DecodingLoop(bank)
    threads = []
    loop.on_step = lambda jobs: threads.append(threading.current_thread())
    loop.run(Job({"model1": 1}, PROMPT, GenerationSettings(max_new_tokens=3, greedy=True), {}))
    steps = loop.steps
    threads[0].join(timeout=60)  # only bounds a hang
    assert not threads[0].is_alive() and loop.steps == steps == len(threads) and loop.rows == 0


def test_mix_rows_are_built_from_coefficients_over_the_parents():
    bank, _ = tiny_bank("gpt2")
    mix = mix_for(bank, MergeSpec("slerp", {"t": 0.0}), 2)
    assert isinstance(mix, Mix) and all(terms == ((1, 1.0),) for terms in mix.table.values())


def test_a_request_stopped_while_it_waits_for_a_slice_holds_none():
    from serving.pool import StoppedWaiting

    pool = SlotPool(["p0"], Merges())
    cancel, outcome, waiting = threading.Event(), [], threading.Event()

    def later():
        try:
            with pool.holding({"ties": "B"}, on_wait=waiting.set, cancel=cancel):
                outcome.append("held")
        except StoppedWaiting:
            outcome.append("stopped")

    with pool.holding({"ties": "A"}):
        thread = threading.Thread(target=later)
        thread.start()
        assert waiting.wait(timeout=60)  # stopped while it waits, not before it asked
        cancel.set()
        thread.join(timeout=60)  # only bounds a hang
        assert outcome == ["stopped"] and [s.readers for s in pool.slots] == [1]
    assert pool.slots[0].readers == 0 and pool.slots[0].spec == "A"


def comparison_and_request(root, pool: int = 4, batched: bool = True):
    """A Comparison of a tiny Llama pair (no answer cache) and the page's five-column request."""
    from dataclasses import replace

    from models import model_set
    from serving.comparison import Comparison, Request
    from serving.controls import Controls
    from serving.requests import generation_settings, merge_specs
    from tests import tiny_models

    dirs = tiny_models.model_set_dirs(root, "llama")
    preset = tiny_models.preset(dirs)
    comparison = Comparison(model_set.load(preset, pool=pool), batched=batched, answer_cache=0)
    controls = Controls(question="Türkiye'nin başkenti neresidir?")
    settings = replace(generation_settings(controls, preset.generation), max_new_tokens=12, greedy=True)
    request = Request(controls.question, ("model1", "model2", "soup", "slerp", "ties"), merge_specs(controls),
                      settings)
    return comparison, request


def test_columns_without_a_merge_stream_while_the_ties_slice_is_merged(tmp_path):
    """On a first question the TIES slice must be merged; Model 1, Model 2 and the merge-free columns start at
    once and TIES joins the running batch when its merge is done, with the tokens it gets alone."""
    comparison, request = comparison_and_request(tmp_path)
    release, merging = threading.Event(), threading.Event()
    real_merge = comparison.pool._merge

    def slow_merge(variant, spec, progress=None):
        merging.set()
        assert release.wait(60)
        return real_merge(variant, spec, progress)

    comparison.pool._merge = slow_merge
    mid_answer = threading.Event()

    def hold_ties(jobs):  # TIES's rows decode on once the page has seen TIES mid-answer (the loop's own thread)
        if any("ties" in job.columns for job in jobs):
            mid_answer.wait(timeout=60)  # only bounds a hang

    comparison.loop.on_step = hold_ties
    seen_during_merge, rates_seen, released_at = set(), 0, None
    for snapshot in comparison.run(request):
        ties = snapshot.columns["ties"]
        if merging.is_set() and not release.is_set():
            assert ties.pending == "merging"  # its footer says so
            seen_during_merge |= {c for c, col in snapshot.columns.items() if col.n_tokens > 0}
            if seen_during_merge >= {"model1", "model2"}:
                time.sleep(0.5)  # not a wait: a rate counted from the question would be at least this much longer
                released_at = time.perf_counter()
                release.set()
        elif ties.n_tokens and not ties.done:  # its rate counts from the end of its merge, not the question
            assert ties.seconds <= time.perf_counter() - released_at
            rates_seen += 1
            mid_answer.set()
        last = snapshot
    comparison.loop.on_step = None
    assert rates_seen and last.columns["ties"].seconds <= time.perf_counter() - released_at
    assert {"model1", "model2", "soup", "slerp"} >= seen_during_merge >= {"model1", "model2"}
    assert last.columns["ties"].merge_ms > 0 and last.columns["ties"].report is not None
    assert not last.columns["ties"].pending
    comparison.pool._merge = real_merge
    again = list(comparison.run(request))[-1]  # the slice holds TIES now: every column in one job
    assert again.columns["ties"].merge_ms == 0.0
    for column in request.columns:
        assert last.columns[column].text == again.columns[column].text, column


def test_with_every_slice_in_use_only_the_ties_column_waits_and_says_so(tmp_path):
    from dataclasses import replace

    from merging import MergeSpec

    comparison, request = comparison_and_request(tmp_path, pool=1)
    other = MergeSpec("ties", {"weight": 0.5, "density": 0.9})
    states = []
    with comparison.holding({"ties": other}):  # another visitor's TIES answer reads the only slice
        answers = comparison.run(request)
        for snapshot in answers:
            states.append(snapshot.columns["ties"].pending)
            if all(snapshot.columns[c].done for c in ("model1", "model2", "soup", "slerp")):
                break
        assert states[-1] == "waiting" and "waiting" in snapshot.notes
        assert snapshot.columns["ties"].n_tokens == 0
    last = list(answers)[-1]  # the slice is free: TIES is merged, decodes and ends
    assert last.columns["ties"].done and not last.columns["ties"].pending and not last.notes
    alone = list(comparison.run(replace(request, columns=("ties",))))[-1]
    assert last.columns["ties"].text == alone.columns["ties"].text
    # A request of the TIES column alone, at a density no slice holds: every column of it is deferred.
    denser = MergeSpec("ties", {"weight": 0.5, "density": 0.7})
    only = list(comparison.run(replace(request, columns=("ties",), specs={"ties": denser})))[-1]
    assert only.columns["ties"].done and only.columns["ties"].merge_ms > 0


def test_without_the_batched_loop_every_column_waits_for_its_merge_and_answers_alike(tmp_path):
    """--no-batch: one thread per column, every merge materialised first; the same greedy answers."""
    batched, request = comparison_and_request(tmp_path / "a")
    threaded, _ = comparison_and_request(tmp_path / "b", batched=False)
    assert threaded.loop is None
    ours, theirs = list(batched.run(request))[-1], list(threaded.run(request))[-1]
    for column in request.columns:
        assert ours.columns[column].text == theirs.columns[column].text, column
    assert theirs.columns["ties"].merge_ms > 0 and not theirs.columns["soup"].merge_free


def test_a_ties_release_shows_the_cached_columns_in_its_first_update_and_the_merge_s_progress(tmp_path):
    """The same question at a new TIES density: Model 1, Model 2, Soup and SLERP come from the cache and are in
    the request's first update while TIES is still merging; TIES says how many tensors are merged, then joins."""
    from dataclasses import replace

    from page.views import column_footer

    comparison, request = comparison_and_request(tmp_path)
    comparison.answer_cache = 16
    first = list(comparison.run(request))[-1]
    merging, release, progress_seen = threading.Event(), threading.Event(), threading.Event()
    counts, real_merge = [], comparison.pool._merge

    def held_merge(variant, spec, progress=None):
        merging.set()
        assert release.wait(60)

        def told(merged, total):
            progress(merged, total)
            counts.append((merged, total))
            if merged == 1:  # the page must see the first count before the merge goes on
                assert progress_seen.wait(60)
        return real_merge(variant, spec, told)

    comparison.pool._merge = held_merge
    denser = replace(request, specs={**request.specs, "ties": MergeSpec("ties", {"weight": 0.5, "density": 0.8})})
    answers = comparison.run(denser)
    update = next(answers)
    assert merging.wait(60) and not release.is_set()  # the first update came while the merge had not begun
    for name in ("model1", "model2", "soup", "slerp"):
        column = update.columns[name]
        assert column.done and column.reused and column.text == first.columns[name].text, name
    assert update.columns["ties"].pending == "merging" and update.columns["ties"].n_tokens == 0
    assert column_footer(update.columns["ties"], request.question, "en") == \
        "⏳ merging; the other columns have started"
    release.set()
    shown = []
    for update in answers:
        ties = update.columns["ties"]
        if ties.progress:
            shown.append(ties.progress)
            assert column_footer(ties, request.question, "en").startswith(f"⏳ merging: {ties.progress[0]} of "
                                                                         f"{ties.progress[1]} tensors merged")
            progress_seen.set()
        last = update
    comparison.pool._merge = real_merge
    total = counts[-1][1]
    assert shown[0] == (1, total) and counts == [(i, total) for i in range(1, total + 1)]
    assert total == len(comparison.model_set.bank.tensors)
    ties = last.columns["ties"]
    assert ties.done and ties.n_tokens > 0 and not ties.pending and ties.progress is None and ties.merge_ms > 0


def test_the_loop_s_thread_ends_when_no_row_is_left_and_the_next_request_starts_another():
    """Idle, the loop holds no thread (nor, on a CPU, the OpenMP team of one: a merge meanwhile then has the
    cores' only team, serving/threads.py); the next request is answered alike by a new thread."""
    bank, _ = tiny_bank("gpt2")
    loop = DecodingLoop(bank)
    settings = GenerationSettings(max_new_tokens=8, greedy=True)
    first = loop.submit(Job({"model1": 1}, PROMPT, settings, {}))
    assert first.done.wait(timeout=60)
    for thread in threading.enumerate():
        if thread.name == "harman-decoding-loop":
            thread.join(timeout=60)  # it ends by itself: nothing else stops it
    assert "harman-decoding-loop" not in {t.name for t in threading.enumerate() if t.is_alive()}
    assert loop._thread is None
    again = loop.run(Job({"model1": 1}, PROMPT, settings, {}))
    assert again["model1"].token_ids == first.results["model1"].token_ids == alone(bank, "model1", PROMPT, settings)
