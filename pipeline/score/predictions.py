"""The layout of a scoring output, owned here: every reader and writer of it imports this module.

<output>/run.json                   the run manifest, written first ("running") and last
<output>/predictions/part-*.parquet prediction rows, each file written by a worker, atomically,
                                    with the tally of its rows in its footer
<output>/evaluation/                summary.json, per_class.csv, confusion_matrix.png, report.html
<output>/drift/                     drift.png and report.html (pipeline/score/drift.py), every run
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.records import EvaluationSummary, RunManifest
from pipeline.schema import IMAGE_ID, PREDICTION_COLUMNS, class_names_from_schema
from pipeline.score.tally import FOOTER_KEY, Tally, tally_table

RUN_FILE = "run.json"
PREDICTIONS_DIR = "predictions"
EVALUATION_DIR = "evaluation"
DRIFT_DIR = "drift"
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


def prediction_file_name(run_id: str, image_ids: pa.ChunkedArray | pa.Array) -> str:
    """`part-<run_id>-<digest>.parquet`, the digest taken over the file's image ids.

    The name follows from the rows, so a write task that Ray retries (its worker died after the
    PUT) writes the same file again instead of a second copy of its rows.
    """
    digest = hashlib.blake2b(digest_size=8)
    for image_id in image_ids.to_pylist():
        encoded = str(image_id).encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(4, "little") + encoded)
    return f"part-{run_id}-{digest.hexdigest()}.parquet"


def write_prediction_file(directory_uri: str, table: pa.Table, schema: pa.Schema, run_id: str) -> WrittenFile:
    """Writes one prediction file, its tally committed in the same footer, atomically.

    Runs on workers (`write_batch`), once per scoring block: the driver never holds prediction rows.
    """
    table = table.select(schema.names).cast(schema)
    tally = tally_table(table, class_names_from_schema(schema)).to_json()
    table = table.replace_schema_metadata({**(schema.metadata or {}), FOOTER_KEY: tally})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    name = prediction_file_name(run_id, table.column(IMAGE_ID))
    storage.write_bytes(storage.join(directory_uri, name), buffer.getvalue())
    return WrittenFile(name, table.num_rows, tally)


@dataclass(frozen=True)
class WrittenFile:
    """What a worker tells the driver of a file it wrote: a few kilobytes whatever the rows."""

    name: str
    rows: int
    tally: bytes


WRITTEN_SCHEMA = pa.schema([("name", pa.string()), ("rows", pa.int64()), ("tally", pa.binary())])


def write_batch(table: pa.Table, directory_uri: str, schema: pa.Schema, run_id: str) -> pa.Table:
    """A Ray Data map function: writes the block as one file; returns its `WrittenFile` row."""
    if table.num_rows == 0:
        return WRITTEN_SCHEMA.empty_table()
    written = write_prediction_file(directory_uri, table, schema, run_id)
    return pa.Table.from_pylist([dataclasses.asdict(written)], schema=WRITTEN_SCHEMA)


def prediction_files(output_uri: str) -> list[str]:
    return [uri for uri in storage.listdir(storage.join(output_uri, PREDICTIONS_DIR)) if uri.endswith(".parquet")]


def read_tally(output_uri: str, class_names: list[str], skip: frozenset[str] = frozenset()) -> Tally:
    """The sum of the prediction files' tallies, read from the Parquet footers only, except the
    files named in `skip` (those this run wrote, whose tallies the driver already summed). A file
    without a tally (written before tallies existed) is tallied from its rows, one file at a time."""
    total = Tally(len(class_names))
    for uri in prediction_files(output_uri):
        if uri.rsplit("/", 1)[-1] in skip:
            continue
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
