"""Evaluation as sums: each prediction file carries a tally of its rows in its Parquet footer.

A run's evaluation is the sum of its files' tallies, so the driver never reads predictions back:
a footer is a few kilobytes whatever the file holds. The tally holds what the figures need and no
more: row and error counts, the confusion matrix, the log-loss sum, calibration bins, review counts,
labels the model does not know, each file's most confident mistakes, and a sample of its review
queue (the lowest-confidence rows sent to people), so the report can show pictures of both without
reading a row back; and the drift signals of every scored row, labelled or not (predicted-class
counts, a confidence histogram, rows sent to review). Metrics computed from a summed tally equal
scikit-learn's on the whole frame (tests/unit/test_tally.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.metrics import (
    DRIFT_BINS,
    ECE_BINS,
    calibration_bins,
    confidence_histogram,
    log_loss_sum,
    summarize_counts,
)
from pipeline.schema import ERROR, IMAGE_URI, LABEL

FOOTER_KEY = b"catalog_classifier.tally"
MISTAKES_KEPT = 20
REVIEW_SAMPLE_KEPT = 20  # bounded like the mistakes: a footer stays a few kilobytes


@dataclass
class Tally:
    """Additive evaluation state of some prediction rows."""

    classes: int
    rows: int = 0
    error_rows: int = 0
    evaluated_rows: int = 0
    review_rows: int = 0  # evaluated rows below the review threshold
    kept_correct: int = 0  # evaluated rows above it that the model got right
    log_loss_sum: float = 0.0
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    bin_count: np.ndarray = field(default_factory=lambda: np.zeros(ECE_BINS, dtype=np.int64))
    bin_confidence: np.ndarray = field(default_factory=lambda: np.zeros(ECE_BINS))
    bin_correct: np.ndarray = field(default_factory=lambda: np.zeros(ECE_BINS, dtype=np.int64))
    unknown_labels: dict[str, int] = field(default_factory=dict)
    model_versions: set[str] = field(default_factory=set)
    mistakes: list[dict[str, Any]] = field(default_factory=list)
    review_sample: list[dict[str, Any]] = field(default_factory=list)  # least confident review rows
    # Drift signals over every scored row (no error), labelled or not: `pipeline/score/drift.py`.
    predicted_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    confidence_counts: np.ndarray = field(default_factory=lambda: np.zeros(DRIFT_BINS, dtype=np.int64))
    scored_review_rows: int = 0  # scored rows below the review threshold, labelled or not

    def __post_init__(self) -> None:
        if self.confusion.shape != (self.classes, self.classes):
            self.confusion = np.zeros((self.classes, self.classes), dtype=np.int64)
        if self.predicted_counts.shape != (self.classes,):
            self.predicted_counts = np.zeros(self.classes, dtype=np.int64)

    def add(self, other: Tally) -> Tally:
        """Sums another tally into this one (in place) and returns it."""
        self.rows += other.rows
        self.error_rows += other.error_rows
        self.evaluated_rows += other.evaluated_rows
        self.review_rows += other.review_rows
        self.kept_correct += other.kept_correct
        self.log_loss_sum += other.log_loss_sum
        self.confusion = self.confusion + other.confusion
        self.bin_count = self.bin_count + other.bin_count
        self.bin_confidence = self.bin_confidence + other.bin_confidence
        self.bin_correct = self.bin_correct + other.bin_correct
        for label, count in other.unknown_labels.items():
            self.unknown_labels[label] = self.unknown_labels.get(label, 0) + count
        self.model_versions |= other.model_versions
        self.mistakes = _most_confident(self.mistakes + other.mistakes)
        self.review_sample = _least_confident(self.review_sample + other.review_sample)
        self.predicted_counts = self.predicted_counts + other.predicted_counts
        self.confidence_counts = self.confidence_counts + other.confidence_counts
        self.scored_review_rows += other.scored_review_rows
        return self

    def metrics(self, class_names: list[str]) -> dict[str, Any]:
        """The same summary `pipeline.metrics.summarize` computes from the rows."""
        loss = self.log_loss_sum / self.evaluated_rows if self.evaluated_rows else None
        return summarize_counts(
            self.confusion, loss, self.bin_count, self.bin_confidence, self.bin_correct, class_names
        )

    def to_json(self) -> bytes:
        values = {
            "classes": self.classes,
            "rows": self.rows,
            "error_rows": self.error_rows,
            "evaluated_rows": self.evaluated_rows,
            "review_rows": self.review_rows,
            "kept_correct": self.kept_correct,
            "log_loss_sum": self.log_loss_sum,
            # Sparse: a file of a 1,000-class model fills a few hundred of its million cells.
            "confusion": [[int(i), int(j), int(self.confusion[i, j])] for i, j in zip(*np.nonzero(self.confusion))],
            "bin_count": self.bin_count.tolist(),
            "bin_confidence": self.bin_confidence.tolist(),
            "bin_correct": self.bin_correct.tolist(),
            "unknown_labels": self.unknown_labels,
            "model_versions": sorted(self.model_versions),
            "mistakes": self.mistakes,
            "review_sample": self.review_sample,
            "predicted_counts": self.predicted_counts.tolist(),
            "confidence_counts": self.confidence_counts.tolist(),
            "scored_review_rows": self.scored_review_rows,
        }
        return json.dumps(values).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Tally:
        values = json.loads(data)
        return cls(
            classes=values["classes"],
            rows=values["rows"],
            error_rows=values["error_rows"],
            evaluated_rows=values["evaluated_rows"],
            review_rows=values["review_rows"],
            kept_correct=values["kept_correct"],
            log_loss_sum=values["log_loss_sum"],
            confusion=_dense(values["confusion"], values["classes"]),
            bin_count=np.array(values["bin_count"], dtype=np.int64),
            bin_confidence=np.array(values["bin_confidence"], dtype=np.float64),
            bin_correct=np.array(values["bin_correct"], dtype=np.int64),
            unknown_labels={str(k): int(v) for k, v in values["unknown_labels"].items()},
            model_versions=set(values["model_versions"]),
            mistakes=list(values["mistakes"]),
            review_sample=list(values.get("review_sample", [])),  # absent from footers written before it
            # Absent from footers written before drift: such files count as no drift evidence.
            predicted_counts=np.array(values.get("predicted_counts", []), dtype=np.int64),
            confidence_counts=np.array(values.get("confidence_counts", [0] * DRIFT_BINS), dtype=np.int64),
            scored_review_rows=int(values.get("scored_review_rows", 0)),
        )


def tally_table(table: pa.Table, class_names: list[str]) -> Tally:
    """The tally of some prediction rows (an Arrow table in the prediction schema), vectorised:
    the driver tallies every file it writes."""
    tally = Tally(len(class_names), rows=table.num_rows)
    tally.model_versions = {str(v) for v in table.column("model_version").unique().to_pylist()}
    ok = table.column(ERROR).is_null()
    tally.error_rows = table.num_rows - int(pc.sum(ok).as_py() or 0)
    labels = table.column(LABEL)
    labelled = pc.and_(ok, labels.is_valid())
    truth = pc.index_in(labels, value_set=pa.array(class_names, pa.string()))
    known = pc.and_(labelled, truth.is_valid())
    unknown = pc.filter(labels, pc.and_(labelled, pc.invert(known)))
    for entry in pc.value_counts(unknown).to_pylist():
        tally.unknown_labels[str(entry["values"])] = int(entry["counts"])
    tally.review_sample = _review_sample(table.filter(pc.and_(ok, pc.fill_null(table.column("low_confidence"), False))))
    _tally_drift(tally, table.filter(ok))
    if pc.any(known).as_py():
        rows = table.filter(known)
        _tally_known(tally, rows, pc.filter(truth, known).to_numpy(zero_copy_only=False).astype(np.int64))
    return tally


def _tally_known(tally: Tally, rows: pa.Table, truth: np.ndarray) -> None:
    flat = rows.column("probabilities").combine_chunks()
    probabilities = flat.flatten().to_numpy().reshape(len(truth), tally.classes)
    predicted = probabilities.argmax(axis=1)
    correct = predicted == truth
    np.add.at(tally.confusion, (truth, predicted), 1)
    tally.evaluated_rows = len(truth)
    tally.log_loss_sum = log_loss_sum(truth, probabilities, tally.classes)
    confidence = probabilities.max(axis=1).astype(np.float64)
    tally.bin_count, tally.bin_confidence, tally.bin_correct = calibration_bins(confidence, correct)
    low = rows.column("low_confidence").to_numpy(zero_copy_only=False).astype(bool)
    tally.review_rows = int(low.sum())
    tally.kept_correct = int((correct & ~low).sum())
    mistakes = np.flatnonzero(~correct)
    order = mistakes[np.argsort(-confidence[mistakes], kind="stable")][:MISTAKES_KEPT]
    picked = rows.take(pa.array(order, pa.int64())).select([IMAGE_URI, LABEL, "predicted_label"]).to_pylist()
    tally.mistakes = [{**row, "confidence": float(confidence[i])} for row, i in zip(picked, order)]


def _tally_drift(tally: Tally, scored: pa.Table) -> None:
    """The drift signals of the rows that were scored (no error), whether labelled or not."""
    if scored.num_rows == 0:
        return
    flat = scored.column("probabilities").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    probabilities = flat.reshape(scored.num_rows, tally.classes)
    tally.predicted_counts = np.bincount(probabilities.argmax(axis=1), minlength=tally.classes).astype(np.int64)
    tally.confidence_counts = confidence_histogram(probabilities.max(axis=1))
    low = pc.fill_null(scored.column("low_confidence"), False)
    tally.scored_review_rows = int(pc.sum(low).as_py() or 0)


def _review_sample(low: pa.Table) -> list[dict[str, Any]]:
    """The least confident rows sent to review, labelled or not: what a reviewer sees first."""
    confidence = low.column("confidence").to_numpy(zero_copy_only=False).astype(np.float64)
    order = np.argsort(confidence, kind="stable")[:REVIEW_SAMPLE_KEPT]
    picked = low.take(pa.array(order, pa.int64())).select([IMAGE_URI, LABEL, "predicted_label"]).to_pylist()
    return [{**row, "confidence": float(confidence[i])} for row, i in zip(picked, order)]


def _dense(cells: list[list[int]], classes: int) -> np.ndarray:
    confusion = np.zeros((classes, classes), dtype=np.int64)
    for i, j, count in cells:
        confusion[i, j] = count
    return confusion


def _most_confident(mistakes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(mistakes, key=lambda row: -row["confidence"])[:MISTAKES_KEPT]


def _least_confident(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: row["confidence"])[:REVIEW_SAMPLE_KEPT]
