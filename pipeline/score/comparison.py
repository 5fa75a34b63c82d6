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

from pipeline import reports, storage
from pipeline.score.predictions import EVALUATION_DIR, RUN_FILE, read_run, read_summary

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
FIGURE_FILES = {"confusion": "confusion_matrix.png", "curves": "curves.png"}


def write_comparison_page(output_uris: list[str], page_uri: str) -> str:
    """Writes the comparison page of the scoring outputs to `page_uri` and returns its URI.

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
    storage.write_text(page_uri, reports.comparison_html(compared, catalog))
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
