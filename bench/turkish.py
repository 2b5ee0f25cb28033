"""Whether the offline pairs answer in Turkish: every column (Model 1, Model 2, Soup, SLERP, TIES at the page's
defaults) answers the page's example questions and held-out questions greedily, and each answer gets the two
reference-free figures shown under every column (scoring/turkish.py): the share of the words it adds to the
question that are Turkish words, and the share of its word 3-grams that repeat earlier ones.

    python -m bench.turkish [--presets smollm2 default] [--heldout 5] [--max-new-tokens 64]

Prints one JSON line per preset and column, then a Markdown table (before: the SmolLM2 pair; after: the
Gemma 3 pair): the word share pooled over every word checked, the repeated share the mean over answers.
"""

import argparse
import json
import time

from models import model_set, presets
from prompts import examples, formats
from scoring import turkish
from serving.columns import FIXED
from serving.comparison import Comparison
from serving.generation import greedy_settings
from serving.requests import Controls, merge_specs
from training.finetune import TASKS, read_pairs

COLUMNS = FIXED  # the parents and the merged columns every request has


def questions(heldout_per_task: int) -> list[str]:
    return examples.questions() + [u for task in TASKS for u, _ in read_pairs(task, "heldout")[:heldout_per_task]]


def measure(preset_name: str, asked: list[str], max_new_tokens: int) -> dict[str, dict]:
    ms = model_set.load(presets.load(preset_name, environ={}))
    comparison = Comparison(ms)
    specs = {c: s for c, s in merge_specs(Controls(question="q")).items() if c in COLUMNS}
    checks: dict[str, list[turkish.TurkishCheck]] = {c: [] for c in COLUMNS}
    started = time.perf_counter()
    with comparison.holding(specs) as held:
        for question in asked:
            prompt = formats.build(ms.preset.prompt_format, question, ms.tokenizer, ms.max_context, max_new_tokens,
                                   ms.preset.system)
            settings = greedy_settings(prompt, max_new_tokens)
            results = comparison.generate(held, list(COLUMNS), prompt.ids, settings)
            for column, result in results.items():
                checks[column].append(turkish.check(result.text, question))
    seconds = time.perf_counter() - started
    out = {}
    for column, column_checks in checks.items():
        figures = turkish.pooled(column_checks)
        out[column] = {"turkish_word_share": round(figures.word_share or 0.0, 3),
                       "repeated_trigram_share": round(figures.repeated_share, 3),
                       "words_checked": figures.words_checked, "answers": len(column_checks),
                       "rejected": list(figures.rejected[:20])}  # what to read the share against
        print(json.dumps({"bench": "turkish", "preset": preset_name, "column": column, **out[column],
                          "seconds": round(seconds, 1)}, ensure_ascii=False))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["smollm2", "default"])
    parser.add_argument("--heldout", type=int, default=5, help="held-out questions of each task, after the examples")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    asked = questions(args.heldout)
    results = {p: measure(p, asked, args.max_new_tokens) for p in args.presets}
    print(f"\n{len(asked)} questions, greedy, {args.max_new_tokens} new tokens; Turkish-word share / "
          f"repeated 3-gram share\n")
    print("| preset | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for preset, columns in results.items():
        cells = [f"{columns[c]['turkish_word_share']:.2f} / {columns[c]['repeated_trigram_share']:.2f}"
                 for c in COLUMNS]
        print(f"| {preset} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
