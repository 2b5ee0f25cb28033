"""Which threads of the server run torch's CPU work on every core, and which on one.

PyTorch's CPU parallelism (OpenMP; libgomp in the PyPI builds) keeps a team of worker threads for every thread
that ever ran a parallel region on more than one core, for as long as that thread lives. Once the process holds
more such workers than there are CPUs, libgomp stops letting idle workers spin between parallel regions and puts
them to sleep at once; a decoding step, thousands of small parallel regions, then waits for the kernel to wake
them at every one. Measured on 2 cores, the default pair, one user: the decoding loop ran at 37.9 decode
tokens/s while it held the only team and at 26.6 once one other living thread held one (a Gradio worker thread
that had run a merge, say; Gradio keeps those threads).

So the server keeps one team, the decoding loop's (``parallel()`` at its start), and only while rows decode: the
loop's thread ends when it has none, so that a merge meanwhile (a TIES release whose other columns are cached)
runs with the only team rather than at 1.3-2x its time (docs/benchmarks.md, bench.release). ``confine()`` puts
the main thread on one core; the threads Gradio runs handlers in keep torch's default, and what they run with
torch is either small (below torch's grain size for parallel work, so no team) or goes through
``in_parallel_thread``: work worth every core that ends (a materialised merge, a merge's coefficients, loading,
figures, scoring) runs in a thread of its own, whose team ends a moment after it does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch

# torch's own choice before anything here changes it: the number of cores, or OMP_NUM_THREADS.
CORES = torch.get_num_threads()
T = TypeVar("T")
_confined = False


def confine() -> None:
    """This thread runs torch on one core, and in_parallel_thread sends work to a thread of its own."""
    global _confined
    _confined = True
    torch.set_num_threads(1)


def parallel() -> None:
    """This thread runs torch on every core (the decoding loop; a thread started by in_parallel_thread)."""
    torch.set_num_threads(CORES)


def in_parallel_thread(work: Callable[[], T], name: str = "harman-parallel") -> T:
    """``work()`` on every core, in a thread of its own that ends with it; its result, or its error.

    Without confine() (tests, benchmarks, scripts) there is nothing to keep apart: ``work()`` runs right here.
    """
    if not _confined:
        return work()
    out: dict[str, object] = {}

    def run() -> None:
        parallel()
        try:
            out["result"] = work()
        except BaseException as err:  # handed to the caller below
            out["error"] = err

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["result"]  # type: ignore[return-value]
