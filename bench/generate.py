"""How fast the five answer columns decode: merge-free (Soup and SLERP as coefficients over the parents' slices, one
forward for all), batched (every merged column materialised, one forward for all), one thread per variant, and
one variant after another, each against the floor set by memory bandwidth.

    python -m bench.generate                        # SmolLM2-135M shapes, float32, CPU
    python -m bench.generate --shapes gpt2-large --device cuda --dtype bfloat16
    python -m bench.generate --preset default       # the real offline default pair, merged at the page's defaults

All four modes run in one process on one bank, in turn (--rounds repeats the turn and keeps each mode's
fastest run, which evens out other load on a shared machine). Right before each run the floor is measured: the
time to read (sum) exactly the weights that one decoding step of that mode must read, each distinct bank slice
once (a LoRA pair's embeddings are one slice for every column; merge-free columns read the parents' slices), so
best tokens/s = 5 / that time. One forward of the prompt also compares the merge-free columns' logits with their
materialised merges'. A mode's RSS growth is what its warm-up left resident (the oneDNN-packed copies of the
parents' slices are made there, once) plus the growth of the process's peak resident set during its timed runs
(Linux VmHWM, reset before each run): the bank is shared by every mode, so a mode that copied weights shows it.
Prints one JSON line per run and a summary line, then a readable summary.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import weakref
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from models.bank import WeightBank
from serving.batched import (
    BankedLayerNorm,
    BankedLinear,
    BankedRMSNorm,
    Mix,
    Recipe,
    Rows,
    batched_model,
    selected_rows,
)
from serving.columns import FIXED, MERGED
from serving.generation import GenerationSettings, generate

COLUMNS = FIXED  # the parents and the merged columns every request has
MODES = ("merge-free", "batched", "threads", "sequential")
STAND_INS = (0.5, 0.3, 0.7)  # random shapes: each merged slice is lerp(Model 2, Model 1, w), a stand-in merge
PROMPT_TOKENS = 12
SHAPES = {
    # SmolLM2-135M-Instruct, the app's default model
    "smollm2-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                   tie_word_embeddings=True, max_position_embeddings=8192)),
    # turkish-gpt2-large
    "gpt2-large": ("gpt2", dict(n_layer=36, n_embd=1280, n_head=20, vocab_size=50257, n_positions=1024)),
}


def build_bank(shapes: str, device: str, dtype: torch.dtype) -> WeightBank:
    """A V=6 bank from random weights: the fine-tunes are the base plus noise, the merged slices simple blends."""
    arch, fields = SHAPES[shapes]
    torch.manual_seed(0)
    with torch.device(device):
        model = (LlamaForCausalLM(LlamaConfig(**fields)) if arch == "llama"
                 else GPT2LMHeadModel(GPT2Config(**fields)))
    model = model.to(dtype).eval()
    # Read-only, so that build() leaves the base tensors in place for the fine-tunes made from them.
    base = MappingProxyType({n: p.detach() for n, p in model.named_parameters()})
    parents = {"base": base, "model1": _Finetune(base, seed=1), "model2": _Finetune(base, seed=2)}
    bank = WeightBank.build(model, parents, MERGED)
    for name, weight in zip(MERGED, STAND_INS):  # stand-ins for the merge engine: distinct weights
        for target, one, two in zip(bank.slice(name).values(), bank.slice("model1").values(),
                                    bank.slice("model2").values()):
            torch.lerp(two, one, weight, out=target)
    return bank


def stand_in_recipes(bank: WeightBank) -> dict[str, dict[str, Recipe]]:
    """Per mode, what each column reads: the stand-in merges as slices, or Soup and SLERP as their coefficients."""
    materialised = {c: bank.index(c) for c in COLUMNS}
    one, two = bank.index("model1"), bank.index("model2")
    mixes = {c: Mix({n: ((one, w), (two, 1 - w)) for n in bank.tensors})
             for c, w in zip(MERGED, STAND_INS) if c in ("soup", "slerp")}
    return {"merge-free": {**materialised, **mixes}, **{m: materialised for m in MODES[1:]}}


class _Finetune(Mapping):
    """The base plus small noise, made one tensor at a time so that building the bank holds one extra tensor."""

    def __init__(self, base: Mapping[str, torch.Tensor], seed: int):
        self.base, self.seed = base, seed
        self.numbers = {name: i for i, name in enumerate(base)}

    def __getitem__(self, name: str) -> torch.Tensor:
        t = self.base[name]
        gen = torch.Generator(device=t.device).manual_seed(self.seed * 100_003 + self.numbers[name])
        return t + 0.02 * torch.randn(t.shape, generator=gen, device=t.device, dtype=t.dtype)

    def __iter__(self):
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


def step_views(bank: WeightBank, recipes: list[Recipe], shared: bool = True) -> list[torch.Tensor]:
    """The bank slices one decoding step of these rows reads: each distinct slice once (``shared``, one batch)
    or every row's own. Embedding tables read row by row are left out; one tied to the head is read in full."""
    rows = Rows(recipes, bank.device)
    views, seen = [], set()
    for m in batched_model(bank).modules():
        if not isinstance(m, (BankedLinear, BankedLayerNorm, BankedRMSNorm)):
            continue
        for attr, tensor in (("weight", m.weight_bank), ("bias", getattr(m, "bias_bank", None))):
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if shared:
                views += [tensor[s] for s, _, _ in rows.groups(m.names[attr], tensor)]
            else:
                views += [tensor[s] for terms in rows.terms(m.names[attr], tensor) for s, _ in terms]
    return views


def step_bytes(bank: WeightBank, recipes: list[Recipe], shared: bool = True) -> int:
    """The bytes of step_views."""
    return sum(v.numel() * v.element_size() for v in step_views(bank, recipes, shared))


def floor_step_seconds(bank: WeightBank, recipes: dict[str, Recipe], shared: bool = True, rounds: int = 3
                       ) -> tuple[float, int]:
    """Best time to read every weight that one decoding step of these columns must read, and its bytes: each
    distinct bank slice once when the columns decode in one batch (``shared``), every column's own otherwise.

    Embedding tables read row by row (token lookups) are left out; a table tied to the head is read in full.
    Timed with one thread and with the configured number, keeping the faster: on busy cores a multi-threaded
    sum can wait for a core and would make a floor that is too easy to reach.
    """
    views = step_views(bank, [recipes[c] for c in COLUMNS], shared)
    nbytes = sum(v.numel() * v.element_size() for v in views)
    best, threads = float("inf"), torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        for _ in range(rounds):
            _sync(bank.device)
            start = time.perf_counter()
            for v in views:
                v.sum()
            _sync(bank.device)
            best = min(best, time.perf_counter() - start)
    torch.set_num_threads(threads)
    return best, nbytes


class _Clock:
    """A streamer that only notes when each token arrived."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, token_ids: list[int]) -> None:
        self.times.append(time.perf_counter())

    def end(self, result) -> None:
        pass


# Which bank slices are bitwise equal, per bank, kept across runs as the server's decoding loop keeps it (the
# bench's slices are merged once, before anything is timed): without it every run compared them again in its
# first decoding step, a one-off 0.4 s that the server pays once per merged slice, not per answer.
_same: weakref.WeakKeyDictionary[WeightBank, dict] = weakref.WeakKeyDictionary()


def run_mode(bank: WeightBank, mode: str, recipes: dict[str, Recipe], settings: GenerationSettings,
             prompt: list[int], tokenizer=None) -> dict:
    clocks = {c: _Clock() for c in COLUMNS}
    _sync(bank.device)
    start = time.perf_counter()
    if mode == "sequential":
        results = {}
        for c in COLUMNS:
            results.update(generate(bank, [c], prompt, settings, {c: clocks[c]}, batched=False, recipes=recipes,
                                    tokenizer=tokenizer))
    else:
        results = generate(bank, COLUMNS, prompt, settings, clocks, batched=mode != "threads", recipes=recipes,
                           tokenizer=tokenizer, same=_same.setdefault(bank, {}))
    _sync(bank.device)
    wall = time.perf_counter() - start
    intervals = sorted((clocks[c].times[0], clocks[c].times[-1]) for c in COLUMNS)
    decoding = 0.0  # seconds in which at least one column was past its first token
    end = float("-inf")
    for a, b in intervals:
        decoding += max(0.0, b - max(a, end))
        end = max(end, b)
    tokens = sum(r.n_tokens for r in results.values())
    return {
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "decode_tokens_per_s": (tokens - len(COLUMNS)) / decoding,
        "ttft_s": {c: clocks[c].times[0] - start for c in COLUMNS},
        "token_ids": {c: results[c].token_ids for c in COLUMNS},
    }


def measure(bank: WeightBank, mode: str, recipes: dict[str, Recipe], settings: GenerationSettings,
            prompt: list[int]) -> dict:
    """One timed run of a mode, with the floor measured just before it and the peak RSS during it."""
    floor_s, step_bytes = floor_step_seconds(bank, recipes, shared=mode in ("merge-free", "batched"))
    cuda = torch.device(bank.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(bank.device)
        gpu_before = torch.cuda.memory_allocated(bank.device)
    rss_before = _rss_kib("VmRSS")
    reset = _reset_peak_rss()
    figures = run_mode(bank, mode, recipes, settings, prompt)
    peak = _rss_kib("VmHWM") if reset else None
    if cuda:
        figures["peak_gpu_growth_mib"] = (torch.cuda.max_memory_allocated(bank.device) - gpu_before) / 2**20
    return {
        "mode": mode, **figures, "floor_step_s": floor_s, "step_bytes": step_bytes,
        "bandwidth_gb_s": step_bytes / floor_s / 1e9, "floor_tokens_per_s": len(COLUMNS) / floor_s,
        "rss_before_mib": rss_before / 1024,
        "peak_rss_growth_mib": None if peak is None else (peak - rss_before) / 1024,
        "load_average": os.getloadavg()[0],
    }


def logits_difference(bank: WeightBank, recipes: dict[str, dict[str, Recipe]], prompt: list[int]) -> dict:
    """Per merge-free column: max |merge-free - materialised| logit over the prompt, relative to the largest."""
    model = batched_model(bank)
    out = {}
    for mode in ("merge-free", "batched"):
        with selected_rows(Rows([recipes[mode][c] for c in COLUMNS], bank.device)), torch.inference_mode():
            out[mode] = model(torch.tensor([prompt] * len(COLUMNS), device=bank.device)).logits.float()
    free = [i for i, c in enumerate(COLUMNS) if isinstance(recipes["merge-free"][c], Mix)]
    return {COLUMNS[i]: float((out["merge-free"][i] - out["batched"][i]).abs().max()
                              / out["batched"][i].abs().max()) for i in free}


def report(args, bank: WeightBank, build_s: float, runs: dict[str, list[dict]], logits: dict,
           kept: dict[str, float]) -> None:
    best = {m: max(rs, key=lambda r: r["decode_tokens_per_s"]) for m, rs in runs.items()}
    f, b, t, s = best["merge-free"], best["batched"], best["threads"], best["sequential"]
    # A mode's memory: what its warm-up kept (a packed copy is made once, there) and its timed runs' peak above that.
    growth = {m: kept[m] + max(r["peak_rss_growth_mib"] or 0.0 for r in rs) for m, rs in runs.items()}
    summary = {
        "summary": True, "shapes": args.shapes, "device": args.device, "dtype": args.dtype,
        "threads": args.threads, "new_tokens": args.new_tokens, "rounds": args.rounds, "build_s": build_s,
        "bank_bytes": bank.nbytes, "step_bytes": {m: best[m]["step_bytes"] for m in MODES},
        "decode_tokens_per_s": {m: best[m]["decode_tokens_per_s"] for m in MODES},
        "tokens_per_s": {m: best[m]["tokens_per_s"] for m in MODES},
        "merge_free_over_batched": f["decode_tokens_per_s"] / b["decode_tokens_per_s"],
        "floor_over_merge_free": f["floor_tokens_per_s"] / f["decode_tokens_per_s"],
        "merge_free_logits_relative_difference": logits,
        "batched_over_sequential": b["decode_tokens_per_s"] / s["decode_tokens_per_s"],
        "batched_over_threads": b["decode_tokens_per_s"] / t["decode_tokens_per_s"],
        "floor_tokens_per_s": b["floor_tokens_per_s"],
        "floor_over_batched": b["floor_tokens_per_s"] / b["decode_tokens_per_s"],
        "floor_over_sequential": s["floor_tokens_per_s"] / s["decode_tokens_per_s"],
        "bandwidth_gb_s": b["bandwidth_gb_s"],
        "ttft_s": {m: best[m]["ttft_s"] for m in ("merge-free", "batched", "sequential")},
        "peak_rss_growth_mib": growth, "warm_up_kept_mib": kept,
        "peak_rss_process_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "same_tokens": all(r["token_ids"] == b["token_ids"] for rs in runs.values() for r in rs),
        "different_tokens": {m: [c for c in COLUMNS if any(r["token_ids"][c] != b["token_ids"][c] for r in rs)]
                             for m, rs in runs.items()},
        "load_average": [r["load_average"] for rs in runs.values() for r in rs],
    }
    print(json.dumps(summary), flush=True)
    print(f"\n{args.shapes}, {args.dtype} on {args.device}, {args.threads} threads, {len(COLUMNS)} columns x "
          f"{args.new_tokens} greedy tokens, bank {bank.nbytes / 2**30:.2f} GiB (built in {build_s:.0f} s), "
          f"best of {args.rounds} round(s), load average {min(summary['load_average']):.1f}-"
          f"{max(summary['load_average']):.1f}")
    print(f"{'mode':<12}{'decode tok/s':>14}{'end-to-end tok/s':>18}{'floor tok/s then':>18}{'RSS growth MiB':>16}"
          f"{'of it warm-up':>15}")
    for m in MODES:
        r = best[m]
        print(f"{m:<12}{r['decode_tokens_per_s']:>14.1f}{r['tokens_per_s']:>18.1f}{r['floor_tokens_per_s']:>18.1f}"
              f"{growth[m]:>16.1f}{kept[m]:>15.1f}")
    print(f"floor: {f['step_bytes'] / 1e9:.2f} GB (merge-free) / {b['step_bytes'] / 1e9:.2f} GB (batched) read per "
          f"step at {b['bandwidth_gb_s']:.1f} GB/s = {f['floor_tokens_per_s']:.1f} / {b['floor_tokens_per_s']:.1f} "
          f"tok/s for 5 columns")
    print(f"merge-free / batched {summary['merge_free_over_batched']:.2f}x, floor / merge-free "
          f"{summary['floor_over_merge_free']:.2f}x; merge-free logits vs materialised, relative: "
          + ", ".join(f"{c} {d:.1e}" for c, d in logits.items()))
    print(f"batched / sequential {summary['batched_over_sequential']:.2f}x, batched / threads "
          f"{summary['batched_over_threads']:.2f}x, floor / batched {summary['floor_over_batched']:.2f}x, "
          f"floor / sequential {summary['floor_over_sequential']:.2f}x")
    print("time to first token, s (merge-free, batched, sequential): " + ", ".join(
        f"{c} {f['ttft_s'][c]:.2f}/{b['ttft_s'][c]:.2f}/{s['ttft_s'][c]:.2f}" for c in COLUMNS))
    print(f"peak RSS of the process {summary['peak_rss_process_mib']:.0f} MiB; "
          f"same tokens in every mode: {summary['same_tokens']}")


def _reset_peak_rss() -> bool:
    try:  # Linux: "5" resets the peak resident set size (VmHWM) to the current one
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_kib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", choices=sorted(SHAPES), default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the CPU has 2 cores)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=1, help="runs of each mode, in turn; the fastest counts")
    p.add_argument("--preset", help="load this preset's real model set instead of random weights (--shapes, "
                                    "--device and --dtype are then the preset's)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.preset:
        with preset_bank(args.preset) as (bank, recipes, description):
            args.shapes, args.device, args.dtype = description
            measure_all(args, bank, recipes, time.perf_counter() - started)
        return
    bank = build_bank(args.shapes, args.device, getattr(torch, args.dtype))
    measure_all(args, bank, stand_in_recipes(bank), time.perf_counter() - started)


@contextmanager
def preset_bank(name: str):
    """A preset's model set at the page's default settings: Soup and SLERP as coefficients (merge-free) and, for
    the other modes, all three merges materialised in pool slices; held for reading."""
    from models import model_set, presets
    from serving.comparison import Comparison
    from serving.requests import Controls, merge_specs

    models = model_set.load(presets.load(name))
    comparison = Comparison(models)
    specs = {c: s for c, s in merge_specs(Controls(question="bench")).items() if c in MERGED}
    with comparison.holding(specs) as free, comparison.holding(specs, materialise=True) as materialised:
        parents = {c: models.bank.index(c) for c in ("model1", "model2")}
        recipes = {"merge-free": {**parents, **free.recipes}}
        recipes.update({m: {**parents, **materialised.recipes} for m in MODES[1:]})
        yield models.bank, recipes, (f"{name} preset", str(models.bank.device),
                                     str(models.dtype).removeprefix("torch."))


def measure_all(args, bank: WeightBank, recipes: dict[str, dict[str, Recipe]], build_s: float) -> None:
    prompt = torch.randint(0, 1000, (PROMPT_TOKENS,), generator=torch.Generator().manual_seed(0)).tolist()
    kept = {}  # what each mode's warm-up left resident: the packed copies it made, views, the allocator's pools
    for mode in MODES:  # warm up: the batched model, the per-variant views, the allocator, the packed copies
        before = _rss_kib("VmRSS")
        run_mode(bank, mode, recipes[mode], GenerationSettings(max_new_tokens=2, greedy=True), prompt)
        kept[mode] = (_rss_kib("VmRSS") - before) / 1024
    logits = logits_difference(bank, recipes, prompt)
    settings = GenerationSettings(max_new_tokens=args.new_tokens, greedy=True)
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            run = measure(bank, mode, recipes[mode], settings, prompt)
            print(json.dumps({k: v for k, v in run.items() if k != "token_ids"}), flush=True)
            runs[mode].append(run)
    report(args, bank, build_s, runs, logits, kept)


if __name__ == "__main__":
    main()
