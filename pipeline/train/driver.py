"""One training run end to end: check inputs, split, train each model, write artifacts and the
comparison. `jobs.train` is a thin shell around `prepare_training` and `run_training`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import ray

from models import get_entry, image_sizes, imbalances
from pipeline import artifacts, intervals, reports, storage
from pipeline.artifacts import WeightsChoice
from pipeline.calibration import apply_temperature, choose_review_threshold, fit_temperature
from pipeline.catalog import LabelIndex, has_labels, read_catalog_frame
from pipeline.config import JobConfig
from pipeline.engines import export_onnx
from pipeline.extra_labels import ExtraLabels, read_extra_labels
from pipeline.metrics import confidence_histogram, reliability_bins, summarize
from pipeline.records import Calibration, DriftBaseline, ModelCard, OnnxExport, Review
from pipeline.resources import ClusterShape, fit_training
from pipeline.schema import IMAGE, IMAGE_ID, IMAGE_URI, LABEL
from pipeline.splits import SPLIT, make_split, split_counts, split_hash
from pipeline.train.data import LABEL_INDEX, build_datasets, class_weight_vector
from pipeline.train.folds import (
    VALIDATION_SPLIT,
    OutOfFold,
    check_fold_steps,
    check_folds,
    out_of_fold_predictions,
)
from pipeline.train.learning_rates import warmup_steps
from pipeline.train.selection import images_per_class, too_few_warnings
from pipeline.train.trainer import fit
from pipeline.train.worker import FINAL_MODEL, STATE_FILE, WorkerConfig, plan_phases

logger = logging.getLogger(__name__)

# The reviewed images a model was trained on beyond its catalog, next to split.csv in the artifact.
EXTRA_LABELS_FILE = "extra_labels.csv"


@dataclass(frozen=True)
class TrainingPlan:
    """Everything checked before Ray starts."""

    catalog_uri: str
    output_uri: str
    config: JobConfig
    frame: pd.DataFrame  # catalog rows with their split
    label_index: LabelIndex
    weights: dict[str, WeightsChoice]  # per model that takes pretrained weights
    run_name: str
    extra: ExtraLabels | None = None  # reviewed images outside the catalog, added to train only

    def training_frame(self) -> pd.DataFrame:
        """The catalog's rows with their split, plus the extra labels' rows, all in `train`.

        The catalog's own split (and its hash) is made before and without the extra rows, so a
        model trained with them is measured on exactly the validation and test images of one
        trained without them.
        """
        if self.extra is None:
            return self.frame
        extra = self.extra.rows.assign(**{SPLIT: "train"})
        return pd.concat([self.frame, extra], ignore_index=True)


def prepare_training(
    catalog_uri: str, output_uri: str, config: JobConfig, extra_labels_uri: str | None = None
) -> TrainingPlan:
    """Validates the catalog, extra labels, models, weights and output, and makes the split.

    Raises:
        ValueError: Anything the user must fix, named with the fix, before any work starts.
    """
    for name in config.model.names:
        get_entry(name)
    frame = read_catalog_frame(catalog_uri)
    if not has_labels(frame) or frame[LABEL].isna().any():
        raise ValueError(
            f"catalog {catalog_uri!r} must be labelled for training (a <root>/<label>/ tree or "
            "a manifest with a label on every row)"
        )
    _check_no_empty_classes(catalog_uri, frame)
    label_index = LabelIndex.fit(frame[LABEL])
    if len(label_index) < 2:
        raise ValueError(
            f"catalog {catalog_uri!r} has one class ({label_index.class_names[0]!r}); a classifier needs at least two"
        )
    data = config.data
    frame = make_split(frame, data.val_fraction, data.test_fraction, data.seed)
    check_folds(frame, config.train.calibration_folds)
    extra = read_extra_labels(extra_labels_uri, label_index.class_names, frame) if extra_labels_uri else None
    needed = config.train.global_batch(config.resources.workers)
    check_fold_steps(frame, config.train, config.resources.workers, config.training_seed)
    train_rows = int((frame[SPLIT] == "train").sum()) + (len(extra.rows) if extra else 0)
    if train_rows < needed:
        raise ValueError(
            f"the train split has {train_rows} images but one step needs the global batch of {needed}; "
            f"{config.train.smaller_batch_fix()}"
        )
    weights = {}
    sizes = image_sizes(config.model.names, config.model.image_size)
    logger.info("image sizes: %s", ", ".join(f"{name} {size} px" for name, size in sizes.items()))
    strategies = imbalances(config.model.names, config.train.imbalance)
    logger.info("imbalance: %s", ", ".join(f"{name} {strategy}" for name, strategy in strategies.items()))
    for name in config.model.names:
        check_weights = get_entry(name).check_weights
        if check_weights is not None:
            weights[name] = artifacts.resolve_weights(
                config.model.weights, config.model.weights_fallback, sizes[name], check_weights
            )
            logger.info("%s weights: %s", name, weights[name].source)
    storage.check_writable(output_uri)
    run_name = config.train.run_name or datetime.now(UTC).strftime("train-%Y%m%d-%H%M%S")
    return TrainingPlan(
        storage.normalize(catalog_uri),
        storage.normalize(output_uri),
        config,
        frame,
        label_index,
        weights,
        run_name,
        extra,
    )


def _check_no_empty_classes(catalog_uri: str, frame: pd.DataFrame) -> None:
    if catalog_uri.lower().endswith((".csv", ".parquet", ".pq")):
        return
    folders = {
        os.path.basename(uri.rstrip("/"))
        for uri in storage.listdir(catalog_uri)
        if storage.filesystem(uri)[0].isdir(storage.filesystem(uri)[1])
    }
    empty = sorted(folders - set(frame[LABEL].unique()))
    if empty:
        raise ValueError(f"class folder(s) {empty} in {catalog_uri!r} hold no images; add images or remove them")


def run_training(plan: TrainingPlan) -> dict[str, Any]:
    """Trains every requested model and writes one artifact per model (+ comparison).

    Returns:
        {model name: test metrics} for the models trained.
    """
    config = dataclasses.replace(plan.config, resources=fit_training(plan.config.resources, ClusterShape.current()))
    plan = dataclasses.replace(plan, config=config)
    counts = split_counts(plan.frame)
    logger.info("classes: %s", list(plan.label_index.class_names))
    logger.info("split sizes: %s (hash %s)", {k: sum(v.values()) for k, v in counts.items()}, split_hash(plan.frame))
    training_frame = plan.training_frame()
    if plan.extra is not None:
        logger.info("extra labels: %d reviewed images join the train split only", len(plan.extra.rows))
    train_indices = plan.label_index.encode(training_frame.loc[training_frame[SPLIT] == "train", LABEL]).to_numpy()
    sizes = image_sizes(config.model.names, config.model.image_size)
    strategies = imbalances(config.model.names, config.train.imbalance)
    # One decoded set of splits per distinct size and strategy: models that share both share it.
    decoded: dict[tuple[int, str], tuple[dict[str, ray.data.Dataset], dict[str, int]]] = {}
    storage_path = storage.join(plan.output_uri, "_ray_train")
    results = {}
    for name in config.model.names:
        key = (sizes[name], strategies[name])
        if key not in decoded:
            decoded[key] = build_datasets(
                training_frame,
                plan.label_index,
                sizes[name],
                config.data,
                config.augment,
                strategies[name],
                config.training_seed,
            )
        datasets, skipped = decoded[key]
        worker_config = _worker_config(plan, name, sizes[name], strategies[name], train_indices, skipped["train"])
        started = time.perf_counter()
        run_name = f"{plan.run_name}-{name}"
        result = fit(name, datasets, worker_config, config.resources, storage_path, run_name)
        if result.error:
            raise result.error
        seconds = time.perf_counter() - started
        out_of_fold = None
        if config.train.calibration_folds:
            out_of_fold = out_of_fold_predictions(
                plan.frame, plan.label_index, config, worker_config, storage_path, run_name, _predict_dataset
            )
        run = TrainedRun(name, result, worker_config, counts, skipped, seconds, out_of_fold)
        results[name] = _write_artifact(plan, run, datasets)
    if len(results) > 1:
        write_comparison(plan.output_uri, results, plan.label_index.class_names)
    return results


def _class_weights(imbalance: str, train_indices: np.ndarray, num_classes: int) -> np.ndarray:
    if imbalance in ("class_weight", "both"):
        return class_weight_vector(train_indices, num_classes)
    return np.ones(num_classes, dtype=np.float32)


def _worker_config(
    plan: TrainingPlan, name: str, image_size: int, imbalance: str, train_indices: np.ndarray, undecodable: int
) -> WorkerConfig:
    """What each Ray Train worker needs to train `name` with `imbalance` (resolved, never null).

    `train_indices` (the train split's class ids) give the class weights and, with the
    `undecodable` images left out, the epoch's length that sets the warm-up.
    """
    config = plan.config
    global_batch_size = config.train.global_batch(config.resources.workers)
    class_weights = _class_weights(imbalance, train_indices, len(plan.label_index))
    logger.info("%s class weights: %s", name, dict(zip(plan.label_index.class_names, class_weights.round(3))))
    train_images = len(train_indices) - undecodable
    if imbalance in ("oversample", "both"):
        train_images = int(np.bincount(train_indices).max()) * len(plan.label_index)
    return WorkerConfig(
        model_name=name,
        num_classes=len(plan.label_index),
        image_size=image_size,
        # A randomly initialised base has nothing to fine-tune: it trains in one phase, fully.
        two_phase=get_entry(name).two_phase and name in plan.weights and plan.weights[name].uri is not None,
        weights=plan.weights[name].uri if name in plan.weights else None,
        dropout=config.model.dropout,
        class_weights=tuple(float(w) for w in class_weights),
        train=config.train,
        imbalance=imbalance,
        workers=config.resources.workers,
        cpus_per_worker=config.resources.cpus_per_worker,
        gpu=config.resources.gpu,
        seed=config.training_seed,
        warmup_steps=warmup_steps(train_images, global_batch_size, config.train.warmup_epochs),
    )


def _predict_dataset(
    model: Any, dataset: ray.data.Dataset, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Returns (labels, probabilities, a probe batch of real images for the ONNX check)."""
    labels: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    probe: np.ndarray | None = None
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        probabilities.append(model.predict_on_batch(batch[IMAGE].astype(np.float32)))
        labels.append(batch[LABEL_INDEX])
        probe = batch[IMAGE][:32] if probe is None else probe
    return np.concatenate(labels), np.concatenate(probabilities), probe


@dataclass(frozen=True)
class TrainedRun:
    """One model's finished Ray Train run and the facts its card records."""

    name: str
    result: ray.train.Result
    worker_config: WorkerConfig
    split_counts: dict[str, Any]
    undecodable: dict[str, int]
    seconds: float
    out_of_fold: OutOfFold | None = None  # with train.calibration_folds: what calibration is fitted on


@dataclass(frozen=True)
class HeldOut:
    """What training measures on data it never trained on: calibration and review on validation,
    the headline on test (temperature applied, never fitted there)."""

    test: dict[str, Any]
    calibration: Calibration
    review: Review
    probe: np.ndarray  # real test images, for the ONNX check
    validation_confidence_counts: list[int]  # calibrated, for the card's drift baseline
    validation_review_share: float
    warnings: list[str]  # classes with too few validation images for calibration and review


def _write_artifact(plan: TrainingPlan, run: TrainedRun, datasets: dict[str, ray.data.Dataset]) -> dict[str, Any]:
    """model.keras (+ model.onnx), the model card, split, history and curves under `<output>/<name>`."""
    artifact_uri = storage.join(plan.output_uri, run.name)
    if run.result.checkpoint is None:
        raise RuntimeError(f"training {run.name} ended without a final checkpoint")
    with tempfile.TemporaryDirectory() as local, run.result.checkpoint.as_directory() as checkpoint_dir:
        with open(os.path.join(checkpoint_dir, STATE_FILE)) as handle:
            state = json.load(handle)
        model_path = os.path.join(local, artifacts.MODEL_FILE)
        shutil.copyfile(os.path.join(checkpoint_dir, FINAL_MODEL), model_path)
        model = artifacts.load_keras_model(local)
        held_out = _measure_held_out(model, datasets, plan, run.out_of_fold)
        onnx = export_onnx(model, local, held_out.probe)
        card = _model_card(plan, run, state, held_out, onnx, artifacts.content_version(model_path))
        artifacts.write_card(local, card)
        plan.frame[[IMAGE_ID, IMAGE_URI, LABEL, SPLIT]].to_csv(os.path.join(local, "split.csv"), index=False)
        if plan.extra is not None:
            plan.extra.rows.to_csv(os.path.join(local, EXTRA_LABELS_FILE), index=False)
        with open(os.path.join(local, "history.json"), "w") as handle:
            json.dump(state["history"], handle, indent=2)
        with open(os.path.join(local, "curves.png"), "wb") as handle:
            handle.write(reports.curves_png(state["history"], f"{run.name}: training curves"))
        storage.upload_directory(local, artifact_uri)
    test = held_out.test
    logger.info(
        "%s: test accuracy %s, macro-F1 %s → %s",
        run.name,
        _with_interval(test["accuracy"], test.get("accuracy_interval"), 4),
        _with_interval(test["macro"]["f1"], test["macro"].get("f1_interval"), 4),
        artifact_uri,
    )
    return {"artifact": artifact_uri, "version": card.version, "test": test, "weights_source": card.weights_source}


def _measure_held_out(
    model: Any, datasets: dict[str, ray.data.Dataset], plan: TrainingPlan, out_of_fold: OutOfFold | None = None
) -> HeldOut:
    class_names = list(plan.label_index.class_names)
    val_labels, val_raw, _ = _predict_dataset(model, datasets["val"], 64)
    test_labels, test_raw, probe = _predict_dataset(model, datasets["test"], 64)
    if probe is None:
        raise RuntimeError("no image of the test split could be decoded")
    fit_labels, fit_raw = (out_of_fold.labels, out_of_fold.probabilities) if out_of_fold else (val_labels, val_raw)
    fit_source = out_of_fold.description if out_of_fold else VALIDATION_SPLIT
    temperature = fit_temperature(fit_raw, fit_labels)
    val_probabilities = apply_temperature(val_raw, temperature)
    test = summarize(test_labels, apply_temperature(test_raw, temperature), class_names)

    def ece(labels: np.ndarray, probabilities: np.ndarray) -> float:
        return float(summarize(labels, probabilities, class_names)["expected_calibration_error"])

    def bins(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, list[float]]:
        return reliability_bins(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels)

    calibration = Calibration(
        temperature=temperature,
        validation_ece_before=ece(val_labels, val_raw),
        validation_ece_after=ece(val_labels, val_probabilities),
        test_ece_before=ece(test_labels, test_raw),
        test_ece_after=test["expected_calibration_error"],
        test_reliability_before=bins(test_labels, test_raw),
        test_reliability_after=bins(test_labels, apply_temperature(test_raw, temperature)),
    )
    target_accuracy = plan.config.train.review_target_accuracy
    review = choose_review_threshold(apply_temperature(fit_raw, temperature), fit_labels, target_accuracy)
    fitted_on = images_per_class(fit_labels, class_names)
    method = f"temperature scaling fitted on {fit_source}" if out_of_fold else Calibration.method
    calibration = dataclasses.replace(
        calibration, fitted_images_per_class=fitted_on, fitted_on=fit_source, method=method
    )
    warnings = too_few_warnings(
        fitted_on,
        plan.config.train.min_fit_images_per_class,
        "the calibration temperature and review threshold were",
        "train+validation" if out_of_fold else "validation",
    )
    for warning in warnings:
        logger.warning("%s", warning)
    confidence = val_probabilities.max(axis=1)
    return HeldOut(
        test=test,
        calibration=calibration,
        review=Review(**review, fitted_images_per_class=fitted_on, fitted_on=fit_source),
        probe=probe,
        validation_confidence_counts=confidence_histogram(confidence).tolist(),
        validation_review_share=float((confidence < review["threshold"]).mean()) if len(confidence) else 0.0,
        warnings=warnings,
    )


def _model_card(
    plan: TrainingPlan, run: TrainedRun, state: dict[str, Any], held_out: HeldOut, onnx: OnnxExport, version: str
) -> ModelCard:
    worker_config, history = run.worker_config, state["history"]
    best: dict[str, Any] = next((row for row in history if row["epoch"] == state["best_epoch"]), {})
    class_names = plan.label_index.class_names
    entry = get_entry(run.name)
    weights_source = plan.weights[run.name].source if run.name in plan.weights else "none (trained from scratch)"
    return ModelCard(
        name=run.name,
        version=version,
        class_names=tuple(class_names),
        input=entry.input_spec(worker_config.image_size),
        weights_source=weights_source,
        onnx=onnx,
        calibration=held_out.calibration,
        review=held_out.review,
        drift_baseline=DriftBaseline(
            class_counts={name: int(run.split_counts.get("train", {}).get(name, 0)) for name in class_names},
            confidence_counts=held_out.validation_confidence_counts,
            review_share=held_out.validation_review_share,
        ),
        details={
            "config": plan.config.to_dict(),
            "catalog": plan.catalog_uri,
            "run_name": plan.run_name,
            "schedule": (
                "head, then fine-tune the last base layers"
                if worker_config.two_phase
                else "single phase, all layers trainable"
            ),
            "workers": worker_config.workers,
            "batch_size_per_worker": worker_config.batch_size_per_worker,
            "global_batch_size": worker_config.global_batch_size,
            "seed": worker_config.seed,
            "learning_rates": _learning_rates(worker_config),
            "selection": plan.config.train.selection,
            "warnings": held_out.warnings,
            "imbalance": worker_config.imbalance,
            "class_weights": dict(zip(class_names, map(float, worker_config.class_weights))),
            "epochs_run": len(history),
            "best_epoch": state["best_epoch"],
            "resumed_at_epochs": state.get("resumed_at_epochs", []),
            "split": {
                "counts": run.split_counts,
                "hash": split_hash(plan.frame),
                "seed": plan.config.data.seed,
                "undecodable_images_left_out": run.undecodable,
            },
            "extra_labels": plan.extra.card_entry() if plan.extra else None,
            "validation": {
                "loss": best.get("val_loss"),
                "balanced_loss": best.get("val_balanced_loss"),
                "accuracy": best.get("val_accuracy"),
            },
            "test": held_out.test,
            "training_seconds": round(run.seconds, 1),
            "library_versions": artifacts.library_versions(),
            "created_at": datetime.now(UTC).isoformat(),
        },
    )


def _learning_rates(worker_config: WorkerConfig) -> dict[str, Any]:
    """How the configured learning rates became the ones the optimizer used, per phase."""
    train = worker_config.train
    return {
        "scaling": train.learning_rate_scaling,
        "reference_batch_size": train.reference_batch,
        "global_batch_size": worker_config.global_batch_size,
        "warmup_steps": worker_config.warmup_steps,
        "phases": {
            phase.name: {"configured": phase.base_learning_rate, "effective": phase.learning_rate}
            for phase in plan_phases(worker_config)
        },
    }


def write_comparison(output_uri: str, results: dict[str, Any], class_names: tuple[str, ...]) -> None:
    """comparison.json and a Markdown table of the models on the same test split, each figure with
    its 95% bootstrap interval over the test images (`pipeline.intervals`): with a test split of a
    few hundred images, two models whose intervals overlap have not been shown to differ."""
    storage.write_json(storage.join(output_uri, "comparison.json"), results)
    header = "| model | test accuracy | test loss | macro-F1 | " + " | ".join(f"F1 {c}" for c in class_names) + " |"
    lines = [header, "|" + "---|" * (4 + len(class_names))]
    for name, result in results.items():
        test = result["test"]
        per_class = " | ".join(_with_interval(row["f1"], row.get("f1_interval"), 3) for row in test["per_class"])
        accuracy = _with_interval(test["accuracy"], test.get("accuracy_interval"), 4)
        macro_f1 = _with_interval(test["macro"]["f1"], test["macro"].get("f1_interval"), 4)
        lines.append(f"| {name} | {accuracy} | {test['loss']:.4f} | {macro_f1} | {per_class} |")
    support = ", ".join(f"{row['label']}={row['support']}" for row in next(iter(results.values()))["test"]["per_class"])
    lines += [
        "",
        f"Test split support per class: {support}. Classes with under 20 test images give noisy F1.",
        "Brackets: 95% interval, percentile bootstrap over the test images "
        f"({intervals.RESAMPLES} resamples, seed {intervals.SEED}).",
    ]
    storage.write_text(storage.join(output_uri, "comparison.md"), "\n".join(lines) + "\n")


def _with_interval(value: float | None, interval: list[float] | None, places: int) -> str:
    """A figure and its interval, "0.9120 [0.8900, 0.9310]"; the figure alone where there is none."""
    if value is None:
        return "-"
    if not interval:
        return f"{value:.{places}f}"
    return f"{value:.{places}f} [{interval[0]:.{places}f}, {interval[1]:.{places}f}]"
