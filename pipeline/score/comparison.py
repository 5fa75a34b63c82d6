"""The page comparing scoring runs of several models on one held-out catalog.

It is built from what each run already wrote (run.json, evaluation/summary.json and its PNGs),
never from prediction rows, and embeds those pictures so the page stands alone when its folder is
copied or served from S3; each model's own report is linked relative to the page where they share
a filesystem.
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline import intervals, reports, storage
from pipeline.schema import ERROR, IMAGE_ID, LABEL
from pipeline.score.predictions import EVALUATION_DIR, RUN_FILE, read_predictions, read_run, read_summary

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
FIGURE_FILES = {"confusion": "confusion_matrix.png", "curves": "curves.png"}


def write_comparison_page(output_uris: list[str], page_uri: str, pairs: list[PairedComparison] | None = None) -> str:
    """Writes the comparison page of the scoring outputs to `page_uri` and returns its URI.

    Args:
        pairs: The paired comparisons of the outputs (`compare_pairs`), when the caller already
            made them; made here otherwise.

    Raises:
        ValueError: An output has no run.json (not a scoring output, or its run never started).
    """
    page_uri = storage.normalize(page_uri)
    compared = []
    catalogs = []
    for output in output_uris:
        run = read_run(output)
        if run is None:
            raise ValueError(f"{output!r} has no {RUN_FILE}: not a scoring output, or its run never started")
        catalogs.append(run.catalog)
        summary = read_summary(output)
        evaluation = storage.join(output, EVALUATION_DIR)
        report = storage.join(evaluation, REPORT_FILE)
        figures = {}
        for key, name in FIGURE_FILES.items():
            uri = storage.join(evaluation, name)
            if storage.exists(uri):
                figures[key] = reports.png_data_uri(storage.read_bytes(uri))
        compared.append(
            reports.ComparedRun(
                name=run.model.name,
                status=run.status,
                summary=summary.to_dict() if summary else None,
                report_href=_href(page_uri, report) if storage.exists(report) else None,
                figures=figures,
            )
        )
    catalog = catalogs[0] if len(set(catalogs)) == 1 else ", ".join(sorted(set(catalogs)))
    if len(set(catalogs)) > 1:
        logger.warning("the compared runs scored different catalogs: %s", catalog)
    if pairs is None:
        pairs = compare_pairs(output_uris)
    differences = [reports.ComparedPair(pair.first, pair.second, pair.figures, pair.reason) for pair in pairs]
    storage.write_text(page_uri, reports.comparison_html(compared, catalog, differences))
    return page_uri


def _href(page_uri: str, target_uri: str) -> str:
    """A link from the page to a file: relative when both are on the same filesystem (so the
    pair can be moved together), the target's full URI otherwise."""
    page_remote, target_remote = storage.is_remote(page_uri), storage.is_remote(target_uri)
    if not page_remote and not target_remote:
        return os.path.relpath(target_uri, os.path.dirname(page_uri))
    if page_remote and target_remote:
        page_bucket, _, page_key = page_uri.partition("://")[2].partition("/")
        target_bucket, _, target_key = target_uri.partition("://")[2].partition("/")
        if page_uri.split("://")[0] == target_uri.split("://")[0] and page_bucket == target_bucket:
            return posixpath.relpath("/" + target_key, posixpath.dirname("/" + page_key))
    return target_uri


@dataclass(frozen=True)
class PairedComparison:
    """Model A minus model B on the images both scored: `figures` from
    `pipeline.intervals.paired_difference`, or None and the reason there is no comparison."""

    first: str
    second: str
    figures: dict[str, Any] | None
    reason: str | None = None


def compare_pairs(output_uris: list[str]) -> list[PairedComparison]:
    """A paired bootstrap of the accuracy and macro-F1 difference of every pair of scoring runs.

    The images are paired by image_id: only rows that both runs scored without error and whose
    label both models know take part. Only three columns of the prediction files are read (the
    tallies in the footers cannot pair images), so memory grows with the row count, not the
    probabilities.
    """
    runs = []
    for output in output_uris:
        run = read_run(output)
        summary = read_summary(output)
        if run is None:
            raise ValueError(f"{output!r} has no {RUN_FILE}: not a scoring output, or its run never started")
        runs.append((run.model.name, output, list(summary.metrics["labels"]) if summary else None))
    pairs = []
    for i, (first, first_output, first_labels) in enumerate(runs):
        for second, second_output, second_labels in runs[i + 1 :]:
            if first_labels is None or second_labels is None:
                pairs.append(PairedComparison(first, second, None, "a run has no evaluation (unlabelled catalog)"))
            elif first_labels != second_labels:
                pairs.append(PairedComparison(first, second, None, "the models' classes differ"))
            else:
                pairs.append(_compare(first, first_output, second, second_output, first_labels))
    return pairs


def _compare(first: str, first_output: str, second: str, second_output: str, labels: list[str]) -> PairedComparison:
    joined = _scored(first_output, labels).merge(_scored(second_output, labels), on=[IMAGE_ID, LABEL], how="inner")
    if joined.empty:
        return PairedComparison(first, second, None, "the runs share no evaluated image")
    truth = joined[LABEL].map({name: index for index, name in enumerate(labels)}).to_numpy()
    figures = intervals.paired_difference(
        truth, joined["predicted_index_x"].to_numpy(), joined["predicted_index_y"].to_numpy(), len(labels)
    )
    return PairedComparison(first, second, figures)


def _scored(output_uri: str, labels: list[str]) -> pd.DataFrame:
    """The run's evaluated rows: image_id, label and predicted index, one row per image."""
    rows = read_predictions(output_uri, columns=[IMAGE_ID, LABEL, "predicted_index", ERROR])
    kept = rows[rows[ERROR].isna() & rows[LABEL].isin(labels) & rows["predicted_index"].notna()]
    # An image with more than one row counts once, so the pairing stays one image to one image.
    return kept.drop_duplicates(IMAGE_ID, keep="last")[[IMAGE_ID, LABEL, "predicted_index"]].astype(
        {"predicted_index": "int64"}
    )
