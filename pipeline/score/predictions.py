"""The layout of a scoring output, owned here: every reader and writer of it imports this module.

<output>/run.json                   the run manifest, written first ("running") and last
<output>/predictions/part-*.parquet prediction rows, each file made visible atomically
<output>/evaluation/                summary.json, per_class.csv, confusion_matrix.png, report.html
"""

from __future__ import annotations

import io
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.records import EvaluationSummary, RunManifest
from pipeline.schema import PREDICTION_COLUMNS, class_names_from_schema
from pipeline.score.tally import FOOTER_KEY, Tally, tally_table

RUN_FILE = "run.json"
PREDICTIONS_DIR = "predictions"
EVALUATION_DIR = "evaluation"
SUMMARY_FILE = "summary.json"


def read_run(output_uri: str) -> RunManifest | None:
    """The output's run.json; None when no run has started there."""
    uri = storage.join(output_uri, RUN_FILE)
    return RunManifest.from_dict(storage.read_json(uri)) if storage.exists(uri) else None


def write_run(output_uri: str, manifest: RunManifest) -> None:
    storage.write_json(storage.join(output_uri, RUN_FILE), manifest.to_dict())


def read_summary(output_uri: str) -> EvaluationSummary | None:
    """The evaluation summary of a labelled run; None for an unlabelled one."""
    uri = storage.join(output_uri, EVALUATION_DIR, SUMMARY_FILE)
    return EvaluationSummary.from_dict(storage.read_json(uri)) if storage.exists(uri) else None


def write_summary(output_uri: str, summary: EvaluationSummary) -> None:
    storage.write_json(storage.join(output_uri, EVALUATION_DIR, SUMMARY_FILE), summary.to_dict())


class PredictionWriter:
    """Writes prediction tables in files of about `rows_per_file` rows, or of what arrived in
    `seconds_per_file` seconds if that is less, each appearing atomically. The time bound caps the
    work a crash loses (a rerun resumes from the files written) on slow, large runs."""

    def __init__(
        self,
        directory_uri: str,
        schema: pa.Schema,
        rows_per_file: int,
        run_id: str,
        seconds_per_file: float = float("inf"),
    ):
        self.directory_uri, self.schema, self.rows_per_file = directory_uri, schema, rows_per_file
        self.seconds_per_file = seconds_per_file
        self.prefix = f"part-{run_id}"
        self.class_names = class_names_from_schema(schema)
        self.pending: list[pa.Table] = []
        self.pending_rows = self.files = self.rows = 0
        self.first_pending = 0.0  # when the oldest row not yet written arrived

    def add(self, table: pa.Table) -> None:
        if not self.pending_rows:
            self.first_pending = time.monotonic()
        self.pending.append(table.select(self.schema.names).cast(self.schema))
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.rows_per_file or time.monotonic() - self.first_pending >= self.seconds_per_file:
            self.flush()

    def flush(self) -> None:
        if not self.pending_rows:
            return
        table = pa.concat_tables(self.pending)
        tally = tally_table(table, self.class_names)  # committed with the rows, in the same footer
        table = table.replace_schema_metadata({**(self.schema.metadata or {}), FOOTER_KEY: tally.to_json()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        storage.write_bytes(
            storage.join(self.directory_uri, f"{self.prefix}-{self.files:05d}.parquet"), buffer.getvalue()
        )
        self.files += 1
        self.rows += table.num_rows
        self.pending, self.pending_rows = [], 0


def prediction_files(output_uri: str) -> list[str]:
    return [uri for uri in storage.listdir(storage.join(output_uri, PREDICTIONS_DIR)) if uri.endswith(".parquet")]


def read_tally(output_uri: str, class_names: list[str]) -> Tally:
    """The sum of every prediction file's tally, read from the Parquet footers only. A file
    without one (written before tallies existed) is tallied from its rows, one file at a time."""
    total = Tally(len(class_names))
    for uri in prediction_files(output_uri):
        fs, path = storage.filesystem(uri)
        footer = pq.read_metadata(path, filesystem=fs).metadata or {}
        if FOOTER_KEY in footer:
            total.add(Tally.from_json(footer[FOOTER_KEY]))
        else:
            total.add(tally_table(pq.read_table(path, filesystem=fs), class_names))
    return total


def read_predictions(output_uri: str, columns: list[str] | None = None) -> pd.DataFrame:
    tables = []
    for uri in prediction_files(output_uri):
        fs, path = storage.filesystem(uri)
        tables.append(pq.read_table(path, filesystem=fs, columns=columns))
    if not tables:
        return pd.DataFrame(columns=columns or list(PREDICTION_COLUMNS))
    return pa.concat_tables(tables, promote_options="default").to_pandas()
