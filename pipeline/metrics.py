"""Pure functions from (true labels, probabilities), or from counts that add up, to an evaluation summary."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, log_loss

from pipeline import intervals

LOW_SUPPORT = 20


ECE_BINS = 15
ECE_EDGES = np.linspace(0.0, 1.0, ECE_BINS + 1)


def calibration_bins(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows per equal-width confidence bin (low, high], their confidence sum and correct count.

    Sums, so that bins of separate files add up to the bins of all rows.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    bins = np.searchsorted(ECE_EDGES, confidence, side="left") - 1  # (low, high]; 0 falls outside
    inside = (bins >= 0) & (bins < ECE_BINS)
    count = np.bincount(bins[inside], minlength=ECE_BINS).astype(np.int64)
    total = np.bincount(bins[inside], weights=confidence[inside], minlength=ECE_BINS)
    hits = np.bincount(bins[inside], weights=np.asarray(correct, dtype=np.float64)[inside], minlength=ECE_BINS)
    return count, total, hits.astype(np.int64)


DRIFT_BINS = 10  # confidence histogram bins for drift: coarse enough to fill on a small night
DRIFT_EDGES = np.linspace(0.0, 1.0, DRIFT_BINS + 1)


def confidence_histogram(confidence: np.ndarray) -> np.ndarray:
    """Rows per equal-width confidence bin [low, high), the last bin closed at 1.0.

    Counts, so that histograms of separate files add up; training records the validation split's
    histogram with the same edges, so a scoring run compares like with like.
    """
    confidence = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    bins = np.minimum((confidence * DRIFT_BINS).astype(np.int64), DRIFT_BINS - 1)
    return np.bincount(bins, minlength=DRIFT_BINS).astype(np.int64)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray) -> dict[str, list[float]]:
    """The calibration bins as JSON lists (rows, confidence sum, correct rows per bin), for a
    record that a reliability diagram is drawn from later."""
    count, total, hits = calibration_bins(confidence, correct)
    return {"count": count.tolist(), "confidence_sum": total.tolist(), "correct": hits.tolist()}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017); no library offers it."""
    if len(confidence) == 0:
        return float("nan")
    return _ece(*calibration_bins(confidence, correct), rows=len(confidence))


def _ece(count: np.ndarray, confidence_sum: np.ndarray, correct: np.ndarray, rows: int) -> float:
    used = count > 0
    gaps = np.abs(correct[used] / count[used] - confidence_sum[used] / count[used])
    return float((count[used] / rows * gaps).sum())


def summarize(true_indices: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Computes the evaluation summary (accuracy, log loss, macro and weighted P/R/F1, per-class
    rows, confusion matrix, expected calibration error) for rows whose label the model knows.

    Args:
        true_indices: (n,) int class indices into `class_names`.
        probabilities: (n, k) predicted probabilities in class-name order.
        class_names: The model's classes in output order.
    """
    labels = list(range(len(class_names)))
    if len(true_indices) == 0:
        return summarize_counts(np.zeros((len(labels), len(labels)), dtype=np.int64), None, *_no_bins(), class_names)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    return summarize_counts(
        confusion_matrix(true_indices, predicted, labels=labels),
        log_loss_sum(true_indices, probabilities, len(labels)) / len(true_indices),
        *calibration_bins(confidence, predicted == true_indices),
        class_names,
    )


def log_loss_sum(true_indices: np.ndarray, probabilities: np.ndarray, classes: int) -> float:
    """Summed cross-entropy, probabilities clipped to [1e-7, 1] and renormalised (a model that
    gives the true class exactly 0 would otherwise score infinity). In float64, so that sums over
    files equal the sum over all rows to 1e-9."""
    clipped = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return float(log_loss(true_indices, clipped, labels=list(range(classes)), normalize=False))


def _no_bins() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(ECE_BINS, dtype=np.int64), np.zeros(ECE_BINS), np.zeros(ECE_BINS, dtype=np.int64)


def summarize_counts(
    confusion: np.ndarray,
    loss: float | None,
    bin_count: np.ndarray,
    bin_confidence: np.ndarray,
    bin_correct: np.ndarray,
    class_names: list[str],
) -> dict[str, Any]:
    """The summary from additive counts: what `summarize` gives for the rows the counts came from,
    and what a scoring run gives by summing its files' tallies. P/R/F1 follow scikit-learn's
    definitions with zero_division=0 (tests/unit/test_metrics.py compares them). Accuracy,
    macro-F1 and each class's F1 carry a 95% bootstrap interval over images (`pipeline.intervals`),
    which needs only the confusion matrix, so a summed tally has them too."""
    confusion = np.asarray(confusion, dtype=np.int64)
    rows = int(confusion.sum())
    if rows == 0:
        empty = {"precision": None, "recall": None, "f1": None}
        return {
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
                for name in class_names
            ],
            "intervals": intervals.describe(),
            "labels": list(class_names),
            "confusion_matrix": confusion.tolist(),
            "expected_calibration_error": None,
        }
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = _divide(true_positive, predicted)
    recall = _divide(true_positive, support)
    f1 = _divide(2 * true_positive, predicted + support)
    weights = support / rows
    bootstrap = intervals.confusion_intervals(confusion)
    return {
        "rows": rows,
        "accuracy": float(true_positive.sum() / rows),
        "accuracy_interval": bootstrap["accuracy"],
        "loss": loss,
        "macro": {
            "precision": float(precision.mean()),
            "recall": float(recall.mean()),
            "f1": float(f1.mean()),
            "f1_interval": bootstrap["macro_f1"],
        },
        "weighted": {
            "precision": float((precision * weights).sum()),
            "recall": float((recall * weights).sum()),
            "f1": float((f1 * weights).sum()),
        },
        "per_class": [
            {
                "label": name,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "f1_interval": bootstrap["f1"][i],
                "support": int(support[i]),
                "low_support": bool(support[i] < LOW_SUPPORT),
            }
            for i, name in enumerate(class_names)
        ],
        "labels": list(class_names),
        "confusion_matrix": confusion.tolist(),
        "intervals": intervals.describe(),
        "expected_calibration_error": _ece(bin_count, bin_confidence, bin_correct, rows),
    }


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise division with 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    result = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=result, where=denominator > 0)
    return result
