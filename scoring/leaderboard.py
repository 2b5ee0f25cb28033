"""Bradley–Terry strengths from blind votes, on the Elo scale, with bootstrap intervals (numpy only).

A vote is (variant A, variant B, choice). As in FastChat's arena leaderboard, a tie and a "both bad" count as half
a win each way; A or B better is a whole win. The strengths maximise the Bradley–Terry likelihood

    P(i beats j) = 1 / (1 + exp(θj - θi))

with a weak prior: every variant also tied PRIOR_TIES games against a reference at θ = 0. It keeps a variant
that never won (or never lost) finite, and with thousands of votes it moves nothing that is printed. The fit is
Newton's method on the whole (concave) log-likelihood, run for all bootstrap resamples at once: a resample of the
votes is a multinomial draw over the (pair, outcome) cells, so 10,000 votes cost no more than 100.

Scores are 1000 + 400·log10 of the strength relative to Model 1 (FastChat's scale), so Model 1 sits at 1000.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

ANCHOR = "Model 1"  # the variant held at INITIAL; when no vote has it, the strengths' mean is
INITIAL = 1000.0
ELO = 400.0 / math.log(10.0)  # one unit of θ in Elo points
PRIOR_TIES = 0.5
RESAMPLES = 200
CHOICES = ("A", "B", "tie", "both_bad")
NEWTON_STEPS = 50
TOLERANCE = 1e-9
MAX_STEP = 3.0  # a Newton step on θ is clipped to this, so a far start cannot overshoot into overflow


@dataclass(frozen=True)
class Vote:
    variant_a: str
    variant_b: str
    choice: str  # one of CHOICES


@dataclass(frozen=True)
class Row:
    variant: str
    score: float
    ci_low: float
    ci_high: float
    votes: int  # the votes this variant took part in
    wins: int
    ties: int
    both_bad: int
    losses: int


@dataclass(frozen=True)
class Leaderboard:
    rows: list[Row]  # best first
    win_rate: np.ndarray  # [i, j]: share of i's votes against j that i won (a tie or both bad: half); nan if none
    order: list[str]  # the variants of win_rate's rows and columns, as in rows
    n_votes: int


def fit(wins: np.ndarray, prior: float = PRIOR_TIES) -> np.ndarray:
    """θ for each of ``wins``' stacked matrices ``[..., n, n]`` (``wins[i, j]``: i's wins over j, halves
    included), by Newton's method on the penalised log-likelihood."""
    wins = np.asarray(wins, dtype=float)
    games = wins + np.swapaxes(wins, -1, -2)
    won = wins.sum(-1)
    theta = np.zeros(wins.shape[:-1])
    eye = np.eye(wins.shape[-1])
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(theta[..., None, :] - theta[..., :, None]))  # p[i, j] = P(i beats j)
        p0 = 1.0 / (1.0 + np.exp(-theta))  # against the prior's reference
        grad = won - (games * p).sum(-1) + prior * (1.0 - 2.0 * p0)
        w = games * p * (1.0 - p)
        info = -w + eye * (w.sum(-1) + 2.0 * prior * p0 * (1.0 - p0))[..., None, :]
        step = np.clip(np.linalg.solve(info, grad[..., None])[..., 0], -MAX_STEP, MAX_STEP)
        theta = theta + step
        if np.abs(step).max(initial=0.0) < TOLERANCE:
            break
    return theta


def cells(votes: Sequence[Vote]) -> tuple[list[str], np.ndarray]:
    """The variants (sorted) and, per vote, its cell: (first, second, outcome) with first < second and outcome
    0 = first won, 1 = second won, 2 = half each."""
    names = sorted({v.variant_a for v in votes} | {v.variant_b for v in votes})
    index = {n: i for i, n in enumerate(names)}
    out = np.empty((len(votes), 3), dtype=np.int64)
    for k, v in enumerate(votes):
        if v.choice not in CHOICES:
            raise ValueError(f"vote {k}: choice {v.choice!r} is not one of {', '.join(CHOICES)}")
        a, b = index[v.variant_a], index[v.variant_b]
        outcome = 2 if v.choice in ("tie", "both_bad") else (0 if v.choice == "A" else 1)
        if a > b:
            a, b = b, a
            outcome = {0: 1, 1: 0, 2: 2}[outcome]
        out[k] = a, b, outcome
    return names, out


def win_matrices(n: int, cell_ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[R, n, n]`` win matrices from counts ``[R, C]`` of the C distinct cells ``cell_ids`` ``[C, 3]``."""
    wins = np.zeros((counts.shape[0], n, n))
    a, b, outcome = cell_ids.T
    first = np.where(outcome == 0, 1.0, np.where(outcome == 2, 0.5, 0.0))
    np.add.at(wins, (slice(None), a, b), counts * first)
    np.add.at(wins, (slice(None), b, a), counts * (1.0 - first))
    return wins


def scores(theta: np.ndarray, names: list[str]) -> np.ndarray:
    """θ as Elo-scale scores, Model 1 (or the mean) at INITIAL."""
    ref = theta[..., names.index(ANCHOR)] if ANCHOR in names else theta.mean(-1)
    return INITIAL + ELO * (theta - ref[..., None])


def leaderboard(votes: Iterable[Vote], resamples: int = RESAMPLES, seed: int = 0) -> Leaderboard:
    """Scores, 95% percentile-bootstrap intervals over ``resamples`` resamples of the votes, counts and the
    pairwise win-rate matrix."""
    votes = list(votes)
    if not votes:
        return Leaderboard([], np.zeros((0, 0)), [], 0)
    names, per_vote = cells(votes)
    distinct, inverse = np.unique(per_vote, axis=0, return_inverse=True)
    counts = np.bincount(inverse.ravel(), minlength=len(distinct)).astype(float)
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(len(votes), counts / counts.sum(), size=resamples).astype(float)
    wins = win_matrices(len(names), distinct, np.vstack([counts, drawn]))
    elo = scores(fit(wins), names)
    low, high = np.percentile(elo[1:], [2.5, 97.5], axis=0) if resamples else (elo[0], elo[0])
    tally = _tally(names, votes)
    order = sorted(range(len(names)), key=lambda i: -elo[0, i])
    games = wins[0] + wins[0].T
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(games > 0, wins[0] / games, np.nan)
    rows = [Row(names[i], float(elo[0, i]), float(low[i]), float(high[i]), *tally[names[i]]) for i in order]
    return Leaderboard(rows, rate[np.ix_(order, order)], [names[i] for i in order], len(votes))


def _tally(names: list[str], votes: list[Vote]) -> dict[str, list[int]]:
    """Per variant: votes taken part in, wins, ties, both bad, losses."""
    tally = {n: [0, 0, 0, 0, 0] for n in names}
    for v in votes:
        for me, mine, theirs in ((v.variant_a, "A", "B"), (v.variant_b, "B", "A")):
            t = tally[me]
            t[0] += 1
            t[{mine: 1, "tie": 2, "both_bad": 3, theirs: 4}[v.choice]] += 1
    return tally
