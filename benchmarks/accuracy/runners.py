"""One result row: the product's training and scoring on Ray, or the study's method in one Keras process.

The only module of this benchmark that calls the product's training and scoring entry points.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from benchmarks.accuracy.data import Arrays, Data
from benchmarks.accuracy.metrics import metric_block, reliability_bins, uncalibrate
from benchmarks.accuracy.resume import completed
from benchmarks.accuracy.settings import RowPlan, Schedule, Settings, describe_weights, display_path
from benchmarks.accuracy.study import augmented_batches, effective_sample_weights, study_class_weight
from jobs.config import load_config
from models import build_model, get_entry
from pipeline.artifacts import read_card
from pipeline.calibration import apply_temperature, fit_temperature
from pipeline.schema import ERROR, LABEL
from pipeline.score.driver import prepare_scoring, score
from pipeline.score.predictions import read_predictions, read_run, read_summary
from pipeline.tf_runtime import configure_tensorflow
from pipeline.train.data import class_weight_vector
from pipeline.train.driver import prepare_training, run_training

logger = logging.getLogger(__name__)


def configure_process() -> None:
    """Sizes this process's TensorFlow (the baselines train here) like a 2-CPU product worker."""
    configure_tensorflow(2, False)


def run_row(row: RowPlan, settings: Settings, heldout: str, data: Data) -> dict[str, Any]:
    """Trains and evaluates one row; Ray must already be running for product rows."""
    if row.variant.is_product:
        return run_product(row, settings, heldout, data)
    return run_baseline(row, settings, data)


# --------------------------------------------------------------------------- product


def product_overrides(
    model: str,
    imbalance: str,
    weights: str,
    image_size: int,
    schedule: Schedule,
    run_name: str,
    seeds: tuple[int, int],
) -> list[str]:
    """The `--set` overrides one product row trains and scores with; `seeds` is (split, training)."""
    from_scratch = get_entry(model).takes_weights and weights == "none"
    epochs = schedule.scratch_epochs if from_scratch else schedule.cnn_epochs
    return [
        f"model.image_size={image_size}",
        f"model.weights={weights}",
        "model.weights_fallback=null",
        f"train.epochs={epochs}",
        f"train.head_epochs={schedule.head_epochs}",
        f"train.fine_tune_epochs={schedule.fine_tune_epochs}",
        f"train.fine_tune_layers={schedule.fine_tune_layers}",
        f"train.cnn_patience={schedule.cnn_patience}",
        f"train.transfer_patience={schedule.transfer_patience}",
        f"train.batch_size_per_worker={schedule.product_batch_per_worker}",
        # The baselines' learning rates are right for their batch, the product's global batch.
        f"train.reference_batch_size={schedule.batch_size}",
        f"train.imbalance={imbalance}",
        f"train.run_name={run_name}",
        f"data.seed={seeds[0]}",
        f"train.seed={seeds[1]}",
        # jobs/configs/local.yaml's resources: 2 workers x 0.5 CPU (2 x 1 CPU starves Ray Data here).
        "resources.workers=2",
        "resources.cpus_per_worker=0.5",
        "resources.actors=1",
        "resources.cpus_per_actor=0.5",
        "predict.batch_size=64",
        "predict.overwrite=true",
    ]


def run_product(row: RowPlan, settings: Settings, heldout: str, data: Data) -> dict[str, Any]:
    """Trains with `run_training` and scores the held-out catalog with `score`, as users would.

    Raises:
        RuntimeError: The product split the catalog differently from the baselines, or scoring failed.
    """
    assert row.imbalance is not None  # RowPlan gives every product row a strategy
    model = row.variant.model
    # The CNN never reads weights; "none" keeps prepare_training from resolving MobileNetV2's.
    weights = (row.variant.fixed_weights or settings.weights) if row.variant.pretrained else "none"
    slug = row.row_id.replace("[", "-").replace("]", "").replace("#", "-r")
    run_name = f"acc-{slug}-{datetime.now(UTC):%Y%m%d%H%M%S}"
    seeds = (settings.seed, settings.run_seed(row))
    overrides = product_overrides(
        model, row.imbalance, weights, settings.image_size, settings.schedule, run_name, seeds
    )
    config = load_config(None, overrides, **{"model.names": [model]})
    models_dir = os.path.join(settings.work_dir, "models", slug)
    scores_dir = os.path.join(settings.work_dir, "scores", slug)
    artifact = os.path.join(models_dir, model)
    reused = settings.reuse_work and completed(artifact, scores_dir)
    if reused:
        logger.info("%s: reusing the artifact and scoring run in %s", row.row_id, settings.work_dir)
    else:
        for directory in (models_dir, scores_dir):
            shutil.rmtree(directory, ignore_errors=True)  # never resume a stale run
    artifact, card, train_seconds = _train(reused, artifact, models_dir, settings.catalog, config, model)
    if card["split"]["hash"] != data.split_hash:
        raise RuntimeError(
            f"{row.row_id}: the product's split ({card['split']['hash']}) differs from the baselines' "
            f"({data.split_hash}); the comparison would be unfair"
        )
    manifest, score_seconds = _score(reused, heldout, artifact, scores_dir, config)
    if manifest["status"] != "completed":
        raise RuntimeError(
            f"{row.row_id}: scoring run {manifest['run_id']} ended {manifest['status']}: {manifest.get('problems')}"
        )
    run = ProductRun(artifact, scores_dir, card, manifest, train_seconds, score_seconds, reused)
    return _product_row(row, weights, run, data)


@dataclass(frozen=True)
class ProductRun:
    """Where one product row's artifact and scoring run are, and what they took."""

    artifact: str
    scores_dir: str
    card: dict[str, Any]
    manifest: dict[str, Any]
    train_seconds: float
    score_seconds: float
    reused: bool


def _train(
    reused: bool, artifact: str, models_dir: str, catalog: str, config: Any, model: str
) -> tuple[str, dict[str, Any], float]:
    """Returns (artifact, model card, training seconds); a reused run reports what it took then."""
    if not reused:
        started = time.perf_counter()
        artifact = run_training(prepare_training(catalog, models_dir, config))[model]["artifact"]
        train_seconds = time.perf_counter() - started
    card = read_card(artifact).to_dict()
    if reused:
        train_seconds = float(card["training_seconds"])
    return artifact, card, train_seconds


def _score(reused: bool, heldout: str, artifact: str, scores_dir: str, config: Any) -> tuple[dict[str, Any], float]:
    """Returns (scoring manifest, scoring seconds); a reused run reports what it took then."""
    if reused:
        previous = read_run(scores_dir)
        if previous is None:
            raise RuntimeError(f"{scores_dir} holds no run.json to reuse")
        manifest = previous.to_dict()
        return manifest, float(manifest["timings"]["seconds"])
    started = time.perf_counter()
    manifest = score(prepare_scoring(heldout, artifact, scores_dir, config)).to_dict()
    return manifest, time.perf_counter() - started


def _product_heldout(row_id: str, run: ProductRun, data: Data) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Held-out metrics from the scoring run's predictions; returns (metrics, labels, calibrated)."""
    card = run.card
    predictions = read_predictions(run.scores_dir, [LABEL, "probabilities", ERROR])
    predictions = predictions[predictions[ERROR].isna() & predictions[LABEL].isin(card["class_names"])]
    labels = np.array([card["class_names"].index(label) for label in predictions[LABEL]], dtype=np.int32)
    calibrated = np.stack(predictions["probabilities"].to_numpy()).astype(np.float64)
    temperature = float(card["calibration"]["temperature"])
    heldout = metric_block(labels, calibrated, uncalibrate(calibrated, temperature), data.class_names, data.minority)
    # The scoring run's own summary is the source of truth (it computes in float32; we recompute in
    # float64 for the uncalibrated figures, so the log loss may differ in the 4th digit).
    summary = read_summary(run.scores_dir)
    if summary is None:
        raise RuntimeError(f"{row_id}: the scoring run in {run.scores_dir} wrote no evaluation")
    official = summary.metrics
    for key, ours in (
        ("accuracy", heldout["accuracy"]),
        ("loss", heldout["log_loss"]),
        ("expected_calibration_error", heldout["ece_calibrated"]),
    ):
        if not math.isclose(official[key], ours, rel_tol=1e-2, abs_tol=1e-3):
            logger.warning(
                "%s: recomputed held-out %s %s differs from summary.json's %s", row_id, key, ours, official[key]
            )
    heldout.update(
        accuracy=official["accuracy"],
        macro_f1=official["macro"]["f1"],
        log_loss=official["loss"],
        ece_calibrated=official["expected_calibration_error"],
    )
    return heldout, labels, calibrated


def _product_row(row: RowPlan, weights: str, run: ProductRun, data: Data) -> dict[str, Any]:
    card, test = run.card, run.card["test"]
    heldout, labels, calibrated = _product_heldout(row.row_id, run, data)
    temperature = float(card["calibration"]["temperature"])
    return {
        "row": row.row_id,
        "repeat": row.repeat,
        "seed": card["seed"],
        "variant": row.variant.name,
        "family": "product",
        "model": row.variant.model,
        "imbalance": row.imbalance,
        "weights": describe_weights(weights),
        "weights_source_in_card": card["weights_source"],
        "input_pixels": card["input"]["pixel_range"],
        "class_weights": card["class_weights"],
        "schedule": card["schedule"],
        "epochs_run": card["epochs_run"],
        "best_epoch": card["best_epoch"],
        "global_batch_size": card["global_batch_size"],
        "train_seconds": round(run.train_seconds, 1),
        "score_seconds": round(run.score_seconds, 1),
        "scoring_engine": run.manifest["engine"],
        "temperature": temperature,
        "heldout": heldout,
        "heldout_source": "scoring run evaluation/summary.json (calibrated confidences); uncalibrated figures "
        "from inverting the card's temperature on the same predictions",
        "internal_test": {
            "rows": test["rows"],
            "accuracy": test["accuracy"],
            "macro_f1": test["macro"]["f1"],
            "minority_f1": next(r["f1"] for r in test["per_class"] if r["label"] == data.minority),
            "ece_uncalibrated": card["calibration"]["test_ece_before"],
            "ece_calibrated": card["calibration"]["test_ece_after"],
        },
        "reliability": {
            "uncalibrated": reliability_bins(uncalibrate(calibrated, temperature), labels),
            "calibrated": reliability_bins(calibrated, labels),
        },
        "artifact": display_path(run.artifact),
        "scores": display_path(run.scores_dir),
        "reused_work": run.reused,
    }


# --------------------------------------------------------------------------- baseline


def run_baseline(row: RowPlan, settings: Settings, data: Data) -> dict[str, Any]:
    """The study's method in this process: Keras `fit` on the product's split, then a temperature
    fitted on the validation split (which the study never had) for the 'ECE after' column."""
    import keras

    variant, schedule, seed = row.variant, settings.schedule, settings.run_seed(row)
    keras.utils.set_random_seed(seed)
    balanced = class_weight_vector(data.train.labels, len(data.class_names))
    class_weight = study_class_weight(balanced, data.class_names, variant.published)
    model, pixel_range = _baseline_model(row, settings, len(data.class_names))
    phases = _phases(variant.model, schedule)
    started = time.perf_counter()
    history = _fit_phases(row.row_id, model, phases, class_weight, schedule, data, seed)
    train_seconds = time.perf_counter() - started

    def predict(arrays: Arrays) -> np.ndarray:
        return np.asarray(model.predict(arrays.images.astype(np.float32), batch_size=128, verbose=0), np.float64)

    val_raw, test_raw, heldout_raw = predict(data.val), predict(data.test), predict(data.heldout)
    temperature = fit_temperature(val_raw, data.val.labels)
    heldout = metric_block(
        data.heldout.labels, apply_temperature(heldout_raw, temperature), heldout_raw, data.class_names, data.minority
    )
    test = metric_block(
        data.test.labels, apply_temperature(test_raw, temperature), test_raw, data.class_names, data.minority
    )
    # As published there is no calibration: the headline log loss is the raw model's.
    heldout["log_loss"] = heldout["log_loss_uncalibrated"]
    sample_weights = effective_sample_weights(data.train.labels, class_weight)
    return {
        "row": row.row_id,
        "repeat": row.repeat,
        "variant": variant.name,
        "family": "baseline",
        "model": variant.model,
        "imbalance": "class_weight keyed by class-name strings (no effect)"
        if variant.published
        else "class_weight (integer keys)",
        "weights": describe_weights(settings.weights) if variant.pretrained else "none (trained from scratch)",
        "input_pixels": list(pixel_range),
        "class_weights": {str(k): v for k, v in class_weight.items()},
        "effective_sample_weights": {
            name: float(sample_weights[data.train.labels == i][0]) for i, name in enumerate(data.class_names)
        },
        "schedule": " then ".join(f"{p} ({e} epochs max, lr {lr:g}, patience {pt})" for p, e, lr, pt in phases),
        "epochs_run": len(history),
        "history": history,
        "global_batch_size": schedule.batch_size,
        "seed": seed,
        "train_seconds": round(train_seconds, 1),
        "temperature": temperature,
        "heldout": heldout,
        "heldout_source": "in-process Keras predict on the held-out images decoded with pipeline.images.decode_batch; "
        "headline log loss uncalibrated (as published); ece_calibrated = with a temperature this "
        "benchmark fitted on the validation split",
        "internal_test": {
            key: test[key]
            for key in ("rows", "accuracy", "macro_f1", "minority_f1", "ece_uncalibrated", "ece_calibrated")
        },
        "reliability": {
            "uncalibrated": reliability_bins(heldout_raw, data.heldout.labels),
            "calibrated": reliability_bins(apply_temperature(heldout_raw, temperature), data.heldout.labels),
        },
    }


def _baseline_model(row: RowPlan, settings: Settings, num_classes: int) -> tuple[Any, tuple[float, float]]:
    """The product's own builder, fed the variant's pixel range; returns (model, pixel range)."""
    variant = row.variant
    pixel_range = variant.pixel_range or get_entry(variant.model).input_spec(settings.image_size).pixel_range
    options = {"weights": settings.weights} if variant.pretrained else {}
    model = build_model(variant.model, num_classes, settings.image_size, pixel_range=pixel_range, **options)
    return model, pixel_range


Phase = tuple[str, int, float, int]  # name, epochs, learning rate, early-stopping patience


def _phases(model: str, schedule: Schedule) -> list[Phase]:
    if not get_entry(model).two_phase:
        return [("train", schedule.cnn_epochs, 1e-3, schedule.cnn_patience)]
    phases = [("head", schedule.head_epochs, 1e-3, schedule.transfer_patience)]
    if schedule.fine_tune_epochs > 0:
        phases.append(("fine_tune", schedule.fine_tune_epochs, 1e-5, schedule.transfer_patience))
    return phases


def _fit_phases(
    row_id: str,
    model: Any,
    phases: list[Phase],
    class_weight: dict[Any, float],
    schedule: Schedule,
    data: Data,
    seed: int,
) -> list[dict[str, Any]]:
    """Fits each phase with early stopping on validation loss; returns the per-epoch history."""
    import keras

    from models.mobilenet_v2 import unfreeze_top_layers

    val_x = data.val.images.astype(np.float32)
    history: list[dict[str, Any]] = []
    for phase, epochs, learning_rate, patience in phases:
        if phase == "fine_tune":
            unfreeze_top_layers(model, schedule.fine_tune_layers)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        fitted = model.fit(
            augmented_batches(data.train.images, data.train.labels, schedule.batch_size, seed),
            validation_data=(val_x, data.val.labels),
            epochs=epochs,
            class_weight=class_weight,
            callbacks=[stopper],
            verbose=0,
        )
        for values in zip(*fitted.history.values()):
            history.append(
                {
                    "phase": phase,
                    "epoch": len(history) + 1,
                    **{key: round(float(value), 5) for key, value in zip(fitted.history, values)},
                }
            )
        logger.info(
            "%s %s: %d epochs, best val_loss %.4f",
            row_id,
            phase,
            len(fitted.history["loss"]),
            min(fitted.history["val_loss"]),
        )
    return history
