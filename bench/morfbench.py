"""TurkMorfBench for the five columns of a preset (Model 1, Model 2, Soup, SLERP, TIES at the page's defaults): the
batched scorer (scoring/morfbench.py, every column a row of the same forwards) against the package's own
command, ``turkmorfbench olc --kip secim --dtype float32``, run on each column's saved checkpoint one after
another, in the same run.

    python -m bench.morfbench [--items 300] [--core] [--materialise] [--preset default]

Prints one JSON object per part: the batched run's seconds and each column's items right; the package's seconds
per column and its items right (from its own report); the ratio of the times. With --core, then the whole core
set (1,836 items) batched: its seconds and every column's accuracy and breakdown by real and nonce stems.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from models import model_set, presets, saving
from scoring import morfbench
from serving.columns import FIXED
from serving.comparison import Comparison
from serving.requests import Controls, merge_specs

COLUMNS = list(FIXED)  # the parents and the merged columns every request has


def batched(comparison, items, materialise: bool) -> tuple[float, list]:
    started = time.perf_counter()
    rows = morfbench.bench_variants(comparison, items, COLUMNS, Controls(question="bench"), materialise=materialise)
    return time.perf_counter() - started, rows


def saved_columns(comparison, root: Path) -> dict[str, Path]:
    """Every column written as a checkpoint folder (models/saving.py), as a visitor would save it."""
    ms = comparison.model_set
    specs = merge_specs(Controls(question="bench"))
    with comparison.holding({c: specs[c] for c in COLUMNS if c in specs}, materialise=True) as held:
        return {c: saving.save_variant(ms, held.variants.get(c, c), root, c, "# bench\n") for c in COLUMNS}


def package_run(folder: Path, items: int, out: Path) -> tuple[float, int, int]:
    """(seconds, right, total) of ``turkmorfbench olc`` on one checkpoint, in a process of its own."""
    command = [sys.executable, "-m", "turkmorfbench", "olc", "--model", str(folder), "--kip", "secim", "--dtype",
               "float32", "--en-fazla", str(items), "--cikti", str(out), "--tokenizer-kapat"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    right, total, _ = json.loads(out.read_text(encoding="utf-8"))["rapor"]["kesit"]["TOPLAM"]
    return seconds, right, total


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--core", action="store_true", help="then the whole core set, batched")
    parser.add_argument("--materialise", action="store_true", help="Soup and SLERP merged into pool slices, not "
                        "coefficient rows")
    args = parser.parse_args(argv)

    comparison = Comparison(model_set.load(presets.load(args.preset)))
    items = morfbench.load_items(args.items)
    seconds, rows = batched(comparison, items, args.materialise)
    print(json.dumps({"part": "batched", "batched_s": round(seconds, 1), "right": {r.variant: r.right for r in rows}}),
          flush=True)  # the package's five runs take a while: what is known so far
    package = {}
    with tempfile.TemporaryDirectory(prefix="morfbench-") as tmp:
        folders = saved_columns(comparison, Path(tmp))
        for c in COLUMNS:
            package[c] = package_run(folders[c], args.items, Path(tmp) / f"{c}.json")
            print(json.dumps({"part": "package", "column": c, "seconds": round(package[c][0], 1),
                              "right": package[c][1]}), flush=True)
    package_s = sum(s for s, _, _ in package.values())
    print(json.dumps({
        "bench": "morfbench", "preset": args.preset, "items": len(items), "threads": torch.get_num_threads(),
        "materialise": args.materialise, "batched_s": round(seconds, 1), "package_s": round(package_s, 1),
        "package_s_per_column": {c: round(s, 1) for c, (s, _, _) in package.items()},
        "speedup": round(package_s / seconds, 2),
        "right": {r.variant: [r.right, package[r.variant][1]] for r in rows},
        "within_one_item": all(abs(r.right - package[r.variant][1]) <= 1 for r in rows),
    }), flush=True)
    if args.core:
        core = morfbench.load_items(morfbench.CORE_ITEMS)
        seconds, rows = batched(comparison, core, args.materialise)
        print(json.dumps({
            "bench": "morfbench-core", "items": len(core), "threads": torch.get_num_threads(),
            "batched_s": round(seconds, 1),
            "accuracy": {r.variant: round(100 * r.accuracy, 2) for r in rows},
            "real_stems": {r.variant: round(r.report["kesit"]["gerçek gövde"][2], 2) for r in rows},
            "nonce_stems": {r.variant: round(r.report["kesit"]["uydurma gövde"][2], 2) for r in rows},
            "top_error": {r.variant: max(r.report["hata_turu"].items(), key=lambda e: e[1]) for r in rows},
        }, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
