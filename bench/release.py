"""A TIES slider release through the public API of a running server, against the same merge in a plain script,
in one run; and how soon the release's first update reaches the page.

    python -m bench.release [--preset default] [--releases 6] [--new-tokens 16]

The server is ``python app.py`` as a person starts it (answer cache on; one pool slice, so that every release
rewrites the same memory as the script does). One question is asked once, so that every column's answer is
cached; then the TIES density is released at new values one after another, as a visitor moving the slider does:
each release's only work is a TIES merge. For each release: the footer's "merged in N ms" (the merge as the
server ran it), the time of the first update the client receives (which should hold the four cached columns),
the time TIES is done; and, right after it, the same merge in a plain script, a process of its own holding the
same model set that merges in its main thread (``in_process_merger``; ``merge_ms_in_process`` is the function
bench.scale calls at other shapes). Server and script take turns, so both see the same load on a shared machine.
Prints one JSON line per release and a summary: ``api_over_in_process`` is the median footer time over the
median script time, ``api_fastest_over_in_process_fastest`` the fastest over the fastest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from bench.users import COLUMNS, FOOTERS, ROOT, Server, api_values, shown_after

MERGED = re.compile(r"(?:merged in|birleştirme) (\d+) ms")
FIRST_DENSITY = 0.5  # the page's; the releases move away from it
QUESTION = "Türkiye'nin en uzun nehri hangisidir?"


def densities(releases: int) -> list[float]:
    return [round(0.3 + 0.05 * i, 2) for i in range(releases + 1) if round(0.3 + 0.05 * i, 2) != FIRST_DENSITY][
        :releases]


def controls(density: float, new_tokens: int):
    from serving.requests import Controls

    return Controls(question=QUESTION, ties_density=density, max_new_tokens=new_tokens, greedy=True,
                    repetition_penalty=1.0)


def in_process_merger(model_set, variant: str = "pool0") -> Callable[[object], float]:
    """A function that merges a spec into one pool slice of ``model_set``'s bank in the calling thread, as a plain
    script merges, and returns its ms. The parents' figures are measured first (a server has them from its
    warm-up)."""
    from merging import MergeTarget
    from merging.coefficients import ParentFigures
    from models.model_set import PARENTS

    bank = model_set.bank
    base, parents = bank.slice(PARENTS[0]), [bank.slice(p) for p in PARENTS[1:]]
    figures = ParentFigures(base, *parents)
    for name in bank.tensors:
        figures(name, False)
    target = MergeTarget(bank.slice(variant), base, parents, model_set.num_layers, parents=figures.plain)
    return lambda spec: target.merge(spec).ms


def merge_ms_in_process(model_set, specs: Sequence) -> list[float]:
    """Each spec merged in turn into one pool slice, in this thread; its ms each. A first merge (of the last spec)
    is not counted: it finds which tensors the parents left as the base's, and writes the slice's pages."""
    merge = in_process_merger(model_set)
    merge(specs[-1])
    return [merge(spec) for spec in specs]


class PlainScript:
    """The same model set in a process of its own that merges nothing but what it is sent, in its main thread."""

    def __init__(self, preset: str, new_tokens: int):
        self.new_tokens = new_tokens
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.release", "--worker", "--preset", preset],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout.readline().strip() == "ready", "the in-process worker did not start"

    def merge_ms(self, density: float) -> float:
        self.proc.stdin.write(f"{density}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def worker(preset: str) -> None:
    from models import model_set, presets
    from serving.requests import merge_specs

    merge = in_process_merger(model_set.load(presets.load(preset), pool=1))
    merge(merge_specs(controls(FIRST_DENSITY, 1))["ties"])
    print("ready", flush=True)
    for line in sys.stdin:
        print(merge(merge_specs(controls(float(line), 1))["ties"]), flush=True)


def release(client, density: float, new_tokens: int) -> dict:
    """One release: when the first update came, when TIES was done, and the merge time its footer says."""
    started = time.perf_counter()
    job = client.submit(*api_values(controls(density, new_tokens)), api_name="/compare")
    first, seen, shown, first_shown = None, 0, None, None
    while not job.done():
        outputs = job.outputs()
        for out in outputs[seen:]:
            shown = shown_after(shown, out)
            if first is None:
                first, first_shown = time.perf_counter() - started, shown
        seen = len(outputs)
        time.sleep(0.01)
    final = shown_after(shown, job.result())
    wall = time.perf_counter() - started
    if first is None:
        first, first_shown = wall, final
    footers = dict(zip(COLUMNS, final[FOOTERS]))
    merged = MERGED.search(footers["ties"] or "")
    ready_first = [c for c, f in zip(COLUMNS, first_shown[FOOTERS]) if c not in ("ties", "extra") and f]
    return {"bench": "release", "density": density, "first_update_s": round(first, 3), "done_s": round(wall, 3),
            "footer_merge_ms": int(merged.group(1)) if merged else None, "columns_in_first_update": ready_first}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--releases", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.preset)
    server, script, rows = Server(args.preset, pool=1, answer_cache=256), None, []
    try:
        client = server.client()
        client.predict(*api_values(controls(FIRST_DENSITY, args.new_tokens)), api_name="/compare")
        script = PlainScript(args.preset, args.new_tokens)
        for density in densities(args.releases):  # in turn, so that both see the same load on a shared machine
            row = release(client, density, args.new_tokens)
            row["in_process_ms"] = round(script.merge_ms(density))
            print(json.dumps(row), flush=True)
            rows.append(row)
        client.close()
    finally:
        server.stop()
        if script is not None:
            script.stop()
    pairs = [(r["footer_merge_ms"], r["in_process_ms"]) for r in rows if r["footer_merge_ms"] is not None]
    api, local = [a for a, _ in pairs], [b for _, b in pairs]
    summary = {"bench": "release", "summary": True, "preset": args.preset, "releases": len(rows),
               "load_average": os.getloadavg()[0], "api_footer_ms": api, "in_process_ms": local,
               "api_median_ms": statistics.median(api), "in_process_median_ms": statistics.median(local),
               "api_over_in_process": round(statistics.median(api) / statistics.median(local), 2),
               "per_release_ratios": [round(a / b, 2) for a, b in pairs],
               # Other load only ever adds time: the fastest of each is the least disturbed (as in bench.merge).
               "api_fastest_over_in_process_fastest": round(min(api) / min(local), 2),
               "first_update_s": [r["first_update_s"] for r in rows],
               "first_update_median_s": statistics.median(r["first_update_s"] for r in rows),
               "every_ready_column_in_first_update": all(len(r["columns_in_first_update"]) == 4 for r in rows)}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
