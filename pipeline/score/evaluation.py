"""Evaluation of a scoring run from its files' tallies: summary.json, per-class table, plot, HTML report."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline import reports, storage
from pipeline.records import EvaluationSummary, ModelCard, ReviewFigures
from pipeline.score.predictions import EVALUATION_DIR, read_tally, write_summary
from pipeline.score.tally import Tally

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluated:
    """What the run manifest takes from evaluation: row counts, and the headline when labelled."""

    rows: int
    error_rows: int
    headline: dict[str, Any] | None = None


def evaluate_output(
    output_uri: str, card: ModelCard, catalog_uri: str, run_id: str, threshold: float, tally: Tally | None = None
) -> Evaluated:
    """Evaluates the output from the sum of its files' tallies; when labels exist, writes `evaluation/`.

    No prediction is read back. The scoring driver passes the tally it summed from the workers'
    reports and the earlier files' footers; without one, every file's footer is read. Rows with
    an error and rows whose label the model does not know are counted and reported, never
    silently mixed into the metrics.
    """
    class_names = list(card.class_names)
    if tally is None:
        tally = read_tally(output_uri, class_names)
    if tally.evaluated_rows == 0 and not tally.unknown_labels:
        return Evaluated(tally.rows, tally.error_rows)
    if tally.unknown_labels:
        logger.warning("labels the model does not know (not evaluated): %s", tally.unknown_labels)
    kept = tally.evaluated_rows - tally.review_rows
    summary = EvaluationSummary(
        model_name=card.name,
        model_version=card.version,
        catalog=catalog_uri,
        run_id=run_id,
        rows=tally.rows,
        error_rows=tally.error_rows,
        evaluated_rows=tally.evaluated_rows,
        unknown_labels=dict(tally.unknown_labels),
        review=ReviewFigures(
            threshold=threshold,
            rows=tally.review_rows,
            accuracy_on_rest=tally.kept_correct / kept if kept else None,
        ),
        metrics=tally.metrics(class_names),
    )
    write_summary(output_uri, summary)
    _write_report(storage.join(output_uri, EVALUATION_DIR), summary, tally.mistakes)
    return Evaluated(summary.rows, summary.error_rows, summary.headline())


def _write_report(directory: str, summary: EvaluationSummary, mistakes: list[dict[str, Any]]) -> None:
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
        reports.report_html(summary.to_dict(), mistakes, "confusion_matrix.png"),
    )
