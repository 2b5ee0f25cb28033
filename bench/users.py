"""Many colleagues on one link: 1, 3 and 6 users through the public API of a running server, each with its own
question and its own soup and SLERP settings (greedy, 48 new tokens), against each user alone.

    python -m bench.users [--preset default] [--users 1 3 6] [--new-tokens 48] [--stream-only]

The server is ``python app.py`` with the answer cache off (every column of every request decodes) and a pool
large enough for every user's own TIES slot. Run A: the users share the page's TIES density, so their TIES
columns read one pool slice. Run B: every user also has its own TIES density, so each needs its own slice, a
whole materialised copy; its ratio is reported next to the one the bytes a decoding step reads predict.
Then, in this process on the same model set: the slider-release figures (a SLERP change is merge-free: no merge,
time to its first token) and bench.generate's merge-free rate for the five columns, against which one user's
stream through the API is held (median of three asks). The reference decodes the same work as the page: the
page's prompt and stops, so each column ends at the same token (a column that ends early leaves the batch, and
fewer rows make fewer tokens a second); its rate with every column run to the limit is printed beside it.
Prints one JSON line per measurement and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

from serving.columns import COLUMNS, MERGED

ROOT = Path(__file__).resolve().parent.parent
ANSWERS = slice(1 + len(COLUMNS), 1 + 2 * len(COLUMNS))
FOOTERS = slice(1 + 2 * len(COLUMNS), 1 + 3 * len(COLUMNS))
TOKENS = re.compile(r"^(\d+) token")


def user_controls(i: int, new_tokens: int, own_ties: bool):
    from prompts import examples
    from serving.requests import Controls

    questions = examples.questions()
    soup = 0.2 + 0.12 * i
    return Controls(question=questions[(3 * i) % len(questions)], soup_w1=soup, soup_w2=1 - soup,
                    slerp_t=round(0.15 + 0.13 * i, 3), ties_density=round(0.3 + 0.1 * i, 3) if own_ties else 0.5,
                    ties_density1=None, ties_density2=None, max_new_tokens=new_tokens, greedy=True,
                    repetition_penalty=1.0)


def api_values(controls) -> list:
    values = asdict(controls)
    for key in ("ties_density1", "ties_density2"):
        values[key] = values[key] if values[key] is not None else values["ties_density"]
    return list(values.values())


class Server:
    def __init__(self, preset: str, pool: int, answer_cache: int = 0):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "app.py", "--preset", preset, "--port", str(self.port), "--answer-cache", str(answer_cache),
             "--pool", str(pool), "--concurrency", "16", "--queue-size", "64"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self):
        from gradio_client import Client

        started = time.perf_counter()
        while time.perf_counter() - started < 600:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}")
            try:
                return Client(f"http://127.0.0.1:{self.port}/", verbose=False)
            except Exception:  # not serving yet
                time.sleep(0.5)
        raise RuntimeError("app.py did not serve within 600 s")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def ask(client, controls) -> tuple[dict, float, list]:
    """One request: the answers, its wall time, and (time, tokens per column) at every update received."""
    started = time.perf_counter()
    job = client.submit(*api_values(controls), api_name="/compare")
    updates, seen, shown = [], 0, None
    while not job.done():
        outputs = job.outputs()
        for out in outputs[seen:]:
            shown = shown_after(shown, out)
            updates.append((time.perf_counter() - started, _tokens(shown)))
        seen = len(outputs)
        time.sleep(0.02)
    final = shown_after(shown, job.result())
    wall = time.perf_counter() - started
    updates.append((wall, _tokens(final)))
    return dict(zip(COLUMNS, final[ANSWERS])), wall, updates


def shown_after(shown: list | None, out) -> list:
    """What the page shows after an update: an output sent as gr.skip() keeps its value."""
    if shown is None:
        shown = [None] * len(out)
    return [old if isinstance(new, dict) and new.get("__type__") == "update" else new for old, new in zip(shown, out)]


def _tokens(out) -> list[int]:
    return [int(m.group(1)) if (m := TOKENS.match(f or "")) else 0 for f in out[FOOTERS]][:5]


def together(server, users: list) -> tuple[list[dict], float]:
    """Every user at once, each from a client (a page session) of their own."""
    clients = [server.client() for _ in users]
    barrier, results = threading.Barrier(len(users)), [None] * len(users)

    def run(i):
        barrier.wait()
        results[i] = ask(clients[i], users[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(users))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    for c in clients:
        c.close()
    return [r[0] for r in results], wall


def stream_rate(updates: list) -> float:
    """Decode tokens/s of the five columns together, from the first update with tokens to the last."""
    firsts = [next((t for t, n in updates if n[c] > 0), None) for c in range(5)]
    start = max(t for t in firsts if t is not None)
    at_start = next(n for t, n in updates if t >= start)
    end, at_end = updates[-1]
    return (sum(at_end) - sum(at_start)) / (end - start)


def scenario(server, client, label: str, counts: list[int], new_tokens: int, own_ties: bool) -> list[dict]:
    users = [user_controls(i, new_tokens, own_ties) for i in range(max(counts))]
    for u in users:  # each user's merges made once, so that neither the alone nor the together times hold them
        ask(client, replace(u, max_new_tokens=2))
    alone = [ask(client, u) for u in users]
    print(json.dumps({"bench": "users", "run": label, "alone_s": [round(a[1], 2) for a in alone]}), flush=True)
    rows = []
    for n in counts:
        answers, wall = together(server, users[:n]) if n > 1 else ([alone[0][0]], alone[0][1])
        alone_mean = statistics.mean(a[1] for a in alone[:n])
        differ = [(i, c) for i in range(n) for c in COLUMNS if answers[i][c] != alone[i][0][c]]
        slowest = max(a[1] for a in alone[:n])  # together ends with the longest answer: the ideal is its time
        row = {"bench": "users", "run": label, "users": n, "wall_s": round(wall, 2),
               "alone_mean_s": round(alone_mean, 2), "ratio": round(wall / alone_mean, 2),
               "alone_slowest_s": round(slowest, 2), "ratio_to_slowest": round(wall / slowest, 2),
               "answers_differing_from_alone": differ}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows, alone


def in_process(preset: str, new_tokens: int, users: list, own_ties_users: list) -> dict:
    """Slider-release figures, bench.generate's merge-free rate, and the bytes-read prediction for run B."""
    import torch

    from bench.generate import COLUMNS, run_mode, step_bytes
    from models import model_set, presets
    from serving.comparison import Comparison, Request
    from serving.generation import GenerationSettings
    from serving.requests import generation_settings, merge_specs
    from serving.threads import confine, in_parallel_thread

    # Threads as the server has them (serving/threads.py): this one on one core; the load, the reference and the
    # decoding loop each on both, and never two of them alive at once.
    torch.set_num_threads(2)
    confine()

    def load():
        ms = model_set.load(presets.load(preset), pool=len(own_ties_users) + 1)
        comparison = Comparison(ms)
        comparison.warm()
        return ms, comparison

    ms, comparison = in_parallel_thread(load)
    first = users[0]
    specs = {c: s for c, s in merge_specs(first).items() if c in MERGED}
    # The same work as the page's: its prompt, and its stops, so each column ends where it ends on the page (a
    # column that ends early leaves the batch, and the rows that remain make fewer tokens a second).
    prompt = comparison.prompt(first.question, new_tokens)
    settings = GenerationSettings(max_new_tokens=new_tokens, greedy=True, eos_token_ids=prompt.eos_token_ids,
                                  stop_strings=prompt.stop_strings)

    def reference():
        with comparison.holding(specs) as held:
            recipes = {**{c: ms.bank.index(c) for c in ("model1", "model2")}, **held.recipes}
            run_mode(ms.bank, "merge-free", recipes, GenerationSettings(max_new_tokens=2, greedy=True), prompt.ids)
            same = run_mode(ms.bank, "merge-free", recipes, settings, prompt.ids, ms.tokenizer)
            to_the_limit = run_mode(ms.bank, "merge-free", recipes,
                                    replace(settings, eos_token_ids=(), stop_strings=()), prompt.ids)
            return same, to_the_limit, step_bytes(ms.bank, [recipes[c] for c in COLUMNS]), \
                {c: recipes[c] for c in ("soup", "slerp")}

    # Before the decoding loop starts; Soup and SLERP are coefficient rows, which need no slice held.
    same, to_the_limit, one_user_bytes, mixes = in_parallel_thread(reference)

    def request(c):
        return Request(c.question, COLUMNS, merge_specs(c), generation_settings(c, ms.preset.generation))

    for _ in comparison.run(request(first)):
        pass
    moved = replace(first, slerp_t=round(first.slerp_t + 0.1, 3))  # a SLERP slider release
    started, first_token, merge_ms = time.perf_counter(), None, None
    for snap in comparison.run(request(moved)):
        column = snap.columns["slerp"]
        merge_ms = column.merge_ms
        if first_token is None and column.n_tokens:
            first_token = time.perf_counter() - started
    # A new question with a new TIES density: its slice must be merged. Columns that need no merge start at once
    # and TIES joins when merged; against every column waiting for the merge, as before (the pool says it holds
    # every spec, so nothing is deferred).
    def first_tokens(c, defer: bool) -> dict:
        holds = comparison.pool.holds
        if not defer:
            comparison.pool.holds = lambda specs: True
        try:
            started, seen = time.perf_counter(), {}
            for snap in comparison.run(request(c)):
                for name, column in snap.columns.items():
                    if column.n_tokens and name not in seen:
                        seen[name] = time.perf_counter() - started
            return {"model1_first_token_s": seen.get("model1"), "ties_first_token_s": seen.get("ties"),
                    "ties_merge_ms": snap.columns["ties"].merge_ms}
        finally:
            comparison.pool.holds = holds

    new_ties = {"deferred": first_tokens(replace(first, question=first.question + " Kısaca anlat.",
                                                 ties_density=round(first.ties_density + 0.05, 3)), True),
                "all_wait": first_tokens(replace(first, question=first.question + " Kısaca açıkla.",
                                                 ties_density=round(first.ties_density + 0.1, 3)), False)}
    print(json.dumps({"bench": "users", "new_ties_question": new_ties}), flush=True)
    # Run B's prediction: every user's TIES slice is read besides the parents' (what equals a parent's is not).
    ties_specs = {f"ties{i}": merge_specs(u)["ties"] for i, u in enumerate(own_ties_users)}
    with comparison.holding(ties_specs) as held:
        slices = [held.recipes[f"ties{i}"] for i in range(len(own_ties_users))]
        predicted = {}
        for n in sorted({1, 3, len(own_ties_users)}):
            if n > len(slices):
                continue
            many = {"model1": ms.bank.index("model1"), "model2": ms.bank.index("model2"),
                    "soup": mixes["soup"], "slerp": mixes["slerp"]}
            many.update({f"ties{i}": s for i, s in enumerate(slices[:n])})
            predicted[n] = step_bytes(ms.bank, list(many.values()))
    return {"slerp_release_merge_ms": merge_ms, "slerp_release_first_token_s": first_token,
            "new_ties_question": new_ties,
            "bench_generate_merge_free_decode_tokens_per_s": same["decode_tokens_per_s"],
            "bench_generate_tokens_per_column": [len(same["token_ids"][c]) for c in COLUMNS],
            "bench_generate_to_the_limit_decode_tokens_per_s": to_the_limit["decode_tokens_per_s"],
            "one_user_step_bytes": one_user_bytes,
            "own_ties_predicted_ratio": {n: b / predicted[1] for n, b in predicted.items()}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--stream-only", action="store_true",
                        help="only one user's stream on a freshly started server, against the same work in process")
    args = parser.parse_args(argv)
    most = 1 if args.stream_only else max(args.users)
    server = Server(args.preset, pool=most + 1)
    shared, own = [], []
    try:
        client = server.client()
        ask(client, replace(user_controls(0, 8, True), question="Isınma sorusu?"))  # warm-up: packing, figures
        if args.stream_only:
            ask(client, user_controls(0, 2, False))  # the user's merges, made before the timing as scenario() does
        else:
            shared, _ = scenario(server, client, "A: own soup and SLERP", args.users, args.new_tokens, False)
            own, _ = scenario(server, client, "B: own TIES density too", args.users, args.new_tokens, True)
        streams = [ask(client, user_controls(0, args.new_tokens, False))[2] for _ in range(3)]
        one_user_stream = statistics.median(stream_rate(updates) for updates in streams)
        api_tokens = streams[-1][-1][1]
        client.close()
    finally:
        server.stop()
    figures = in_process(args.preset, args.new_tokens, [user_controls(0, args.new_tokens, False)],
                         [user_controls(i, args.new_tokens, True) for i in range(most)])
    summary = {"bench": "users", "summary": True, "preset": args.preset, "new_tokens": args.new_tokens,
               "threads": 2, "load_average": os.getloadavg()[0],
               "shared_ties": {r["users"]: r["ratio"] for r in shared},
               "own_ties": {r["users"]: r["ratio"] for r in own},
               "shared_ties_to_slowest": {r["users"]: r["ratio_to_slowest"] for r in shared},
               "own_ties_to_slowest": {r["users"]: r["ratio_to_slowest"] for r in own},
               "own_ties_predicted": figures["own_ties_predicted_ratio"],
               "answers_differing": sum(len(r["answers_differing_from_alone"]) for r in shared + own),
               "api_stream_decode_tokens_per_s": one_user_stream,
               "api_stream_tokens_per_column": api_tokens,
               "bench_generate_decode_tokens_per_s": figures["bench_generate_merge_free_decode_tokens_per_s"],
               "bench_generate_tokens_per_column": figures["bench_generate_tokens_per_column"],
               "bench_generate_to_the_limit_decode_tokens_per_s":
                   figures["bench_generate_to_the_limit_decode_tokens_per_s"],
               "api_over_bench": one_user_stream / figures["bench_generate_merge_free_decode_tokens_per_s"],
               "slerp_release_merge_ms": figures["slerp_release_merge_ms"],
               "slerp_release_first_token_s": figures["slerp_release_first_token_s"],
               "new_ties_question": figures["new_ties_question"]}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
