"""The scoring job end to end on a real local Ray: rows in = rows out, schema, evaluation, reruns."""

from __future__ import annotations

import glob
import json
import logging
import os

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import score as score_job
from jobs.config import load_config
from pipeline.calibration import apply_temperature
from pipeline.schema import PREDICTION_COLUMNS, class_names_from_schema, prediction_schema
from pipeline.score.driver import prepare_scoring, score
from tests.factories import bad_image_corpus, blended_catalog, with_calibration

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CONFIG = ["resources.cpus_per_actor=0.5", "predict.batch_size=8"]
# The two pipeline shapes build_dataset chooses between: one actor fed by decode tasks, and
# several CPU actors with decoding fused into them (jobs/configs/local.yaml).
LAYOUTS = {
    "decode_tasks": [],
    "decode_in_actors": ["resources.actors=2", "predict.threads_per_actor=1"],
    "auto_actors": ["resources.actors=auto", "predict.threads_per_actor=1"],
}


def run(catalog, artifact, output, *overrides):
    config = load_config(None, CONFIG + list(overrides))
    return score(prepare_scoring(catalog, artifact, output, config))


def predictions(output):
    return pd.concat([pd.read_parquet(path) for path in sorted(glob.glob(f"{output}/predictions/*.parquet"))])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_labelled_tree_scores_every_row_with_the_schema(
    ray_local, color_catalog, color_artifact, tmp_path, layout, caplog
):
    output = str(tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="pipeline.score.driver"):
        manifest = run(color_catalog, color_artifact, output, *LAYOUTS[layout])
    shape = (
        "scoring with 1 CPU actor(s), decoding in separate tasks"
        if layout == "decode_tasks"
        else "scoring with 2 CPU actor(s), decoding in them"
    )  # auto: 2 CPUs, 1 thread per actor
    assert shape in caplog.text
    assert manifest.status == "completed"
    assert manifest.counts.rows_in == manifest.counts.rows_out == 18
    files = glob.glob(f"{output}/predictions/*.parquet")
    assert len(files) == (1 if layout == "decode_tasks" else 2)  # a file per block (one per actor), not per batch
    schema = pq.read_schema(files[0])
    expected = prediction_schema(["blue", "green", "red"])
    assert schema.names == list(PREDICTION_COLUMNS)
    assert schema.remove_metadata().equals(expected.remove_metadata())
    assert class_names_from_schema(schema) == ["blue", "green", "red"]
    frame = predictions(output)
    assert sorted(frame["image_id"]) == sorted(f"{c}/{i:04d}.png" for c in ("red", "green", "blue") for i in range(6))
    assert np.allclose([sum(p) for p in frame["probabilities"]], 1.0, atol=1e-4)
    assert all(len(labels) == 3 for labels in frame["top_k_labels"])
    assert duckdb.sql(f"select count(*) from read_parquet('{output}/predictions/*.parquet')").fetchall()[0][0] == 18
    summary = json.load(open(f"{output}/evaluation/summary.json"))
    independent = float((frame["predicted_label"] == frame["label"]).mean())
    assert summary["metrics"]["accuracy"] == pytest.approx(independent)
    assert independent > 0.9  # the colours are easy; a working model gets them
    for name in ("per_class.csv", "confusion_matrix.png", "report.html"):
        assert os.path.getsize(f"{output}/evaluation/{name}") > 0
    run_json = json.load(open(f"{output}/run.json"))
    assert run_json["status"] == "completed" and run_json["counts"]["errors"] == 0


def test_manifest_passthrough_and_unknown_labels(ray_local, color_catalog, color_artifact, tmp_path):
    rows = [
        {
            "image_uri": os.path.join(color_catalog, "red", f"{i:04d}.png"),
            "sku": f"SKU-{i}",
            "price": 1.5 * i,
            "label": "red" if i < 3 else "purple",
        }
        for i in range(6)
    ]
    manifest_path = tmp_path / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest_path)
    output = str(tmp_path / "out")
    run(str(manifest_path), color_artifact, output)
    frame = predictions(output).sort_values("sku")
    assert list(frame.columns)[-2:] == ["sku", "price"]
    assert frame["sku"].tolist() == sorted(f"SKU-{i}" for i in range(6))
    summary = json.load(open(f"{output}/evaluation/summary.json"))
    assert summary["unknown_labels"] == {"purple": 3}
    assert summary["evaluated_rows"] == 3


def test_unlabelled_folder_has_no_evaluation(ray_local, color_catalog, color_artifact, tmp_path):
    output = str(tmp_path / "out")
    manifest = run(os.path.join(color_catalog, "green"), color_artifact, output)
    assert manifest.counts.rows_out == 6 and manifest.evaluation is None
    assert not os.path.exists(f"{output}/evaluation")
    assert (predictions(output)["predicted_label"] == "green").mean() > 0.8


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_images_become_error_rows_and_the_job_exits_0(ray_local, color_artifact, tmp_path, layout):
    # Asymmetric (a red band over blue), so a rotation the decoder failed to undo would show in the
    # probabilities of this position-sensitive CNN; a uniform square looks the same either way.
    upright = Image.new("RGB", (40, 40), (40, 60, 220))
    upright.paste((220, 40, 40), (0, 0, 40, 14))
    corpus = bad_image_corpus(str(tmp_path / "corpus"), upright)
    rows = [{"image_uri": path, "label": "red"} for path in corpus.values()]
    rows.append({"image_uri": str(tmp_path / "corpus" / "does_not_exist.png"), "label": "red"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    output = str(tmp_path / "out")
    code = score_job.main(
        [
            "--catalog",
            str(tmp_path / "m.csv"),
            "--model",
            color_artifact,
            "--output",
            output,
            "--set",
            "predict.max_bad_fraction=0.6",
        ]
        + sum((["--set", o] for o in CONFIG + LAYOUTS[layout]), [])
    )
    assert code == 0
    frame = predictions(output).set_index("image_id")
    assert len(frame) == len(rows)
    errors = frame["error"].dropna().str.split(":").str[0].to_dict()
    by_kind = {os.path.basename(k).split(".")[0]: v for k, v in errors.items()}
    assert by_kind == {
        "zero_bytes": "empty",
        "truncated": "truncated",
        "random_bytes": "not_an_image",
        "text": "not_an_image",
        "bomb": "too_large",
        "does_not_exist": "missing",
    }
    good = frame[frame["error"].isna()]
    assert good["predicted_label"].notna().all()
    assert frame.loc[corpus["exif_rotated"], "predicted_label"] == frame.loc[corpus["upright"], "predicted_label"]
    np.testing.assert_allclose(
        frame.loc[corpus["exif_rotated"], "probabilities"], frame.loc[corpus["upright"], "probabilities"], atol=0.05
    )
    run_json = json.load(open(f"{output}/run.json"))
    assert run_json["counts"]["errors"] == 6 and run_json["status"] == "completed"


def test_error_budget_fails_the_run_but_keeps_predictions(ray_local, color_artifact, tmp_path):
    corpus = bad_image_corpus(str(tmp_path / "corpus"), Image.new("RGB", (40, 40), (220, 40, 40)))
    pd.DataFrame({"image_uri": list(corpus.values())}).to_csv(tmp_path / "m.csv", index=False)
    output = str(tmp_path / "out")
    code = score_job.main(
        ["--catalog", str(tmp_path / "m.csv"), "--model", color_artifact, "--output", output]
        + sum((["--set", o] for o in CONFIG), [])
    )
    assert code == 1
    assert json.load(open(f"{output}/run.json"))["status"] == "failed"
    assert len(predictions(output)) == len(corpus)


def test_rerun_refuses_a_completed_output_and_overwrite_replaces_it(
    ray_local, color_catalog, color_artifact, tmp_path, capsys
):
    output = str(tmp_path / "out")
    args = ["--catalog", color_catalog, "--model", color_artifact, "--output", output] + sum(
        (["--set", o] for o in CONFIG), []
    )
    assert score_job.main(args) == 0
    first_run = json.load(open(f"{output}/run.json"))["run_id"]
    assert score_job.main(args) == 2
    assert "already holds a completed run" in capsys.readouterr().err
    assert score_job.main(args + ["--set", "predict.overwrite=true"]) == 0
    second = json.load(open(f"{output}/run.json"))
    assert second["run_id"] != first_run and second["counts"]["out"] == 18
    assert len(predictions(output)) == 18 and set(predictions(output)["run_id"]) == {second["run_id"]}


def test_unfinished_run_resumes_without_rescoring(ray_local, color_catalog, color_artifact, tmp_path):
    """Simulates a crash after the first file: run.json says running, one file is in place."""
    output = str(tmp_path / "out")
    run(color_catalog, color_artifact, output, "predict.rows_per_file=4")
    files = sorted(glob.glob(f"{output}/predictions/*.parquet"))
    kept = files[:2]
    for path in files[2:]:
        os.remove(path)
    manifest = json.load(open(f"{output}/run.json"))
    manifest["status"] = "running"
    json.dump(manifest, open(f"{output}/run.json", "w"))
    rerun = run(color_catalog, color_artifact, output, "predict.rows_per_file=4")
    assert rerun.counts.resumed == sum(pq.read_metadata(p).num_rows for p in kept)
    assert rerun.counts.scored_this_run == 18 - rerun.counts.resumed
    frame = predictions(output)
    assert len(frame) == 18 and frame["image_id"].is_unique


def test_decode_is_the_same_directly_and_through_ray(ray_local, color_catalog):
    import ray

    from pipeline.catalog import read_catalog_frame
    from pipeline.images import decode_batch

    frame = read_catalog_frame(color_catalog)
    direct = decode_batch({"image_uri": frame["image_uri"].to_numpy()}, image_size=24)
    through = (
        ray.data.from_pandas(frame[["image_uri"]])
        .map_batches(decode_batch, batch_format="numpy", fn_kwargs={"image_size": 24})
        .take_batch(len(frame))
    )
    np.testing.assert_array_equal(direct["image"], through["image"])


def test_exif_orientation_is_undone_by_the_scoring_decode_on_ray_workers(ray_local, tmp_path):
    """The colour model is too sure of itself for its probabilities to show a rotation, so the
    pixels are compared: through Ray Data, the EXIF-rotated file decodes to the upright image and
    not to the rotated pixels it stores."""
    import ray

    from pipeline.images import decode_batch

    upright = Image.new("RGB", (40, 40), (40, 60, 220))
    upright.paste((220, 40, 40), (0, 0, 40, 14))  # a red band along the top
    corpus = bad_image_corpus(str(tmp_path / "corpus"), upright)
    uris = np.array([corpus["upright"], corpus["exif_rotated"]], dtype=object)
    decoded = (
        ray.data.from_items([{"image_uri": uri} for uri in uris])
        .map_batches(decode_batch, batch_format="numpy", fn_kwargs={"image_size": 40})
        .take_batch(2)
    )
    by_uri = dict(zip(decoded["image_uri"], decoded["image"].astype(int)))
    straight, rotated = by_uri[corpus["upright"]], by_uri[corpus["exif_rotated"]]
    assert np.abs(straight - rotated).mean() < 6  # JPEG noise only
    stored = np.asarray(upright.transpose(Image.Transpose.ROTATE_90), dtype=int)
    assert np.abs(stored - rotated).mean() > 30  # what a decoder that ignored EXIF would return


def test_onnx_and_keras_engines_agree(ray_local, color_catalog, color_artifact, tmp_path):
    outputs = {}
    for engine in ("onnx", "keras"):
        manifest = run(color_catalog, color_artifact, str(tmp_path / engine), f"predict.engine={engine}")
        assert manifest.engine == engine
        outputs[engine] = predictions(str(tmp_path / engine)).sort_values("image_id")
    assert outputs["onnx"]["predicted_label"].tolist() == outputs["keras"]["predicted_label"].tolist()
    np.testing.assert_allclose(
        np.stack(outputs["onnx"]["probabilities"]), np.stack(outputs["keras"]["probabilities"]), atol=1e-4
    )
    assert run(color_catalog, color_artifact, str(tmp_path / "auto")).engine == "onnx"


def test_incremental_scores_only_new_and_changed_and_drops_deleted(ray_local, color_catalog, color_artifact, tmp_path):
    import time

    import duckdb

    from pipeline.score.incremental import prepare_incremental, read_current_view, score_incremental

    root = str(tmp_path / "scheduled")
    config = load_config(None, CONFIG)
    first = score_incremental(prepare_incremental(color_catalog, color_artifact, root, config))
    assert first.scored_this_run == 18 and first.rows == 18
    first_files = {p: os.path.getmtime(p) for p in glob.glob(f"{root}/runs/*/predictions/*.parquet")}
    time.sleep(1.1)  # mtime resolution
    os.remove(os.path.join(color_catalog, "red", "0000.png"))
    Image.new("RGB", (32, 32), (40, 60, 220)).save(os.path.join(color_catalog, "red", "0001.png"))  # changed
    Image.new("RGB", (32, 32), (40, 200, 60)).save(os.path.join(color_catalog, "green", "new.png"))  # new
    second = score_incremental(prepare_incremental(color_catalog, color_artifact, root, config))
    assert (second.scored_this_run, second.unchanged, second.deleted, second.rows) == (2, 16, 1, 18)
    assert {p: os.path.getmtime(p) for p in first_files} == first_files  # unchanged data not rewritten
    view = read_current_view(root)
    assert len(view) == 18 and view["image_id"].is_unique
    assert "red/0000.png" not in set(view["image_id"])
    assert view.set_index("image_id").loc["red/0001.png", "predicted_label"] == "blue"
    state = json.load(open(f"{root}/current/current.json"))["state"]  # the pointer names the state
    joined = duckdb.sql(
        f"select count(*) from read_parquet('{root}/runs/*/predictions/*.parquet') p "
        f"join read_parquet('{root}/{state}/*.parquet') s using (image_id, run_id)"
    ).fetchall()[0][0]
    assert joined == 18
    third = score_incremental(prepare_incremental(color_catalog, color_artifact, root, config))
    assert third.scored_this_run == 0 and third.rows == 18 and third.latest_run == second.latest_run
    assert not os.path.exists(f"{root}/current/pending.json")


def test_an_incremental_run_killed_before_publishing_is_resumed_not_restarted(
    ray_local, color_catalog, color_artifact, tmp_path
):
    """A crash after some prediction files but before the pointer: the rerun reuses the run, scores
    only the rest, and the previous view stays published meanwhile."""
    from pipeline.score.incremental import prepare_incremental, read_view, score_incremental

    root = str(tmp_path / "scheduled")
    config = load_config(None, CONFIG + ["predict.rows_per_file=4"])
    first = prepare_incremental(color_catalog, color_artifact, root, config)
    score_incremental(first)
    run_dir = f"{root}/runs/{first.run_id}"
    for path in sorted(glob.glob(f"{run_dir}/predictions/*.parquet"))[2:]:
        os.remove(path)  # as if killed after two files
    os.remove(f"{run_dir}/run.json")
    os.remove(f"{root}/current/current.json")
    json.dump({"run_id": first.run_id}, open(f"{root}/current/pending.json", "w"))
    assert read_view(root) is None
    again = prepare_incremental(color_catalog, color_artifact, root, config)
    assert again.run_id == first.run_id
    view = score_incremental(again)
    assert view.rows == 18 and view.runs == (first.run_id,)
    frame = predictions(run_dir)
    assert len(frame) == 18 and frame["image_id"].is_unique


def test_hostile_ids_and_labels_never_write_outside_the_output(ray_local, color_catalog, color_artifact, tmp_path):
    image = os.path.join(color_catalog, "red", "0000.png")
    rows = [
        {"image_uri": image, "image_id": "../../escape", "label": "../../../etc/passwd"},
        {"image_uri": image, "image_id": "/tmp/absolute-id", "label": "/abs"},
        {"image_uri": image, "image_id": "nul\x00byte", "label": "nul\x00label"},
        {"image_uri": image + "\x00.png", "image_id": "nul-in-uri", "label": "red"},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "hostile.parquet")

    def tree():
        return {os.path.realpath(p) for p in glob.glob(str(tmp_path.parent / "**"), recursive=True)}

    before = tree()
    output = str(tmp_path / "out")
    manifest = run(str(tmp_path / "hostile.parquet"), color_artifact, output, "predict.max_bad_fraction=1")
    assert {p for p in tree() - before if not p.startswith(os.path.realpath(output))} == set()
    assert not os.path.exists("/tmp/absolute-id")
    frame = predictions(output).set_index("image_id")
    assert len(frame) == 4 and frame.loc["nul-in-uri", "error"].startswith("unreadable")
    assert manifest.evaluation["unknown_label_rows"] == 3


def test_scoring_applies_the_cards_temperature_and_review_threshold(ray_local, color_artifact, tmp_path):
    """A calibrated card: confidence is the temperature-scaled probability, `low_confidence` uses the
    card's review threshold, and the evaluation's review figures count those rows."""
    color_catalog = blended_catalog(tmp_path / "blended")
    temperature = 3.0
    plain = predictions_by_id(tmp_path / "plain", run(color_catalog, color_artifact, str(tmp_path / "plain")))
    expected = apply_temperature(np.stack(plain["probabilities"].to_numpy()), temperature)
    distinct = np.unique(expected.max(axis=1))
    assert len(distinct) >= 2
    threshold = float(distinct[len(distinct) // 2 - 1] + distinct[len(distinct) // 2]) / 2  # some rows go to review
    calibrated_model = with_calibration(color_artifact, str(tmp_path / "calibrated_model"), temperature, threshold)
    manifest = run(color_catalog, calibrated_model, str(tmp_path / "calibrated"))
    calibrated = predictions_by_id(tmp_path / "calibrated", manifest).loc[plain.index]
    np.testing.assert_allclose(np.stack(calibrated["probabilities"].to_numpy()), expected, atol=1e-5)
    np.testing.assert_allclose(calibrated["confidence"], expected.max(axis=1), atol=1e-5)
    assert (calibrated["confidence"] < plain["confidence"]).all()  # T > 1 softens every row
    assert (calibrated["predicted_label"] == plain["predicted_label"]).all()  # and keeps the ranking
    assert manifest.low_confidence_threshold == threshold
    low = calibrated["low_confidence"].to_numpy(dtype=bool)
    assert (low == (calibrated["confidence"].to_numpy() < threshold)).all() and 0 < low.sum() < len(low)
    review = json.load(open(tmp_path / "calibrated" / "evaluation" / "summary.json"))["review"]
    correct = (calibrated["predicted_label"] == calibrated["label"]).to_numpy()
    assert review == {"threshold": threshold, "rows": int(low.sum()), "accuracy_on_rest": float(correct[~low].mean())}

    override = "predict.low_confidence_threshold=0"
    overridden = run(color_catalog, calibrated_model, str(tmp_path / "overridden"), override)
    assert overridden.low_confidence_threshold == 0.0
    assert not predictions(str(tmp_path / "overridden"))["low_confidence"].any()


def predictions_by_id(output, manifest):
    assert manifest.status == "completed"
    return predictions(str(output)).set_index("image_id").sort_index()
