"""`python -m jobs.train --extra-labels`: reviewed images join the train split only, the catalog's
split stays as it was, and the model card records where the labels came from."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys

import pytest

from jobs.config import load_config
from pipeline.splits import split_hash
from pipeline.train.driver import prepare_training
from tests.conftest import REPO
from tests.factories import make_tree_catalog

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

# Class weights, not the CNN's default oversampling: the card's weights show the extra images.
TINY = [
    "train.batch_size_per_worker=8",
    "resources.cpus_per_worker=0.5",
    "augment.enabled=false",
    "train.imbalance=class_weight",
]


def test_extra_labels_train_in_the_train_split_only_and_the_card_records_them(tmp_path):
    catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 20, "green": 20, "blue": 20})
    # Reviewed images from another catalog (a scored nightly one): 10 more blue images.
    nightly = make_tree_catalog(str(tmp_path / "nightly"), {"blue": 10}, seed=7)
    labels = tmp_path / "review.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "image_uri", "predicted_label", "label"])
        for name in sorted(os.listdir(os.path.join(nightly, "blue"))):
            writer.writerow([name, os.path.join(nightly, "blue", name), "red", "blue"])
    output = tmp_path / "models"
    command = [sys.executable, "-m", "jobs.train", "--catalog", catalog, "--output", str(output)]
    command += ["--models", "custom_cnn", "--workers", "1", "--epochs", "1", "--image-size", "32"]
    command += ["--extra-labels", str(labels)] + sum((["--set", o] for o in TINY), [])
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stderr[-3000:]

    artifact = output / "custom_cnn"
    card = json.loads((artifact / "model_card.json").read_text())
    assert card["extra_labels"]["source"] == str(labels)
    assert card["extra_labels"]["count"] == 10 and card["extra_labels"]["per_class"] == {"blue": 10}
    assert card["extra_labels"]["sha256"] == hashlib.sha256(labels.read_bytes()).hexdigest()
    # The catalog's split is the one a run without extra labels makes: same hash, same counts.
    config = load_config(None, TINY, **{"model.names": ["custom_cnn"]})
    without = prepare_training(catalog, str(tmp_path / "other"), config)
    split = (artifact / "split.csv").read_text()
    assert "nightly" not in split and split.count("\n") == 61
    assert card["split"]["counts"]["train"] == {"blue": 14, "green": 14, "red": 14}
    assert card["split"]["hash"] == split_hash(without.frame)
    # The extra rows reached training's train split: balanced class weights now see 24 blue images.
    weights = card["class_weights"]
    assert weights["blue"] == pytest.approx(52 / (3 * 24), rel=1e-4)
    assert weights["red"] == pytest.approx(52 / (3 * 14), rel=1e-4)
    assert (artifact / "extra_labels.csv").read_text().count(str(nightly)) == 10
