"""One comparison request, start to finish, without Gradio: prompt -> coefficients or re-merge of what changed ->
every column that needs it decoded in the server's loop -> the column streams multiplexed into page-sized
snapshots.

Answers are cached by (column, its merge spec, prompt ids, generation settings), so releasing the SLERP slider
regenerates the SLERP column only: every other column's key is unchanged and its answer is reused.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Hashable, Iterator, Mapping

from merging import MergeTarget
from merging.coefficients import Coefficients, ParentFigures, coefficients, merge_free
from models.model_set import PARENTS, ModelSet
from prompts import formats
from serving.batched import Mix, Recipe, RecipeModel, UnsupportedModel
from serving.decoding_loop import DecodingLoop, Job
from serving.generation import GenerationSettings, QueueStreamer, generate
from serving.pool import SlotPool, StoppedWaiting
from serving.threads import in_parallel_thread

log = logging.getLogger(__name__)

UPDATES_PER_SECOND = 10
WAITING_NOTE = "waiting"  # a note code: words.py says it in the visitor's language
ANSWER_CACHE_SIZE = 256


@dataclass
class Column:
    """What the page shows for one variant."""
    variant: str
    text: str = ""
    n_tokens: int = 0
    seconds: float = 0.0
    merge_ms: float | None = None
    merge_free: bool = False  # a weighted sum of the parents' slices: no merged copy, no merge
    reused: bool = False  # the answer came from the cache
    done: bool = False
    finish_reason: str = ""
    report: object = None  # the merge engine's diagnostics of the weights this answer came from
    pending: str = ""  # before its rows start: "merging" its pool slice, or "waiting" for a free one
    pool_slots: int = 0  # its merge wrote over the least recently used setting of a pool of this many slices
    progress: tuple[int, int] | None = None  # while merging: tensors merged, of how many

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Request:
    question: str
    columns: tuple[str, ...]
    specs: Mapping[str, Hashable]  # merged column -> MergeSpec
    settings: GenerationSettings


@dataclass
class Snapshot:
    columns: dict[str, Column]
    dropped_tokens: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Held:
    """What a request reads while it holds its merges: per column, the recipe (a bank slice or a merge-free
    Mix), the merge report (None: nothing was merged for it) and, for a materialised merge, its bank variant."""
    recipes: dict[str, Recipe]
    reports: dict[str, object]
    variants: dict[str, str]


class Comparison:
    """Serves comparison requests for one model set; safe to call from many threads at once.

    Soup, SLERP, task arithmetic, model stock and NuSLERP columns are merge-free: coefficients over the parents'
    slices (merging/coefficients.py). The other merges are materialised in a pool of bank slices reused by spec
    (serving/pool.py). Every request's rows decode in one server-wide loop (serving/decoding_loop.py); without the
    batched forward (--no-batch, or a model it does not know) each column runs its own module in a thread, and
    every merge is materialised.
    """

    def __init__(self, model_set: ModelSet, batched: bool = True, answer_cache: int = ANSWER_CACHE_SIZE):
        self.model_set = model_set
        self.answer_cache = answer_cache  # answers kept for reuse; 0: every request decodes (benchmarks)
        bank = model_set.bank
        base, parents = bank.slice("base"), [bank.slice("model1"), bank.slice("model2")]
        self.figures = ParentFigures(base, *parents)
        # Every pool slice's target measures the parents through the same figures the merge-free columns use.
        self.targets = {name: MergeTarget(bank.slice(name), base, parents, model_set.num_layers,
                                          parents=self.figures.plain)
                        for name in bank.variants if name not in PARENTS}
        self.pool = SlotPool(list(self.targets), self._merge, bank.rewritten)
        self.loop: DecodingLoop | None = None
        if batched:
            try:
                self.loop = DecodingLoop(bank)
            except UnsupportedModel as err:
                log.warning("batched decoding is not available for this model; each column runs in its own "
                            "thread and every merge is materialised: %s", err)
        self.batched = self.loop is not None
        self._coefficients: OrderedDict = OrderedDict()  # spec -> Coefficients, the most recent few
        self._answers: OrderedDict = OrderedDict()
        self._answers_lock = threading.Lock()

    def _merge(self, variant: str, spec, progress=None):
        return self.targets[variant].merge(spec, progress)

    def warm(self) -> None:
        """Measure the parents' figures that the page's Soup and SLERP columns need, before the first visitor
        asks (the task-vector figures of model stock and NuSLERP are measured when one is first asked for)."""
        for name in self.model_set.bank.tensors:
            self.figures(name, False)

    def coefficients(self, spec) -> Coefficients:
        with self._answers_lock:
            found = self._coefficients.get(spec)
        if found is None:
            found = in_parallel_thread(lambda: coefficients(spec, list(self.model_set.bank.tensors),
                                                            self.model_set.num_layers, self.figures))
            with self._answers_lock:
                self._coefficients[spec] = found
                while len(self._coefficients) > ANSWER_CACHE_SIZE:
                    self._coefficients.popitem(last=False)
        return found

    @contextmanager
    def holding(self, specs: Mapping[str, Hashable], materialise: bool = False,
                on_wait: Callable[[], None] | None = None, cancel: threading.Event | None = None,
                on_progress: Callable[[Hashable, int, int], None] | None = None) -> Iterator[Held]:
        """Hold every merged column at its spec for the block (merge-free ones as coefficients, the others in
        pool slices); ``materialise`` puts every merge in a pool slice (saving, the per-column fallback).
        ``on_progress(spec, merged, total)`` hears of each tensor this request merges."""
        bank = self.model_set.bank
        pooled = self._pooled(specs, materialise)
        mixes = {c: self.coefficients(s) for c, s in specs.items() if c not in pooled}
        with self.pool.holding(pooled, on_wait, cancel, on_progress) as slots:
            held = Held(recipes={}, reports={}, variants={})
            for column, found in mixes.items():
                held.recipes[column] = Mix.of(found.table, [bank.index(v) for v in PARENTS])
                held.reports[column] = found.report
            for column, (variant, report) in slots.items():
                held.recipes[column] = bank.index(variant)
                held.variants[column] = variant
                held.reports[column] = report
            yield held

    def _pooled(self, specs: Mapping[str, Hashable], materialise: bool = False) -> dict[str, Hashable]:
        """The columns whose merges need a pool slice; the others are merge-free coefficient rows."""
        return {c: s for c, s in specs.items() if materialise or not (self.batched and merge_free(s))}

    def model_for(self, held: Held, column: str):
        """A Hugging Face-like model of one column (for perplexity)."""
        bank = self.model_set.bank
        recipe = held.recipes.get(column)
        if recipe is None:
            return bank.module(column)
        if isinstance(recipe, Mix):
            return RecipeModel(bank, recipe)
        return bank.module(bank.variants[recipe])

    def generate(self, held: Held, columns: list[str], prompt_ids: list[int], settings: GenerationSettings,
                 stop_event: threading.Event | None = None) -> dict:
        """Every column's answer to one prompt, in the server's decoding loop (or one thread per column)."""
        ms = self.model_set
        if self.loop is not None:
            recipes = {c: held.recipes[c] if c in held.recipes else ms.bank.index(c) for c in columns}
            job = Job(recipes, prompt_ids, settings, {}, stop_event or threading.Event(), ms.tokenizer)
            return self.loop.run(job)
        return generate(ms.bank, columns, prompt_ids, settings, {}, stop_event=stop_event, batched=False,
                        tokenizer=ms.tokenizer, recipes=held.recipes)

    def generate_many(self, held: Held, column: str, prompts: list[list[int]], settings: list[GenerationSettings],
                      stop_event: threading.Event | None = None) -> list:
        """One column's answers to several prompts; in the loop they decode side by side."""
        stop_event = stop_event or threading.Event()
        if self.loop is None:
            return [self.generate(held, [column], p, s, stop_event)[column] for p, s in zip(prompts, settings)]
        recipe = held.recipes[column] if column in held.recipes else self.model_set.bank.index(column)
        jobs = [self.loop.submit(Job({column: recipe}, p, s, {}, stop_event, self.model_set.tokenizer))
                for p, s in zip(prompts, settings)]
        for job in jobs:
            job.done.wait()
            if job.error is not None:
                raise job.error
        return [job.results[column] for job in jobs]

    def prompt(self, question: str, max_new_tokens: int) -> formats.Prompt:
        ms = self.model_set
        return formats.build(ms.preset.prompt_format, question, ms.tokenizer, ms.max_context, max_new_tokens,
                             system=ms.preset.system)

    def run(self, request: Request, stop_event: threading.Event | None = None) -> Iterator[Snapshot]:
        """Yield snapshots of every column, about UPDATES_PER_SECOND times a second, the last one complete."""
        stop_event = stop_event or threading.Event()
        prompt = self.prompt(request.question, request.settings.max_new_tokens)
        settings = replace(request.settings, eos_token_ids=prompt.eos_token_ids, stop_strings=prompt.stop_strings)
        snapshot = Snapshot({c: Column(c) for c in request.columns}, dropped_tokens=prompt.dropped_tokens)
        keys = {c: (c, request.specs.get(c), tuple(prompt.ids), settings) for c in request.columns}
        pending = []
        for column in request.columns:
            cached = self._cached(keys[column])
            if cached is None:
                pending.append(column)
            else:
                snapshot.columns[column] = replace(cached, reused=True, merge_ms=None)
        if not pending:
            yield snapshot
            return
        specs = {c: request.specs[c] for c in pending if c not in PARENTS}
        pooled = self._pooled(specs)
        # In the server's loop, columns whose slices must first be merged (or wait for a free one) join the
        # running batch when they are ready; the others start at once rather than wait for them.
        deferred = pooled if self.loop is not None and pooled and not self.pool.holds(pooled) else {}
        if pooled and not deferred and self.pool.must_wait(pooled):
            # Every pool slice is read by other visitors' answers: say so while this request waits for one.
            snapshot.notes.append(WAITING_NOTE)
            yield snapshot
        now = {c: s for c, s in specs.items() if c not in deferred}
        with self.holding(now) as held:
            snapshot.notes = [n for n in snapshot.notes if n != WAITING_NOTE]
            self._describe(snapshot, held, now)
            bank = self.model_set.bank
            recipes = {c: held.recipes[c] if c in held.recipes else bank.index(c) for c in pending
                       if c not in deferred}
            yield from self._stream(snapshot, recipes, prompt.ids, settings, stop_event, deferred)
        for column in pending:
            done = snapshot.columns[column]
            if done.finish_reason != "stopped":
                self._remember(keys[column], done)

    def _describe(self, snapshot: Snapshot, held: Held, specs: Mapping[str, Hashable]) -> None:
        """Each merged column's merge time, whether it is merge-free, and the report that rides with it."""
        for column in specs:
            report = held.reports[column]
            merged = column in held.variants and report is not None
            snapshot.columns[column].merge_ms = getattr(report, "ms", None) if merged else 0.0
            snapshot.columns[column].merge_free = column not in held.variants
            if merged and self.pool.replaced(held.variants[column]):
                snapshot.columns[column].pool_slots = self.pool.size
            if column in held.variants and report is None:
                # No merge (the slice held this spec already): its weights are those of its last merge,
                # which no other request can redo while this one reads them.
                report = self.pool.report(held.variants[column])
            snapshot.columns[column].report = report  # rides with the answer to this visitor only

    def _stream(self, snapshot: Snapshot, recipes: dict[str, Recipe], prompt_ids: list[int],
                settings: GenerationSettings, stop_event: threading.Event,
                deferred: Mapping[str, Hashable] | None = None) -> Iterator[Snapshot]:
        """Stream the columns of ``recipes``, and of ``deferred`` once their pool slices are merged (in a
        thread of their own, which holds the slices until their rows are done)."""
        events: queue.Queue = queue.Queue()
        tokenizer = self.model_set.tokenizer
        deferred = deferred or {}
        columns = [*recipes, *deferred]
        streamers = {c: QueueStreamer(c, events, tokenizer) for c in columns}
        for column in deferred:
            snapshot.columns[column].pending = "merging"
        started = time.perf_counter()
        finished: list[threading.Event] = []  # set when each part has let go of what it reads
        if self.loop is not None:
            finished.append(self.later(deferred, lambda held: [self.loop.submit(Job(
                held, prompt_ids, settings, {c: streamers[c] for c in deferred}, stop_event, tokenizer,
                on_error=lambda err: events.put((None, "failed", err))))], stop_event, events, progress=True))
            if recipes:
                job = self.loop.submit(Job(recipes, prompt_ids, settings, {c: streamers[c] for c in recipes},
                                           stop_event, tokenizer,
                                           on_error=lambda err: events.put((None, "failed", err))))
                finished.append(job.done)
        else:
            done = threading.Event()

            def work():
                try:
                    generate(self.model_set.bank, columns, prompt_ids, settings, streamers, stop_event=stop_event,
                             batched=False, tokenizer=tokenizer, recipes=recipes)
                except BaseException as err:  # surfaced to the request below, never lost in the thread
                    events.put((None, "failed", err))
                finally:
                    done.set()

            threading.Thread(target=work, name="harman-generate", daemon=True).start()
            finished.append(done)
        open_columns, last_yield, unshown = set(columns), 0.0, False
        begun = dict.fromkeys(columns, started)  # a deferred column's rate counts from its merge's end
        try:
            if deferred or any(c.done for c in snapshot.columns.values()):
                # What is ready (cached answers, a column's merge under way) is shown now, not after the merge.
                last_yield = time.perf_counter()
                yield snapshot
            while open_columns:
                try:
                    event = events.get(timeout=1 / UPDATES_PER_SECOND)
                except queue.Empty:
                    if unshown:  # what came since the last update (columns that ended, while others wait)
                        last_yield, unshown = time.perf_counter(), False
                        yield snapshot
                    continue
                if self._apply(snapshot, event, deferred, begun, open_columns) == "now":
                    last_yield, unshown = time.perf_counter(), False
                    yield snapshot
                    continue
                now, unshown = time.perf_counter(), True
                if now - last_yield >= 1 / UPDATES_PER_SECOND:
                    last_yield, unshown = now, False
                    yield snapshot
            yield snapshot
        finally:
            # Stop button, closed tab (GeneratorExit) or an error: this request's rows leave within one step,
            # and its merges are released only once nothing reads them.
            stop_event.set()
            deadline = time.monotonic() + 30
            for event in finished:
                event.wait(timeout=max(0.0, deadline - time.monotonic()))

    def _apply(self, snapshot: Snapshot, event: tuple, deferred: Mapping[str, Hashable], begun: dict,
               open_columns: set) -> str:
        """One event of the request's queue into its snapshot; "now" when the page should see it at once."""
        variant, kind, *payload = event
        if kind == "failed":
            raise payload[0]
        if kind == "waiting":
            snapshot.notes.append(WAITING_NOTE)
            for column in deferred:
                snapshot.columns[column].pending = "waiting"
            return "now"
        if kind == "progress":  # tensors merged of total, for the columns of one spec
            spec, done, total = payload
            for column, wanted in deferred.items():
                if wanted == spec:
                    snapshot.columns[column].pending, snapshot.columns[column].progress = "merging", (done, total)
            return ""
        if kind == "held":  # the deferred columns' slices: merged, or found holding their specs
            snapshot.notes = [n for n in snapshot.notes if n != WAITING_NOTE]
            self._describe(snapshot, payload[0], deferred)
            for column in deferred:
                snapshot.columns[column].pending, snapshot.columns[column].progress = "", None
                begun[column] = time.perf_counter()
            return "now"
        column = snapshot.columns[variant]
        if kind == "token":
            column.text, column.n_tokens = payload[0], payload[1]
            column.seconds = time.perf_counter() - begun[variant]
        elif kind == "end":
            result = payload[0]
            column.text, column.n_tokens = result.text, result.n_tokens
            column.seconds, column.finish_reason, column.done = result.seconds, result.finish_reason, True
            open_columns.discard(variant)
        return ""

    def later(self, deferred: Mapping[str, Hashable], submit: Callable[[dict], list[Job]],
              stop_event: threading.Event, events: queue.Queue, progress: bool = False) -> threading.Event:
        """Merge (or wait for) the deferred columns' pool slices in a thread, then ``submit`` their rows to the
        loop (given the held recipes, it returns the jobs), holding the slices until those jobs are done; the
        event is set when it has let go of them. ``progress``: the merge's tensors counted into ``events``."""
        done = threading.Event()
        if not deferred:
            done.set()
            return done
        counted = (lambda spec, n, total: events.put((None, "progress", spec, n, total))) if progress else None

        def work():
            try:
                with self.holding(deferred, on_wait=lambda: events.put((None, "waiting")), cancel=stop_event,
                                  on_progress=counted) as held:
                    events.put((None, "held", held))
                    if stop_event.is_set():
                        return
                    for job in submit({c: held.recipes[c] for c in deferred}):
                        job.done.wait()
            except StoppedWaiting:  # stopped before a slice was free: nothing held, nothing to say
                pass
            except BaseException as err:  # a merge that failed: surfaced to the request, never lost here
                events.put((None, "failed", err))
            finally:
                done.set()

        threading.Thread(target=work, name="harman-deferred", daemon=True).start()
        return done

    # The answer cache as other request shapes use it (serving/question_set.py): a cell of a question set and the
    # same question asked alone share one key, so either one serves the other.
    def answer_key(self, column: str, spec, prompt_ids: list[int], settings: GenerationSettings) -> tuple:
        return (column, spec, tuple(prompt_ids), settings)

    def cached_answer(self, key) -> Column | None:
        return self._cached(key)

    def keep_answer(self, key, column: Column) -> None:
        self._remember(key, column)

    def _cached(self, key) -> Column | None:
        with self._answers_lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
        return None

    def _remember(self, key, column: Column) -> None:
        with self._answers_lock:
            self._answers[key] = replace(column)  # the report too: a cached answer still shows why
            while len(self._answers) > self.answer_cache:
                self._answers.popitem(last=False)
