"""A question set: several questions answered by every column at once, the seed experiment's results table live.

Every question × column is a row of the server's one decoding loop: all questions are submitted together, so
their rows share the batched steps. A cell is cached under the key a single question's column uses
(serving/comparison.py), so a slider release on a set decodes only that column, for every question, and a
question asked alone after the set (or before it) is served from the same answers. No Gradio here.
"""

from __future__ import annotations

import csv
import io
import queue
import threading
import time
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from errors import Refusal
from merging.coefficients import merge_free
from models.model_set import PARENTS
from serving.comparison import WAITING_NOTE, Column, Comparison
from serving.decoding_loop import Job
from serving.generation import GenerationSettings, QueueStreamer
from serving.requests import RequestError, check_question

MAX_SET_QUESTIONS = 10  # the owner's default (--max-set-questions, HARMAN_MAX_SET_QUESTIONS)
UPDATES_PER_SECOND = 10
# The seed's results table names its columns so (000_…txt: "Cevap Model 1", "Linear Merged Cevap", …); the
# soup is the seed's linear merge.
SEED_HEADERS = {"question": "Soru", "model1": "Cevap Model 1", "model2": "Cevap Model 2",
                "soup": "Linear Merged Cevap", "slerp": "Slerp Merged Cevap", "ties": "Ties Merged Cevap"}
# The API table's headers: the page's column names, fixed for callers.
TABLE_HEADERS = {"model1": "Model 1", "model2": "Model 2", "soup": "Soup", "slerp": "SLERP", "ties": "TIES"}


def parse_questions(text: str, max_questions: int = MAX_SET_QUESTIONS) -> list[tuple[int, str]]:
    """(line number, question) for every non-empty line; refused when there are none or too many."""
    if not isinstance(text, str):
        raise RequestError("err_question_type", kind=type(text).__name__)
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise RequestError("err_set_empty")
    if len(lines) > max_questions:
        raise RequestError("err_set_many", n=len(lines), limit=max_questions)
    return lines


def check_questions(lines: list[tuple[int, str]], tokenizer, max_chars: int, max_tokens: int) -> tuple[str, ...]:
    """The questions, each within the per-question limits; a refusal names the line of the one that is not."""
    for number, question in lines:
        try:
            check_question(question, tokenizer, max_chars, max_tokens)
        except Refusal as err:
            raise RequestError(f"err_set_line_{err.key.removeprefix('err_question_')}", line=number,
                               **err.values) from None
    return tuple(q for _, q in lines)


@dataclass(frozen=True)
class SetRequest:
    questions: tuple[str, ...]
    columns: tuple[str, ...]
    specs: Mapping[str, Hashable]  # merged column -> MergeSpec
    settings: GenerationSettings


@dataclass
class SetSnapshot:
    """The grid so far: a cell per (question index, column)."""
    questions: tuple[str, ...]
    columns: tuple[str, ...]
    cells: dict[tuple[int, str], Column]
    reports: dict[str, object] = field(default_factory=dict)  # merged column -> merge diagnostics
    notes: list[str] = field(default_factory=list)
    dropped_tokens: int = 0  # the most any question lost to the context
    token_ids: dict[tuple[int, str], list[int]] = field(default_factory=dict)  # cells decoded by this request

    def text(self, i: int, column: str) -> str:
        """A cell's plain answer (without the space the model puts after "Cevap:")."""
        return self.cells[i, column].text.lstrip()

    def grid(self) -> list[list[str]]:
        """A row per question: the question, then each column's plain answer, in the columns' order."""
        return [[q, *(self.text(i, c) for c in self.columns)] for i, q in enumerate(self.questions)]

    @property
    def done(self) -> bool:
        return all(cell.done for cell in self.cells.values())


def same_as(snapshot: SetSnapshot) -> dict[tuple[int, str], str]:
    """(question, column) -> the earlier column of the same row whose finished answer it repeats word for word."""
    marks = {}
    for i in range(len(snapshot.questions)):
        seen: dict[str, str] = {}
        for column in snapshot.columns:
            cell = snapshot.cells[i, column]
            if not cell.done or not cell.text.strip():
                continue
            text = cell.text.strip()
            if text in seen:
                marks[i, column] = seen[text]
            else:
                seen[text] = column
    return marks


def headers(columns: tuple[str, ...], names: Mapping[str, str], extra_method: str = "") -> list[str]:
    return [names["question"], *(names.get(c) or (f"{extra_method} Merged Cevap" if names is SEED_HEADERS
                                                  else extra_method or c) for c in columns)]


def markdown(snapshot: SetSnapshot, extra_method: str = "") -> str:
    """The grid as a Markdown table in the seed's layout: Soru, Cevap Model 1, Cevap Model 2, … Merged Cevap."""
    def cell(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")

    head = headers(snapshot.columns, SEED_HEADERS, extra_method)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(t) for t in row) + " |" for row in snapshot.grid()]
    return "\n".join(lines) + "\n"


def csv_text(snapshot: SetSnapshot, extra_method: str = "") -> str:
    """The grid as CSV with the seed's headers (RFC 4180: quoted where needed, CRLF line ends)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(headers(snapshot.columns, SEED_HEADERS, extra_method))
    writer.writerows(snapshot.grid())
    return out.getvalue()


def run_set(comparison: Comparison, request: SetRequest, stop_event: threading.Event | None = None
            ) -> Iterator[SetSnapshot]:
    """Yield the grid about UPDATES_PER_SECOND times a second as cells are written, the last one complete.

    Cached cells are filled at once; every other cell is a row of the one decoding loop, all questions submitted
    together. Merged columns whose pool slices must first be merged join when they are ready, as on the page's
    single question. Stop ends every row within a step; the cells written so far stay, stopped ones uncached."""
    stop_event = stop_event or threading.Event()
    if comparison.loop is None:  # --no-batch: each question in turn, through the single-question path
        yield from _one_by_one(comparison, request, stop_event)
        return
    prompts = [comparison.prompt(q, request.settings.max_new_tokens) for q in request.questions]
    settings = [replace(request.settings, eos_token_ids=p.eos_token_ids, stop_strings=p.stop_strings) for p in prompts]
    snapshot = SetSnapshot(request.questions, request.columns,
                           {(i, c): Column(c) for i in range(len(prompts)) for c in request.columns},
                           dropped_tokens=max(p.dropped_tokens for p in prompts))
    keys = {(i, c): comparison.answer_key(c, request.specs.get(c), p.ids, settings[i])
            for i, p in enumerate(prompts) for c in request.columns}
    pending = {}
    for cell, key in keys.items():
        cached = comparison.cached_answer(key)
        if cached is None:
            pending[cell] = key
        else:
            snapshot.cells[cell] = replace(cached, reused=True, merge_ms=None)
            if cached.report is not None:
                snapshot.reports[cell[1]] = cached.report
    if not pending:
        yield snapshot
        return
    columns = [c for c in request.columns if any(cell[1] == c for cell in pending)]
    specs = {c: request.specs[c] for c in columns if c not in PARENTS}
    pooled = {c: s for c, s in specs.items() if not merge_free(s)}
    deferred = pooled if pooled and not comparison.pool.holds(pooled) else {}
    now = {c: s for c, s in specs.items() if c not in deferred}
    with comparison.holding(now, cancel=stop_event) as held:
        _describe(snapshot, held, now, pending, comparison.pool)
        bank = comparison.model_set.bank
        recipes = {c: held.recipes[c] if c in held.recipes else bank.index(c) for c in columns if c not in deferred}
        yield from _stream(comparison, snapshot, pending, recipes, deferred, prompts, settings, stop_event)
    for cell, key in pending.items():
        if snapshot.cells[cell].done and snapshot.cells[cell].finish_reason != "stopped":
            comparison.keep_answer(key, snapshot.cells[cell])


def _describe(snapshot: SetSnapshot, held, specs: Mapping[str, Hashable], pending, pool) -> None:
    """Each merged column's report and how its cells were made (merge-free, or merged in a pool slice)."""
    for column in specs:
        report = held.reports.get(column)
        if report is None and column in held.variants:  # no merge: the slice held this spec already
            report = pool.report(held.variants[column])
        if report is not None:
            snapshot.reports[column] = report
        for cell in pending:
            if cell[1] == column:
                snapshot.cells[cell].merge_free = column not in held.variants
                snapshot.cells[cell].merge_ms = getattr(report, "ms", None) if column in held.variants else 0.0
                snapshot.cells[cell].report = report


def _submit(comparison: Comparison, pending, recipes, prompts, settings, streamers, stop_event, events) -> list:
    """One job per question for the given columns' pending cells, submitted back to back: the loop admits them
    between the same two steps and their rows decode side by side."""
    jobs = []
    for i, prompt in enumerate(prompts):
        mine = {c: r for c, r in recipes.items() if (i, c) in pending}
        if mine:
            jobs.append(comparison.loop.submit(Job(
                mine, prompt.ids, settings[i], {c: streamers[i, c] for c in mine}, stop_event,
                comparison.model_set.tokenizer, on_error=lambda err: events.put((None, "failed", err)))))
    return jobs


def _stream(comparison, snapshot, pending, recipes, deferred, prompts, settings, stop_event):
    events: queue.Queue = queue.Queue()
    streamers = {cell: QueueStreamer(cell, events, comparison.model_set.tokenizer) for cell in pending}
    finished = [job.done for job in _submit(comparison, pending, recipes, prompts, settings, streamers, stop_event,
                                            events)]
    if deferred:
        for cell in pending:
            if cell[1] in deferred:
                snapshot.cells[cell].pending = "merging"
        finished.append(comparison.later(deferred, lambda held: _submit(
            comparison, pending, held, prompts, settings, streamers, stop_event, events), stop_event, events))
    open_cells, last, unshown = set(pending), 0.0, True
    try:
        while open_cells:
            try:
                cell, kind, *payload = events.get(timeout=1 / UPDATES_PER_SECOND)
            except queue.Empty:
                if unshown:
                    last, unshown = time.perf_counter(), False
                    yield snapshot
                continue
            unshown = True
            if kind == "failed":
                raise payload[0]
            if kind == "waiting":
                snapshot.notes.append(WAITING_NOTE)
                continue
            if kind == "held":
                snapshot.notes = [n for n in snapshot.notes if n != WAITING_NOTE]
                _describe(snapshot, payload[0], deferred, pending, comparison.pool)
                for c in pending:
                    if c[1] in deferred:
                        snapshot.cells[c].pending = ""
                continue
            column = snapshot.cells[cell]
            if kind == "token":
                column.text, column.n_tokens = payload[0], payload[1]
            elif kind == "end":
                result = payload[0]
                column.text, column.n_tokens, column.seconds = result.text, result.n_tokens, result.seconds
                column.finish_reason, column.done = result.finish_reason, True
                snapshot.token_ids[cell] = result.token_ids
                open_cells.discard(cell)
            if time.perf_counter() - last >= 1 / UPDATES_PER_SECOND:
                last, unshown = time.perf_counter(), False
                yield snapshot
        yield snapshot
    finally:
        stop_event.set()  # Stop, a closed tab or an error: every row of the set leaves within one step
        deadline = time.monotonic() + 30
        for event in finished:
            event.wait(timeout=max(0.0, deadline - time.monotonic()))


def _one_by_one(comparison: Comparison, request: SetRequest, stop_event: threading.Event) -> Iterator[SetSnapshot]:
    from serving.comparison import Request

    snapshot = SetSnapshot(request.questions, request.columns,
                           {(i, c): Column(c) for i in range(len(request.questions)) for c in request.columns})
    for i, question in enumerate(request.questions):
        if stop_event.is_set():
            for c in request.columns:
                snapshot.cells[i, c] = replace(snapshot.cells[i, c], done=True, finish_reason="stopped")
            continue
        # run() sets its event when it ends: each question gets its own, set by the set's Stop as it streams.
        mine = threading.Event()
        for single in comparison.run(Request(question, request.columns, request.specs, request.settings), mine):
            if stop_event.is_set():
                mine.set()
            for c, col in single.columns.items():
                snapshot.cells[i, c] = col
                if col.report is not None:
                    snapshot.reports[c] = col.report
            snapshot.dropped_tokens = max(snapshot.dropped_tokens, single.dropped_tokens)
            yield snapshot
    yield snapshot
