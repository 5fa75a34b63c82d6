"""Choosing the best epoch and judging what calibration was fitted on, with every class counted.

With 14 images of a minority class the validation split holds 2 of them: a plain mean loss over
validation images hardly sees that class, so early stopping could keep an epoch that has
forgotten it. The balanced loss gives each class present the same weight.
"""

from __future__ import annotations

import numpy as np


def class_loss_sums(
    labels: np.ndarray, per_example_loss: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(sum of loss, image count) per class index, to be added up over batches."""
    labels = np.asarray(labels, dtype=np.int64)
    sums = np.bincount(labels, weights=np.asarray(per_example_loss, dtype=np.float64), minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return sums, counts


def balanced_loss(loss_sums: np.ndarray, counts: np.ndarray) -> float:
    """Mean over the classes present of each class's mean loss; inf with no images at all."""
    present = counts > 0
    if not present.any():
        return float("inf")
    return float(np.mean(loss_sums[present] / counts[present]))


def images_per_class(labels: np.ndarray, class_names: tuple[str, ...] | list[str]) -> dict[str, int]:
    """{class name: images} for the labels a calibration or threshold was fitted on (0 included)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    return {name: int(count) for name, count in zip(class_names, counts)}


def too_few_warnings(counts: dict[str, int], minimum: int, fitted: str, images: str = "validation") -> list[str]:
    """One warning per class with fewer than `minimum` images among those `fitted` was fitted on
    (`images` names where they came from: "validation", or "train+validation" with folds)."""
    return [
        f"{fitted} fitted on {count} {images} image(s) of class {name!r}, fewer than "
        f"train.min_fit_images_per_class={minimum}: it may not hold for that class"
        for name, count in counts.items()
        if count < minimum
    ]
