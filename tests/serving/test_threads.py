"""serving/threads.py: one long-lived thread on every core; the others on one, or in a thread that ends.

Run in a fresh interpreter each (confine() changes the process), with OMP_NUM_THREADS=2 so that the process has
two cores' worth of OpenMP threads to keep apart on any machine. Threads are counted in /proc/self/task: an
OpenMP team is OS threads that live as long as the thread that started it.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts threads in /proc")


def run(code: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


PRELUDE = """
    import os, threading, torch
    from serving import threads

    def os_threads():
        return len(os.listdir("/proc/self/task"))

    def work():  # large enough that torch runs it on every core it may use
        a = torch.randn(1500, 1500)
        return float((a @ a).sum()), torch.get_num_threads(), threading.current_thread() is threading.main_thread()
"""


def test_a_confined_server_keeps_no_team_after_parallel_work():
    out = run(PRELUDE + """
    threads.confine()
    before = os_threads()
    _, cores, on_main = threads.in_parallel_thread(work)
    import time
    for _ in range(1200):  # the team's threads leave a moment after theirs (60 s only bound a hang)
        if os_threads() <= before:
            break
        time.sleep(0.05)
    after_parallel = os_threads()
    print(cores, on_main, before, after_parallel, torch.get_num_threads())
    """)
    cores, on_main, before, after, main_cores = out.split()
    assert (cores, on_main) == ("2", "False")  # on both cores, not in the calling thread
    assert after == before  # its OpenMP team ended with its thread
    assert main_cores == "1"


def test_parallel_work_runs_where_it_is_called_without_confine_and_errors_reach_the_caller():
    out = run(PRELUDE + """
    _, cores, on_main = threads.in_parallel_thread(work)
    threads.confine()
    try:
        threads.in_parallel_thread(lambda: 1 / 0)
    except ZeroDivisionError:
        print(cores, on_main, "raised")
    """)
    assert out == "2 True raised"
