"""Long requests (scores, sweeps, greedy soup) run in a thread while the page's handler keeps yielding, so Stop
and a closed tab reach them. Stop is per visitor: it sets that visitor's cancel events, the work stops at its
next check (between rows, batches or sweep points) and releases what it holds, and the handler still shows what
was measured. A visitor may also have only so many requests running at once."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from errors import Refusal
from serving.threads import parallel


class Visitors:
    """Per visitor (the page session): the cancel events of their running work, and how many requests run."""

    def __init__(self, max_requests: int):
        self.max_requests = max_requests
        self._lock = threading.Lock()
        self._cancels: dict[str, set[threading.Event]] = defaultdict(set)
        self._running: dict[str, int] = defaultdict(int)

    @contextmanager
    def request(self, visitor: str) -> Iterator[threading.Event]:
        """One request of a visitor, with its cancel event; raises TooMany over the visitor's limit."""
        cancel = threading.Event()
        with self._lock:
            if self._running[visitor] >= self.max_requests:
                raise TooMany(self.max_requests)
            self._running[visitor] += 1
            self._cancels[visitor].add(cancel)
        try:
            yield cancel
        finally:
            with self._lock:
                self._running[visitor] -= 1
                self._cancels[visitor].discard(cancel)
                if not self._running[visitor]:
                    del self._running[visitor], self._cancels[visitor]

    def stop(self, visitor: str) -> int:
        """Stop every running request of this visitor; returns how many."""
        with self._lock:
            events = list(self._cancels.get(visitor, ()))
        for event in events:
            event.set()
        return len(events)

    def running(self, visitor: str) -> int:
        with self._lock:
            return self._running.get(visitor, 0)


class TooMany(Refusal):
    def __init__(self, limit: int):
        super().__init__("err_too_many", limit=limit)
        self.limit = limit


def background(work: Callable[[Callable[[float, object], None]], object], cancel: threading.Event, idle,
               progress: Callable[[float, object], None] | None = None, poll: float = 0.25):
    """Run ``work(report)`` in a thread; yield ``idle`` while it runs; return its result (re-raise its error).
    ``progress`` gets the fraction and what the work last reported (None before its first report).

    A closed generator (a closed tab) sets ``cancel`` and waits a moment for the work to let go of what it holds.
    """
    state, out = {"fraction": 0.0, "what": None}, {}

    def report(fraction: float, what) -> None:
        state.update(fraction=fraction, what=what)

    def target():
        parallel()  # this thread ends with the work, and its threads with it (serving/threads.py)
        try:
            out["result"] = work(report)
        except BaseException as err:  # handed to the request thread below
            out["error"] = err

    worker = threading.Thread(target=target, daemon=True, name="harman-measure")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(timeout=poll)
            if progress is not None:
                progress(state["fraction"], state["what"])
            yield idle
    finally:
        if worker.is_alive():
            cancel.set()
            worker.join(timeout=5)
    if "error" in out:
        raise out["error"]
    return out.get("result")


class Loading:
    """The models, loading in a thread (``start``) while the page is already served: a restart shows the page in
    seconds, and a question asked meanwhile waits for the load (the page's notes say so) instead of finding no
    server. ``Loading.done(value)`` is one already loaded."""

    def __init__(self, load: Callable[[], object] | None = None,
                 on_error: Callable[[BaseException], None] | None = None):
        self._load, self._on_error = load, on_error
        self._done = threading.Event()
        self._value = self._error = None

    def start(self) -> None:
        threading.Thread(target=self._run, args=(self._load, self._on_error), name="harman-load",
                         daemon=True).start()

    @classmethod
    def done(cls, value) -> "Loading":
        loading = cls()
        loading._value = value
        loading._done.set()
        return loading

    def _run(self, load, on_error) -> None:
        parallel()  # this thread ends with the load (serving/threads.py)
        try:
            self._value = load()
        except BaseException as err:  # handed to every waiting request, and to the owner through on_error
            self._error = err
            if on_error is not None:
                on_error(err)
        finally:
            self._done.set()

    def ready(self) -> bool:
        return self._done.is_set()

    def get(self, timeout: float | None = None):
        """The loaded value, waiting for it; re-raises the load's error."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"still loading after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value
