"""`train.calibration_folds`: the temperature and review threshold are fitted on out-of-fold
predictions over train+validation, and the card says so. Slow: three tiny Ray Train runs."""

from __future__ import annotations

import json
import os

import pytest

from jobs.config import load_config
from pipeline.train.driver import prepare_training, run_training
from tests.factories import make_tree_catalog

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

SETTINGS = [
    "model.image_size=32",
    "model.weights=none",
    "train.batch_size_per_worker=8",
    "train.epochs=1",
    "train.calibration_folds=2",
    "resources.workers=1",
    "resources.cpus_per_worker=0.5",
    "augment.enabled=false",
]


def test_two_folds_fit_calibration_on_every_train_and_validation_image(ray_local, tmp_path):
    catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 16, "green": 16, "blue": 8})
    config = load_config(None, SETTINGS, **{"model.names": ["custom_cnn"]})
    run_training(prepare_training(catalog, str(tmp_path / "models"), config))
    card = json.load(open(os.path.join(tmp_path, "models", "custom_cnn", "model_card.json")))
    counts = card["split"]["counts"]
    train_and_val = {name: counts["train"][name] + counts["val"][name] for name in counts["train"]}
    assert train_and_val["blue"] > counts["val"]["blue"]
    images = sum(train_and_val.values())
    for block in ("calibration", "review"):
        assert card[block]["fitted_images_per_class"] == train_and_val
        assert card[block]["fitted_on"] == f"2-fold out-of-fold predictions over train+validation ({images} images)"
    # Fewer than train.min_fit_images_per_class=10 blue images even so: the warning counts them all.
    assert any(f"{train_and_val['blue']} train+validation image(s) of class 'blue'" in w for w in card["warnings"])
