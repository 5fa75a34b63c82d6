"""Records round-trip through their one writer and one reader, and a bad card is refused by name."""

from __future__ import annotations

import dataclasses
import json

import pytest

from models.spec import InputSpec
from pipeline.artifacts import read_card, write_card
from pipeline.records import (
    Calibration,
    EvaluationSummary,
    ModelCard,
    ModelRef,
    OnnxExport,
    Review,
    ReviewFigures,
    RunCounts,
    RunManifest,
    ViewPointer,
)
from pipeline.score.incremental import read_view, write_view
from pipeline.score.predictions import read_run, read_summary, write_run, write_summary

CARD = ModelCard(
    name="custom_cnn",
    version="abc123",
    class_names=("a", "b", "c"),
    input=InputSpec(64, resize_method="area"),
    weights_source="none (trained from scratch)",
    onnx=OnnxExport(file="model.onnx", max_abs_diff=1e-7, tolerance=1e-4, cpu_chunk=8),
    calibration=Calibration(
        temperature=1.7,
        validation_ece_before=0.1,
        validation_ece_after=0.02,
        test_reliability_before={"count": [0, 2], "confidence_sum": [0.0, 1.9], "correct": [0, 1]},
        test_reliability_after={"count": [1, 1], "confidence_sum": [0.4, 0.8], "correct": [0, 1]},
    ),
    review=Review(threshold=0.61, target_accuracy=0.99, validation_kept_share=0.8),
    details={"best_epoch": 3, "test": {"accuracy": 0.9}, "split": {"hash": "h"}},
)


def test_model_card_round_trips_through_its_writer_and_reader_with_training_details_flat(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"")
    write_card(str(tmp_path), CARD)
    on_disk = json.loads((tmp_path / "model_card.json").read_text())
    assert on_disk["best_epoch"] == 3 and on_disk["test"] == {"accuracy": 0.9}  # flat, as people read it
    assert on_disk["input"]["image_size"] == 64 and on_disk["input"]["input_pixels"] == [0, 255]
    back = read_card(str(tmp_path))
    assert back == CARD and back.details == CARD.details
    assert back.temperature == 1.7 and back.review_threshold == 0.61 and back.input.resize_method == "area"


def test_an_uncalibrated_card_scores_at_temperature_one_and_threshold_one_half():
    plain = dataclasses.replace(CARD, calibration=None, review=None)
    assert plain.temperature == 1.0 and plain.review_threshold == 0.5
    back = ModelCard.from_dict(plain.to_dict())
    assert back.calibration is None and back.review is None


@pytest.mark.parametrize("missing", ["name", "version", "class_names", "input"])
def test_a_card_without_a_required_field_is_refused_naming_it(tmp_path, missing):
    (tmp_path / "model.keras").write_bytes(b"")
    values = CARD.to_dict()
    del values[missing]
    (tmp_path / "model_card.json").write_text(json.dumps(values))
    with pytest.raises(ValueError, match=rf"lacks \['{missing}'\]; retrain"):
        read_card(str(tmp_path))


def test_run_manifest_round_trips_and_a_running_one_carries_no_figures(tmp_path):
    running = RunManifest(
        "run-1", "running", "2026-12-01T00:00:00", ModelRef("m", "custom_cnn", "v1"), "cat", "out", "onnx", 0.6, {}
    )
    write_run(str(tmp_path), running)
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk["status"] == "running" and "counts" not in on_disk and "evaluation" not in on_disk
    assert read_run(str(tmp_path)) == running
    done = dataclasses.replace(
        running,
        status="failed",
        problems=("rows out 9 != rows in 10",),
        counts=RunCounts(10, 9, 8, 1, 2, 7, 3),
        timings={"seconds": 1.5},
        evaluation={"accuracy": 0.5},
    )
    write_run(str(tmp_path), done)
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk["counts"] == {
        "in": 10,
        "out": 9,
        "scored": 8,
        "errors": 1,
        "resumed": 2,
        "scored_this_run": 7,
        "prediction_files": 3,
    }
    assert read_run(str(tmp_path)) == done
    assert read_run(str(tmp_path / "elsewhere")) is None


def test_evaluation_summary_round_trips_and_its_headline_counts_unknown_labels(tmp_path):
    summary = EvaluationSummary(
        "custom_cnn",
        "v1",
        "cat",
        "run-1",
        rows=12,
        error_rows=1,
        evaluated_rows=8,
        unknown_labels={"zebra": 2, "okapi": 1},
        review=ReviewFigures(0.6, 3, 0.8),
        metrics={
            "accuracy": 0.75,
            "accuracy_interval": [0.5, 0.9],
            "macro": {"f1": 0.7, "f1_interval": [0.4, 0.85]},
            "loss": 0.4,
        },
    )
    assert read_summary(str(tmp_path)) is None
    write_summary(str(tmp_path), summary)
    assert read_summary(str(tmp_path)) == summary
    assert summary.headline() == {
        "accuracy": 0.75,
        "accuracy_interval": [0.5, 0.9],
        "macro_f1": 0.7,
        "macro_f1_interval": [0.4, 0.85],
        "loss": 0.4,
        "evaluated_rows": 8,
        "unknown_label_rows": 3,
        "review_rows": 3,
    }


def test_view_pointer_round_trips_and_a_pointer_from_before_state_folders_reads_the_old_state_file(tmp_path):
    view = ViewPointer("v2", "custom_cnn", "s3://b/catalog", "state/r2", "r2", ("r1", "r2"), 18, 2, 16, 1, 0, "t")
    write_view(str(tmp_path), view)
    assert read_view(str(tmp_path)) == view
    assert json.load(open(tmp_path / "current" / "current.json"))["runs"] == ["r1", "r2"]  # flat JSON for people
    old = {"model_version": "v1", "runs": ["r1"], "rows": 5, "latest_run": "r1"}
    assert ViewPointer.from_dict(old).state == "current/state.parquet"
    assert read_view(str(tmp_path / "nothing")) is None
