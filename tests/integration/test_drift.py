"""Drift reports from real scoring runs on a local Ray: every run writes its `drift` block, a
catalog whose class mix moved raises the status, the job's opt-in exit code tells a scheduler while
every row is still written, and a scheduled run compares itself with the previous one."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil

import pandas as pd
import pytest

from jobs import score as score_job
from jobs.config import load_config
from pipeline.artifacts import read_card, write_card
from pipeline.metrics import DRIFT_BINS
from pipeline.records import DriftBaseline
from pipeline.score.driver import prepare_scoring, score
from tests.factories import make_tree_catalog

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CONFIG = ["resources.cpus_per_actor=0.5", "predict.batch_size=8", "drift.min_rows=10"]


@pytest.fixture(scope="module")
def baseline_artifact(color_artifact, tmp_path_factory):
    """The colour model with the drift baseline training records: a balanced training split,
    confident on validation (pure colours), nothing sent to review."""
    directory = str(tmp_path_factory.mktemp("drift") / "custom_cnn")
    shutil.copytree(color_artifact, directory)
    baseline = DriftBaseline({"blue": 24, "green": 24, "red": 24}, [0] * (DRIFT_BINS - 1) + [72], 0.0)
    write_card(directory, dataclasses.replace(read_card(directory), drift_baseline=baseline))
    return directory


def run(catalog, artifact, output):
    return score(prepare_scoring(catalog, artifact, output, load_config(None, CONFIG)))


def signal(drift, name, reference):
    return next(s for s in drift["signals"] if s["name"] == name and s["reference"] == reference)


def test_balanced_catalog_is_ok_and_a_shifted_one_alerts(ray_local, baseline_artifact, tmp_path):
    balanced = make_tree_catalog(str(tmp_path / "balanced"), {"red": 8, "green": 8, "blue": 8})
    shifted = make_tree_catalog(str(tmp_path / "shifted"), {"red": 24})
    calm = run(balanced, baseline_artifact, str(tmp_path / "calm"))
    with open(tmp_path / "calm" / "run.json") as handle:
        drift = json.load(handle)["drift"]
    assert drift["rows"] == 24 and sum(drift["predicted_counts"]) == 24
    assert signal(drift, "class_mix", "training")["psi"] < 0.1
    assert drift["status"] == calm.drift.status == "ok"
    assert signal(drift, "class_mix", "previous_run")["note"] == "no previous run of this schedule"
    assert len(drift["estimated_prior"]) == 3
    assert os.path.getsize(tmp_path / "calm" / "drift" / "drift.png") > 0
    assert 'data-field="drift.status">ok<' in (tmp_path / "calm" / "evaluation" / "report.html").read_text()

    moved = run(shifted, baseline_artifact, str(tmp_path / "moved"))
    mix = signal(moved.drift.to_dict(), "class_mix", "training")
    assert mix["status"] == "alert" and mix["psi"] > 0.25
    assert moved.drift.status == "alert"
    assert moved.drift.estimated_prior[2] > 0.9  # red: the EM estimate sees the shift too
    page = (tmp_path / "moved" / "drift" / "report.html").read_text()
    assert 'id="drift-status" data-field="drift.status">alert<' in page


def test_exit_on_alert_returns_3_with_every_row_written(ray_local, baseline_artifact, tmp_path):
    shifted = make_tree_catalog(str(tmp_path / "shifted"), {"red": 20})
    output = str(tmp_path / "out")
    overrides = sum((["--set", o] for o in [*CONFIG, "drift.exit_on=alert"]), [])
    assert score_job.main(["--catalog", shifted, "--model", baseline_artifact, "--output", output, *overrides]) == 3
    rows = pd.concat(pd.read_parquet(path) for path in glob.glob(f"{output}/predictions/*.parquet"))
    assert len(rows) == 20
    with open(os.path.join(output, "run.json")) as handle:
        run_json = json.load(handle)
    assert run_json["status"] == "completed" and run_json["drift"]["status"] == "alert"


def test_a_scheduled_run_compares_itself_with_the_previous_run(ray_local, baseline_artifact, tmp_path):
    catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 6, "green": 6, "blue": 6})
    root = str(tmp_path / "scheduled")
    overrides = sum((["--set", o] for o in [*CONFIG, "predict.incremental=true"]), [])
    arguments = ["--catalog", catalog, "--model", baseline_artifact, "--output", root, *overrides]
    assert score_job.main(arguments) == 0
    first = json.load(open(os.path.join(root, "current", "current.json")))["latest_run"]
    make_tree_catalog(str(tmp_path / "catalog"), {"red": 20}, seed=1)  # tonight: new red images only
    for index in range(6, 20):  # (the 6 first ones are overwritten, changed by their new noise)
        assert os.path.exists(os.path.join(catalog, "red", f"{index:04d}.png"))
    assert score_job.main([*arguments, "--set", "drift.exit_on=warn"]) == 3
    second = json.load(open(os.path.join(root, "current", "current.json")))["latest_run"]
    drift = json.load(open(os.path.join(root, "runs", second, "run.json")))["drift"]
    assert drift["previous_run"] == first
    against_previous = signal(drift, "class_mix", "previous_run")
    assert against_previous["expected"] == [6, 6, 6] and against_previous["status"] == "alert"


def test_an_unlabelled_run_repeats_training_warnings_in_run_json_and_the_drift_report(
    ray_local, baseline_artifact, tmp_path
):
    """A nightly catalog has no labels, so no evaluation report: run.json and the drift report are
    where its owner reads that the model's calibration barely saw a class."""
    warning = "the calibration temperature and review threshold were fitted on 2 validation image(s) of class 'red'"
    artifact = str(tmp_path / "warned")
    shutil.copytree(baseline_artifact, artifact)
    card = read_card(artifact)
    write_card(artifact, dataclasses.replace(card, details={**card.details, "warnings": [warning]}))
    catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 6, "green": 6})
    unlabelled = str(tmp_path / "unlabelled.csv")
    frame = pd.DataFrame({"image_uri": sorted(glob.glob(os.path.join(catalog, "*", "*.png")))})
    frame.to_csv(unlabelled, index=False)
    manifest = run(unlabelled, artifact, str(tmp_path / "out"))
    assert manifest.evaluation is None and manifest.model_warnings == (warning,)
    with open(tmp_path / "out" / "run.json") as handle:
        assert json.load(handle)["model_warnings"] == [warning]
    report = (tmp_path / "out" / "drift" / "report.html").read_text()
    assert 'id="model-warnings"' in report and "class &#x27;red&#x27;" in report
