"""What a scoring output holds across runs, on a real local Ray: another model's predictions,
incremental views after a model change and after a failed run, file:// URIs, and rows whose
confidence, top-k and predicted index agree."""

from __future__ import annotations

import glob
import json
import os

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import score as score_job
from pipeline.schema import class_names_from_schema
from pipeline.score.incremental import read_current_view
from tests.factories import blended_catalog, make_artifact

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CONFIG = ["resources.cpus_per_actor=0.5", "predict.batch_size=8"]
INCREMENTAL = ["predict.incremental=true"]


def score_main(catalog, model, output, *overrides: str) -> int:
    return score_job.main(
        ["--catalog", str(catalog), "--model", str(model), "--output", str(output)]
        + sum((["--set", o] for o in CONFIG + list(overrides)), [])
    )


def predictions(output) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(path) for path in sorted(glob.glob(f"{output}/predictions/*.parquet"))])


def version_of(artifact: str) -> str:
    return json.load(open(os.path.join(artifact, "model_card.json")))["version"]


@pytest.fixture(scope="module")
def retrained_artifact(tmp_path_factory, color_artifact):
    """The same classes retrained with another seed: another model file, so another version."""
    artifact = make_artifact(str(tmp_path_factory.mktemp("retrained") / "custom_cnn"), ["blue", "green", "red"], seed=1)
    assert version_of(artifact) != version_of(color_artifact)
    return artifact


def test_an_output_holding_another_model_versions_predictions_is_refused_naming_both_unless_overwrite(
    ray_local, color_catalog, color_artifact, retrained_artifact, tmp_path, capsys
):
    """An unfinished run of the old model (a crash after two files) would otherwise be resumed with
    the new one, mixing two models' rows in one output."""
    output = tmp_path / "out"
    assert score_main(color_catalog, color_artifact, output, "predict.rows_per_file=4") == 0
    for path in sorted(glob.glob(f"{output}/predictions/*.parquet"))[2:]:
        os.remove(path)
    run = json.load(open(output / "run.json"))
    json.dump({**run, "status": "running"}, open(output / "run.json", "w"))
    old, new = version_of(color_artifact), version_of(retrained_artifact)
    capsys.readouterr()

    assert score_main(color_catalog, retrained_artifact, output) == 2
    error = capsys.readouterr().err
    assert f"holds predictions of model version(s) ['{old}'], not {new}" in error
    assert set(predictions(output)["model_version"]) == {old}  # refused before anything was written

    assert score_main(color_catalog, retrained_artifact, output, "predict.overwrite=true") == 0
    frame = predictions(output)
    assert len(frame) == 18 and frame["image_id"].is_unique
    assert set(frame["model_version"]) == {new}
    assert json.load(open(output / "run.json"))["counts"]["resumed"] == 0


def test_incremental_scoring_after_a_model_change_rescores_every_row_with_the_new_model(
    ray_local, color_catalog, color_artifact, retrained_artifact, tmp_path
):
    root = tmp_path / "scheduled"
    assert score_main(color_catalog, color_artifact, root, *INCREMENTAL) == 0
    assert score_main(color_catalog, color_artifact, root, *INCREMENTAL) == 0  # nothing new: nothing scored
    assert json.load(open(root / "current" / "current.json"))["scored_this_run"] == 0

    assert score_main(color_catalog, retrained_artifact, root, *INCREMENTAL) == 0
    view_manifest = json.load(open(root / "current" / "current.json"))
    assert view_manifest["model_version"] == version_of(retrained_artifact)
    assert (view_manifest["scored_this_run"], view_manifest["unchanged"], view_manifest["rows"]) == (18, 0, 18)
    view = read_current_view(str(root))
    assert len(view) == 18 and view["image_id"].is_unique
    assert set(view["model_version"]) == {version_of(retrained_artifact)}
    assert view["run_id"].nunique() == 1 and view["run_id"].iloc[0] == view_manifest["latest_run"]


def test_an_incremental_run_that_fails_leaves_the_view_and_its_rerun_gives_every_row_once(
    ray_local, color_catalog, color_artifact, tmp_path
):
    """The second run's only new image is empty: one error in one row is over the error budget,
    so that run fails. Once the image is fixed, the rerun scores it, and the documented query
    returns every catalog row exactly once, none from the failed run."""
    root = tmp_path / "scheduled"
    assert score_main(color_catalog, color_artifact, root, *INCREMENTAL) == 0
    published = json.load(open(root / "current" / "current.json"))

    new_image = os.path.join(color_catalog, "green", "new.png")
    open(new_image, "wb").close()
    assert score_main(color_catalog, color_artifact, root, *INCREMENTAL) == 1
    assert json.load(open(root / "current" / "current.json")) == published  # the old view stays published
    failed_runs = [path for path in glob.glob(f"{root}/runs/*") if os.path.basename(path) not in published["runs"]]
    assert len(failed_runs) == 1 and json.load(open(f"{failed_runs[0]}/run.json"))["status"] == "failed"

    Image.new("RGB", (32, 32), (40, 200, 60)).save(new_image)
    assert score_main(color_catalog, color_artifact, root, *INCREMENTAL) == 0
    rerun = json.load(open(root / "current" / "current.json"))
    assert (rerun["scored_this_run"], rerun["unchanged"], rerun["rows"]) == (1, 18, 19)
    assert os.path.basename(failed_runs[0]) not in rerun["runs"]
    rows = duckdb.sql(
        f"select p.image_id, p.error, p.predicted_label from read_parquet('{root}/runs/*/predictions/*.parquet') p "
        f"join read_parquet('{root}/{rerun['state']}/*.parquet') s using (image_id, run_id)"
    ).df()
    assert len(rows) == 19 and rows["image_id"].is_unique
    new_row = rows.set_index("image_id").loc["green/new.png"]
    assert pd.isna(new_row["error"]) and new_row["predicted_label"] == "green"


def test_file_uris_for_catalog_model_and_output_score_like_paths(ray_local, color_catalog, color_artifact, tmp_path):
    output = tmp_path / "out"
    assert score_main(f"file://{color_catalog}", f"file://{color_artifact}", f"file://{output}") == 0
    run = json.load(open(output / "run.json"))
    assert run["status"] == "completed" and run["counts"]["out"] == 18
    assert (run["catalog"], run["model"]["uri"], run["output"]) == (color_catalog, color_artifact, str(output))
    frame = predictions(output)
    assert len(frame) == 18 and frame["error"].isna().all()
    assert all(uri.startswith(os.path.join(color_catalog, "")) and os.path.exists(uri) for uri in frame["image_uri"])
    assert (frame["predicted_label"] == frame["label"]).mean() > 0.9
    assert os.path.exists(output / "evaluation" / "summary.json")


def test_confidence_top_k_and_predicted_index_agree_in_every_row(ray_local, color_artifact, tmp_path):
    """On images the model is unsure of, so the order of the classes is not trivial."""
    catalog = blended_catalog(tmp_path / "blended")
    output = tmp_path / "out"
    assert score_main(catalog, color_artifact, output) == 0
    files = sorted(glob.glob(f"{output}/predictions/*.parquet"))
    class_names = class_names_from_schema(pq.read_schema(files[0]))
    frame = predictions(output)
    assert len(frame) == 18
    for row in frame.itertuples():
        probabilities, scores = np.asarray(row.probabilities), np.asarray(row.top_k_scores)
        assert row.confidence == scores[0] == probabilities[row.predicted_index]
        assert row.predicted_label == class_names[row.predicted_index] == row.top_k_labels[0]
        assert (np.diff(scores) <= 0).all()  # best first
        assert (
            list(row.top_k_labels) == [class_names[i] for i in np.argsort(-probabilities, kind="stable")][: len(scores)]
        )
        np.testing.assert_allclose(scores, probabilities[[class_names.index(n) for n in row.top_k_labels]])
    assert frame["confidence"].min() < 0.99  # the premise: some rows are genuinely unsure


def test_duplicate_manifest_ids_are_refused_before_any_image_is_scored(
    ray_local, color_catalog, color_artifact, tmp_path, capsys
):
    """Workers read the manifest and find the repeat; the job exits 2 naming it, writing nothing."""
    image = os.path.join(color_catalog, "red", "0000.png")
    manifest = tmp_path / "catalog.csv"
    pd.DataFrame({"image_uri": [image] * 3, "image_id": ["a", "twice", "twice"]}).to_csv(manifest, index=False)
    output = tmp_path / "out"
    assert score_main(manifest, color_artifact, output) == 2
    assert "duplicate image_id values, e.g. 'twice'" in capsys.readouterr().err
    assert not glob.glob(f"{output}/predictions/*.parquet") and not os.path.exists(output / "run.json")


def test_a_manifest_row_with_an_empty_image_uri_is_a_missing_row_not_a_refused_catalog(
    ray_local, color_catalog, color_artifact, tmp_path
):
    image = os.path.join(color_catalog, "red", "0000.png")
    manifest = tmp_path / "catalog.csv"
    manifest.write_text(f"image_uri,image_id,label\n{image},ok,red\n,blank,red\n")
    output = tmp_path / "out"
    assert score_main(manifest, color_artifact, output, "predict.max_bad_fraction=1") == 0
    frame = predictions(output).set_index("image_id")
    assert frame.loc["blank", "error"] == "missing: the row has an empty image_uri"
    assert frame.loc["ok", "predicted_label"] == "red" and pd.isna(frame.loc["ok", "error"])
