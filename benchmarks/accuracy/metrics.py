"""Held-out figures for one row: the product's metrics before and after calibration, and reliability bins."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from benchmarks.accuracy.settings import ECE_BINS


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin (the same bins as pipeline.metrics' ECE): count, mean
    confidence, accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        members = (confidence > low) & (confidence <= high)
        rows.append(
            {
                "low": round(float(low), 4),
                "high": round(float(high), 4),
                "count": int(members.sum()),
                "confidence": float(confidence[members].mean()) if members.any() else None,
                "accuracy": float(correct[members].mean()) if members.any() else None,
            }
        )
    return rows


def metric_block(
    labels: np.ndarray, calibrated: np.ndarray, uncalibrated: np.ndarray, class_names: list[str], minority: str
) -> dict[str, Any]:
    """Headline metrics (pipeline.metrics.summarize) on the calibrated probabilities, with the 95%
    bootstrap intervals over the held-out images of accuracy, macro-F1 and minority F1, plus the
    uncalibrated log loss and ECE. Temperature scaling never changes the argmax, so accuracy and
    F1 are the same either way."""
    from pipeline.metrics import summarize

    after = summarize(labels, calibrated, class_names)
    before = summarize(labels, uncalibrated, class_names)
    per_class = {row["label"]: row["f1"] for row in after["per_class"]}
    minority_row = next(row for row in after["per_class"] if row["label"] == minority)
    return {
        "rows": after["rows"],
        "accuracy": after["accuracy"],
        "accuracy_interval": after["accuracy_interval"],
        "macro_f1": after["macro"]["f1"],
        "macro_f1_interval": after["macro"]["f1_interval"],
        "weighted_f1": after["weighted"]["f1"],
        "per_class_f1": per_class,
        "minority_f1": per_class[minority],
        "minority_f1_interval": minority_row["f1_interval"],
        "minority_recall": next(r["recall"] for r in after["per_class"] if r["label"] == minority),
        "log_loss": after["loss"],
        "log_loss_uncalibrated": before["loss"],
        "ece_uncalibrated": before["expected_calibration_error"],
        "ece_calibrated": after["expected_calibration_error"],
        "confusion_matrix": after["confusion_matrix"],
        "labels": after["labels"],
    }


def uncalibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Inverts `apply_temperature`: softmax(T * log p) recovers the model's raw softmax output
    (up to the 1e-12 clip, which cannot move the top class or its confidence)."""
    logits = np.log(np.clip(probabilities.astype(np.float64), 1e-30, 1.0)) * temperature
    logits -= logits.max(axis=1, keepdims=True)
    raw = np.exp(logits)
    return raw / raw.sum(axis=1, keepdims=True)


REPEATED = ("accuracy", "macro_f1", "minority_f1")


def repeat_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant and imbalance strategy (the row id without its "#repeat"), the mean and sample
    standard deviation of the held-out figures over the repeats, beside the mean half-width of their
    95% intervals: the std is training's run-to-run noise, the interval the held-out images' own.

    Args:
        rows: Result rows; each has "row" ("variant[strategy]#k", or without "#k" for one repeat)
            and "heldout" with the figures of REPEATED and their "_interval"s.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["row"].split("#")[0], []).append(row)
    summary = []
    for group, members in groups.items():
        entry: dict[str, Any] = {"row": group, "repeats": len(members)}
        for key in REPEATED:
            values = [float(member["heldout"][key]) for member in members]
            widths = [
                (member["heldout"][f"{key}_interval"][1] - member["heldout"][f"{key}_interval"][0]) / 2
                for member in members
                if member["heldout"].get(f"{key}_interval")
            ]
            entry[key] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "interval_half_width": statistics.fmean(widths) if widths else None,
            }
        summary.append(entry)
    return summary
