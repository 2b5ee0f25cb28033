"""A question set's columns summarised for the eye (page/question_set.py): the Turkish check pooled over each
column's finished answers, how many of its answers repeat another column's, and SLERP's linear-fallback share."""

from __future__ import annotations

from dataclasses import dataclass

from scoring import turkish
from serving import question_set as sets
from serving.question_set import SetSnapshot


@dataclass(frozen=True)
class ColumnSummary:
    """One column over the set: the Turkish check pooled over its finished answers, how many of its answers
    repeat another column's, and SLERP's linear-fallback share (why Soup and SLERP agree on a LoRA pair)."""
    column: str
    answered: int
    word_share: float | None
    words_checked: int
    repeated_share: float | None
    identical: int
    fallback_share: float | None


def summaries(snapshot: SetSnapshot) -> list[ColumnSummary]:
    marks = sets.same_as(snapshot)
    out = []
    for column in snapshot.columns:
        done = [i for i in range(len(snapshot.questions)) if snapshot.cells[i, column].done]
        checks = [turkish.check(snapshot.cells[i, column].text, snapshot.questions[i]) for i in done]
        pooled = turkish.pooled(checks) if checks else None
        report = snapshot.reports.get(column)
        out.append(ColumnSummary(column, len(done), pooled.word_share if pooled else None,
                                 pooled.words_checked if pooled else 0, pooled.repeated_share if pooled else None,
                                 sum(1 for (_, c) in marks if c == column),
                                 getattr(report, "slerp_fallback_share", None)))
    return out
