"""The review queue as work for people: a Label Studio task file and a CSV, best images to label first.

A scoring run flags rows whose calibrated confidence is under the card's review threshold
(`low_confidence`). This module reads only those rows (and only the columns a reviewer needs), orders
them by how much a label would help, and writes:

<output>/tasks.json        Label Studio's JSON task import: {"data": {"image": URL, ...}, "predictions": [...]}
<output>/label_config.xml  the labelling interface those tasks expect (an image and one choice per class)
<output>/review.csv        the same queue for a spreadsheet, with an empty `label` column to fill in

Ordering. The default is **margin**: top-1 minus top-2 calibrated probability, smallest first. A small
margin means the model hesitates between two classes, which is exactly what one human answer
settles, and it is a standard uncertainty-sampling criterion that does not depend on how many classes
share the rest of the probability. `confidence` (lowest top-1 first) is offered too; with few classes
the two orders are close. Ties are broken by image_id so an export is reproducible.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.schema import ERROR, IMAGE_ID, IMAGE_URI, class_names_from_schema
from pipeline.score.predictions import PREDICTIONS_DIR

logger = logging.getLogger(__name__)

ORDERS = ("margin", "confidence")
# S3 refuses a pre-signed URL (SigV4) valid for longer than seven days.
MAX_EXPIRES_S = 7 * 24 * 3600
TASKS_FILE = "tasks.json"
CSV_FILE = "review.csv"
LABEL_CONFIG_FILE = "label_config.xml"
# Names in the labelling interface; an import of Label Studio's export reads them back.
IMAGE_FIELD = "image"
CHOICES_NAME = "label"
QUEUE_COLUMNS = [IMAGE_ID, IMAGE_URI, "predicted_label", "confidence", "probabilities", "model_version", ERROR]
CSV_COLUMNS = [IMAGE_ID, IMAGE_URI, "predicted_label", "confidence", "margin", "second_label", "label"]


@dataclass(frozen=True)
class ReviewQueue:
    """The low-confidence rows of one scoring output, in review order."""

    rows: pd.DataFrame  # QUEUE_COLUMNS + margin, second_label, rank
    class_names: list[str]
    order: str


def check_export_args(order: str, expires_s: int) -> None:
    """Raises:
    ValueError: An unknown order or an expiry S3 would refuse, naming the allowed values."""
    if order not in ORDERS:
        raise ValueError(f"--order {order!r} is not one of {', '.join(ORDERS)}")
    if not 1 <= expires_s <= MAX_EXPIRES_S:
        raise ValueError(f"--expires {expires_s} must be 1..{MAX_EXPIRES_S} seconds (S3 pre-signs for 7 days at most)")


def prediction_uris(predictions_uri: str) -> list[str]:
    """The Parquet files of a scoring output (its `predictions/` folder) or of that folder itself.

    Raises:
        ValueError: No prediction files there.
    """
    try:
        folder = storage.join(predictions_uri, PREDICTIONS_DIR)
        if not storage.exists(folder):
            folder = predictions_uri
        files = [uri for uri in storage.listdir(folder) if uri.endswith(".parquet")]
    except (OSError, PermissionError) as error:
        raise ValueError(
            f"--predictions {predictions_uri!r} cannot be read ({type(error).__name__}: {error})"
        ) from error
    if not files:
        raise ValueError(
            f"--predictions {predictions_uri!r} holds no prediction files; pass a jobs.score --output "
            "folder or its predictions/ folder"
        )
    return files


def read_queue(predictions_uri: str, order: str = "margin") -> ReviewQueue:
    """Reads the review queue: `low_confidence` rows without an error, a few columns, ordered.

    Raises:
        ValueError: No prediction files, or files that are not this product's predictions.
    """
    tables, class_names = [], None
    for uri in prediction_uris(predictions_uri):
        fs, path = storage.filesystem(uri)
        try:
            names = class_names_from_schema(pq.read_schema(path, filesystem=fs))
            table = pq.read_table(path, filesystem=fs, columns=QUEUE_COLUMNS, filters=[("low_confidence", "=", True)])
        except (KeyError, pa.ArrowInvalid) as error:
            raise ValueError(
                f"{uri!r} is not a predictions file of jobs.score ({type(error).__name__}: {error})"
            ) from error
        if class_names is not None and names != class_names:
            raise ValueError(f"{uri!r} has classes {names}, other files {class_names}: one model's run at a time")
        class_names = names
        tables.append(table)
    assert class_names is not None  # prediction_uris returned at least one file
    frame = pa.concat_tables(tables).to_pandas()
    frame = frame[frame[ERROR].isna()].drop(columns=[ERROR])
    return ReviewQueue(rank(frame, class_names, order), class_names, order)


def rank(frame: pd.DataFrame, class_names: list[str], order: str) -> pd.DataFrame:
    """Adds margin and the runner-up class, and sorts by `order` (smallest first), then image_id."""
    frame = frame.reset_index(drop=True)
    width = max(2, len(class_names))
    probabilities = np.zeros((len(frame), width))
    if len(frame):
        stacked = np.stack(frame["probabilities"].to_numpy()).astype(np.float64)
        probabilities[:, : stacked.shape[1]] = stacked
    top_two = np.argsort(-probabilities, axis=1, kind="stable")[:, :2]
    rows = np.arange(len(frame))
    frame["margin"] = probabilities[rows, top_two[:, 0]] - probabilities[rows, top_two[:, 1]]
    names = [*class_names, ""]
    frame["second_label"] = [names[min(index, len(class_names))] for index in top_two[:, 1]]
    key = "margin" if order == "margin" else "confidence"
    frame = frame.sort_values([key, IMAGE_ID], kind="stable").reset_index(drop=True)
    frame["rank"] = np.arange(1, len(frame) + 1)
    return frame


def image_url(image_uri: str, expires_s: int) -> str:
    """A URL the labelling tool can open: pre-signed for S3, the local path otherwise."""
    if storage.is_remote(image_uri):
        return storage.presigned_url(image_uri, expires_s)
    return storage.normalize(image_uri)


def label_config(class_names: list[str]) -> str:
    """Label Studio's labelling interface for these tasks: the image and one single choice per class."""
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in class_names)
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_FIELD}" value="${IMAGE_FIELD}"/>\n'
        f'  <Choices name="{CHOICES_NAME}" toName="{IMAGE_FIELD}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def label_studio_tasks(queue: ReviewQueue, expires_s: int) -> list[dict[str, object]]:
    """Tasks in Label Studio's JSON import format, the model's answer as a pre-annotation.

    `image_id` and `image_uri` ride along in `data`, so Label Studio's export of the finished tasks
    names each image by its catalog identity rather than by a URL that expires.
    """
    tasks: list[dict[str, object]] = []
    for row in queue.rows.itertuples(index=False):
        result = {
            "from_name": CHOICES_NAME,
            "to_name": IMAGE_FIELD,
            "type": "choices",
            "value": {"choices": [row.predicted_label]},
        }
        tasks.append(
            {
                "data": {
                    IMAGE_FIELD: image_url(row.image_uri, expires_s),
                    IMAGE_ID: row.image_id,
                    IMAGE_URI: row.image_uri,
                    "rank": int(row.rank),
                    "confidence": round(float(row.confidence), 4),
                    "margin": round(float(row.margin), 4),
                },
                "predictions": [
                    {
                        "model_version": str(row.model_version),
                        "score": round(float(row.confidence), 4),
                        "result": [result],
                    }
                ],
            }
        )
    return tasks


def review_csv(queue: ReviewQueue) -> str:
    """The queue as CSV, in review order, with an empty `label` column for the reviewer."""
    frame = queue.rows.assign(label="")
    frame["confidence"] = frame["confidence"].astype(float).round(4)
    frame["margin"] = frame["margin"].astype(float).round(4)
    buffer = io.StringIO()
    frame[CSV_COLUMNS].to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue()


def export_review(predictions_uri: str, output_uri: str, expires_s: int, order: str) -> ReviewQueue:
    """Writes tasks.json, label_config.xml and review.csv under `output_uri` (and nowhere else).

    Raises:
        ValueError: Bad order or expiry, unreadable predictions, or an output that cannot be written;
            all checked before anything is written.
    """
    check_export_args(order, expires_s)
    queue = read_queue(predictions_uri, order)
    storage.check_writable(output_uri)
    tasks = label_studio_tasks(queue, expires_s)
    storage.write_text(storage.join(output_uri, TASKS_FILE), json.dumps(tasks, indent=2) + "\n")
    storage.write_text(storage.join(output_uri, LABEL_CONFIG_FILE), label_config(queue.class_names))
    storage.write_text(storage.join(output_uri, CSV_FILE), review_csv(queue))
    logger.info("review queue: %d images ordered by %s → %s", len(queue.rows), order, output_uri)
    return queue
