"""The study's training input, made leak-free: its augmentation on training batches only, and its class weights."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def study_augmentation() -> Any:
    """The study's ImageDataGenerator settings as Keras preprocessing layers (rotation, shifts, shear,
    zoom, horizontal flip), taken from the product's AugmentConfig defaults."""
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


def augmented_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> Any:
    """A `keras.utils.PyDataset` like ImageDataGenerator.flow: reshuffled each epoch, augmented per
    batch, training data only. A PyDataset is also how the study's generator met `class_weight`:
    Keras turns the dict into per-sample weights with `class_weight.get(int(label), 1.0)`."""
    import keras

    class AugmentedBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(images))
            self.augment = study_augmentation()

        def __len__(self) -> int:
            return math.ceil(len(images) / batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            members = self.order[index * batch_size : (index + 1) * batch_size]
            pixels = self.augment(images[members].astype(np.float32), training=True)
            return np.clip(np.asarray(pixels), 0.0, 255.0), labels[members]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(images))

    return AugmentedBatches()


def study_class_weight(balanced: np.ndarray, class_names: list[str], published: bool) -> dict[Any, float]:
    """Balanced class weights keyed as Keras needs them (integer class ids), or, as published, by
    class-name strings, which Keras never looks up, so they have no effect."""
    if published:
        return {name: float(weight) for name, weight in zip(class_names, balanced)}
    return {index: float(weight) for index, weight in enumerate(balanced)}


def effective_sample_weights(labels: np.ndarray, class_weight: dict) -> np.ndarray:
    """The per-sample weights Keras derives from `class_weight` for a PyDataset batch."""
    try:
        from keras.src.trainers.data_adapters.data_adapter_utils import class_weight_to_sample_weights

        return np.asarray(class_weight_to_sample_weights(labels, class_weight))
    except ImportError:  # private module moved: reproduce its lookup
        return np.array([class_weight.get(int(label), 1.0) for label in labels], dtype=np.float32)
