import threading

import pytest

from scoring.sweep import greedy_soup, linspace_points, sweep


def test_linspace_points_includes_both_ends():
    assert linspace_points(0.0, 1.0, 5, cap=10) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert linspace_points(0.2, 0.8, 2, cap=2) == [0.2, 0.8]


def test_linspace_points_rejects_too_few_or_too_many():
    with pytest.raises(ValueError, match="at least 2 points, got n=1"):
        linspace_points(0.0, 1.0, 1, cap=10)
    with pytest.raises(ValueError, match="n=11 points is over the cap of 10"):
        linspace_points(0.0, 1.0, 11, cap=10)


class Bowl:
    """A merge whose held-out score is a quadratic bowl in the weight, lowest at 0.7."""

    def __init__(self):
        self.weight = None

    def apply(self, weight):
        self.weight = weight

    def evaluate(self):
        return (self.weight - 0.7) ** 2


def test_sweep_finds_the_bottom_of_the_bowl():
    bowl, seen = Bowl(), []
    result = sweep([0.0, 0.25, 0.5, 0.75, 1.0], bowl.apply, bowl.evaluate, progress=lambda done, total: seen.append((done, total)))
    # (w - 0.7)^2: 0.49, 0.2025, 0.04, 0.0025, 0.09 -> best at 0.75
    assert [value for value, _ in result.points] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [score for _, score in result.points] == pytest.approx([0.49, 0.2025, 0.04, 0.0025, 0.09])
    assert result.best == (0.75, pytest.approx(0.0025))
    assert not result.cancelled
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_cancel_stops_between_points_and_keeps_the_partial_result():
    bowl, cancel = Bowl(), threading.Event()

    def evaluate():
        if bowl.weight == 0.25:
            cancel.set()  # a user presses Stop while point 2 is being scored
        return bowl.evaluate()

    result = sweep([0.0, 0.25, 0.5, 0.75, 1.0], bowl.apply, evaluate, cancel=cancel)
    # Point 2 finishes; points 3-5 are never applied.
    assert result.cancelled
    assert [value for value, _ in result.points] == [0.0, 0.25]
    assert result.best == (0.25, pytest.approx(0.2025))
    assert bowl.weight == 0.25


def test_cancel_before_the_first_point_returns_no_best():
    cancel = threading.Event()
    cancel.set()
    result = sweep([0.5], lambda value: pytest.fail("nothing should be applied"), lambda: 0.0, cancel=cancel)
    assert result.points == [] and result.best is None and result.cancelled


def test_nan_score_never_wins():
    scores = iter([float("nan"), 3.0, 2.0])
    result = sweep([0.0, 0.5, 1.0], lambda value: None, lambda: next(scores))
    assert result.best == (1.0, 2.0)


def test_an_accuracy_sweep_picks_the_highest_and_nan_still_never_wins():
    scores = iter([float("nan"), 40.0, 55.0, 50.0])
    result = sweep([0.0, 0.25, 0.5, 1.0], lambda value: None, lambda: next(scores), higher=True)
    assert result.best == (0.5, 55.0)


def bowl_score(params, target):
    """Held-out score of a soup of 1-D "models": squared distance of the averaged parameter to target."""

    def score_of(weights):
        assert sum(weights.values()) == pytest.approx(1.0)
        merged = sum(weight * params[name] for name, weight in weights.items())
        return (merged - target) ** 2

    return score_of


def test_greedy_soup_keeps_helpful_ingredients_and_leaves_out_the_one_that_hurts():
    params = {"a": 1.0, "b": 3.0, "c": 10.0}
    calls = []
    score = bowl_score(params, target=2.2)

    def score_of(weights):
        calls.append(dict(weights))
        return score(weights)

    result = greedy_soup(["a", "b", "c"], score_of)
    # Alone: a (1-2.2)^2 = 1.44, b (3-2.2)^2 = 0.64, c (10-2.2)^2 = 60.84 -> rank b, a, c.
    # {b, a}: mean 2 -> 0.04 < 0.64, keep a. {b, a, c}: mean 14/3 -> (2.4667)^2 = 6.08 > 0.04, drop c.
    assert result.individual_scores == pytest.approx({"a": 1.44, "b": 0.64, "c": 60.84})
    assert result.ingredients == ["b", "a"]
    assert result.weights == {"b": 0.5, "a": 0.5}
    assert result.score == pytest.approx(0.04)
    assert [(name, kept) for name, _, kept in result.trials] == [("a", True), ("c", False)]
    assert calls[3:] == [{"b": 0.5, "a": 0.5}, pytest.approx({"b": 1 / 3, "a": 1 / 3, "c": 1 / 3})]


def test_greedy_soup_can_keep_a_weak_ingredient_that_pulls_the_average_to_the_target():
    # Alone: a (2-3)^2 = 1, b (5-3)^2 = 4, c (0-3)^2 = 9 -> rank a, b, c.
    # {a, b}: 3.5 -> 0.25 < 1, keep. {a, b, c}: 7/3 -> (2/3)^2 = 0.444 > 0.25, drop.
    result = greedy_soup(["c", "b", "a"], bowl_score({"a": 2.0, "b": 5.0, "c": 0.0}, target=3.0))
    assert result.ingredients == ["a", "b"]
    assert result.score == pytest.approx(0.25)


def test_greedy_soup_tie_keeps_the_smaller_soup():
    # x and y are the same model: alone and together they score (1 - 0)^2 = 1, which is no improvement.
    result = greedy_soup(["x", "y"], bowl_score({"x": 1.0, "y": 1.0}, target=0.0))
    assert result.ingredients == ["x"]
    assert result.trials == [("y", pytest.approx(1.0), False)]


def test_greedy_soup_rejects_repeated_names():
    with pytest.raises(ValueError, match="repeat a name"):
        greedy_soup(["a", "a"], lambda weights: 0.0)
