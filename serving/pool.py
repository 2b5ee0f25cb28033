"""Materialised merges: a few bank slices reused by spec, least recently used first.

Merge-free columns (soup, SLERP, ...) need no slice of their own (serving/batched.py's Mix). The sparsifying
family (TIES, DARE, breadcrumbs, DELLA), saving and the per-variant fallback need the merged weights written
out, and they get them here:
- a request whose spec a slice already holds joins its readers at once (any number of generations may read one
  slice);
- otherwise it takes a slice that nobody reads, the one used least recently first, and re-merges it in place;
- with none free it waits (``on_wait`` is called once, so the page can say so) until a reader leaves.
A request takes all its slices at once or none, so two requests can never hold one slice each and wait for the
other's. A slice whose merge fails holds no spec afterwards, and its next merge rewrites it completely.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from serving.threads import in_parallel_thread


class PoolTooSmall(ValueError):
    """A request asks for more distinct materialised merges than the pool has slices."""


class StoppedWaiting(Exception):
    """A request was stopped while it waited for a free slice; it holds none."""


@dataclass
class _Slot:
    variant: str  # the bank variant this slot writes
    spec: Hashable | None = None  # what it holds; None while being written or after a failure
    writing: Hashable | None = None  # the spec being merged into it
    readers: int = 0
    used: int = 0  # when it was last taken, for least-recently-used reuse
    replaced: bool = False  # its latest merge wrote over another setting (the pool was full)


class SlotPool:
    def __init__(self, variants: list[str], merge: Callable[..., object],
                 written: Callable[[str], None] = lambda variant: None):
        """``merge(variant, spec, progress)`` writes a spec into a bank variant and returns its report, calling
        ``progress(merged, total)`` (when not None) after each tensor; ``written(variant)`` is told before a
        variant's weights change (the batched forward's equality findings expire)."""
        if not variants:
            raise ValueError("SlotPool: give it at least one bank variant to merge into")
        self.slots = [_Slot(v) for v in variants]
        self._merge, self._written = merge, written
        self._cond = threading.Condition()
        self._clock = itertools.count(1)
        self.reports: dict[str, object] = {}  # bank variant -> the report of the merge it holds

    @property
    def size(self) -> int:
        return len(self.slots)

    @contextmanager
    def holding(self, specs: Mapping[str, Hashable], on_wait: Callable[[], None] | None = None,
                cancel: threading.Event | None = None,
                on_progress: Callable[[Hashable, int, int], None] | None = None
                ) -> Iterator[dict[str, tuple[str, object]]]:
        """Hold a slice at each column's spec for the block: yields column -> (bank variant, merge report or
        None when the slice held the spec already). Waiting for free slices ends with StoppedWaiting once
        ``cancel`` is set; ``on_progress(spec, merged, total)`` hears of each tensor this request merges."""
        wanted = list(dict.fromkeys(specs.values()))
        if len(wanted) > len(self.slots):
            raise PoolTooSmall(f"this request needs {len(wanted)} materialised merges at once but the pool has "
                               f"{len(self.slots)} slices; raise --pool (if the memory plan sized it down, "
                               f"--check says so: --dtype bfloat16 or more memory) or ask for fewer sparsifying "
                               f"columns")
        taken, writes = self._take(wanted, on_wait, cancel)
        try:
            reports = {spec: self._fill(spec, slot, spec in writes, on_progress) for spec, slot in taken.items()}
            yield {column: (taken[spec].variant, reports[spec]) for column, spec in specs.items()}
        finally:
            with self._cond:
                for slot in taken.values():
                    slot.readers -= 1
                self._cond.notify_all()

    def holds(self, specs: Mapping[str, Hashable]) -> bool:
        """Whether a slice holds each of these specs now, so that holding them would neither merge nor wait."""
        with self._cond:
            return all(any(s.spec == spec for s in self.slots) for spec in specs.values())

    def must_wait(self, specs: Mapping[str, Hashable]) -> bool:
        """Whether holding these specs would wait now (every slice it would need is read by others)."""
        with self._cond:
            return self._plan(list(dict.fromkeys(specs.values()))) is None

    def _take(self, wanted: list[Hashable], on_wait, cancel) -> tuple[dict[Hashable, _Slot], set[Hashable]]:
        """Slots for every spec, taken at once; and the specs this request must merge itself."""
        with self._cond:
            told = False
            while (plan := self._plan(wanted)) is None:
                if cancel is not None and cancel.is_set():
                    raise StoppedWaiting()
                if on_wait is not None and not told:
                    on_wait()
                    told = True
                self._cond.wait(timeout=None if cancel is None else 0.25)
            writes = set()
            for spec, slot in plan.items():
                slot.readers += 1
                slot.used = next(self._clock)
                if slot.spec != spec and slot.writing != spec:
                    slot.replaced = slot.spec is not None
                    slot.spec, slot.writing = None, spec
                    writes.add(spec)
            return plan, writes

    def _plan(self, wanted: list[Hashable]) -> dict[Hashable, _Slot] | None:
        """A slot for every spec, or None if that must wait."""
        plan: dict[Hashable, _Slot] = {}
        for spec in wanted:
            found = next((s for s in self.slots if spec in (s.spec, s.writing)), None)
            if found is not None:
                plan[spec] = found
        free = sorted((s for s in self.slots if not s.readers and s.writing is None and s not in plan.values()),
                      key=lambda s: s.used)
        for spec in wanted:
            if spec not in plan:
                if not free:
                    return None
                plan[spec] = free.pop(0)
        return plan

    def _fill(self, spec: Hashable, slot: _Slot, mine: bool, on_progress=None) -> object:
        """Merge ``spec`` into a slot this request claimed; or wait while another request merges it (and take
        the merge over if that one failed)."""
        if not mine:
            with self._cond:
                while slot.spec != spec:
                    if slot.writing is None:  # its writer failed: this request merges it instead
                        slot.writing, mine = spec, True
                        break
                    self._cond.wait()
            if not mine:
                return None
        self._written(slot.variant)
        try:
            progress = None if on_progress is None else lambda merged, total: on_progress(spec, merged, total)
            report = in_parallel_thread(lambda: self._merge(slot.variant, spec, progress), "harman-merge")
        except BaseException:
            with self._cond:
                slot.spec = slot.writing = None  # partly written: the next merge rewrites it whole
                self._cond.notify_all()
            raise
        with self._cond:
            slot.spec, slot.writing = spec, None
            if report is not None:
                self.reports[slot.variant] = report
            self._cond.notify_all()
        return report

    def replaced(self, variant: str) -> bool:
        """Whether a bank variant's latest merge wrote over another setting's (every slice had been used)."""
        with self._cond:
            return any(s.replaced for s in self.slots if s.variant == variant)

    def report(self, variant: str) -> object:
        """The report of the merge a bank variant holds (for an answer whose slice needed no merge)."""
        return self.reports.get(variant)
