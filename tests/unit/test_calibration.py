"""Temperature scaling and the review threshold, on synthetic over-confident predictions."""

from __future__ import annotations

import numpy as np

from pipeline.calibration import apply_temperature, choose_review_threshold, fit_temperature
from pipeline.metrics import expected_calibration_error


def overconfident(n=2000, seed=0):
    """Predictions that are right 70% of the time but claim ~99% confidence."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    predicted = np.where(rng.random(n) < 0.7, labels, (labels + 1) % 3)
    probabilities = np.full((n, 3), 0.005)
    probabilities[np.arange(n), predicted] = 0.99
    return probabilities, labels


def test_temperature_scaling_reduces_calibration_error_and_keeps_the_ranking():
    probabilities, labels = overconfident()
    temperature = fit_temperature(probabilities, labels)
    scaled = apply_temperature(probabilities, temperature)
    assert temperature > 1
    before = expected_calibration_error(probabilities.max(1), probabilities.argmax(1) == labels)
    after = expected_calibration_error(scaled.max(1), scaled.argmax(1) == labels)
    assert before > 0.25 and after < 0.03
    assert np.array_equal(scaled.argmax(1), probabilities.argmax(1))
    np.testing.assert_allclose(scaled.sum(1), 1.0)


def test_review_threshold_meets_the_target_on_kept_rows():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 1000)
    confidence = rng.uniform(0.5, 1.0, 1000)
    correct = rng.random(1000) < confidence  # calibrated: right with probability = confidence
    predicted = np.where(correct, labels, 1 - labels)
    probabilities = np.zeros((1000, 2))
    probabilities[np.arange(1000), predicted] = confidence
    probabilities[np.arange(1000), 1 - predicted] = 1 - confidence
    review = choose_review_threshold(probabilities, labels, 0.95)
    kept = confidence >= review["threshold"]
    assert (predicted[kept] == labels[kept]).mean() >= 0.95
    assert 0 < review["validation_kept_share"] < 1
    stricter = choose_review_threshold(probabilities, labels, 0.99)
    assert stricter["threshold"] > review["threshold"]
    kept_strictly = confidence >= stricter["threshold"]
    assert (predicted[kept_strictly] == labels[kept_strictly]).mean() >= 0.99
