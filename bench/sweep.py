"""How long a sweep takes on the offline default: N points of one merge parameter, each re-merged in place and
scored by held-out perplexity.

    python -m bench.sweep [--parameter slerp_t] [--points 11] [--rows 60] [--heldout prompts/data/qa_heldout.tsv]

Prints one JSON object: seconds for the whole sweep, seconds per point (merge + perplexity), the time of one
perplexity pass over the rows alone (the floor a sweep point cannot beat), and the ratio of the two.
"""

import argparse
import json
import time

import torch

from models import model_set, presets
from scoring import variants as scoring
from scoring.heldout import load_heldout
from serving.comparison import Comparison
from serving.requests import Controls


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--parameter", default="slerp_t", choices=sorted(scoring.SWEEPABLE))
    parser.add_argument("--points", type=int, default=11)
    parser.add_argument("--rows", type=int, default=60)
    parser.add_argument("--heldout", default="prompts/data/qa_heldout.tsv")
    args = parser.parse_args(argv)

    loaded = time.perf_counter()
    comparison = Comparison(model_set.load(presets.load(args.preset)))
    loaded = time.perf_counter() - loaded
    heldout = load_heldout(args.heldout, limit=args.rows)
    prompts = scoring.prompt_texts(comparison, heldout)

    floor = time.perf_counter()
    with comparison.holding({}) as parents:
        scoring.heldout_perplexity(comparison, parents, "model1", heldout, prompts)
    floor = time.perf_counter() - floor

    started = time.perf_counter()
    outcome = scoring.sweep_parameter(comparison, heldout, Controls(question="bench"), args.parameter, args.points,
                                      cap=max(args.points, 2))
    seconds = time.perf_counter() - started
    print(json.dumps({
        "bench": "sweep", "preset": args.preset, "parameter": args.parameter, "points": args.points,
        "rows": len(heldout.rows), "threads": torch.get_num_threads(), "load_s": round(loaded, 1),
        "sweep_s": round(seconds, 1), "per_point_s": round(seconds / args.points, 2),
        "perplexity_pass_s": round(floor, 2),
        "ratio_to_perplexity_pass": round(seconds / args.points / floor, 2),
        "best": outcome.result.best, "references": outcome.references,
    }))


if __name__ == "__main__":
    main()
