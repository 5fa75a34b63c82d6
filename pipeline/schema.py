"""The one definition of catalog and prediction columns and the predictions' Arrow schema."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

Batch = dict[str, np.ndarray]

# Catalog rows.
IMAGE_ID = "image_id"
IMAGE_URI = "image_uri"
LABEL = "label"
CATALOG_COLUMNS = (IMAGE_ID, IMAGE_URI, LABEL)

# Columns added while decoding; never written out.
IMAGE = "image"
ERROR = "error"

PREDICTION_FIELDS: list[pa.Field] = [
    pa.field(IMAGE_ID, pa.string(), nullable=False),
    pa.field(IMAGE_URI, pa.string(), nullable=False),
    pa.field(LABEL, pa.string()),
    pa.field("predicted_label", pa.string()),
    pa.field("predicted_index", pa.int32()),
    pa.field("confidence", pa.float32()),
    pa.field("top_k_labels", pa.list_(pa.string())),
    pa.field("top_k_scores", pa.list_(pa.float32())),
    pa.field("probabilities", pa.list_(pa.float32())),
    pa.field("low_confidence", pa.bool_()),
    pa.field(ERROR, pa.string()),
    pa.field("model_name", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("scored_at", pa.timestamp("us", tz="UTC"), nullable=False),
]
PREDICTION_COLUMNS = tuple(field.name for field in PREDICTION_FIELDS)
# Names a manifest's passthrough columns may not take: they would overwrite the product's own.
RESERVED_COLUMNS = frozenset(PREDICTION_COLUMNS) | {IMAGE}
CLASS_NAMES_METADATA_KEY = b"catalog_classifier.class_names"


def prediction_schema(class_names: list[str], passthrough: pa.Schema | None = None) -> pa.Schema:
    """Predictions schema: the fixed columns, then passthrough manifest columns, with class names
    (in the model's output order) in the key-value metadata so a reader can decode `probabilities`."""
    fields = list(PREDICTION_FIELDS)
    if passthrough is not None:
        fields += [field for field in passthrough if field.name not in PREDICTION_COLUMNS]
    metadata = {CLASS_NAMES_METADATA_KEY: json.dumps(class_names).encode()}
    return pa.schema(fields, metadata=metadata)


def class_names_from_schema(schema: pa.Schema) -> list[str]:
    names: list[str] = json.loads((schema.metadata or {})[CLASS_NAMES_METADATA_KEY])
    return names


def to_table(rows: dict[str, Any], schema: pa.Schema) -> pa.Table:
    """Builds a table in exactly the predictions schema (column order and types)."""
    return pa.Table.from_pydict({name: rows[name] for name in schema.names}, schema=schema)
