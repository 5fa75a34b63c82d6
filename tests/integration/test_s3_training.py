"""`python -m jobs.train` with its catalog and its output in S3 (moto's server on loopback): the
command a cluster runs, as a child process that finds the store through the AWS_* variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import REPO
from tests.factories import make_tree_catalog
from tests.s3_server import moto_s3

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

BUCKET = f"cc-train-{uuid.uuid4().hex[:8]}"
TINY = [
    "train.batch_size_per_worker=8",
    "resources.cpus_per_worker=0.5",
    "augment.enabled=false",
    "train.epochs=1",
]


def test_jobs_train_reads_an_s3_catalog_and_writes_its_artifacts_to_s3(tmp_path):
    with moto_s3(BUCKET) as s3:
        catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 20, "green": 20, "blue": 20})
        s3.upload_directory(catalog, "catalogs/sample")
        command = [sys.executable, "-m", "jobs.train", "--catalog", f"s3://{BUCKET}/catalogs/sample"]
        command += ["--output", f"s3://{BUCKET}/models/latest", "--models", "custom_cnn", "--workers", "1"]
        command += ["--epochs", "1", "--image-size", "32"] + sum((["--set", o] for o in TINY), [])
        # Run from elsewhere than the repository, as a cluster driver runs from a copy of it.
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=800, env=_with_repo())
        assert done.returncode == 0, done.stderr[-3000:]
        assert "custom_cnn: test accuracy" in done.stdout and f"s3://{BUCKET}/models/latest/custom_cnn" in done.stdout
        keys = s3.keys("models/latest/")
        for name in ("model.keras", "model_card.json", "history.json", "split.csv", "model.onnx"):
            assert f"models/latest/custom_cnn/{name}" in keys, keys
        assert "models/latest/config.json" in keys
        card = json.loads(s3.get("models/latest/custom_cnn/model_card.json"))
        assert card["name"] == "custom_cnn" and card["class_names"] == ["blue", "green", "red"]
        assert card["input"]["image_size"] == 32
        split = s3.get("models/latest/custom_cnn/split.csv").decode()
        assert split.count(f"s3://{BUCKET}/catalogs/sample/") == 60  # every catalog image, by its S3 URI
        assert not list(tmp_path.glob("models")) and not list(tmp_path.glob("**/model.keras"))  # nothing local


def _with_repo() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env
