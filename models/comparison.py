"""One comparison request, start to finish, without Gradio: prompt -> re-merge what changed -> generate every
column that needs it in one pass -> multiplex the column streams into page-sized snapshots.

Answers are cached by (column, its merge spec, prompt ids, generation settings), so releasing the SLERP slider
regenerates the SLERP column only: every other column's key is unchanged and its answer is reused.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Hashable, Iterator, Mapping

from merging import MergeTarget
from models.generation import GenerationSettings, QueueStreamer, generate
from models.model_set import ModelSet
from models.variants import VariantSlots
from prompts import formats

UPDATES_PER_SECOND = 10
ANSWER_CACHE_SIZE = 256


@dataclass
class Column:
    """What the page shows for one variant."""
    variant: str
    text: str = ""
    n_tokens: int = 0
    seconds: float = 0.0
    merge_ms: float | None = None
    reused: bool = False  # the answer came from the cache
    done: bool = False
    finish_reason: str = ""
    report: object = None  # the merge engine's diagnostics of the weights this answer came from

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


class Comparison:
    """Serves comparison requests for one model set; safe to call from many threads at once."""

    def __init__(self, model_set: ModelSet, batched: bool = True):
        self.model_set = model_set
        self.batched = batched
        bank = model_set.bank
        parents = [bank.slice("model1"), bank.slice("model2")]
        self.targets = {
            name: MergeTarget(bank.slice(name), bank.slice("base"), parents, model_set.num_layers)
            for name in bank.variants if name not in ("base", "model1", "model2")
        }
        self.slots = VariantSlots([v for v in bank.variants if v in self.targets], self._merge)
        self.last_reports: dict[str, object] = {}  # the latest merge diagnostics of each merged variant
        self._answers: OrderedDict = OrderedDict()
        self._answers_lock = threading.Lock()

    def _merge(self, variant: str, spec):
        report = self.targets[variant].merge(spec)
        if report is not None:
            self.last_reports[variant] = report
        return report

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
        specs = {c: request.specs[c] for c in pending if c in self.targets}
        with self.slots.reading(specs) as reports:
            for column, report in reports.items():
                snapshot.columns[column].merge_ms = getattr(report, "ms", None) if report is not None else 0.0
                # No merge (the slot held this spec already): the slot's weights are those of its last merge,
                # which no other request can redo while this one reads them.
                snapshot.columns[column].report = report if report is not None else self.last_reports.get(column)
            yield from self._stream(snapshot, pending, prompt.ids, settings, stop_event)
        for column in pending:
            done = snapshot.columns[column]
            if done.finish_reason != "stopped":
                self._remember(keys[column], done)

    def _stream(self, snapshot: Snapshot, columns: list[str], prompt_ids: list[int],
                settings: GenerationSettings, stop_event: threading.Event) -> Iterator[Snapshot]:
        events: queue.Queue = queue.Queue()
        tokenizer = self.model_set.tokenizer
        streamers = {c: QueueStreamer(c, events, tokenizer) for c in columns}
        failure: list[BaseException] = []

        def work():
            try:
                generate(self.model_set.bank, columns, prompt_ids, settings, streamers, stop_event=stop_event,
                         batched=self.batched, tokenizer=tokenizer)
            except BaseException as err:  # surfaced to the request below, never lost in the thread
                failure.append(err)
                events.put((None, "failed", err))

        worker = threading.Thread(target=work, name="harman-generate", daemon=True)
        started = time.perf_counter()
        worker.start()
        open_columns, last_yield = set(columns), 0.0
        try:
            while open_columns:
                try:
                    variant, kind, *payload = events.get(timeout=1 / UPDATES_PER_SECOND)
                except queue.Empty:
                    continue
                if kind == "failed":
                    raise payload[0]
                column = snapshot.columns[variant]
                if kind == "token":
                    column.text, column.n_tokens = payload[0], payload[1]
                    column.seconds = time.perf_counter() - started
                elif kind == "end":
                    result = payload[0]
                    column.text, column.n_tokens = result.text, result.n_tokens
                    column.seconds, column.finish_reason, column.done = result.seconds, result.finish_reason, True
                    open_columns.discard(variant)
                now = time.perf_counter()
                if now - last_yield >= 1 / UPDATES_PER_SECOND:
                    last_yield = now
                    yield snapshot
            yield snapshot
        finally:
            # Stop button, closed tab (GeneratorExit) or an error: the decoding thread ends within one step.
            stop_event.set()
            worker.join(timeout=5)

    def _cached(self, key) -> Column | None:
        with self._answers_lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
        return None

    def _remember(self, key, column: Column) -> None:
        with self._answers_lock:
            self._answers[key] = replace(column)  # the report too: a cached answer still shows why
            while len(self._answers) > ANSWER_CACHE_SIZE:
                self._answers.popitem(last=False)
