"""Same seed, same model: two training runs with one seed and config give the same weights and
metrics on CPU, with 1 and with 2 Ray Train workers (augmentation and dropout on). Slow."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jobs.config import load_config
from pipeline.artifacts import load_keras_model
from pipeline.train.driver import prepare_training, run_training
from tests.factories import make_tree_catalog

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

SETTINGS = [
    "model.image_size=32",
    "model.weights=none",
    "train.batch_size_per_worker=8",
    "resources.cpus_per_worker=0.5",
    "augment.enabled=true",
    "train.epochs=2",
]
# Figures that measure the machine, not the model.
TIMINGS = ("seconds", "rss_mb")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return make_tree_catalog(str(tmp_path_factory.mktemp("seeded") / "catalog"), {"red": 30, "green": 30, "blue": 12})


def train(catalog: str, output: str, workers: int, seed: int) -> dict:
    config = load_config(
        None, SETTINGS + [f"resources.workers={workers}", f"train.seed={seed}"], **{"model.names": ["custom_cnn"]}
    )
    run_training(prepare_training(catalog, output, config))
    artifact = os.path.join(output, "custom_cnn")
    history = json.load(open(os.path.join(artifact, "history.json")))
    return {
        "weights": [np.asarray(weight) for weight in load_keras_model(artifact).get_weights()],
        "history": [{key: value for key, value in row.items() if key not in TIMINGS} for row in history],
        "card": json.load(open(os.path.join(artifact, "model_card.json"))),
    }


def same_weights(first: dict, second: dict) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(first["weights"], second["weights"], strict=True))


@pytest.mark.parametrize("workers", [1, 2])
def test_two_runs_with_the_same_seed_give_the_same_weights_and_metrics(ray_local, catalog, tmp_path, workers):
    first = train(catalog, str(tmp_path / "first"), workers, seed=5)
    second = train(catalog, str(tmp_path / "second"), workers, seed=5)
    assert same_weights(first, second)
    assert first["history"] == second["history"]
    assert first["card"]["test"] == second["card"]["test"]
    assert first["card"]["calibration"]["temperature"] == second["card"]["calibration"]["temperature"]
    card = first["card"]
    assert card["seed"] == 5 and card["workers"] == workers and card["selection"] == "balanced_loss"
    assert card["learning_rates"]["phases"]["train"] == {"configured": 1e-3, "effective": pytest.approx(workers * 1e-3)}
    # 12 blue images leave 2 for validation: the card says what calibration was fitted on, and warns.
    for block in ("calibration", "review"):
        assert card[block]["fitted_images_per_class"] == card["split"]["counts"]["val"]
    assert [warning for warning in card["warnings"] if "'blue'" in warning]
    if workers == 1:  # the seed, not a constant, decides: another seed trains another model
        assert not same_weights(first, train(catalog, str(tmp_path / "other"), workers, seed=6))
