"""Searching merge settings on a held-out score where lower is better (perplexity).

Both searches take plain callables, so they know nothing of models: the caller's
`apply` / `score_of` merges the weights and its `evaluate` scores them.
"""

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from errors import Refusal


@dataclass(frozen=True)
class SweepResult:
    points: list[tuple[float, float]]  # (value, score) in the order evaluated
    best: tuple[float, float] | None  # None only when cancelled before the first point
    cancelled: bool = False


def linspace_points(lo: float, hi: float, n: int, cap: int) -> list[float]:
    """n evenly spaced values from lo to hi, both ends included."""
    if n < 2:
        raise Refusal("err_sweep_few", lo=lo, hi=hi, n=n)
    if n > cap:
        raise Refusal("err_sweep_many", n=n, cap=cap)
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def sweep(
    values: Sequence[float],
    apply: Callable[[float], None],
    evaluate: Callable[[], float | None],
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    higher: bool = False,
) -> SweepResult:
    """apply(value) then evaluate() for each value; progress(done, total) after each point. The best point has the
    lowest score, or with ``higher`` the highest (an accuracy).

    A set cancel event stops the sweep before the next point, and an evaluate() that
    returns None (stopped inside a point) stops it there; the points done so far come
    back with cancelled=True.
    """
    if not values:
        raise ValueError("sweep: no values to try; pass at least one value")
    points: list[tuple[float, float]] = []
    for value in values:
        if cancel is not None and cancel.is_set():
            return SweepResult(points, _best(points, higher), cancelled=True)
        apply(value)
        score = evaluate()
        if score is None:
            return SweepResult(points, _best(points, higher), cancelled=True)
        points.append((value, score))
        if progress is not None:
            progress(len(points), len(values))
    return SweepResult(points, _best(points, higher))


def _best(points: list[tuple[float, float]], higher: bool = False) -> tuple[float, float] | None:
    return min(points, key=lambda p: _rank(-p[1] if higher else p[1]), default=None)


def _rank(score: float) -> tuple[bool, float]:
    # A diverged merge scores NaN; it must rank last (NaN breaks min's and sorted's comparisons).
    return (math.isnan(score), score)


@dataclass(frozen=True)
class GreedySoupResult:
    ingredients: list[str]  # in the order they joined the soup
    score: float  # held-out score of the soup
    individual_scores: dict[str, float]  # each candidate alone
    trials: list[tuple[str, float, bool]]  # (ingredient tried, soup score with it, kept)

    @property
    def weights(self) -> dict[str, float]:
        return _uniform(self.ingredients)


def greedy_soup(candidates: Sequence[str], score_of: Callable[[Mapping[str, float]], float]) -> GreedySoupResult:
    """Greedy soup (Wortsman et al. 2022, "Model soups", Recipe 1), lower score is better.

    Rank the candidates by their own held-out score, start the soup with the
    best, then try the others in rank order, keeping one only if the uniform
    average with it scores strictly better than the soup without it (as in the
    authors' code, so a tie keeps the smaller soup). score_of gets the soup as
    {ingredient: weight}, weights summing to 1.
    """
    if not candidates:
        raise ValueError("greedy_soup: no candidates; pass at least one ingredient name")
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"greedy_soup: candidates {list(candidates)} repeat a name; each ingredient once")
    individual = {name: score_of({name: 1.0}) for name in candidates}
    ranked = sorted(candidates, key=lambda name: _rank(individual[name]))
    soup, soup_score = [ranked[0]], individual[ranked[0]]
    trials = []
    for name in ranked[1:]:
        score = score_of(_uniform([*soup, name]))
        kept = score < soup_score
        trials.append((name, score, kept))
        if kept:
            soup, soup_score = [*soup, name], score
    return GreedySoupResult(soup, soup_score, individual, trials)


def _uniform(names: Sequence[str]) -> dict[str, float]:
    return {name: 1.0 / len(names) for name in names}
