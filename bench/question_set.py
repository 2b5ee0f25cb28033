"""A question set against the same answers asked question after question, in one run.

    python -m bench.question_set [--preset default] [--new-tokens 48] [--rounds 3] [--api-questions 4] [--no-api]

In this process, on the model set with the answer cache off: the seed's five questions × the five columns
(Model 1, Model 2, Soup, SLERP, TIES), greedy, as one set (models/question_set.run_set: every cell a row of the
one decoding loop) against the same 25 answers asked one question at a time (Comparison.run, the page's single
question), alternating which goes first; the same answers (text and token counts), the wall-time ratio, and the
set's first cell against a single question's time to first token. Then through the public API of a server
started with ``--answer-cache 0``: ``/compare_set`` with the first four questions against ``/compare`` four
times. Prints one JSON line per measurement and a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, replace

from serving.columns import FIXED as COLUMNS


def controls(new_tokens: int):
    from serving.controls import Controls

    return Controls(question="", max_new_tokens=new_tokens, greedy=True)


def one_by_one(comparison, questions, specs, settings) -> tuple[float, float, list]:
    """Each question in turn: wall time, the first question's time to its first token, the answers."""
    from serving.comparison import Request

    started, first, answers = time.perf_counter(), None, []
    for question in questions:
        for snap in comparison.run(Request(question, COLUMNS, specs, settings)):
            if first is None and any(c.n_tokens for c in snap.columns.values()):
                first = time.perf_counter() - started
        answers.append([(snap.columns[c].text.lstrip(), snap.columns[c].n_tokens) for c in COLUMNS])
    return time.perf_counter() - started, first, answers


def as_set(comparison, questions, specs, settings) -> tuple[float, float, list]:
    from serving import question_set as sets

    started, first = time.perf_counter(), None
    for snap in sets.run_set(comparison, sets.SetRequest(tuple(questions), COLUMNS, specs, settings)):
        if first is None and any(c.n_tokens for c in snap.cells.values()):
            first = time.perf_counter() - started
    answers = [[(snap.text(i, c), snap.cells[i, c].n_tokens) for c in COLUMNS] for i in range(len(questions))]
    return time.perf_counter() - started, first, answers


def prefill(comparison, questions, specs, settings, rounds: int = 3) -> dict:
    """Each question's rows prefilled on their own (as the loop admits a job) against all questions' rows in one
    left-padded forward: does a joint prefill of different prompts help here?"""
    import torch
    from transformers import DynamicCache

    from serving.batched import Rows, selected_rows

    loop, bank = comparison.loop, comparison.model_set.bank
    same: dict = {}  # which slices are bitwise equal, found once (as the loop keeps it), not in every timing
    prompts = [comparison.prompt(q, settings.max_new_tokens).ids for q in questions]
    with comparison.holding({c: s for c, s in specs.items() if c in COLUMNS}) as held:
        recipes = [held.recipes[c] if c in held.recipes else bank.index(c) for c in COLUMNS]

        def forward(rows_ids: list[list[int]], recipe_rows) -> None:
            longest = max(map(len, rows_ids))
            ids = torch.tensor([[0] * (longest - len(r)) + r for r in rows_ids])
            mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows_ids])
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            with selected_rows(Rows(recipe_rows, bank.device, same=same, versions=bank.versions,
                                         frozen=bank.frozen)), \
                    torch.inference_mode():
                loop.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                           past_key_values=DynamicCache(config=loop.model.config), logits_to_keep=1)

        separate, joint = [], []
        for _ in range(rounds + 1):  # the first round warms both shapes and is not counted
            started = time.perf_counter()
            for p in prompts:
                forward([p] * len(COLUMNS), recipes)
            separate.append(time.perf_counter() - started)
            started = time.perf_counter()
            forward([p for p in prompts for _ in COLUMNS], recipes * len(prompts))
            joint.append(time.perf_counter() - started)
    separate, joint = separate[1:], joint[1:]
    return {"prefill_separate_s": round(statistics.median(separate), 3),
            "prefill_joint_s": round(statistics.median(joint), 3),
            "prefill_separate_range": [round(min(separate), 3), round(max(separate), 3)],
            "prefill_joint_range": [round(min(joint), 3), round(max(joint), 3)],
            "prefill_lengths": [len(p) for p in prompts]}


def in_process(args) -> dict:
    from models import model_set, presets
    from prompts import examples
    from serving.comparison import Comparison
    from serving.requests import generation_settings, merge_specs
    from serving.threads import confine, parallel

    parallel()
    preset = presets.load(args.preset)
    comparison = Comparison(model_set.load(preset), answer_cache=0)
    comparison.warm()
    confine()  # as the server: the decoding loop is the one thread on every core
    c = controls(args.new_tokens)
    specs = merge_specs(c)
    settings = replace(generation_settings(c, preset.generation), max_new_tokens=args.new_tokens)
    questions = examples.seed_questions()
    as_set(comparison, questions[:1], specs, settings)  # TIES merged, packed copies made, once for both
    ratios, firsts, same = [], [], True
    for r in range(0 if args.prefill_only else args.rounds):
        order = (one_by_one, as_set) if r % 2 == 0 else (as_set, one_by_one)
        got = {fn.__name__: fn(comparison, questions, specs, settings) for fn in order}
        (seq, seq_first, seq_answers), (whole, set_first, set_answers) = got["one_by_one"], got["as_set"]
        same &= seq_answers == set_answers
        ratios.append(seq / whole)
        firsts.append(set_first / seq_first)
        print(json.dumps({"round": r, "one_by_one_s": round(seq, 2), "set_s": round(whole, 2),
                          "ratio": round(seq / whole, 2), "single_first_token_s": round(seq_first, 3),
                          "set_first_cell_s": round(set_first, 3), "same_answers": seq_answers == set_answers,
                          # each question's job is prefilled on its own: the most a joint prefill could save
                          "prefill_share_bound": round(len(questions) * seq_first / whole, 3),
                          "tokens": sum(n for row in set_answers for _, n in row)}), flush=True)
    found = prefill(comparison, questions, specs, settings)
    print(json.dumps(found), flush=True)
    if not ratios:
        return found
    return {**found, "ratio_median": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
            "first_cell_vs_first_token_median": statistics.median(firsts),
            "first_range": [min(firsts), max(firsts)], "same_answers": same}


def through_api(args) -> dict:
    from bench.users import Server, api_values
    from prompts import examples

    server = Server(args.preset, pool=4)
    try:
        client = server.client()
        questions = examples.seed_questions()[:args.api_questions]
        values = api_values(controls(args.new_tokens))[1:]
        client.predict("\n".join(questions[:1]), *values, api_name="/compare_set")  # TIES merged, warm
        ratios = []
        for r in range(args.rounds):
            started = time.perf_counter()
            singles = [client.predict(q, *values, api_name="/compare")[7:12] for q in questions]
            seq = time.perf_counter() - started
            started = time.perf_counter()
            table = client.predict("\n".join(questions), *values, api_name="/compare_set")[3]
            whole = time.perf_counter() - started
            same = [row[1:] for row in table["data"]] == [list(s) for s in singles]
            ratios.append(seq / whole)
            print(json.dumps({"api_round": r, "one_by_one_s": round(seq, 2), "set_s": round(whole, 2),
                              "ratio": round(seq / whole, 2), "same_answers": same}), flush=True)
        return {"api_ratio_median": statistics.median(ratios), "api_ratio_range": [min(ratios), max(ratios)]}
    finally:
        server.stop()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--api-questions", type=int, default=4)
    p.add_argument("--no-api", action="store_true")
    p.add_argument("--no-local", action="store_true")
    p.add_argument("--prefill-only", action="store_true", help="only the separate vs joint prefill figures")
    args = p.parse_args(argv)
    summary = {"new_tokens": args.new_tokens}
    if not args.no_local:
        summary.update(in_process(args))
    if not args.no_api:
        summary.update(through_api(args))
    print(json.dumps({"summary": summary}, default=lambda x: asdict(x)), flush=True)


if __name__ == "__main__":
    main()
