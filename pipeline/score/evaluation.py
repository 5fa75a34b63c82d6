"""Evaluation of a scoring run from its files' tallies: summary.json, per-class table, plot, HTML report."""

from __future__ import annotations

import dataclasses
import io
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline import reports, storage
from pipeline.images import fetch_all
from pipeline.records import DriftReport, EvaluationSummary, ModelCard, ReviewFigures
from pipeline.score.predictions import EVALUATION_DIR, read_run, read_tally, write_summary
from pipeline.score.tally import Tally

HISTORY_FILE = "history.json"  # beside the model card in a model artifact (pipeline/artifacts.py)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluated:
    """What the run manifest takes from evaluation: row counts, and the headline when labelled."""

    rows: int
    error_rows: int
    headline: dict[str, Any] | None = None


def evaluate_output(
    output_uri: str,
    card: ModelCard,
    catalog_uri: str,
    run_id: str,
    threshold: float,
    tally: Tally | None = None,
    drift: DriftReport | None = None,
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
    _write_report(output_uri, summary, tally, card, drift)
    return Evaluated(summary.rows, summary.error_rows, summary.headline())


def _write_report(
    output_uri: str, summary: EvaluationSummary, tally: Tally, card: ModelCard, drift: DriftReport | None
) -> None:
    """per_class.csv, the confusion matrix, reliability diagram and training curves as PNGs, and
    report.html beside summary.json.

    The report reads only the images it shows (at most the kept mistakes and review sample), and
    embeds them as thumbnails; an image it cannot read becomes a placeholder that says why.
    """
    directory = storage.join(output_uri, EVALUATION_DIR)
    metrics = summary.metrics
    buffer = io.StringIO()
    pd.DataFrame(metrics["per_class"]).to_csv(buffer, index=False)
    storage.write_text(storage.join(directory, "per_class.csv"), buffer.getvalue())
    class_names = list(metrics["labels"])
    title = f"{summary.model_name} ({summary.model_version})"
    figures = {"confusion": "confusion_matrix.png", "reliability": "reliability.png"}
    storage.write_bytes(
        storage.join(directory, figures["confusion"]),
        reports.confusion_matrix_png(metrics["confusion_matrix"], class_names, title),
    )
    series = reliability_series(tally, card)
    storage.write_bytes(storage.join(directory, figures["reliability"]), reports.reliability_png(series, title))
    curves = _training_curves(output_uri, f"{summary.model_name}: training curves")
    if curves is not None:
        storage.write_bytes(storage.join(directory, "curves.png"), curves)
        figures["curves"] = "curves.png"
    calibration = summary_calibration(card)
    if drift is not None:  # drawn by the drift report beside evaluation/ (pipeline/score/drift.py)
        figures["drift"] = "../drift/drift.png"
    storage.write_text(
        storage.join(directory, "report.html"),
        reports.report_html(
            summary.to_dict(),
            pictures(tally.mistakes),
            pictures(tally.review_sample),
            figures,
            calibration,
            [name for name, _ in series],
            drift.status if drift else None,
        ),
    )


def reliability_series(tally: Tally, card: ModelCard) -> list[tuple[str, dict[str, Any]]]:
    """This catalog's bins as scored, then, where training recorded both, its test split's bins
    before and after temperature scaling: the scoring rows carry calibrated confidences only."""
    series: list[tuple[str, dict[str, Any]]] = [
        (
            "this catalog, as scored",
            {"count": tally.bin_count, "confidence_sum": tally.bin_confidence, "correct": tally.bin_correct},
        )
    ]
    calibration = card.calibration
    if calibration and calibration.test_reliability_before and calibration.test_reliability_after:
        series.append(("training's test split, before calibration", calibration.test_reliability_before))
        series.append(("training's test split, after calibration", calibration.test_reliability_after))
    return series


def summary_calibration(card: ModelCard) -> dict[str, Any] | None:
    """What training recorded of calibration (temperature, ECE before and after), if it did."""
    if card.calibration is None:
        return None
    figures = dataclasses.asdict(card.calibration)
    shown = {key: value for key, value in figures.items() if not key.startswith("test_reliability")}
    return {**shown, "warnings": list(card.warnings)}


def pictures(rows: list[dict[str, Any]]) -> list[reports.Picture]:
    """Thumbnails of some prediction rows' images, fetched together; unreadable ones are placeholders."""
    fetched = fetch_all([str(row.get("image_uri") or "") for row in rows])
    shown = []
    for row, data in zip(rows, fetched):
        source, problem = reports.thumbnail(data)
        shown.append(
            reports.Picture(
                image_uri=str(row.get("image_uri") or ""),
                label=row.get("label"),
                predicted_label=row.get("predicted_label"),
                confidence=float(row["confidence"]),
                source=source,
                problem=problem,
            )
        )
    return shown


def _training_curves(output_uri: str, title: str) -> bytes | None:
    """The curves of the per-epoch history training wrote beside the model this run scored with,
    found through run.json's model URI; None (the report says there are none) when it cannot be
    read or drawn."""
    try:
        run = read_run(output_uri)
        if run is None:
            return None
        history = storage.read_json(storage.join(run.model.uri, HISTORY_FILE))
        return reports.curves_png(history, title) if isinstance(history, list) and history else None
    except Exception as error:  # a missing or foreign artifact costs the curves, never the report
        logger.warning("no training curves for the report: %s", error)
        return None
