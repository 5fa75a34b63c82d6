"""Ray Train runs on tiny generated images: artifacts, 1 vs 2 workers, two-phase fine-tuning,
resuming after a killed driver, surviving a killed worker. Slow: minutes on 2 cores."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from jobs.config import load_config
from models import get_entry
from pipeline.artifacts import load_keras_model
from pipeline.calibration import apply_temperature, choose_review_threshold, fit_temperature
from pipeline.catalog import LabelIndex, read_catalog_frame
from pipeline.images import decode_batch
from pipeline.splits import make_split
from pipeline.train.data import build_datasets
from pipeline.train.driver import prepare_training, run_training
from pipeline.train.worker import BEST_WEIGHTS, CURRENT_WEIGHTS, _load_npz
from tests.conftest import REPO
from tests.factories import make_tree_catalog

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

TINY = [
    "model.image_size=32",
    "train.batch_size_per_worker=8",
    "resources.cpus_per_worker=0.5",
    "augment.enabled=false",
    "train.epochs=3",
    "train.head_epochs=2",
    "train.fine_tune_epochs=1",
]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return make_tree_catalog(str(tmp_path_factory.mktemp("train") / "catalog"), {"red": 40, "green": 40, "blue": 40})


def train(catalog, output, *overrides, workers=2, models=("custom_cnn",), weights="none"):
    config = load_config(
        None,
        TINY + [f"resources.workers={workers}", f"model.weights={weights}"] + list(overrides),
        **{"model.names": list(models)},
    )
    return run_training(prepare_training(catalog, output, config))


def test_two_workers_train_both_models_into_complete_reloadable_artifacts(ray_local, catalog, tmp_path):
    """With `model.image_size` and `train.imbalance` null each model trains, and is exported and
    measured, at its own registry size and with its own imbalance strategy in the same run."""
    output = str(tmp_path / "models")
    results = train(catalog, output, "model.image_size=null", models=("custom_cnn", "mobilenet_v2"))
    for name in ("custom_cnn", "mobilenet_v2"):
        artifact = os.path.join(output, name)
        card = json.load(open(os.path.join(artifact, "model_card.json")))
        assert card["input"]["image_size"] == get_entry(name).image_size_for(None), name
        assert card["imbalance"] == get_entry(name).imbalance_for(None), name
        assert load_keras_model(artifact).input_shape[1:3] == (card["input"]["image_size"],) * 2
        for file in ("model.keras", "model_card.json", "history.json", "curves.png", "split.csv"):
            assert os.path.getsize(os.path.join(artifact, file)) > 0, file
        card = json.load(open(os.path.join(artifact, "model_card.json")))
        assert card["class_names"] == ["blue", "green", "red"]
        assert card["workers"] == 2 and card["global_batch_size"] == 16
        assert card["split"]["hash"] and card["split"]["counts"]["test"]["red"] == 6
        assert set(card["library_versions"]) >= {"ray", "tensorflow", "keras"}
        # A failed ONNX export must not pass silently: scoring's default engine depends on it.
        assert card["onnx"]["file"] == "model.onnx", card["onnx"]
        assert card["onnx"]["max_abs_diff"] <= card["onnx"]["tolerance"]
        assert os.path.getsize(os.path.join(artifact, "model.onnx")) > 0
        assert 0.05 <= card["calibration"]["temperature"] <= 20 and 0 <= card["review"]["threshold"] <= 1
        test_images = sum(card["split"]["counts"]["test"].values())
        for when in ("before", "after"):  # the test split's reliability bins, drawn by the scoring report
            assert sum(card["calibration"][f"test_reliability_{when}"]["count"]) == test_images
        assert results[name]["version"] == card["version"]
        history = json.load(open(os.path.join(artifact, "history.json")))
        assert len(history) == card["epochs_run"] >= 1
    assert os.path.exists(os.path.join(output, "comparison.json"))
    assert "| custom_cnn |" in open(os.path.join(output, "comparison.md")).read()
    # A fresh process reloads the artifact and reproduces the recorded test accuracy.
    code = """
import json, sys, numpy as np, pandas as pd
from pipeline.artifacts import load_keras_model
from pipeline.calibration import apply_temperature, choose_review_threshold, fit_temperature
from pipeline.catalog import LabelIndex, read_catalog_frame
from pipeline.images import decode_batch
from pipeline.splits import make_split
from pipeline.train.data import build_datasets
from pipeline.images import decode_batch
artifact = sys.argv[1]
card = json.load(open(artifact + "/model_card.json"))
split = pd.read_csv(artifact + "/split.csv")
test = split[split["split"] == "test"]
batch = decode_batch({"image_uri": test["image_uri"].to_numpy()}, card["input"]["image_size"])
probabilities = load_keras_model(artifact).predict_on_batch(batch["image"].astype("float32"))
predicted = np.array(card["class_names"])[probabilities.argmax(1)]
accuracy = float((predicted == test["label"].to_numpy()).mean())
print(json.dumps({"accuracy": accuracy, "expected": card["test"]["accuracy"]}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code, os.path.join(output, "custom_cnn")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["accuracy"] == pytest.approx(figures["expected"])


def test_one_and_two_workers_build_the_same_architecture_and_both_learn(ray_local, catalog, tmp_path):
    """With `train.global_batch_size` fixed, 2 workers take half the batch each and as many
    optimizer steps an epoch as 1 worker."""
    accuracies, architectures, steps = {}, {}, {}
    for workers in (1, 2):
        output = str(tmp_path / f"w{workers}")
        results = train(catalog, output, "train.epochs=4", "train.global_batch_size=16", workers=workers)
        accuracies[workers] = results["custom_cnn"]["test"]["accuracy"]
        model = load_keras_model(os.path.join(output, "custom_cnn"))
        architectures[workers] = [
            (layer.__class__.__name__, tuple(w.shape for w in layer.weights)) for layer in model.layers
        ]
        card = json.load(open(os.path.join(output, "custom_cnn", "model_card.json")))
        assert (card["batch_size_per_worker"], card["global_batch_size"]) == (16 // workers, 16)
        steps[workers] = [row["steps"] for row in json.load(open(os.path.join(output, "custom_cnn", "history.json")))]
    assert architectures[1] == architectures[2]
    assert steps[1] == steps[2] and steps[1][0] == 84 // 16  # 84 training images, the last part batch dropped
    assert accuracies[1] >= 0.8 and accuracies[2] >= 0.8  # chance is 1/3


def test_fine_tuning_changes_only_the_top_base_layers_and_the_head(ray_local, catalog, tmp_path):
    """Compares the weights checkpointed after the head phase with those after one fine-tuning
    epoch (before any best-weights restore)."""
    import keras

    from pipeline.train.worker import CURRENT_WEIGHTS, _load_npz

    weights = str(tmp_path / "base.weights.h5")
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None)
    base.save_weights(weights)
    output = str(tmp_path / "models")
    train(
        catalog,
        output,
        "train.head_epochs=1",
        "train.fine_tune_epochs=2",
        "train.transfer_patience=5",
        "train.run_name=finetune",
        "train.keep_checkpoints=10",
        models=("mobilenet_v2",),
        weights=weights,
    )
    history = json.load(open(os.path.join(output, "mobilenet_v2", "history.json")))
    assert [row["phase"] for row in history] == ["head", "fine_tune", "fine_tune"]
    steps = history[0]["steps"]  # fine-tuning starts a fresh optimizer
    assert [row["optimizer_steps"] for row in history] == [steps, steps, 2 * steps]
    card = json.load(open(os.path.join(output, "mobilenet_v2", "model_card.json")))
    assert card["weights_source"].startswith("file ") and card["schedule"].startswith("head, then fine-tune")
    checkpoints = sorted(glob.glob(os.path.join(output, "_ray_train", "finetune-mobilenet_v2", "checkpoint_*")))
    after_head = _load_npz(os.path.join(checkpoints[0], CURRENT_WEIGHTS))
    after_fine_tune = _load_npz(os.path.join(checkpoints[1], CURRENT_WEIGHTS))
    changed = {path for path in after_head if not np.array_equal(after_head[path], after_fine_tune[path])}
    top_layers = {layer.name for layer in base.layers[-20:]}
    base_layers = {layer.name for layer in base.layers}
    changed_base = {path for path in changed if path.split("/")[0] in base_layers}
    assert changed_base, "fine-tuning changed no base layer"
    assert {path.split("/")[0] for path in changed_base} <= top_layers
    assert not any("moving_" in path for path in changed), "BatchNorm statistics must stay frozen"
    assert {path for path in changed if path.startswith(("dense/", "probabilities/"))}


def _train_process(catalog, output, run_name, *extra, model="custom_cnn", weights="none"):
    command = [
        sys.executable,
        "-m",
        "jobs.train",
        "--catalog",
        catalog,
        "--output",
        output,
        "--models",
        model,
        "--weights",
        weights,
        "--workers",
        "2",
        "--set",
        f"train.run_name={run_name}",
    ]
    for override in TINY + list(extra):
        command += ["--set", override]
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _wait_for_checkpoints(output, run_name, count, process, timeout=600, model="custom_cnn"):
    """Waits until Ray Train has *registered* `count` checkpoints. A checkpoint directory appears
    in storage before the controller registers it; a worker killed in between loses it."""
    deadline = time.time() + timeout
    snapshot = os.path.join(output, "_ray_train", f"{run_name}-{model}", "checkpoint_manager_snapshot.json")
    while time.time() < deadline:
        try:
            with open(snapshot) as handle:
                if len(json.load(handle)["checkpoint_results"]) >= count:
                    return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        if process.poll() is not None:
            pytest.fail(f"training ended early:\n{process.stdout.read()[-3000:]}")
        time.sleep(0.2)
    pytest.fail("no checkpoints were registered")


def _kill_tree(process):
    """SIGKILLs the job and the embedded Ray it started (one session); never `ray stop`, which
    would also kill every other Ray on the machine."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def test_rerun_with_the_same_run_name_resumes_after_a_killed_driver(tmp_path, catalog):
    output = str(tmp_path / "models")
    process = _train_process(catalog, output, "resume", "train.epochs=6", "train.cnn_patience=10")
    try:
        _wait_for_checkpoints(output, "resume", 2, process)
    finally:
        _kill_tree(process)
    assert not os.path.exists(os.path.join(output, "custom_cnn", "model_card.json"))
    rerun = _train_process(catalog, output, "resume", "train.epochs=6", "train.cnn_patience=10")
    log, _ = rerun.communicate(timeout=800)
    assert rerun.returncode == 0, log[-3000:]
    card = json.load(open(os.path.join(output, "custom_cnn", "model_card.json")))
    # Resumed once, from at least the 2nd registered checkpoint (a newer one may have been written
    # but not registered before the kill); the log says the same to a person.
    assert len(card["resumed_at_epochs"]) == 1 and 2 <= card["resumed_at_epochs"][0] < 6
    history = json.load(open(os.path.join(output, "custom_cnn", "history.json")))
    assert [row["epoch"] for row in history] == list(range(1, 7))
    # Adam's state came back with the weights: its step count runs on across the restart.
    steps = history[0]["steps"]
    assert [row["optimizer_steps"] for row in history] == [steps * epoch for epoch in range(1, 7)]


def test_a_transfer_run_killed_in_its_head_phase_still_unfreezes_the_base_to_fine_tune(tmp_path, catalog):
    """A run resumed from a head-phase checkpoint continues the head, then fine-tunes with the top
    of the base unfrozen, as an uninterrupted run does (a bug once skipped the unfreezing)."""
    import keras

    output = str(tmp_path / "models")
    weights = str(tmp_path / "base.weights.h5")  # a pretrained base makes it a two-phase run
    keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None).save_weights(weights)
    settings = ("train.head_epochs=4", "train.fine_tune_epochs=2", "train.transfer_patience=10")
    process = _train_process(catalog, output, "head", *settings, model="mobilenet_v2", weights=weights)
    try:
        _wait_for_checkpoints(output, "head", 1, process, model="mobilenet_v2")
    finally:
        _kill_tree(process)
    rerun = _train_process(catalog, output, "head", *settings, model="mobilenet_v2", weights=weights)
    log, _ = rerun.communicate(timeout=800)
    assert rerun.returncode == 0, log[-3000:]
    card = json.load(open(os.path.join(output, "mobilenet_v2", "model_card.json")))
    assert len(card["resumed_at_epochs"]) == 1 and 1 <= card["resumed_at_epochs"][0] < 4  # resumed in the head
    history = json.load(open(os.path.join(output, "mobilenet_v2", "history.json")))
    assert [row["phase"] for row in history] == ["head"] * 4 + ["fine_tune"] * 2
    head = {row["trainable_weights"] for row in history if row["phase"] == "head"}
    fine_tune = {row["trainable_weights"] for row in history if row["phase"] == "fine_tune"}
    assert len(head) == len(fine_tune) == 1 and fine_tune.pop() > head.pop()


def test_a_killed_worker_is_replaced_and_training_finishes(tmp_path, catalog):
    output = str(tmp_path / "models")
    # Enough epochs that the kill lands mid-training even on a fast, idle machine (an epoch of
    # these tiny images can take under a second).
    epochs = 12
    process = _train_process(
        catalog, output, "faults", f"train.epochs={epochs}", "train.cnn_patience=100", "train.max_failures=2"
    )
    try:
        _wait_for_checkpoints(output, "faults", 1, process)
        session = process.pid  # start_new_session: the job, its Ray and its workers share this session
        workers = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "RayTrainWorker" in " ".join(p.info["cmdline"] or []) and _session_of(p) == session
        ]
        assert workers, "no RayTrainWorker process found in the job's session"
        checkpoints_at_kill = len(glob.glob(os.path.join(output, "_ray_train", "faults-custom_cnn", "checkpoint_*")))
        workers[-1].kill()
        log, _ = process.communicate(timeout=800)
    finally:
        _kill_tree(process)
    assert process.returncode == 0, log[-3000:]
    assert checkpoints_at_kill < epochs, "training had finished before the worker was killed"
    card = json.load(open(os.path.join(output, "custom_cnn", "model_card.json")))
    assert len(card["resumed_at_epochs"]) >= 1, "no restart from a checkpoint was recorded"
    assert all(1 <= epoch < epochs for epoch in card["resumed_at_epochs"])
    assert card["test"]["accuracy"] >= 0.8
    history = json.load(open(os.path.join(output, "custom_cnn", "history.json")))
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
    steps = history[0]["steps"]
    assert [row["optimizer_steps"] for row in history] == [steps * epoch for epoch in range(1, epochs + 1)]


def _session_of(process):
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_early_stopping_stops_every_worker_and_keeps_the_best_epochs_weights(ray_local, catalog, tmp_path):
    """A learning rate far too high makes validation loss stop improving within a few epochs: the
    run must stop `patience` epochs after its best one (on both workers, or the collectives would
    hang), and the saved model must be the best epoch's, not the last one's."""
    import keras

    output = str(tmp_path / "models")
    patience, budget = 2, 40
    train(
        catalog,
        output,
        f"train.epochs={budget}",
        f"train.cnn_patience={patience}",
        "train.learning_rate=0.5",
        "train.run_name=early",
        "train.keep_checkpoints=100",
    )
    artifact = os.path.join(output, "custom_cnn")
    card = json.load(open(os.path.join(artifact, "model_card.json")))
    history = json.load(open(os.path.join(artifact, "history.json")))
    assert card["epochs_run"] == len(history) < budget, "early stopping never fired"
    assert card["epochs_run"] == card["best_epoch"] + patience
    best = history[card["best_epoch"] - 1]
    criterion = "val_balanced_loss"  # train.selection's default
    assert best[criterion] == min(row[criterion] for row in history)
    assert all(row[criterion] >= best[criterion] for row in history[card["best_epoch"] :])
    # The saved weights reproduce the best epoch's validation loss, not the last epoch's.
    split = pd.read_csv(os.path.join(artifact, "split.csv"))
    val = split[split["split"] == "val"]
    pixels = decode_batch({"image_uri": val["image_uri"].to_numpy()}, 32)["image"].astype("float32")
    labels = np.array([card["class_names"].index(label) for label in val["label"]])
    probabilities = load_keras_model(artifact).predict_on_batch(pixels)
    loss = float(keras.losses.sparse_categorical_crossentropy(labels, probabilities).numpy().mean())
    assert loss == pytest.approx(best["val_loss"], rel=1e-4)
    assert card["validation"]["loss"] == pytest.approx(best["val_loss"])
    # The model holds the best weights, not those of a later epoch.
    checkpoints = sorted(
        path
        for path in glob.glob(os.path.join(output, "_ray_train", "early-custom_cnn", "checkpoint_*"))
        if os.path.isdir(path)
    )
    assert len(checkpoints) == card["epochs_run"] + 1  # one per epoch, then the final one
    saved = {variable.path: variable.numpy() for variable in load_keras_model(artifact).weights}
    best_weights = _load_npz(os.path.join(checkpoints[-1], BEST_WEIGHTS))
    # The epoch after the best one trained on (a stop restores the best weights before its checkpoint).
    after_best = _load_npz(os.path.join(checkpoints[card["best_epoch"]], CURRENT_WEIGHTS))
    assert all(np.array_equal(saved[path], best_weights[path]) for path in saved)
    assert any(not np.array_equal(saved[path], after_best[path]) for path in saved)
    # Temperature and review threshold come from these validation images, never the test split.
    temperature = fit_temperature(probabilities, labels)
    assert card["calibration"]["temperature"] == pytest.approx(temperature, rel=1e-3)
    calibrated = apply_temperature(probabilities, card["calibration"]["temperature"])
    review = choose_review_threshold(calibrated, labels, card["config"]["train"]["review_target_accuracy"])
    assert card["review"]["threshold"] == pytest.approx(review["threshold"], abs=1e-6)


def test_augmentation_changes_training_batches_and_never_validation_or_test(ray_local, catalog):
    """Built the way run_training builds them: the train split is augmented (rotation, shift, shear,
    zoom, flip), while validation and test images reach the model exactly as decoded."""
    frame = make_split(read_catalog_frame(catalog), 0.15, 0.15, 0)
    label_index = LabelIndex.fit(frame["label"])
    config = load_config(None, ["model.image_size=32"])
    assert config.augment.enabled  # the default
    datasets, _ = build_datasets(frame, label_index, 32, config.data, config.augment, config.train.imbalance)
    for split in ("train", "val", "test"):
        rows = frame[frame["split"] == split]
        decoded = decode_batch({"image_uri": rows["image_uri"].to_numpy()}, 32)["image"]
        raw = {image.tobytes() for image in decoded}
        seen = [
            image.tobytes() for batch in datasets[split].iter_batches(batch_format="numpy") for image in batch["image"]
        ]
        assert len(seen) == len(rows)
        unchanged = sum(image in raw for image in seen)
        if split == "train":
            assert unchanged <= 0.05 * len(seen), f"{unchanged} of {len(seen)} training images were not augmented"
        else:
            assert unchanged == len(seen), f"{len(seen) - unchanged} {split} images were altered"


def test_the_train_split_is_shuffled_every_epoch_with_augmentation_off_too(ray_local, catalog):
    """Catalogs are often sorted by class: without augmentation the training batches must still
    come shuffled, and differently each epoch (Ray Train re-runs the dataset every epoch)."""
    frame = make_split(read_catalog_frame(catalog), 0.15, 0.15, 0)
    label_index = LabelIndex.fit(frame["label"])
    config = load_config(None, ["model.image_size=32", "augment.enabled=false"])
    datasets, _ = build_datasets(frame, label_index, 32, config.data, config.augment, config.train.imbalance)
    rows = frame[frame["split"] == "train"]
    decoded = decode_batch({"image_uri": rows["image_uri"].to_numpy()}, 32)["image"]
    in_catalog_order = [image.tobytes() for image in decoded]

    def epoch() -> list[bytes]:
        batches = datasets["train"].iter_batches(batch_format="numpy")
        return [image.tobytes() for batch in batches for image in batch["image"]]

    first, second = epoch(), epoch()
    assert sorted(first) == sorted(in_catalog_order)  # every image, unaltered
    assert first != in_catalog_order and second != first


def test_a_failed_imagenet_download_trains_mobilenet_from_scratch_and_the_card_says_so(
    ray_local, catalog, tmp_path, offline_keras, caplog
):
    """The demo preset's promise: `--weights imagenet` with `model.weights_fallback: none` and no
    internet trains MobileNetV2 from random initialisation, and the log and the card both say so."""
    from jobs import train as train_job

    output = tmp_path / "models"
    code = train_job.main(
        ["--catalog", catalog, "--output", str(output), "--models", "mobilenet_v2", "--weights", "imagenet"]
        + ["--workers", "1", "--epochs", "1", "--image-size", "32", "--set", "model.weights_fallback=none"]
        + sum((["--set", o] for o in TINY if not o.startswith(("train.", "model."))), [])
    )
    assert code == 0
    card = json.load(open(output / "mobilenet_v2" / "model_card.json"))
    assert card["weights_source"].startswith("none (random initialisation) (fallback: 'imagenet' unavailable: ")
    assert "could not be loaded" in card["weights_source"]
    assert "using the configured fallback 'none'" in caplog.text
