"""The scoring job against S3: moto's server on loopback as the object store, a real local Ray.

Catalog, model artifact and output all live in the bucket; the Ray workers read images and the
model from it with the same AWS_* variables the driver uses.
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.factories import make_tree_catalog
from tests.s3_server import S3, SECRET, moto_s3

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BUCKET = f"cc-test-{uuid.uuid4().hex[:8]}"  # fresh per session: nothing cached under an old URI matches
MODEL = f"s3://{BUCKET}/models/custom_cnn"
CATALOG = f"s3://{BUCKET}/catalog"
CONFIG = ["resources.cpus_per_actor=0.5", "predict.batch_size=8"]


@pytest.fixture(scope="module")
def s3_ray():
    """moto's S3 server on 127.0.0.1, the AWS_* variables pointing at it, then a 2-CPU local Ray
    started after them so every worker has them. Everything is undone at the end of the module."""
    import ray

    with moto_s3(BUCKET) as s3:
        ray.shutdown()
        # The workers inherit the variables from the raylet this starts. Not runtime_env={"env_vars": ...}:
        # Ray writes those in clear to the session's runtime_env_agent.log (and shows them on the dashboard).
        try:
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
            except Exception:  # "Timed out while waiting for GCS" happens on a loaded 2-core box; once more
                ray.shutdown()
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
            yield s3
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def s3_data(s3_ray, color_artifact, tmp_path_factory):
    """A labelled tree catalog and the trained colour model, uploaded once for the module."""
    local = make_tree_catalog(str(tmp_path_factory.mktemp("s3catalog") / "catalog"), {"red": 6, "green": 6, "blue": 6})
    s3_ray.upload_directory(local, "catalog")
    s3_ray.upload_directory(color_artifact, "models/custom_cnn")
    return s3_ray


def score_main(*args: str) -> int:
    from jobs import score as score_job

    return score_job.main(list(args) + sum((["--set", o] for o in CONFIG), []))


def read_s3_predictions(s3: S3, prefix: str) -> pd.DataFrame:
    fs = s3.filesystem()
    files = sorted(fs.glob(f"{BUCKET}/{prefix}/predictions/*.parquet"))
    assert files, f"no prediction files under s3://{BUCKET}/{prefix}/predictions"
    return pq.read_table(files, filesystem=fs).to_pandas()


def test_output_in_a_missing_bucket_exits_2_before_scoring(s3_data, capsys, monkeypatch):
    # `incremental` binds driver.score when first imported: import it before the patch, or a first
    # import under the patch would keep the stub for every later test in this process.
    from pipeline.score import driver, incremental  # noqa: F401

    called = []
    monkeypatch.setattr(driver, "score", lambda plan: called.append(plan))  # jobs.score imports it in main
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/runs/x"
    code = score_main("--catalog", CATALOG, "--model", MODEL, "--output", missing)
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot be written" in err and missing in err
    assert called == []


def test_tree_catalog_on_s3_scores_into_s3(s3_data):
    s3 = s3_data
    output = f"s3://{BUCKET}/runs/one"
    assert score_main("--catalog", CATALOG, "--model", MODEL, "--output", output) == 0
    keys = s3.keys("runs/one/")
    assert [k for k in keys if k.startswith("runs/one/predictions/") and k.endswith(".parquet")]
    for name in ("evaluation/summary.json", "evaluation/report.html", "run.json"):
        assert f"runs/one/{name}" in keys, keys
    assert not [k for k in keys if ".write-probe" in k]  # the writability probe cleans up after itself
    frame = read_s3_predictions(s3, "runs/one")
    assert len(frame) == 18
    assert frame["image_uri"].str.startswith(f"s3://{BUCKET}/catalog/").all()
    assert sorted(frame["image_id"]) == sorted(f"{c}/{i:04d}.png" for c in ("red", "green", "blue") for i in range(6))
    assert frame["error"].isna().all()
    assert (frame["predicted_label"] == frame["label"]).mean() > 0.9
    run = json.loads(s3.get("runs/one/run.json"))
    assert run["status"] == "completed"
    assert run["counts"]["in"] == run["counts"]["out"] == 18 and run["counts"]["errors"] == 0
    summary = json.loads(s3.get("runs/one/evaluation/summary.json"))
    assert summary["rows"] == 18 and summary["evaluated_rows"] == 18


def _manifest_with_a_missing_object(s3: S3, key: str) -> tuple[str, str]:
    missing = f"s3://{BUCKET}/catalog/red/does-not-exist.png"
    uris = [f"s3://{BUCKET}/catalog/{c}/{i:04d}.png" for c in ("red", "green", "blue") for i in range(2)] + [missing]
    buffer = io.StringIO()
    pd.DataFrame(
        {"image_uri": uris, "label": [u.split("/")[-2] for u in uris], "sku": [f"SKU-{n}" for n in range(len(uris))]}
    ).to_csv(buffer, index=False)
    s3.put(key, buffer.getvalue().encode())
    return f"s3://{BUCKET}/{key}", missing


def test_manifest_on_s3_with_a_missing_object(s3_data):
    s3 = s3_data
    manifest, missing = _manifest_with_a_missing_object(s3, "manifests/one.csv")
    code = score_main(
        "--catalog",
        manifest,
        "--model",
        MODEL,
        "--output",
        f"s3://{BUCKET}/runs/manifest",
        "--set",
        "predict.max_bad_fraction=0.5",
    )
    assert code == 0
    frame = read_s3_predictions(s3, "runs/manifest").set_index("image_uri")
    assert len(frame) == 7 and frame["sku"].notna().all()
    error = frame.loc[missing, "error"]
    assert isinstance(error, str) and error.startswith(("missing", "unreadable")), error
    assert pd.isna(frame.loc[missing, "predicted_label"])
    scored = frame.drop(index=missing)
    assert scored["error"].isna().all() and scored["predicted_label"].notna().all()
    run = json.loads(s3.get("runs/manifest/run.json"))
    assert run["status"] == "completed" and run["counts"]["out"] == 7 and run["counts"]["errors"] == 1


def test_the_secret_key_is_never_written_or_logged(s3_data, capsys, caplog):
    s3 = s3_data
    caplog.set_level(logging.DEBUG)
    manifest, _ = _manifest_with_a_missing_object(s3, "manifests/secret.csv")
    code = score_main(
        "--catalog",
        manifest,
        "--model",
        MODEL,
        "--output",
        f"s3://{BUCKET}/runs/secret",
        "--set",
        "predict.max_bad_fraction=0.5",
    )
    assert code == 0
    # A failing run too: its error messages are where a leaked credential would most likely show.
    assert (
        score_main("--catalog", CATALOG, "--model", MODEL, "--output", f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x")
        == 2
    )
    captured = capsys.readouterr()
    assert "completed" in captured.out and "cannot be written" in captured.err
    for text in (captured.out, captured.err, caplog.text):
        assert SECRET not in text
    assert not [r for r in caplog.records if SECRET in r.getMessage()]
    keys = s3.keys("runs/")
    assert any(k.startswith("runs/secret/") for k in keys)
    for key in keys:  # every output this module wrote, not only this test's
        assert SECRET.encode() not in s3.get(key), key
    leaked = [path for path in _ray_log_files() if SECRET.encode() in open(path, "rb").read()]
    assert not leaked, f"the secret key is in Ray's logs: {leaked}"


def _ray_log_files() -> list[str]:
    """Every file of the current Ray session's log directory (workers' and Ray's own)."""
    import ray

    logs = ray._private.worker._global_node.get_logs_dir_path()  # no public API for the session's logs
    return [os.path.join(root, name) for root, _, names in os.walk(logs) for name in names]


def test_a_model_replaced_at_the_same_uri_is_the_one_that_scores(s3_data, color_artifact, tmp_path):
    """Retraining into the same s3:// --output replaces the artifact in place; the workers' local copy
    of the old one must not keep scoring under the new card. The new model lists its classes in
    another order, so the old weights read through the new card get red and blue backwards."""
    from tests.factories import make_artifact

    s3 = s3_data
    s3.upload_directory(color_artifact, "models/retrained")
    uri = f"s3://{BUCKET}/models/retrained"
    assert score_main("--catalog", CATALOG, "--model", uri, "--output", f"s3://{BUCKET}/runs/retrain-a") == 0
    before = read_s3_predictions(s3, "runs/retrain-a")
    assert (before["predicted_label"] == before["label"]).mean() > 0.9

    replacement = make_artifact(str(tmp_path / "replacement"), ["red", "green", "blue"])
    s3.client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in s3.keys("models/retrained/")]})
    s3.upload_directory(replacement, "models/retrained")
    new_version = json.loads(s3.get("models/retrained/model_card.json"))["version"]
    assert new_version != before["model_version"].iloc[0]
    assert score_main("--catalog", CATALOG, "--model", uri, "--output", f"s3://{BUCKET}/runs/retrain-b") == 0
    after = read_s3_predictions(s3, "runs/retrain-b")
    assert set(after["model_version"]) == {new_version}
    assert (after["predicted_label"] == after["label"]).mean() > 0.9


def test_remote_weights_are_downloaded_once_and_again_when_their_etag_changes(s3_ray, tmp_path, monkeypatch):
    """fetch_weights keys its node-local cache by URI, size and ETag: an unchanged object is served
    from the cache; an object replaced at the same URI by one of the same size is fetched again."""
    from pipeline import artifacts

    monkeypatch.setattr(artifacts, "CACHE_DIR", str(tmp_path / "cache"))  # not the user's ~/.cache
    s3 = s3_ray
    uri = f"s3://{BUCKET}/weights/base.weights.h5"
    s3.put("weights/base.weights.h5", b"weights, first version")
    first = artifacts.fetch_weights(uri)
    assert open(first, "rb").read() == b"weights, first version"
    os.utime(first, (0, 0))  # a download would write the file again and give it a new mtime

    again = artifacts.fetch_weights(uri)
    assert again == first and os.stat(again).st_mtime == 0  # served from the cache, not downloaded

    s3.put("weights/base.weights.h5", b"weights, 2ND! version")  # same size, new content: a new ETag
    changed = artifacts.fetch_weights(uri)
    assert changed != first
    assert open(changed, "rb").read() == b"weights, 2ND! version"


def test_incremental_scoring_on_s3_scores_only_new_and_changed_objects(s3_data, color_artifact, tmp_path):
    """The catalog, the model and the incremental root all in the bucket; "changed" is an object
    rewritten with other bytes (a new ETag) at the same key."""
    from pipeline.records import ViewPointer
    from pipeline.score.incremental import read_current_view
    from tests.factories import make_image

    s3 = s3_data
    local = make_tree_catalog(str(tmp_path / "catalog"), {"red": 4, "green": 4, "blue": 4})
    s3.upload_directory(local, "incremental-catalog")
    catalog, root = f"s3://{BUCKET}/incremental-catalog", f"s3://{BUCKET}/scheduled"
    incremental = ("--set", "predict.incremental=true")
    assert score_main("--catalog", catalog, "--model", MODEL, "--output", root, *incremental) == 0
    first = ViewPointer.from_dict(json.loads(s3.get("scheduled/current/current.json")))
    assert (first.scored_this_run, first.rows) == (12, 12)

    def png(colour) -> bytes:
        buffer = io.BytesIO()
        make_image(colour, np.random.default_rng(7)).save(buffer, "PNG")
        return buffer.getvalue()

    s3.put("incremental-catalog/red/0000.png", png((40, 60, 220)))  # changed: now blue
    s3.put("incremental-catalog/green/new.png", png((40, 200, 60)))  # new
    assert score_main("--catalog", catalog, "--model", MODEL, "--output", root, *incremental) == 0
    second = ViewPointer.from_dict(json.loads(s3.get("scheduled/current/current.json")))
    assert (second.scored_this_run, second.unchanged, second.rows) == (2, 11, 13)
    view = read_current_view(root).set_index("image_id")
    assert len(view) == 13 and view.index.is_unique
    assert (
        view.loc["red/0000.png", "predicted_label"] == "blue"
        and view.loc["green/new.png", "predicted_label"] == "green"
    )
    assert view.loc["red/0000.png", "run_id"] == second.latest_run != view.loc["red/0001.png", "run_id"]
