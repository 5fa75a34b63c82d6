"""Where a prediction row is born (`pipeline/score/rows.py`): one row per input row, and the
row's figures agree with each other."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from pipeline.score.rows import RowContext, prediction_table

CONTEXT = RowContext(("cat", "dog", "fox"), top_k=2, low_confidence_threshold=0.6, model_name="m",
                     model_version="v1", run_id="run-1")  # fmt: skip
WHEN = datetime(2026, 12, 1, tzinfo=UTC)


def batch(**extra):
    values = {
        "image_id": np.array(["a", "b", "c", "d"], dtype=object),
        "image_uri": np.array(["/x/a.png", "/x/b.png", "/x/c.png", "/x/d.png"], dtype=object),
        "error": np.array([None, "decode_failed: truncated", None, None], dtype=object),
    }
    values.update(extra)
    return values


PROBABILITIES = np.array(
    [[0.1, 0.7, 0.2], [0.0, 0.0, 0.0], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]],
    dtype=np.float32,
)
OK = np.array([True, False, True, True])


def rows(**extra):
    return prediction_table(batch(**extra), PROBABILITIES, OK, CONTEXT, WHEN).to_pylist()


def test_one_row_per_input_row_and_an_error_row_carries_its_reason_and_no_prediction():
    table = rows()
    assert [row["image_id"] for row in table] == ["a", "b", "c", "d"]
    assert [row["image_uri"] for row in table] == ["/x/a.png", "/x/b.png", "/x/c.png", "/x/d.png"]
    failed = table[1]
    assert failed["error"] == "decode_failed: truncated"
    for column in ("predicted_label", "predicted_index", "confidence", "top_k_labels", "top_k_scores", "probabilities"):
        assert failed[column] is None, column
    assert failed["low_confidence"] is False
    assert all(row["error"] is None for row in (table[0], table[2], table[3]))


def test_confidence_top_k_and_predicted_index_agree():
    for row, probabilities in zip(rows(), PROBABILITIES):
        if row["error"]:
            continue
        index = row["predicted_index"]
        assert row["predicted_label"] == CONTEXT.class_names[index] == row["top_k_labels"][0]
        assert row["confidence"] == pytest.approx(float(probabilities.max()))
        assert row["confidence"] == row["top_k_scores"][0] == pytest.approx(row["probabilities"][index])
        assert len(row["top_k_labels"]) == len(row["top_k_scores"]) == CONTEXT.top_k
        assert row["top_k_scores"] == sorted(row["top_k_scores"], reverse=True)
    first = rows()[0]
    assert first["predicted_label"] == "dog" and first["top_k_labels"] == ["dog", "fox"]


def test_a_tie_goes_to_the_class_listed_first():
    tied = np.array([[0.4, 0.4, 0.2]] * 4, dtype=np.float32)
    table = prediction_table(batch(), tied, OK, CONTEXT, WHEN).to_pylist()
    assert table[0]["predicted_index"] == 0 and table[0]["top_k_labels"] == ["cat", "dog"]


def test_low_confidence_is_below_the_threshold_only():
    table = rows()
    assert [row["low_confidence"] for row in table] == [False, False, True, False]  # 0.7, error, 0.5, 0.6


def test_top_k_larger_than_the_classes_lists_every_class():
    wide = RowContext(CONTEXT.class_names, 10, 0.5, "m", "v1", "run-1")
    table = prediction_table(batch(), PROBABILITIES, OK, wide, WHEN).to_pylist()
    assert table[0]["top_k_labels"] == ["dog", "fox", "cat"]


def test_run_facts_labels_and_passthrough_columns_are_carried():
    labels = np.array(["dog", None, float("nan"), "fox"], dtype=object)
    table = rows(label=labels, sku=np.array(["s1", "s2", "s3", "s4"], dtype=object))
    assert [row["label"] for row in table] == ["dog", None, None, "fox"]
    assert [row["sku"] for row in table] == ["s1", "s2", "s3", "s4"]
    assert {(row["model_name"], row["model_version"], row["run_id"]) for row in table} == {("m", "v1", "run-1")}
    assert {row["scored_at"] for row in table} == {WHEN}
    assert "image" not in table[0]
    unlabelled = rows()
    assert all(row["label"] is None for row in unlabelled)
