"""Confidence that means something: temperature scaling and the review-queue threshold, both
fitted on the validation split (never on test)."""

from __future__ import annotations

from typing import Any

import numpy as np


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax(log p / T): T > 1 softens over-confident outputs; T = 1 changes nothing."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    normalised: np.ndarray = scaled / scaled.sum(axis=1, keepdims=True)
    return normalised


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation log loss (Guo et al. 2017); 1.0 without data."""
    if len(labels) == 0:
        return 1.0

    def negative_log_likelihood(log_temperature: float) -> float:
        scaled = apply_temperature(probabilities, float(np.exp(log_temperature)))
        return float(-np.log(np.clip(scaled[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())

    from scipy.optimize import minimize_scalar  # training only: scoring actors skip 0.2 s of imports

    result = minimize_scalar(negative_log_likelihood, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def choose_review_threshold(probabilities: np.ndarray, labels: np.ndarray, target_accuracy: float) -> dict[str, Any]:
    """The lowest confidence threshold whose kept rows (confidence >= threshold) reach the target
    accuracy on validation data; rows below it go to human review.

    Returns:
        {"threshold", "target_accuracy", "validation_kept_share", "validation_kept_accuracy"};
        threshold 1.0 (review everything) when no threshold meets the target.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    best = {
        "threshold": 1.0,
        "target_accuracy": target_accuracy,
        "validation_kept_share": 0.0,
        "validation_kept_accuracy": None,
    }
    for threshold in np.unique(np.concatenate([[0.0], confidence])):
        kept = confidence >= threshold
        if kept.any() and correct[kept].mean() >= target_accuracy:
            return {
                "threshold": float(threshold),
                "target_accuracy": target_accuracy,
                "validation_kept_share": float(kept.mean()),
                "validation_kept_accuracy": float(correct[kept].mean()),
            }
    return best
