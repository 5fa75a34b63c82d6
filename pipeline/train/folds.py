"""Cross-validated calibration fitting: out-of-fold predictions over train+validation.

With the shipped catalog a minority class of 14 images keeps 2 for validation, so a temperature
and a review threshold fitted on the validation split hardly see it. With
`train.calibration_folds=k`, k extra models, each trained on k-1 stratified folds of the catalog's
train+validation images, predict the fold they did not see; every train+validation image then has
one prediction from a model that never trained on it, and calibration is fitted on all of them.
The test split is never used, and the shipped model stays the one trained normally.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import ray
from sklearn.model_selection import StratifiedKFold

from pipeline import artifacts
from pipeline.catalog import LabelIndex
from pipeline.config import JobConfig, TrainConfig
from pipeline.schema import LABEL
from pipeline.splits import SPLIT
from pipeline.train.data import build_datasets
from pipeline.train.trainer import fit
from pipeline.train.worker import FINAL_MODEL, WorkerConfig

logger = logging.getLogger(__name__)

# The catalog splits the folds are cut from; the test split stays out of calibration.
FIT_SPLITS = ("train", "val")
VALIDATION_SPLIT = "validation split"

# (model, dataset, batch size) -> (label indices, probabilities, probe images): the driver's own
# held-out predictor, passed in because the driver imports this module.
Predict = Callable[[Any, ray.data.Dataset, int], tuple[np.ndarray, np.ndarray, Any]]


@dataclass(frozen=True)
class OutOfFold:
    """Every train+validation image's probabilities from the fold model that did not train on it."""

    labels: np.ndarray
    probabilities: np.ndarray
    folds: int

    @property
    def description(self) -> str:
        """What the card's `fitted_on` says calibration was fitted on."""
        return f"{self.folds}-fold out-of-fold predictions over train+validation ({len(self.labels)} images)"


def check_folds(frame: pd.DataFrame, folds: int) -> None:
    """Refuses a fold count that some class cannot fill, before any work starts.

    Raises:
        ValueError: A class has fewer train+validation images than `folds`, named with its count.
    """
    if not folds:
        return
    counts = frame.loc[frame[SPLIT].isin(FIT_SPLITS), LABEL].value_counts()
    short = {str(label): int(count) for label, count in sorted(counts.items()) if count < folds}
    if short:
        raise ValueError(
            f"train.calibration_folds={folds} needs at least {folds} train+validation images per class, "
            f"but {short} have fewer; lower train.calibration_folds (or set it to 0 to fit on the validation split)"
        )


def check_fold_steps(frame: pd.DataFrame, train: TrainConfig, workers: int, seed: int) -> None:
    """Refuses folds (`train.calibration_folds`) whose smallest training part cannot fill one
    optimizer step (the global batch of `workers`), which would otherwise fail after the main
    model has trained.

    Raises:
        ValueError: The smallest fold's training part, with the fix.
    """
    folds, step_images = train.calibration_folds, train.global_batch(workers)
    if not folds:
        return
    sizes = split_folds(frame, folds, seed).value_counts()
    smallest = int(sizes.sum() - sizes.max())
    if smallest < step_images:
        raise ValueError(
            f"train.calibration_folds={folds}: the smallest fold trains on {smallest} images but one step needs "
            f"the global batch (workers × batch_size_per_worker, or train.global_batch_size) = {step_images}; "
            f"{train.smaller_batch_fix()}, or lower train.calibration_folds"
        )


def split_folds(frame: pd.DataFrame, folds: int, seed: int) -> pd.Series:
    """Assigns each train+validation row a fold number, stratified by label and seeded.

    Returns:
        The fold (0..folds-1) of every train or val row of `frame`, indexed like `frame`.
    """
    pool = frame[frame[SPLIT].isin(FIT_SPLITS)]
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    numbers = np.empty(len(pool), dtype=np.int64)
    for number, (_, held_out) in enumerate(splitter.split(np.zeros(len(pool)), pool[LABEL].to_numpy())):
        numbers[held_out] = number
    return pd.Series(numbers, index=pool.index, name="fold")


def fold_frame(frame: pd.DataFrame, fold_numbers: pd.Series, number: int) -> pd.DataFrame:
    """Train+validation rows with fold `number` as `val` (predicted, and early stopping's data)
    and every other fold as `train`; test rows are left out."""
    rows = frame.loc[fold_numbers.index].copy()
    rows[SPLIT] = np.where(fold_numbers.to_numpy() == number, "val", "train")
    return rows


def out_of_fold_predictions(
    frame: pd.DataFrame,
    label_index: LabelIndex,
    config: JobConfig,
    worker_config: WorkerConfig,
    storage_path: str,
    run_name: str,
    predict: Predict,
) -> OutOfFold:
    """Trains one model per fold with `worker_config` and predicts the fold it left out.

    Args:
        frame: The catalog's rows with their split (no extra-label rows: they have no fold).
        run_name: The model's Ray Train run name; fold i trains as `<run_name>-fold<i>` under
            `storage_path`, so a rerun resumes its folds as it resumes the model.
        predict: The driver's held-out predictor, so folds are measured as validation is.

    Returns:
        Labels and probabilities of every decodable train+validation image, fold by fold.
    """
    folds = config.train.calibration_folds
    fold_numbers = split_folds(frame, folds, config.training_seed)
    labels: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    for number in range(folds):
        rows = fold_frame(frame, fold_numbers, number)
        logger.info(
            "%s: calibration fold %d/%d: training on %d images, predicting %d",
            worker_config.model_name,
            number + 1,
            folds,
            int((rows[SPLIT] == "train").sum()),
            int((rows[SPLIT] == "val").sum()),
        )
        fold_labels, fold_probabilities = _train_and_predict(
            rows, label_index, config, worker_config, storage_path, f"{run_name}-fold{number}", predict
        )
        labels.append(fold_labels)
        probabilities.append(fold_probabilities)
    return OutOfFold(np.concatenate(labels), np.concatenate(probabilities), folds)


def _train_and_predict(
    rows: pd.DataFrame,
    label_index: LabelIndex,
    config: JobConfig,
    worker_config: WorkerConfig,
    storage_path: str,
    run_name: str,
    predict: Predict,
) -> tuple[np.ndarray, np.ndarray]:
    datasets, _ = build_datasets(
        rows,
        label_index,
        worker_config.image_size,
        config.data,
        config.augment,
        worker_config.imbalance,
        worker_config.seed,
    )
    result = fit(worker_config.model_name, datasets, worker_config, config.resources, storage_path, run_name)
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"calibration fold {run_name} ended without a final checkpoint")
    with tempfile.TemporaryDirectory() as local, result.checkpoint.as_directory() as checkpoint_dir:
        shutil.copyfile(os.path.join(checkpoint_dir, FINAL_MODEL), os.path.join(local, artifacts.MODEL_FILE))
        labels, probabilities, _ = predict(artifacts.load_keras_model(local), datasets["val"], 64)
    return labels, probabilities
