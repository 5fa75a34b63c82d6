"""Training data on Ray Data: each split decoded once; only the train split augmented or oversampled."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.train
from ray.data import RandomSeedConfig
from sklearn.utils.class_weight import compute_class_weight

from pipeline import images
from pipeline.augment import augment_images
from pipeline.catalog import LabelIndex
from pipeline.config import AugmentConfig, DataConfig
from pipeline.schema import ERROR, IMAGE, IMAGE_URI, LABEL
from pipeline.splits import SPLIT

logger = logging.getLogger(__name__)

LABEL_INDEX = "label_index"


def class_weight_vector(train_indices: np.ndarray, num_classes: int) -> np.ndarray:
    """ "Balanced" class weights as a vector indexed by integer class id.

    A vector (not a dict keyed by names) is what the loss gathers from, so a weight can never be
    silently ignored for a key mismatch, the defect of the original study.

    Raises:
        ValueError: A class has no training image (its weight would be undefined).
    """
    present = np.unique(train_indices)
    if len(present) != num_classes:
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        raise ValueError(f"classes {missing} have no training images; every class needs at least one")
    weights: np.ndarray = compute_class_weight("balanced", classes=np.arange(num_classes), y=train_indices)
    return weights.astype(np.float32)


def oversample(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Repeats minority-class training rows (with replacement) up to the largest class's count.

    Repeated rows differ once augmented, which is why oversampling is only offered with it.
    """
    rng = np.random.default_rng(seed)
    largest = frame[LABEL].value_counts().max()
    parts = [frame]
    for _, group in frame.groupby(LABEL):
        extra = largest - len(group)
        if extra > 0:
            parts.append(group.iloc[rng.integers(0, len(group), size=extra)])
    return pd.concat(parts, ignore_index=True)


def _keep_decoded(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ok = images.ok_mask(batch[ERROR])
    return {IMAGE: batch[IMAGE][ok], LABEL_INDEX: batch[LABEL_INDEX][ok].astype(np.int32)}


def batch_rng(pixels: np.ndarray, seed: int) -> np.random.Generator:
    """A generator seeded by `seed` and the batch's own pixels.

    Ray Data tasks carry no epoch or batch number; the content does. The shuffle before
    augmentation is seeded per epoch, so each epoch's batches, and so their draws, differ, while a
    rerun with the same seed sees the same batches and draws the same transforms.
    """
    digest = hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])


def augment_batch(batch: dict[str, np.ndarray], augment: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    """Random rotation, shift, shear, zoom and flip of a uint8 image batch (training data only).

    Runs as a Ray Data task on the training dataset, outside the saved model: Keras random layers
    inside a model make its ONNX export unloadable ("INVALID_GRAPH ...
    StatelessRandomUniformV2"), while the same model without them matches Keras to 4e-8. NumPy
    (`pipeline/augment.py`), so the task processes never load TensorFlow.
    """
    pixels = augment_images(batch[IMAGE], AugmentConfig(**augment), batch_rng(batch[IMAGE], seed))
    return {IMAGE: pixels, LABEL_INDEX: batch[LABEL_INDEX]}


def build_datasets(
    frame: pd.DataFrame,
    label_index: LabelIndex,
    image_size: int,
    data: DataConfig,
    augment: AugmentConfig,
    imbalance: str,
    seed: int | None = None,
) -> tuple[dict[str, ray.data.Dataset], dict[str, int]]:
    """Decodes each split once and returns Ray Datasets; only `train` is augmented/oversampled.

    Every dataset keeps its order (Ray Data's `preserve_order`): with the shuffle, oversampling
    and augmentation seeded by `seed`, each epoch's training batches are the same from run to
    run, and so is each worker's shard of them (`ordered_ingest`). `seed` None: `data.seed`.

    Returns:
        ({"train", "val", "test"} datasets of {image, label_index}, {split: undecodable rows}).
    """
    seed = data.seed if seed is None else seed
    datasets, skipped = {}, {}
    for split in ("train", "val", "test"):
        rows = frame[frame[SPLIT] == split]
        if split == "train" and imbalance in ("oversample", "both"):
            rows = oversample(rows, seed)
        table = pd.DataFrame(
            {IMAGE_URI: rows[IMAGE_URI].to_numpy(), LABEL_INDEX: label_index.encode(rows[LABEL]).to_numpy()}
        )
        blocks = max(1, min(64, len(table) // data.rows_per_block + 1))
        source = ray.data.from_pandas(table)
        # Blocks otherwise arrive in the order their tasks finish, and the seeded shuffle of
        # differently ordered blocks is a different shuffle.
        source.context.execution_options.preserve_order = True
        decoded = source.repartition(blocks).map_batches(
            images.decode_batch,  # type: ignore[arg-type]
            batch_format="numpy",
            fn_kwargs={"image_size": image_size, "max_pixels": data.max_image_pixels},
        )
        flagged = decoded.map_batches(_keep_decoded, batch_format="numpy").materialize()
        skipped[split] = len(table) - flagged.count()
        if skipped[split]:
            logger.warning("%d %s images could not be decoded and are left out of training", skipped[split], split)
        if split == "train":
            # Shuffled with augmentation off too: catalogs are often sorted by class, and batches
            # in catalog order would each hold one class. Reseeded per execution: Ray Train re-runs
            # this dataset every epoch, and a fixed seed would give every epoch the same batches.
            shuffle_seed = RandomSeedConfig(seed=seed, reseed_after_execution=True)
            flagged = flagged.random_shuffle(seed=shuffle_seed)
            if augment.enabled:
                flagged = flagged.map_batches(
                    augment_batch,
                    batch_format="numpy",
                    fn_kwargs={"augment": dataclasses.asdict(augment), "seed": seed},
                )
        datasets[split] = flagged
    return datasets, skipped


def ordered_ingest() -> ray.train.DataConfig:
    """Ray Train's ingest with the datasets' order kept: `streaming_split` then hands the blocks to
    the workers in a fixed order, so each worker's shard is the same in every run."""
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return ray.train.DataConfig(datasets_to_split=["train"], execution_options=options)


# --------------------------------------------------------------------------- worker loop
