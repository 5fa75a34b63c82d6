"""The predictions schema: fixed columns first, passthrough after, class names in the metadata."""

from __future__ import annotations

import datetime

import pyarrow as pa
import pytest

from pipeline.schema import PREDICTION_COLUMNS, class_names_from_schema, prediction_schema, to_table


def test_the_schema_holds_the_fixed_columns_then_new_passthrough_columns_only():
    passthrough = pa.schema(
        [pa.field("sku", pa.string()), pa.field("label", pa.int64()), pa.field("price", pa.float64())]
    )
    schema = prediction_schema(["b", "a"], passthrough)
    assert schema.names == [*PREDICTION_COLUMNS, "sku", "price"]
    assert schema.field("label").type == pa.string()  # a passthrough column never replaces a fixed one
    assert prediction_schema(["b", "a"]).names == list(PREDICTION_COLUMNS)


def test_class_names_travel_in_the_metadata_in_output_order():
    assert class_names_from_schema(prediction_schema(["zebra", "ant"])) == ["zebra", "ant"]


def test_a_schema_without_class_names_is_refused():
    with pytest.raises(KeyError):
        class_names_from_schema(pa.schema([pa.field("x", pa.int32())]))


def test_to_table_orders_and_types_columns_by_the_schema():
    schema = pa.schema([pa.field("confidence", pa.float32()), pa.field("image_id", pa.string())])
    table = to_table({"image_id": ["x"], "extra": [1], "confidence": [0.5]}, schema)
    assert table.schema == schema and table.to_pylist() == [{"confidence": 0.5, "image_id": "x"}]
    scored = prediction_schema(["a"])
    row = {name: [None] for name in scored.names} | {
        "image_id": ["i"],
        "image_uri": ["u"],
        "model_name": ["m"],
        "model_version": ["1"],
        "run_id": ["r"],
        "scored_at": [datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)],
    }
    assert to_table(row, scored).schema.metadata == scored.metadata
