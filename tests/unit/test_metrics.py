"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.metrics import expected_calibration_error, summarize


def test_summary_matches_hand_computed_values():
    true = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    summary = summarize(true, probabilities, ["a", "b"])
    assert summary["accuracy"] == 0.75
    assert summary["confusion_matrix"] == [[1, 1], [0, 2]]
    a, b = summary["per_class"]
    assert a["precision"] == 1.0 and a["recall"] == 0.5 and b["precision"] == pytest.approx(2 / 3)
    assert summary["macro"]["f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    expected_loss = -(math.log(0.9) + math.log(0.4) + math.log(0.8) + math.log(0.7)) / 4
    assert summary["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert a["low_support"] and b["support"] == 2


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    assert expected_calibration_error(np.full(10, 0.7), np.array([1] * 7 + [0] * 3)) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(10, 0.99), np.array([1] * 5 + [0] * 5)) == pytest.approx(0.49)
