"""Evaluation of a scoring run's predictions: summary.json, per-class table, plot, HTML report."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline import reports, storage
from pipeline.metrics import summarize
from pipeline.records import EvaluationSummary, ModelCard, ReviewFigures
from pipeline.schema import ERROR, IMAGE_URI, LABEL
from pipeline.score.predictions import EVALUATION_DIR, read_predictions, write_summary

logger = logging.getLogger(__name__)

EVALUATION_COLUMNS = [
    IMAGE_URI,
    LABEL,
    "predicted_label",
    "predicted_index",
    "confidence",
    "probabilities",
    "low_confidence",
    ERROR,
]


@dataclass(frozen=True)
class Evaluated:
    """What the run manifest takes from evaluation: row counts, and the headline when labelled."""

    rows: int
    error_rows: int
    headline: dict[str, Any] | None = None


def evaluate_output(
    output_uri: str, card: ModelCard, catalog_uri: str, run_id: str, threshold: float, mistakes_shown: int = 20
) -> Evaluated:
    """Reads back every prediction of the output and, when labels exist, writes `evaluation/`.

    Rows with an error and rows whose label the model does not know are counted and reported,
    never silently mixed into the metrics.
    """
    frame = read_predictions(output_uri, EVALUATION_COLUMNS)
    class_names = list(card.class_names)
    failed = frame[ERROR].notna()
    labelled = frame[LABEL].notna() & ~failed
    if not labelled.any():
        return Evaluated(int(len(frame)), int(failed.sum()))
    known = labelled & frame[LABEL].isin(class_names)
    unknown = frame.loc[labelled & ~known, LABEL].value_counts().to_dict()
    if unknown:
        logger.warning("labels the model does not know (not evaluated): %s", unknown)
    rows = frame[known]
    true_indices = np.array([class_names.index(label) for label in rows[LABEL]], dtype=int)
    probabilities = np.stack(rows["probabilities"].to_numpy()) if len(rows) else np.zeros((0, len(class_names)))
    metrics = summarize(true_indices, probabilities, class_names)
    correct = rows["predicted_label"].to_numpy() == rows[LABEL].to_numpy()
    kept = ~rows["low_confidence"].to_numpy(dtype=bool)
    summary = EvaluationSummary(
        model_name=card.name,
        model_version=card.version,
        catalog=catalog_uri,
        run_id=run_id,
        rows=int(len(frame)),
        error_rows=int(failed.sum()),
        evaluated_rows=int(len(rows)),
        unknown_labels={str(k): int(v) for k, v in unknown.items()},
        review=ReviewFigures(
            threshold=threshold,
            rows=int((~kept).sum()),
            accuracy_on_rest=float(correct[kept].mean()) if kept.any() else None,
        ),
        metrics=metrics,
    )
    write_summary(output_uri, summary)
    mistakes = rows[~correct].sort_values("confidence", ascending=False).head(mistakes_shown)
    _write_report(storage.join(output_uri, EVALUATION_DIR), summary, mistakes)
    return Evaluated(summary.rows, summary.error_rows, summary.headline())


def _write_report(directory: str, summary: EvaluationSummary, mistakes: pd.DataFrame) -> None:
    """per_class.csv, the confusion matrix picture and report.html beside summary.json."""
    metrics = summary.metrics
    buffer = io.StringIO()
    pd.DataFrame(metrics["per_class"]).to_csv(buffer, index=False)
    storage.write_text(storage.join(directory, "per_class.csv"), buffer.getvalue())
    class_names = list(metrics["labels"])
    title = f"{summary.model_name} ({summary.model_version})"
    storage.write_bytes(
        storage.join(directory, "confusion_matrix.png"),
        reports.confusion_matrix_png(metrics["confusion_matrix"], class_names, title),
    )
    storage.write_text(
        storage.join(directory, "report.html"),
        reports.report_html(summary.to_dict(), mistakes.to_dict("records"), "confusion_matrix.png"),
    )
