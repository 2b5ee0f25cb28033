"""The Bradley–Terry leaderboard (scoring/leaderboard.py): known strengths recovered from synthetic votes, with
bootstrap intervals that cover them, and the same scores as an independent fit (a per-vote logistic regression
by scipy's L-BFGS, where the product uses Newton's method on aggregated win matrices)."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from scoring.leaderboard import ELO, PRIOR_TIES, Vote, leaderboard

NAMES = ["Model 1", "Model 2", "SLERP t=0.50", "Soup w=0.50/0.50", "TIES d=0.50"]
TRUE_ELO = {"Model 1": 1000.0, "Model 2": 1100.0, "SLERP t=0.50": 1050.0, "Soup w=0.50/0.50": 950.0,
            "TIES d=0.50": 880.0}


def synthetic(n: int, seed: int, ties: float = 0.0) -> list[Vote]:
    """Votes drawn from the Bradley–Terry model with TRUE_ELO; a share ``ties`` of them tie or are both bad."""
    rng = np.random.default_rng(seed)
    votes = []
    for _ in range(n):
        a, b = rng.choice(len(NAMES), 2, replace=False)
        p = 1.0 / (1.0 + 10 ** ((TRUE_ELO[NAMES[b]] - TRUE_ELO[NAMES[a]]) / 400))
        if rng.random() < ties:
            choice = "tie" if rng.random() < 0.5 else "both_bad"
        else:
            choice = "A" if rng.random() < p else "B"
        votes.append(Vote(NAMES[a], NAMES[b], choice))
    return votes


def logistic_fit(votes: list[Vote]) -> dict[str, float]:
    """θ by minimising the same penalised negative log-likelihood vote by vote (a tie: half a win each way)."""
    names = sorted({v.variant_a for v in votes} | {v.variant_b for v in votes})
    idx = {n: i for i, n in enumerate(names)}
    a = np.array([idx[v.variant_a] for v in votes])
    b = np.array([idx[v.variant_b] for v in votes])
    y = np.array([{"A": 1.0, "B": 0.0}.get(v.choice, 0.5) for v in votes])

    def loss(theta):
        d = theta[a] - theta[b]
        nll = -(y * -np.logaddexp(0, -d) + (1 - y) * -np.logaddexp(0, d)).sum()
        prior = -PRIOR_TIES * (-np.logaddexp(0, -theta) - np.logaddexp(0, theta)).sum()
        return nll + prior

    theta = minimize(loss, np.zeros(len(names)), method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-14}).x
    return {n: 1000 + ELO * (theta[idx[n]] - theta[idx["Model 1"]]) for n in names}


def test_scores_recover_known_strengths_and_intervals_cover_them():
    board = leaderboard(synthetic(4000, seed=3), resamples=300)
    by = {r.variant: r for r in board.rows}
    assert [r.variant for r in board.rows] == sorted(TRUE_ELO, key=TRUE_ELO.get, reverse=True)
    assert by["Model 1"].score == pytest.approx(1000.0)
    for name, true in TRUE_ELO.items():
        row = by[name]
        assert abs(row.score - true) < 25, (name, row.score, true)
        assert row.ci_low <= true <= row.ci_high, (name, row.ci_low, true, row.ci_high)
        if name != "Model 1":
            assert 10 < row.ci_high - row.ci_low < 80, (name, row.ci_low, row.ci_high)


def test_scores_equal_an_independent_logistic_fit_with_ties_and_both_bad():
    votes = synthetic(600, seed=5, ties=0.3)
    board = leaderboard(votes, resamples=0)
    expected = logistic_fit(votes)
    for row in board.rows:
        assert row.score == pytest.approx(expected[row.variant], abs=1e-3), row.variant


def test_counts_and_win_rates():
    votes = [Vote("Model 1", "SLERP t=0.50", "A"), Vote("SLERP t=0.50", "Model 1", "A"),
             Vote("Model 1", "SLERP t=0.50", "tie"), Vote("Model 2", "Model 1", "both_bad"),
             Vote("Model 2", "SLERP t=0.50", "B")]
    board = leaderboard(votes, resamples=50)
    by = {r.variant: r for r in board.rows}
    assert (by["Model 1"].votes, by["Model 1"].wins, by["Model 1"].ties, by["Model 1"].both_bad,
            by["Model 1"].losses) == (4, 1, 1, 1, 1)
    assert (by["SLERP t=0.50"].votes, by["SLERP t=0.50"].wins, by["SLERP t=0.50"].losses) == (4, 2, 1)
    assert (by["Model 2"].votes, by["Model 2"].both_bad, by["Model 2"].losses) == (2, 1, 1)
    i, j = board.order.index("Model 1"), board.order.index("SLERP t=0.50")
    assert board.win_rate[i, j] == pytest.approx(0.5) and board.win_rate[j, i] == pytest.approx(0.5)
    k = board.order.index("Model 2")
    assert board.win_rate[k, i] == pytest.approx(0.5) and board.win_rate[k, j] == pytest.approx(0.0)
    assert math.isnan(board.win_rate[k, k])
    assert board.n_votes == 5


def test_a_variant_that_never_won_stays_finite_and_last():
    votes = [Vote("Model 1", "Model 2", "A")] * 5
    board = leaderboard(votes, resamples=20)
    assert [r.variant for r in board.rows] == ["Model 1", "Model 2"]
    assert math.isfinite(board.rows[1].score) and board.rows[1].score < 800


def test_an_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="choice 'C'"):
        leaderboard([Vote("Model 1", "Model 2", "C")])


def test_no_votes_no_rows():
    assert leaderboard([]).rows == []
