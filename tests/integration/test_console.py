"""Issue 16: a training job's console holds one line per epoch and what a person needs, the log file
under the output holds the detail, and the causes of the old noise (retracing, an eager collective)
are gone from both. Runs `python -m jobs.train` as a person would, at tiny scale."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.factories import make_tree_catalog

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

EPOCHS = 3
TINY = [
    "model.image_size=32",
    "train.batch_size_per_worker=8",
    "resources.cpus_per_worker=0.5",
    f"train.epochs={EPOCHS}",
    "train.cnn_patience=10",
    "augment.enabled=true",  # augmentation tasks run, and must not load TensorFlow
]
# What the console printed before issue 16, and what must not come back.
NOISE = ["cuInit", "cudart_stub", "cpu_feature_guard", "absl::InitializeLog", "TrainingReport(", "Token authentication"]
CAUSES = ["retracing", "CollectiveAllReduceStrategy eagerly"]
EPOCH_LINE = re.compile(
    r"^custom_cnn train epoch (\d+)/3: loss [\d.]+ accuracy [\d.]+ val_loss [\d.e+-]+ val_accuracy [\d.]+ \([\d.]+ s"
)


def test_training_prints_one_line_per_epoch_and_keeps_the_detail_in_the_log_file(tmp_path):
    catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 30, "green": 30, "blue": 30})
    output = str(tmp_path / "models")
    command = [sys.executable, "-m", "jobs.train", "--catalog", catalog, "--output", output]
    command += ["--models", "custom_cnn", "--workers", "2", "--weights", "none"]
    for override in TINY:
        command += ["--set", override]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TF_CPP", "RAY_ADDRESS"))}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=800)
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    lines = [line for line in console.splitlines() if line.strip()]
    for noise in NOISE + CAUSES:
        assert noise not in console, f"{noise!r} on the console:\n{console}"
    epochs = [int(match.group(1)) for match in map(EPOCH_LINE.match, lines) if match]
    assert epochs == list(range(1, EPOCHS + 1)), console
    log_file = os.path.join(output, "logs", "train.log")
    assert sum(log_file in line for line in lines) == 2, console  # said at the start and at the end
    assert any(line.startswith("custom_cnn: test accuracy") for line in lines), console
    assert len(lines) <= 12, console
    detail = open(log_file, encoding="utf-8").read()
    assert "TrainingReport(" in detail and "resolved config" in detail and "absl::InitializeLog" in detail
    assert len(re.findall(r"custom_cnn train epoch \d+/3", detail)) >= EPOCHS
    for cause in CAUSES:
        assert cause not in detail, f"{cause!r} in the log file: the cause is back"


def test_scoring_prints_a_progress_line_and_its_result_and_keeps_the_detail_in_the_log_file(tmp_path, color_artifact):
    catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 40, "green": 40, "blue": 40})
    output = str(tmp_path / "scores")
    command = [sys.executable, "-m", "jobs.score", "--catalog", catalog, "--model", color_artifact]
    command += ["--output", output, "--set", "data.rows_per_block=8", "--set", "predict.rows_per_file=8"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TF_CPP", "RAY_ADDRESS"))}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=800)
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    lines = [line for line in console.splitlines() if line.strip()]
    for noise in NOISE:
        assert noise not in console, f"{noise!r} on the console:\n{console}"
    progress = [line for line in lines if line.startswith("scoring ") and " rows/s" in line]
    assert progress and progress[-1].split(":", 1)[1].lstrip().startswith("120/120 rows (100%)"), console
    assert len(progress) >= 2, console  # a line per 10% without a terminal, then the final one
    assert any(line.startswith("completed: 120 rows") for line in lines), console
    assert len(lines) <= 20, console
    assert "resolved config" in open(os.path.join(output, "logs", "score.log"), encoding="utf-8").read()
