"""UncertaintyEstimator on constructed cases: pure Python, no server."""

from __future__ import annotations

import pytest

import marrow
from marrow import UncertaintyEstimator


def test_uncertainty_constructed_cases():
    est = UncertaintyEstimator()
    nothing = est.estimate([])
    assert nothing.score == 1.0 and nothing.covering == 0
    clear = est.estimate([0.1, 0.15, 0.6, 0.7, 0.8])  # two close memories, the rest unrelated
    unique = est.estimate([0.1, 0.6, 0.7, 0.75, 0.8])  # one close memory
    ambiguous = est.estimate([0.45, 0.46, 0.47, 0.48, 0.49])  # a flat profile of mediocre matches
    unrelated = est.estimate([0.85, 0.86, 0.9, 0.95, 1.0])
    assert clear.score < unique.score < ambiguous.score < unrelated.score
    assert clear.score < 0.15 and unrelated.score > 0.9
    assert (clear.covering, unique.covering, ambiguous.covering) == (2, 1, 0)
    assert unique.components["coverage"] == 0.5 and clear.components["coverage"] == 0.0
    assert ambiguous.components["margin"] > 0.9 and unique.components["margin"] == 0.0
    # Exactly the documented formula for one case: s = [0.9, 0.4], defaults.
    two = est.estimate([0.1, 0.6])
    top, margin, spread, coverage = 0.0, 1 - 0.5 / 0.15, 1 - 0.25 / 0.1, 1 - 1 / 2
    expected = (0.5 * top + 0.15 * max(0, margin) + 0.1 * max(0, spread) + 0.25 * coverage) / 1.0
    assert two.score == pytest.approx(expected)
    # Monotone in the top-1 distance, everything else fixed.
    scores = [est.estimate([d, 0.7, 0.8]).score for d in (0.05, 0.2, 0.4, 0.6, 0.8)]
    assert scores == sorted(scores) and scores[0] < scores[-1]
    # The distance order does not matter; out-of-range distances are clipped.
    assert est.estimate([0.8, 0.1, 0.6]).score == est.estimate([0.1, 0.6, 0.8]).score
    assert est.estimate([-0.5, 3.0]).top_similarity == 1.0


def test_uncertainty_with_model_logprobs():
    est = UncertaintyEstimator()
    base = est.estimate([0.35, 0.5, 0.6])
    sure = est.estimate([0.35, 0.5, 0.6], logprobs=[-0.01, -0.02, -0.01])
    unsure = est.estimate([0.35, 0.5, 0.6], logprobs=[-2.0, -3.0, -2.5])
    assert sure.score < base.score < unsure.score
    assert unsure.model == pytest.approx(1 - 2.718281828 ** -2.5)
    assert sure.score == pytest.approx(0.5 * base.retrieval + 0.5 * sure.model)
    for bad in ([], [0.5], [float("nan")]):
        with pytest.raises(marrow.InvalidArgumentError):
            est.estimate([0.1], logprobs=bad)
    with pytest.raises(marrow.InvalidArgumentError):
        UncertaintyEstimator(w_top=-1)
