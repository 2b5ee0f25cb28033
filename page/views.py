"""What the page shows, as text and rows, in the visitor's language: column titles and footers, the merge
diagnostics, notes, the sweep's curves and the results of greedy soup and saving. No Gradio here."""

from __future__ import annotations

import math

from merging import METHODS
from scoring import turkish
from serving.columns import COLUMN_METHODS, PARENTS
from serving.controls import follows
from words import say

# The merged columns' names: their methods' (merging/methods.py: Method.display).
METHOD_NAMES = {column: METHODS[method].title for column, method in COLUMN_METHODS.items()}
# How an answer ended, as its footer says it ("eos" and "stop_string" are both a finished answer).
FINISHED = {"stopped": "stopped", "length": "length"}
# The Scores table's columns: the figures that are shares (0-1) are shown as percentages.
SCORE_COLUMNS = ("perplexity", "chrf", "bleu", "rouge_l", "exact_match", "token_f1", "turkish_words",
                 "repeated_3grams")
SHARES = ("turkish_words", "repeated_3grams")


def column_title(name: str, preset, controls, lang: str) -> str:
    """The column's name and the merge parameters it currently shows, on one line."""
    if name in PARENTS:
        return f"**{parent_label(preset, name, lang)}**"
    if name == "soup":
        total = (controls.soup_w1 + controls.soup_w2) or 1.0
        return f"**{METHOD_NAMES[name]}** · w {controls.soup_w1 / total:.2f}/{controls.soup_w2 / total:.2f}"
    if name == "slerp":
        schedule = f" · {say(lang, 'title_schedule')}" if (controls.slerp_attn_schedule
                                                           or controls.slerp_mlp_schedule) else ""
        return f"**{METHOD_NAMES[name]}** · t = {controls.slerp_t:.2f}{schedule}"
    density = say(lang, "title_density")
    if name == "ties":  # one line: what differs between the two models only when it does
        d1 = controls.ties_density if follows(controls.ties_density1) else controls.ties_density1
        d2 = controls.ties_density if follows(controls.ties_density2) else controls.ties_density2
        parts = [f"{density} {d1:.2f}" if d1 == d2 else f"{density} {d1:.2f}/{d2:.2f}"]
        if (controls.ties_w1, controls.ties_w2) != (1.0, 1.0):
            parts.append(f"w {controls.ties_w1:.2f}/{controls.ties_w2:.2f}")
        if controls.ties_lambda != 1.0:
            parts.append(f"λ {controls.ties_lambda:.2f}")
        return f"**{METHOD_NAMES[name]}** · " + " · ".join(parts)
    title = method_title(controls.extra_method) or say(lang, "title_extra")
    return f"**{title}** · {density} {controls.extra_density:.2f}"


def column_name(name: str, preset, lang: str, extra_method: str = "") -> str:
    """A column's short name, as tables, progress and plots use it."""
    if name in PARENTS:
        return parent_label(preset, name, lang)
    if name == "extra":
        return method_title(extra_method) or say(lang, "title_extra")
    return METHOD_NAMES.get(name, name)


def method_title(method: str) -> str:
    """A merge method's name on the page (its record's display name), as given where it has no record."""
    return METHODS[method].title if method in METHODS else method


def parent_label(preset, name: str, lang: str) -> str:
    """Model 1's or Model 2's label in the visitor's language (the preset's English label on an English page)."""
    label, english = ((preset.model1_label, preset.model1_label_en) if name == "model1"
                      else (preset.model2_label, preset.model2_label_en))
    return english if lang == "en" and english else label


def answer_text(column) -> str:
    """A column's answer as its box shows it: without the space a model puts before its first word (the prompt
    ends "Cevap:"), which would indent every answer by one character."""
    return column.text.lstrip() if column else ""


def column_footer(column, question: str, lang: str) -> str:
    """Tokens, speed and merge time under a column, the Turkish check of a finished answer (the share of its own
    words that are Turkish words, the share of repeated word 3-grams), and the merge's diagnostics in brief."""
    if column is None:
        return ""
    if column.pending:  # its pool slice is being merged (how far, once a tensor is), or it waits for a free one
        if column.pending == "merging" and column.progress:
            return say(lang, "pending_progress", merged=column.progress[0], total=column.progress[1])
        return say(lang, f"pending_{column.pending}")
    parts = [say(lang, "tokens", n=column.n_tokens), say(lang, "rate", rate=column.tokens_per_second)]
    if column.reused:
        parts.append(say(lang, "reused"))
    elif column.merge_free:
        parts.append(say(lang, "merge_free"))
    elif column.merge_ms is not None:
        parts.append(say(lang, "merge_ms", ms=column.merge_ms) if column.merge_ms else say(lang, "merge_same"))
        if column.merge_ms and column.pool_slots:
            parts[-1] += " " + say(lang, "pool_replaced", slots=column.pool_slots)
    if column.done:
        parts.append(say(lang, FINISHED.get(column.finish_reason, "done")))
        check = turkish.check(column.text, question)
        if check.word_share is None:
            parts.append(say(lang, "no_own_words"))
        else:  # with the count: one misspelt word of one is 0%, and should read as one word
            parts.append(say(lang, "turkish_words", share=100 * check.word_share, n=check.words_checked,
                             valid=round(check.word_share * check.words_checked)))
            if check.rejected:  # the words behind the share, so that a reader can judge the judge
                parts.append(rejected_words(check.rejected, lang))
        parts.append(say(lang, "repeated", share=100 * check.repeated_share))
    brief = brief_diagnostics(column.report, lang)
    return " · ".join(parts) + (f"\n\n<small>{brief}</small>" if brief else "")


REJECTED_SHOWN = 3  # words a footer names; the rest are counted


def rejected_words(words: tuple[str, ...], lang: str) -> str:
    """"not recognised: Alaska'dir, ikiçi +2": the first few words the Turkish check did not accept."""
    shown = ", ".join(words[:REJECTED_SHOWN])
    more = len(words) - REJECTED_SHOWN
    return say(lang, "rejected", words=shown) + (f" +{more}" if more > 0 else "")


def small(x: float) -> str:
    """A relative distance: a LoRA pair's merges lie within a thousandth of their parents, which 0.000 hid."""
    return f"{x:.3f}" if x == 0 or x >= 1e-3 else f"{x:.1e}"


def brief_diagnostics(report, lang: str) -> str:
    """One line of the figures that explain a merged column (the Diagnostics tab has them all)."""
    if report is None:
        return ""
    if report.slerp_fallback_share is not None:
        angles = list((report.slerp_angle_by_layer or {}).values())
        parts = [say(lang, "brief_fallback", share=100 * report.slerp_fallback_share)]
        if angles:
            parts.append(say(lang, "brief_angle", angle=sum(angles) / len(angles)))
        return ", ".join(parts)
    if report.kept_fraction is not None:
        parts = [say(lang, "brief_kept", share=100 * report.kept_fraction)]
        if report.sign_conflict_fraction is not None:
            parts.append(say(lang, "brief_conflict", share=100 * report.sign_conflict_fraction))
        if report.parent_sign_share:
            a, b = (100 * x for x in report.parent_sign_share[:2])
            parts.append(say(lang, "brief_agree", a=a, b=b))
        return " · ".join(parts)
    if report.distance_to_parents:
        return say(lang, "brief_distance", d="/".join(small(x) for x in report.distance_to_parents))
    return ""


def diagnostics_markdown(reports: dict, lang: str) -> str:
    """The merge engine's figures of this visitor's latest answer, one line per merged column."""
    lines = []
    for variant, r in reports.items():
        if r is None:
            continue
        how = say(lang, "diag_coefficients") if r.merged == 0 else f"{r.ms:.0f} ms"
        parts = [f"**{METHOD_NAMES.get(variant, variant)}** ({r.method}, {how})"]
        if r.slerp_fallback_share is not None:
            parts.append(say(lang, "diag_fallback", share=100 * r.slerp_fallback_share))
        if r.kept_fraction is not None:
            parts.append(say(lang, "diag_kept", share=100 * r.kept_fraction))
        if r.sign_conflict_fraction is not None:
            parts.append(say(lang, "diag_conflict", share=100 * r.sign_conflict_fraction))
        if r.parent_sign_share:
            a, b = (100 * x for x in r.parent_sign_share[:2])
            parts.append(say(lang, "diag_agree", a=a, b=b))
        if r.distance_to_parents:
            parts.append(say(lang, "diag_distance", d=" / ".join(small(x) for x in r.distance_to_parents)))
        lines.append(" · ".join(parts))
    return "\n\n".join(lines) or say(lang, "diag_none")


def angle_rows(reports: dict) -> list[dict]:
    """SLERP's mean angle per layer, for the Diagnostics plot."""
    by_layer = getattr(reports.get("slerp"), "slerp_angle_by_layer", None) or {}
    return [{"layer": layer, "angle": angle} for layer, angle in sorted(by_layer.items())]


def score_table(result, preset, lang: str, extra_method: str = "") -> tuple[list[str], list[list]]:
    """The Scores table: a row per column under its page name, headers in the visitor's language; shares as
    percentages, like the footers; a metric the held-out set does not give (EM and F1 outside QA) left out."""
    present = [m for m in SCORE_COLUMNS if m == "perplexity" or any(m in r.metrics for r in result)]
    rows = []
    for r in result:
        figures = {"perplexity": r.perplexity, **r.metrics}
        row = [column_name(r.variant, preset, lang, extra_method)]
        for metric in present:
            value = figures.get(metric, math.nan)
            row.append(round(100 * value, 1) if metric in SHARES else round(value, 3 if metric == "perplexity" else 2))
        rows.append(row)
    return [say(lang, "col_column"), *(say(lang, f"col_{m}") for m in present)], rows


def progress_text(what, preset, lang: str, extra_method: str = "") -> str:
    """A score's or sweep's progress line, from scoring's (key, values)."""
    key, values = what
    values = dict(values)
    if "column" in values:
        values["column"] = column_name(values["column"], preset, lang, extra_method)
    if "parameter" in values:
        values["parameter"] = say(lang, f"name_{values['parameter']}")
    return say(lang, key, **values)


def notes(snapshot, lang: str) -> str:
    parts = [say(lang, "dropped", n=snapshot.dropped_tokens)] if snapshot.dropped_tokens else []
    return " ".join(parts + [say(lang, "waiting") for n in snapshot.notes if n == "waiting"])


def sweep_rows(outcome, preset, lang: str, best_text: str = "sweep_best") -> tuple[list[dict], str, tuple | None]:
    """The sweep's perplexity curve (the parents as flat lines, the best point as a vertical line), the note
    under it (``best_text``: "sweep_best_bench" when the curve is TurkMorfBench accuracy, under the same key),
    and the best point for apply-best (None when stopped before any point)."""
    parameter = outcome.parameter
    swept = say(lang, f"name_{parameter}")
    curve = [{"value": v, "perplexity": p, "series": swept} for v, p in outcome.result.points]
    xs = [v for v, _ in outcome.result.points]
    for name in ("model1", "model2"):
        label = parent_label(preset, name, lang)
        curve += [{"value": x, "perplexity": outcome.references[name], "series": label} for x in xs]
    best = outcome.result.best
    if best is None:
        return curve, say(lang, "sweep_stopped"), None
    # A one-point series would draw nothing: the best point is a vertical line across the plot.
    scores = [row["perplexity"] for row in curve if math.isfinite(row["perplexity"])]
    if scores:  # every score NaN (diverged merges and parents alike) leaves nothing to mark
        marker = say(lang, "sweep_best_marker", value=best[0])
        curve += [{"value": best[0], "perplexity": y, "series": marker} for y in (min(scores), max(scores))]
    note = say(lang, best_text, parameter=swept, value=best[0], score=best[1],
               m1=outcome.references["model1"], m2=outcome.references["model2"])
    if outcome.result.cancelled:
        note += say(lang, "sweep_partial", n=len(outcome.result.points))
    return curve, note, (parameter, best[0])


def turkish_rows(outcome, preset, lang: str) -> list[dict]:
    """The sweep's second curve: the swept column's Turkish-word and repeated 3-gram shares per point, and the
    parents' Turkish-word shares as flat lines."""
    rows = []
    for value, words, repeated in outcome.turkish:
        rows += [{"value": value, "share": 100 * words, "series": say(lang, "series_words")},
                 {"value": value, "share": 100 * repeated, "series": say(lang, "series_repeated")}]
    xs = [value for value, _, _ in outcome.turkish]
    for name, (words, _) in outcome.turkish_references.items():
        label = parent_label(preset, name, lang)
        rows += [{"value": x, "share": 100 * words, "series": say(lang, "series_parent_words", label=label)} for x in xs]
    return rows


def greedy_soup_text(result, lang: str) -> str:
    if result is None:
        return say(lang, "greedy_soup_stopped")
    alone = ", ".join(f"{k} {v:.3f}" for k, v in result.individual_scores.items())
    return say(lang, "greedy_soup_result", ingredients=" + ".join(result.ingredients), score=result.score,
               alone=alone)


def bench_table(result, preset, lang: str, extra_method: str = "") -> tuple[list[str], list[list]]:
    """TurkMorfBench in Scores: a row per column under its page name; accuracy over all items scored, over real
    and nonce stems (the package's slices 'gerçek gövde' and 'uydurma gövde'; a dash where no item had such a
    stem), in percent; and the error type of the distractor that won most often, with how often."""
    rows = []
    for r in result:
        slices = r.report.get("kesit", {})
        errors = r.report.get("hata_turu", {})
        worst = max(errors.items(), key=lambda e: (e[1], e[0]), default=None)
        rows.append([column_name(r.variant, preset, lang, extra_method), round(100 * r.accuracy, 1),
                     *(round(slices[s][2], 1) if s in slices else "–" for s in ("gerçek gövde", "uydurma gövde")),
                     say(lang, "bench_error_cell", kind=worst[0], n=worst[1]) if worst else "–"])
    headers = [say(lang, k) for k in ("col_column", "col_bench_accuracy", "col_bench_real", "col_bench_nonce",
                                      "col_bench_error")]
    return headers, rows


def bench_note(result, asked: int, preset, lang: str, extra_method: str = "") -> str:
    """With the table: that a Stop cut the items short, the data's credit, and the accuracy per bucket of every
    column (a Markdown table) over the items measured."""
    scored = min((r.scored for r in result), default=0)
    lines = [say(lang, "bench_stopped", n=scored) if scored < asked else "", say(lang, "bench_credit"), "",
             say(lang, "bench_buckets", n=scored), "",
             "| " + " | ".join([say(lang, "col_bucket"), *(column_name(r.variant, preset, lang, extra_method)
                                                            for r in result)]) + " |",
             "|---" * (len(result) + 1) + "|"]
    buckets = sorted({s for r in result for s in r.report.get("kesit", {}) if s.startswith("kova: ")})
    for bucket in buckets:
        cells = []
        for r in result:
            right, total, share = r.report["kesit"].get(bucket, (0, 0, math.nan))
            cells.append(f"{share:.1f} ({right}/{total})")
        lines.append(f"| {bucket[len('kova: '):]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
