"""Scores and sweeps for the variants of a served model set: the glue between scoring/ and models/.

Merged columns are held through the comparison while they are scored, so a score is always of the weights its
spec describes, even while other users generate. They are held materialised (a pool slice), not merge-free: a
perplexity pass runs many tokens per row and is bound by arithmetic, and a merge-free row multiplies each layer
once per parent where a merged slice multiplies it once (on the default pair a sweep point took 8.1 s merge-free
against about 5 s re-merged in place and scored); decoding one token per row is bound by memory instead, which
is where merge-free columns win.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Callable

from errors import Refusal
from prompts import formats
from scoring import turkish
from scoring.heldout import HeldoutSet
from scoring.metrics import score_texts
from scoring.perplexity import Cancelled, perplexity
from scoring.sweep import SweepResult, greedy_soup, linspace_points, sweep
from serving.comparison import Comparison
from serving.controls import SWEEPABLE, Controls, controls_at
from serving.generation import greedy_settings
from serving.requests import RequestError, merge_specs

# What a sweep can vary, SWEEPABLE: (column it re-merges, lowest value, highest value) by the control's name,
# from the page's table of controls (serving/controls.py); imported here for the page and the benches.


def user_message(row) -> str:
    return row.question + (f"\n\n{row.giris}" if row.giris.strip() else "")


def prompt_texts(comparison: Comparison, heldout: HeldoutSet) -> list[str]:
    ms = comparison.model_set
    return [formats.render(ms.preset.prompt_format, user_message(r), ms.tokenizer, ms.preset.system)
            for r in heldout.rows]


def heldout_perplexity(comparison: Comparison, held, variant: str, heldout: HeldoutSet, prompts: list[str],
                       cancel: threading.Event | None = None) -> float:
    """Perplexity of the references under one column, as the comparison holds it (``held``); raises Cancelled."""
    ms = comparison.model_set
    return perplexity(comparison.model_for(held, variant), ms.tokenizer, prompts, [r.reference for r in heldout.rows],
                      cancel=cancel)


@dataclass
class ScoreRow:
    variant: str
    perplexity: float  # NaN when stopped before this column's perplexity
    metrics: dict[str, float]
    rows: int = 0  # held-out rows its answer metrics cover (fewer than asked when stopped)


def score_variants(comparison: Comparison, heldout: HeldoutSet, variants: list[str], controls: Controls,
                   max_new_tokens: int, cancel: threading.Event | None = None,
                   progress: Callable[[float, tuple[str, dict]], None] | None = None) -> list[ScoreRow]:
    """Perplexity of the references and, under greedy generation, chrF/BLEU/ROUGE-L (+ EM and F1 for QA).

    Stopped (``cancel``), it returns what was measured: the perplexities done, and the answer metrics over the
    rows answered so far (``ScoreRow.rows``)."""
    cancel = cancel or threading.Event()
    specs = merge_specs(controls)
    merged = {v: specs[v] for v in variants if v in specs}
    missing = [v for v in variants if v not in merged and v not in ("base", "model1", "model2")]
    if missing:
        raise RequestError("err_cannot_score", columns=", ".join(missing))
    prompts = prompt_texts(comparison, heldout)
    ms = comparison.model_set
    answers: dict[str, list[str]] = {v: [] for v in variants}
    ppl = {v: float("nan") for v in variants}
    total = len(variants) + len(heldout.rows)
    with comparison.holding(merged, materialise=True) as held:
        try:
            for i, v in enumerate(variants):
                _report(progress, i / total, "progress_perplexity", column=v)
                ppl[v] = heldout_perplexity(comparison, held, v, heldout, prompts, cancel)
            for j, row in enumerate(heldout.rows):
                if cancel.is_set():
                    break
                _report(progress, (len(variants) + j) / total, "progress_answers", i=j + 1, n=len(heldout.rows))
                prompt = formats.build(ms.preset.prompt_format, user_message(row), ms.tokenizer, ms.max_context,
                                       max_new_tokens, ms.preset.system)
                results = comparison.generate(held, variants, prompt.ids, greedy_settings(prompt, max_new_tokens),
                                              stop_event=cancel)
                if any(r.finish_reason == "stopped" for r in results.values()):
                    break  # a row cut short by Stop is not scored
                for v in variants:
                    answers[v].append(results[v].text.strip())
        except Cancelled:
            pass
    answered = len(answers[variants[0]])
    rows = heldout.rows[:answered]
    refs = [r.reference for r in rows]
    questions = [user_message(row) for row in rows]
    return [ScoreRow(v, ppl[v], {**score_texts(answers[v], refs, qa=heldout.format == "qa"),
                                 **turkish_figures(answers[v], questions)} if answered else {}, answered)
            for v in variants]


def turkish_figures(answers: list[str], questions: list[str]) -> dict[str, float]:
    """The reference-free Turkish check over a set of answers: the Turkish-word share pooled over the words
    checked, and the mean share of repeated word 3-grams."""
    figures = turkish.pooled([turkish.check(a, q) for a, q in zip(answers, questions)])
    return {"turkish_words": float("nan") if figures.word_share is None else figures.word_share,
            "repeated_3grams": figures.repeated_share}


# The sweep's second curve: the Turkish check of greedy answers to the first rows of the held-out set.
TURKISH_ROWS = 8
TURKISH_TOKENS = 32


@dataclass
class SweepOutcome:
    parameter: str
    result: SweepResult
    references: dict[str, float]  # Model 1 and Model 2 perplexity, the lines the curve is judged against
    # With turkish=True: per point (value, Turkish-word share, repeated 3-gram share) of the column's answers,
    # and the same two figures for Model 1 and Model 2.
    turkish: list[tuple[float, float, float]] = field(default_factory=list)
    turkish_references: dict[str, tuple[float, float]] = field(default_factory=dict)


def answers_turkish(comparison: Comparison, held, column: str, heldout: HeldoutSet,
                    cancel: threading.Event | None = None) -> tuple[float, float]:
    """(Turkish-word share, repeated 3-gram share) of one column's greedy answers to the first held-out rows;
    the rows decode side by side in the server's loop."""
    ms = comparison.model_set
    rows = heldout.rows[:TURKISH_ROWS]
    prompts = [formats.build(ms.preset.prompt_format, user_message(r), ms.tokenizer, ms.max_context,
                             TURKISH_TOKENS, ms.preset.system) for r in rows]
    results = comparison.generate_many(held, column, [p.ids for p in prompts],
                                       [greedy_settings(p, TURKISH_TOKENS) for p in prompts], cancel)
    figures = turkish_figures([r.text.strip() for r in results], [user_message(r) for r in rows])
    return figures["turkish_words"], figures["repeated_3grams"]


def sweep_parameter(comparison: Comparison, heldout: HeldoutSet, controls: Controls, parameter: str, points: int,
                    cap: int, cancel: threading.Event | None = None,
                    progress: Callable[[float, tuple[str, dict]], None] | None = None, turkish: bool = False,
                    measure: Callable[[object, str], float] | None = None, higher: bool = False) -> SweepOutcome:
    """Re-merge one column at evenly spaced values of one parameter and score each by held-out perplexity; with
    ``turkish``, also the Turkish check of the column's greedy answers (answers_turkish) at every point. Given
    ``measure(held, column)`` (raising Cancelled when stopped), each point is scored by it instead, the best the
    highest with ``higher`` (TurkMorfBench accuracy: scoring/morfbench.py)."""
    if parameter not in SWEEPABLE:
        raise RequestError("err_not_sweepable", parameter=parameter, choices=", ".join(SWEEPABLE))
    variant, lo, hi = SWEEPABLE[parameter]
    if variant == "extra" and not controls.extra_method:
        raise RequestError("err_sweep_extra")
    try:
        values = linspace_points(lo, hi, points, cap)
    except Refusal as err:
        raise RequestError(err.key, **err.values) from None
    if measure is None:
        prompts = prompt_texts(comparison, heldout)
        measure = lambda held, column: heldout_perplexity(comparison, held, column, heldout, prompts, cancel)  # noqa: E731
    figures: list[tuple[float, float, float]] = []
    with comparison.holding({}) as parents:
        try:
            references = {v: measure(parents, v) for v in ("model1", "model2")}
        except Cancelled:  # stopped before the first point
            return SweepOutcome(parameter, SweepResult([], None, cancelled=True),
                                {"model1": float("nan"), "model2": float("nan")})
        parent_turkish = {v: answers_turkish(comparison, parents, v, heldout, cancel)
                          for v in ("model1", "model2")} if turkish else {}
    current: dict = {}

    def apply(value: float) -> None:
        current["value"] = value
        current["spec"] = merge_specs(controls_at(controls, parameter, value))[variant]

    def evaluate() -> float | None:
        with comparison.holding({variant: current["spec"]}, materialise=True) as held:
            try:
                score = measure(held, variant)
                if turkish:
                    figures.append((current["value"], *answers_turkish(comparison, held, variant, heldout, cancel)))
            except Cancelled:
                return None
            if cancel is not None and cancel.is_set():
                return None  # the Turkish answers were cut short: this point is not measured
            return score

    def step(done: int, total: int) -> None:
        _report(progress, done / total, "progress_point", parameter=parameter, i=done, n=total)

    result = sweep(values, apply, evaluate, cancel=cancel, progress=step, higher=higher)
    figures[:] = figures[:len(result.points)]
    return SweepOutcome(parameter, result, references, figures, parent_turkish)


def greedy_soup_of(comparison: Comparison, heldout: HeldoutSet, controls: Controls,
                   cancel: threading.Event | None = None):
    """Wortsman et al.'s greedy soup over Model 1 and Model 2, scored by held-out perplexity on the soup column;
    None when stopped."""
    prompts = prompt_texts(comparison, heldout)

    def score_of(weights) -> float:
        w1, w2 = weights.get("model1", 0.0), weights.get("model2", 0.0)
        spec = merge_specs(replace(controls, soup_w1=w1, soup_w2=w2))["soup"]
        with comparison.holding({"soup": spec}, materialise=True) as held:
            return heldout_perplexity(comparison, held, "soup", heldout, prompts, cancel)

    try:
        return greedy_soup(["model1", "model2"], score_of)
    except Cancelled:
        return None


def _report(progress, fraction: float, key: str, **values) -> None:
    """Progress as a fraction and what is being done: a words.py key and its values, which the page says in
    the visitor's language (page/views.py: progress_text)."""
    if progress is not None:
        progress(fraction, (key, values))
