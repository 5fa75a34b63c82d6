"""Builds product-image catalogs from Fashion-MNIST (Zalando article photos, MIT licence).

The Debian package `dataset-fashion-mnist` installs the four IDX files under
/usr/share/datasets/fashion-mnist/; Keras' cache (~/.keras/datasets/fashion-mnist/) works too.
"""

from __future__ import annotations

import gzip
import logging
import os

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

CLASS_NAMES = ("t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
DEFAULT_SOURCES = ("/usr/share/datasets/fashion-mnist", os.path.expanduser("~/.keras/datasets/fashion-mnist"))
# The original study's shape: five classes of 510 / 14 / 400 / 385 / 600 images; the 14-image
# class (sandal) looks much like a large one (sneaker).
STUDY_COUNTS = {"ankle_boot": 510, "sandal": 14, "trouser": 400, "bag": 385, "sneaker": 600}
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def find_source(source: str | None) -> str:
    """Returns the folder holding the IDX files.

    Raises:
        ValueError: No folder holds them, with the install command.
    """
    for candidate in [source] if source else list(DEFAULT_SOURCES):
        if candidate and os.path.exists(os.path.join(candidate, _FILES["train"][0])):
            return candidate
    raise ValueError(
        f"Fashion-MNIST IDX files not found in {source or DEFAULT_SOURCES}; install them with "
        "`apt-get install dataset-fashion-mnist` or pass --source"
    )


def load_split(source: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split's (images (n, 28, 28) uint8, labels (n,) uint8) from IDX files."""
    images_file, labels_file = (os.path.join(source, name) for name in _FILES[split])
    with gzip.open(images_file, "rb") as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_file, "rb") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    return images, labels


def build_catalog(
    output_dir: str, counts: dict[str, int], split: str = "train", seed: int = 0, source: str | None = None
) -> dict[str, int]:
    """Writes `<output_dir>/<class>/<split>-<index>.png`, a seeded sample of each class.

    Args:
        output_dir: Catalog root to create.
        counts: {class name: images}; names from `CLASS_NAMES`.
        split: "train" or "test" — the held-out catalog must come from "test" only.
        seed: Sampling seed; the same seed gives the same files.
        source: Folder with the IDX files (default: the Debian package's, then Keras' cache).

    Returns:
        {class: images written}.

    Raises:
        ValueError: Unknown class, split, or more images asked than the split holds.
    """
    if split not in _FILES:
        raise ValueError(f"split {split!r} is not train or test")
    unknown = sorted(set(counts) - set(CLASS_NAMES))
    if unknown:
        raise ValueError(f"unknown Fashion-MNIST classes {unknown}; choose from {list(CLASS_NAMES)}")
    images, labels = load_split(find_source(source), split)
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in counts.items():
        members = np.flatnonzero(labels == CLASS_NAMES.index(name))
        if count > len(members):
            raise ValueError(f"{name}: asked for {count} images but the {split} split has {len(members)}")
        chosen = np.sort(rng.choice(members, size=count, replace=False))
        os.makedirs(os.path.join(output_dir, name), exist_ok=True)
        for index in chosen:
            Image.fromarray(images[index]).save(
                os.path.join(output_dir, name, f"{split}-{index:05d}.png"), optimize=True
            )
        written[name] = count
    logger.info("wrote %s to %s", written, output_dir)
    return written
