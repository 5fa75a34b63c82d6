"""Temperature scaling and the review threshold on cases small enough to work out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.calibration import apply_temperature, choose_review_threshold, fit_temperature


def test_temperature_two_takes_the_square_root_of_the_odds():
    scaled = apply_temperature(np.array([[0.8, 0.2], [0.5, 0.5]]), 2.0)
    np.testing.assert_allclose(scaled, [[2 / 3, 1 / 3], [0.5, 0.5]])


def test_temperature_one_returns_the_probabilities_unchanged():
    probabilities = np.array([[0.8, 0.2]])
    assert apply_temperature(probabilities, 1.0) is probabilities


def test_a_zero_probability_is_softened_to_a_small_positive_one():
    scaled = apply_temperature(np.array([[1.0, 0.0]]), 2.0)
    assert scaled[0, 1] == pytest.approx(1e-6 / (1 + 1e-6))


def test_no_validation_rows_means_no_scaling():
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 1.0


def test_one_confidently_wrong_row_is_enough_to_soften():
    assert fit_temperature(np.array([[0.99, 0.01]]), np.array([1])) > 5


def test_an_under_confident_model_is_sharpened_and_an_always_wrong_one_softened_at_most_twenty_fold():
    right = np.tile([[0.6, 0.4]], (50, 1))
    assert fit_temperature(right, np.zeros(50, dtype=int)) < 0.2
    assert 10 < fit_temperature(right, np.ones(50, dtype=int)) <= 20.0


def review_case():
    # Confidence .9 right, .8 right, .7 wrong, .6 right.
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    return probabilities, np.array([0, 1, 1, 1])


def test_review_threshold_is_the_lowest_that_reaches_the_target():
    probabilities, labels = review_case()
    assert choose_review_threshold(probabilities, labels, 1.0) == {
        "threshold": 0.8,
        "target_accuracy": 1.0,
        "validation_kept_share": 0.5,
        "validation_kept_accuracy": 1.0,
    }


def test_a_target_met_exactly_by_every_row_reviews_nothing():
    probabilities, labels = review_case()
    assert choose_review_threshold(probabilities, labels, 0.75) == {
        "threshold": 0.0,
        "target_accuracy": 0.75,
        "validation_kept_share": 1.0,
        "validation_kept_accuracy": 0.75,
    }


def test_an_unreachable_target_sends_everything_to_review():
    probabilities, labels = review_case()
    assert choose_review_threshold(probabilities, 1 - labels, 0.9) == {
        "threshold": 1.0,
        "target_accuracy": 0.9,
        "validation_kept_share": 0.0,
        "validation_kept_accuracy": None,
    }
