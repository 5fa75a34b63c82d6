"""Pure functions from (true labels, probabilities) to an evaluation summary, via scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support

LOW_SUPPORT = 20


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017); no library offers it."""
    if len(confidence) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def summarize(true_indices: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Computes the evaluation summary (accuracy, log loss, macro and weighted P/R/F1, per-class
    rows, confusion matrix, expected calibration error) for rows whose label the model knows.

    Args:
        true_indices: (n,) int class indices into `class_names`.
        probabilities: (n, k) predicted probabilities in class-name order.
        class_names: The model's classes in output order.

    Returns:
        accuracy, log loss, macro/weighted P/R/F1, per-class P/R/F1/support (low support flagged),
        the confusion matrix with its label order, and expected calibration error.
    """
    labels = list(range(len(class_names)))
    predicted = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=int)
    if len(true_indices) == 0:
        empty = {"precision": None, "recall": None, "f1": None}
        return {
            "rows": 0,
            "accuracy": None,
            "loss": None,
            "macro": empty,
            "weighted": empty,
            "per_class": [
                {"label": name, "precision": None, "recall": None, "f1": None, "support": 0, "low_support": True}
                for name in class_names
            ],
            "labels": list(class_names),
            "confusion_matrix": [[0] * len(labels) for _ in labels],
            "expected_calibration_error": None,
        }
    precision, recall, f1, support = precision_recall_fscore_support(
        true_indices, predicted, labels=labels, zero_division=0
    )
    macro = precision_recall_fscore_support(true_indices, predicted, labels=labels, average="macro", zero_division=0)
    weighted = precision_recall_fscore_support(
        true_indices, predicted, labels=labels, average="weighted", zero_division=0
    )
    clipped = np.clip(probabilities, 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    confidence = probabilities.max(axis=1)
    return {
        "rows": int(len(true_indices)),
        "accuracy": float(accuracy_score(true_indices, predicted)),
        "loss": float(log_loss(true_indices, clipped, labels=labels)),
        "macro": {"precision": float(macro[0]), "recall": float(macro[1]), "f1": float(macro[2])},
        "weighted": {"precision": float(weighted[0]), "recall": float(weighted[1]), "f1": float(weighted[2])},
        "per_class": [
            {
                "label": name,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "low_support": bool(support[i] < LOW_SUPPORT),
            }
            for i, name in enumerate(class_names)
        ],
        "labels": list(class_names),
        "confusion_matrix": confusion_matrix(true_indices, predicted, labels=labels).tolist(),
        "expected_calibration_error": expected_calibration_error(confidence, predicted == true_indices),
    }
