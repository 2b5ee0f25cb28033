"""Who may touch a merged variant's weights, and when.

Mechanism: one reader-writer slot per merged variant. A request that wants variant V merged with spec S
- joins the readers at once when V already holds S (any number of generations may read the same weights);
- otherwise waits until no generation reads V, re-merges V in place, and then reads it.
While a re-merge waits, new readers of V queue behind it, so a stream of requests with the old spec cannot
starve a request with a new one.

Why not a small cache of merged copies keyed by spec: every copy is a whole model (about 0.5 GB for the
135M default in float32, 1.5 GB for turkish-gpt2-large in bfloat16), and the point of the weight bank is
that the variants exist exactly once. Two users who pull the same slider to different values take turns on
that one column; every other column keeps serving both of them concurrently.

Slots are always acquired in bank order, so two requests can never hold one slot each and wait for the other.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Hashable, Iterator, Mapping


class VariantSlot:
    def __init__(self, name: str, merge: Callable[[Hashable], object]):
        self.name = name
        self._merge = merge  # writes the variant's weights in place for a spec; returns the merge report
        self._cond = threading.Condition()
        self.spec: Hashable | None = None
        self._readers = 0
        self._writing = False
        self._waiting_writers = 0

    def acquire(self, spec: Hashable):
        """Become a reader of this variant holding ``spec``; returns the merge report, or None if no merge ran."""
        with self._cond:
            while True:
                if spec == self.spec and not self._writing and not self._waiting_writers:
                    self._readers += 1
                    return None
                if not self._readers and not self._writing:
                    self._writing = True
                    break
                self._waiting_writers += 1
                self._cond.wait()
                self._waiting_writers -= 1
        report = None
        try:
            report = self._merge(spec)
        except BaseException:
            with self._cond:
                self._writing = False
                self.spec = None  # a failed merge may have been partial; the next request re-merges
                self._cond.notify_all()
            raise
        with self._cond:
            self._writing = False
            self.spec = spec
            self._readers += 1
            self._cond.notify_all()
        return report

    def release(self) -> None:
        with self._cond:
            self._readers -= 1
            self._cond.notify_all()

    @property
    def readers(self) -> int:
        return self._readers


class VariantSlots:
    """The slots of all merged variants of one model set, in bank order."""

    def __init__(self, order: list[str], merge: Callable[[str, Hashable], object]):
        self.order = order
        self.slots = {name: VariantSlot(name, lambda spec, n=name: merge(n, spec)) for name in order}

    @contextmanager
    def reading(self, specs: Mapping[str, Hashable]) -> Iterator[dict[str, object]]:
        """Hold every named variant at its spec for the duration of a generation; yields the merge reports."""
        held, reports = [], {}
        try:
            for name in self.order:
                if name in specs:
                    reports[name] = self.slots[name].acquire(specs[name])
                    held.append(name)
            yield reports
        finally:
            for name in reversed(held):
                self.slots[name].release()
