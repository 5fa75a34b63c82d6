"""The evaluation summary, key by key, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.metrics import ECE_EDGES, expected_calibration_error, summarize

# True a,a,a,a,b,b; predicted a,b,b,b,b,b; class c is neither true nor predicted.
TRUE = np.array([0, 0, 0, 0, 1, 1])
PROBABILITIES = np.array(
    [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.0, 1.0, 0.0], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1]]
)


def test_summary_reports_every_figure_including_a_class_never_seen():
    summary = summarize(TRUE, PROBABILITIES, ["a", "b", "c"])
    assert summary["rows"] == 6 and summary["accuracy"] == 0.5
    assert summary["labels"] == ["a", "b", "c"]
    assert summary["confusion_matrix"] == [[1, 3, 0], [0, 2, 0], [0, 0, 0]]
    expected = [
        {"label": "a", "precision": 1.0, "recall": 0.25, "f1": 0.4, "support": 4, "low_support": True},
        {"label": "b", "precision": 0.4, "recall": 1.0, "f1": 4 / 7, "support": 2, "low_support": True},
        {"label": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "low_support": True},
    ]
    intervals = [row.pop("f1_interval") for row in summary["per_class"]]
    assert summary["per_class"] == [pytest.approx(row) for row in expected]
    assert intervals[2] == [0.0, 0.0]  # a class never seen nor predicted has F1 0 in every resample
    assert summary["macro"].pop("f1_interval")[0] <= summary["macro"]["f1"]
    assert summary["macro"] == pytest.approx({"precision": 1.4 / 3, "recall": 1.25 / 3, "f1": (0.4 + 4 / 7) / 3})
    assert summary["weighted"] == pytest.approx({"precision": 0.8, "recall": 0.5, "f1": (1.6 + 8 / 7) / 6})
    # A true class given probability 0 costs -log(1e-7), not infinity.
    terms = [0.7, 0.3, 0.2, 1e-7, 0.8, 0.6]
    assert summary["loss"] == pytest.approx(-sum(math.log(p) for p in terms) / 6, rel=1e-6)
    # Bins (8/15, 9/15], (10/15, 11/15], (11/15, 12/15], (14/15, 1]: (2*.1 + 2*.2 + 1*.2 + 1*1) / 6.
    assert summary["expected_calibration_error"] == pytest.approx(0.3)


def test_a_class_with_twenty_rows_is_no_longer_low_support():
    true = np.array([0] * 20 + [1] * 19)
    probabilities = np.eye(2)[true]
    first, second = summarize(true, probabilities, ["a", "b"])["per_class"]
    assert not first["low_support"] and second["low_support"]


def test_an_empty_evaluation_reports_nothing_measured():
    summary = summarize(np.zeros(0, dtype=int), np.zeros((0, 2)), ["a", "b"])
    empty = {"precision": None, "recall": None, "f1": None}
    assert summary == {
        "rows": 0,
        "accuracy": None,
        "accuracy_interval": None,
        "loss": None,
        "macro": {**empty, "f1_interval": None},
        "weighted": empty,
        "per_class": [
            {
                "label": name,
                "precision": None,
                "recall": None,
                "f1": None,
                "f1_interval": None,
                "support": 0,
                "low_support": True,
            }
            for name in ("a", "b")
        ],
        "intervals": summary["intervals"],
        "labels": ["a", "b"],
        "confusion_matrix": [[0, 0], [0, 0]],
        "expected_calibration_error": None,
    }


def test_ece_puts_a_confidence_on_a_bin_edge_in_the_lower_bin_only():
    # 15 bins; the edge 0.6 closes (0.533, 0.6], so it is not averaged with 0.62 of (0.6, 0.667]:
    # apart, the gaps are 0.4 and 0.62 (ECE 0.51); together they would be |0.5 - 0.61| = 0.11.
    edge = ECE_EDGES[9]
    assert expected_calibration_error(np.array([edge, 0.62]), np.array([True, False])) == pytest.approx(
        0.5 * (1 - edge) + 0.5 * 0.62
    )


def test_ece_of_no_rows_is_not_a_number():
    assert math.isnan(expected_calibration_error(np.zeros(0), np.zeros(0, dtype=bool)))
