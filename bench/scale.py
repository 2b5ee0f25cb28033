"""Your own models at the seed's real shapes: a random-weight trio at turkish-gpt2-large's shapes (GPT-2, 36 layers,
1280 wide, 20 heads, 1024 positions, 50,257 tokens: 774M parameters), built here (no Hub), served as an owner
would serve their own: ``python app.py --base … --model1 … --model2 …`` with the default flags.

    python -m bench.scale [--dtype float32 bfloat16] [--device cpu] [--quick] [--new-tokens 8]

For each dtype: the trio is built once as safetensors folders (the base random, the fine-tunes the base plus small
random deltas; a byte-level BPE tokenizer of 50,257 tokens trained here on the repository's Turkish data and
completed with merges of its own tokens), under ~/.cache/harman/scale (HARMAN_SCALE_DIR). Then:
- the server (app.py in a subprocess, default flags): its load time and memory plan; time to first token and
  tokens/s per column of a first request through the public API (gradio_client, as bench/users.py); then five
  distinct TIES densities in a row (each a release of the TIES slider: a new merge, the other columns from the
  answer cache), with the server's resident memory after each against its plan, and its peak;
- in a process of its own (the same model set, no server): load time, resident memory before and after loading
  and at its peak against the plan, time to first token and tokens/s of the same request, and the same first
  TIES merge, timed as the server's footer times it.
Prints one JSON line per measurement. Heavy: run it under ``flock /tmp/harman-heavy.lock``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from serving.columns import COLUMNS

ROOT = Path(__file__).resolve().parent.parent
SHAPES = dict(n_layer=36, n_embd=1280, n_head=20, n_positions=1024, vocab_size=50257)
EOS = "<|endoftext|>"
DELTA = 0.002  # a fine-tune's random update, a tenth of GPT-2's initial weight scale
QUESTION = "Türkiye'nin başkenti neresidir?"
# After the releases: every column decodes, nothing merges.
QUESTION2 = "İstanbul Boğazı hangi iki kıtayı ayırır?"
DENSITIES = (0.2, 0.35, 0.65, 0.8, 0.9)  # five distinct TIES settings after the first request's 0.5
TOKENS, RATE, MERGED = re.compile(r"^(\d+) token"), re.compile(r"([\d.]+) tokens?/s"), re.compile(r"(\d+) ms")
GIB = 2**30


def cache_root() -> Path:
    return Path(os.environ.get("HARMAN_SCALE_DIR", Path.home() / ".cache" / "harman" / "scale"))


def tokenizer():
    """A byte-level BPE tokenizer of exactly SHAPES['vocab_size'] tokens: trained on the repository's Turkish data,
    then completed with merges of its own tokens (the data holds too few distinct pairs for 50k merges)."""
    from tokenizers import ByteLevelBPETokenizer, Tokenizer
    from transformers import PreTrainedTokenizerFast

    lines = [line for p in sorted((ROOT / "prompts" / "data").glob("*.tsv"))
             for line in p.read_text(encoding="utf-8").splitlines()]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=SHAPES["vocab_size"], min_frequency=2, special_tokens=[EOS])
    data = json.loads(bpe._tokenizer.to_str())
    vocab, merges = data["model"]["vocab"], data["model"]["merges"]
    as_text = bool(merges) and isinstance(merges[0], str)
    pieces = [t for t in sorted(vocab, key=vocab.get) if t != EOS]
    i = 0
    while len(vocab) < SHAPES["vocab_size"]:
        a, b = pieces[i % 997], pieces[(i * 7919) % len(pieces)]  # pairs spread over the vocabulary
        i += 1
        if a + b not in vocab and len(a + b) < 24:
            vocab[a + b] = len(vocab)
            merges.append(f"{a} {b}" if as_text else [a, b])
            pieces.append(a + b)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), eos_token=EOS,
                                  bos_token=EOS, unk_token=EOS)
    assert len(tok) == SHAPES["vocab_size"], len(tok)
    return tok


def build_trio(root: Path, dtypes: list[str]) -> dict[str, dict[str, Path]]:
    """The trio's folders per dtype, built once (a marker file says a folder is complete)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folders = {d: {r: root / d / r for r in ("base", "model1", "model2")} for d in dtypes}
    if all((f / "complete").exists() for d in folders.values() for f in d.values()):
        return folders
    started = time.perf_counter()
    tok = tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**SHAPES, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    for seed, role in enumerate(("base", "model1", "model2")):
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            model.float()
            for n, p in model.named_parameters():
                p.copy_(base[n])
                if seed:
                    p.add_(torch.randn(p.shape, generator=gen), alpha=DELTA)
        for d in dtypes:
            model.to(getattr(torch, d)).save_pretrained(folders[d][role])
            tok.save_pretrained(folders[d][role])
            (folders[d][role] / "complete").write_text("")
    print(json.dumps({"built": str(root), "dtypes": dtypes, "seconds": round(time.perf_counter() - started, 1)}),
          flush=True)
    return folders


def status_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def plan_of(text: str) -> dict:
    """The plan's total, the memory it was made against and the pool, from a --check-style summary."""
    total = re.search(r"total\s+([\d.]+) GiB of ([\d.]+) GiB", text)
    pool = re.search(r"pool\s+(\d+) of (\d+) slices asked", text)
    loaded = re.search(r"loaded in\s+([\d.]+) s", text)
    resident = re.search(r"resident\s+([\d.]+) GiB", text)
    return {"plan_gib": float(total.group(1)) if total else None,
            "available_gib": float(total.group(2)) if total else None,
            "pool": int(pool.group(1)) if pool else None, "pool_asked": int(pool.group(2)) if pool else None,
            "load_s": float(loaded.group(1)) if loaded else None,
            "resident_gib": float(resident.group(1)) if resident else 0.0}


def api_values(client, **changes) -> list:
    """The compare endpoint's defaults with these changes, in its order."""
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/compare"]
    values = {p["parameter_name"]: p["parameter_default"] for p in api["parameters"]}
    values.update(changes)
    if "ties_density" in changes:
        values["ties_density1"] = values["ties_density2"] = changes["ties_density"]
    return list(values.values())


def ask(client, values: list) -> dict:
    """One request through the API: per column its first token's time, its footer's tokens/s and merge ms."""
    started = time.perf_counter()
    job = client.submit(*values, api_name="/compare")
    first, shown, seen = {}, None, 0
    n = len(COLUMNS)
    while True:
        done = job.done()
        outputs = job.outputs()
        for out in outputs[seen:]:
            shown = [old if isinstance(new, dict) and new.get("__type__") == "update" else new
                     for old, new in zip(shown or [None] * len(out), out)]
            for c, footer in zip(COLUMNS, shown[1 + 2 * n:1 + 3 * n]):
                m = TOKENS.match(footer or "")
                if m and int(m.group(1)) > 0 and c not in first:
                    first[c] = time.perf_counter() - started
        seen = len(outputs)
        if done:
            break
        time.sleep(0.02)
    job.result()
    footers = dict(zip(COLUMNS, shown[1 + 2 * n:1 + 3 * n]))
    rates = {c: float(m.group(1)) for c, f in footers.items() if (m := RATE.search(f or ""))}
    merged = MERGED.search(footers["ties"] or "")
    return {"wall_s": round(time.perf_counter() - started, 2),
            "first_token_s": {c: round(t, 2) for c, t in first.items()},
            "tokens_per_s": rates, "ties_merge_ms": int(merged.group(1)) if merged else None}


def serve(folders: dict[str, Path], dtype: str, device: str, new_tokens: int, densities, log: Path) -> dict:
    """The server with the default flags: its plan, a first request, then one TIES release per density."""
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = ["--base", str(folders["base"]), "--model1", str(folders["model1"]), "--model2", str(folders["model2"]),
             "--dtype", dtype, "--device", device, "--port", str(port)]
    env = {**os.environ, "HARMAN_GEN_MAX_NEW_TOKENS": str(new_tokens)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", *flags], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    try:
        client = connect(proc, port)
        first = ask(client, api_values(client, question=QUESTION, max_new_tokens=new_tokens))
        plan = plan_of(log.read_text())
        releases = []
        for d in densities:
            row = ask(client, api_values(client, question=QUESTION, max_new_tokens=new_tokens, ties_density=d))
            row.update(density=d, rss_gib=round(status_kib(proc.pid, "VmRSS") / 2**20, 2))
            releases.append(row)
            print(json.dumps({"dtype": dtype, "server_ties": row}), flush=True)
        # The first request shares the cores with the start's warm-up (SLERP's angles for every tensor) and its
        # TIES merge; a new question at the last TIES setting decodes every column with nothing else to do.
        again = ask(client, api_values(client, question=QUESTION2, max_new_tokens=new_tokens,
                                       ties_density=densities[-1]))
        peak = status_kib(proc.pid, "VmHWM") / 2**20
        client.close()
        return {"plan": plan, "first_request": first, "ties_releases": releases, "new_question": again,
                "peak_rss_gib": round(peak, 2), "killed": proc.poll() is not None}
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def connect(proc, port: int):
    from gradio_client import Client

    started = time.perf_counter()
    while time.perf_counter() - started < 1800:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode} (killed for memory if -9)")
        try:
            return Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:  # not serving yet
            time.sleep(1.0)
    raise RuntimeError("app.py did not serve within 1800 s")


def in_process(folders: dict[str, Path], dtype: str, device: str, new_tokens: int, density: float) -> dict:
    """The same model set in this process: load, plan against resident memory, a first request, one TIES merge."""
    from models import model_set, presets
    from serving.comparison import Comparison, Request
    from serving.requests import Controls, generation_settings, merge_specs
    from serving.threads import confine, in_parallel_thread, parallel

    before = status_kib("self", "VmRSS") / 2**20
    preset = presets.load("default", overrides={"base": str(folders["base"]), "model1": str(folders["model1"]),
                                                "model2": str(folders["model2"]), "dtype": dtype, "device": device})
    started = time.perf_counter()
    ms = model_set.load(preset)
    load_s = time.perf_counter() - started
    loaded = status_kib("self", "VmRSS") / 2**20
    confine()
    comparison = Comparison(ms)  # the server's decoding loop and answer cache
    in_parallel_thread(lambda: (parallel(), comparison.warm()), "warm")
    c = Controls(question=QUESTION, max_new_tokens=new_tokens)
    request = Request(QUESTION, COLUMNS[:5], merge_specs(c), generation_settings(c, ms.preset.generation))
    started, first = time.perf_counter(), {}
    for snap in comparison.run(request):
        for name, col in snap.columns.items():
            if col.n_tokens and name not in first:
                first[name] = round(time.perf_counter() - started, 2)
    rates = {name: round(col.tokens_per_second, 1) for name, col in snap.columns.items()}
    spec = merge_specs(Controls(question=QUESTION, ties_density=density))["ties"]
    with comparison.holding({"ties": spec}) as held:
        merge_ms = held.reports["ties"].ms
    d = ms.plan.devices[0]
    return {"load_s": round(load_s, 1), "rss_before_load_gib": round(before, 2), "rss_loaded_gib": round(loaded, 2),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "plan_gib": round(ms.plan.total(d) / GIB, 2), "available_gib": round(d.available / GIB, 2),
            "resident_gib": round(ms.plan.resident / GIB, 2),
            "pool": ms.plan.pool, "packed": ms.plan.packed, "first_token_s": first, "tokens_per_s": rates,
            "ties_merge_ms": round(merge_ms), "ties_density": density}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32"])
    p.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is lent")
    p.add_argument("--new-tokens", type=int, default=8, help="tokens per answer (2 cores: keep it short)")
    p.add_argument("--quick", action="store_true", help="two TIES releases instead of five")
    p.add_argument("--in-process", help=argparse.SUPPRESS)  # a child run: one dtype, this process's memory
    args = p.parse_args(argv)
    densities = DENSITIES[:2] if args.quick else DENSITIES
    root = cache_root()
    folders = build_trio(root, args.dtype)
    if args.in_process:
        result = in_process(folders[args.in_process], args.in_process, args.device, args.new_tokens, densities[0])
        print("RESULT " + json.dumps(result), flush=True)
        return
    for dtype in args.dtype:
        server = serve(folders[dtype], dtype, args.device, args.new_tokens, densities, root / f"server-{dtype}.log")
        print(json.dumps({"dtype": dtype, "server": server}), flush=True)
        child = subprocess.run([sys.executable, "-m", "bench.scale", "--dtype", *args.dtype, "--device", args.device,
                                "--new-tokens", str(args.new_tokens), "--in-process", dtype],
                               cwd=ROOT, capture_output=True, text=True)
        found = [line[7:] for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if not found:
            raise RuntimeError(f"the in-process run of {dtype} failed: {child.stderr[-2000:]}")
        local = json.loads(found[0])
        print(json.dumps({"dtype": dtype, "in_process": local}), flush=True)
        summary(dtype, server, local)


def summary(dtype: str, server: dict, local: dict) -> None:
    plan, releases = server["plan"], server["ties_releases"]
    worst = max(r["rss_gib"] for r in releases)
    bound = plan["plan_gib"] + plan["resident_gib"]  # the plan, and what the process held before it was made
    server_ms = [r["ties_merge_ms"] for r in releases if r["ties_merge_ms"]]
    ratio = f"{server_ms[0] / local['ties_merge_ms']:.2f}" if server_ms else "-"
    print(f"{dtype}: load {plan['load_s']} s (server), {local['load_s']} s (process); plan {plan['plan_gib']} GiB of "
          f"{plan['available_gib']} GiB + {plan['resident_gib']} GiB resident before loading, pool "
          f"{plan['pool']}/{plan['pool_asked']}; server RSS after {len(releases)} TIES settings at most {worst} GiB "
          f"({'under' if worst <= bound else 'OVER'} {bound:.2f}), peak {server['peak_rss_gib']} GiB; process peak "
          f"{local['peak_rss_gib']} GiB against {local['plan_gib'] + local['resident_gib']:.2f}; first token (server, "
          f"a new question, nothing to merge) {server['new_question']['first_token_s']}, tokens/s "
          f"{server['new_question']['tokens_per_s']}; (process) {local['first_token_s']}, {local['tokens_per_s']}; "
          f"TIES merge in the server {server_ms} ms against "
          f"{local['ties_merge_ms']} ms in process (first: {ratio}x, same density {releases[0]['density']})",
          flush=True)


if __name__ == "__main__":
    main()
