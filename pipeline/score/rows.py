"""Where a prediction row is born: calibrated probabilities of one batch → the Parquet rows.

Pure NumPy and Arrow (no Ray, no TensorFlow), so the rules a row follows are tested directly:
one row per input row, error rows carry their reason and no prediction, `confidence` is the top
calibrated probability and equals `top_k_scores[0]` and `probabilities[predicted_index]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.schema import ERROR, IMAGE_ID, IMAGE_URI, LABEL, RESERVED_COLUMNS, prediction_schema


@dataclass(frozen=True)
class RowContext:
    """What every row of a run shares."""

    class_names: tuple[str, ...]
    top_k: int
    low_confidence_threshold: float
    model_name: str
    model_version: str
    run_id: str


def prediction_table(
    batch: dict[str, np.ndarray], probabilities: np.ndarray, ok: np.ndarray, context: RowContext, scored_at: datetime
) -> pa.Table:
    """The prediction rows of one batch, in the prediction schema, then the manifest's passthrough
    columns.

    Args:
        batch: The decoded batch (ids, URIs, optional labels, error reasons, passthrough columns).
        probabilities: (rows, classes) calibrated probabilities; rows that failed are ignored.
        ok: Which rows decoded (the others become error rows).
    """
    count = len(batch[IMAGE_ID])
    names = np.array(context.class_names, dtype=object)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, : min(context.top_k, len(names))]
    predicted = order[:, 0]
    confidence = probabilities[np.arange(count), predicted]
    labels = batch.get(LABEL)

    def where_ok(values: Any) -> list[Any]:
        return [value if good else None for value, good in zip(values, ok)]

    columns: dict[str, Any] = {
        IMAGE_ID: [str(v) for v in batch[IMAGE_ID]],
        IMAGE_URI: [str(v) for v in batch[IMAGE_URI]],
        LABEL: [v if isinstance(v, str) else None for v in labels] if labels is not None else [None] * count,
        "predicted_label": where_ok(names[predicted]),
        "predicted_index": where_ok(int(p) for p in predicted),
        "confidence": where_ok(float(c) for c in confidence),
        "top_k_labels": where_ok(list(names[o]) for o in order),
        "top_k_scores": where_ok(probabilities[i, o].tolist() for i, o in enumerate(order)),
        "probabilities": where_ok(row.tolist() for row in probabilities),
        "low_confidence": [bool(good and c < context.low_confidence_threshold) for c, good in zip(confidence, ok)],
        ERROR: [None if good else str(error) for good, error in zip(ok, batch[ERROR])],
        "model_name": [context.model_name] * count,
        "model_version": [context.model_version] * count,
        "run_id": [context.run_id] * count,
        "scored_at": [scored_at] * count,
    }
    table = pa.Table.from_pydict(columns, schema=pa.schema(list(prediction_schema(list(context.class_names)))))
    for name in batch:
        if name not in RESERVED_COLUMNS:
            table = table.append_column(name, pa.array(list(batch[name]), from_pandas=True))
    return table
