"""The benchmark's images: the product's own split of the training catalog and the held-out catalog, decoded once."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass

import numpy as np

from benchmarks.accuracy.settings import HELDOUT_PER_CLASS, HELDOUT_SEED, SHIPPED_HELDOUT

logger = logging.getLogger(__name__)

SHIPPED_NOTE = (
    "data/heldout_catalog (shipped: 100 Fashion-MNIST test images per class, seed 0; "
    "F1 on 100 images per class is coarse)"
)


def resolve_heldout(requested: str | None, tiny: bool, cache_dir: str) -> tuple[str, str]:
    """Picks the held-out catalog: the one given, the shipped one (tiny, or no Fashion-MNIST), or one
    built from the Fashion-MNIST test split into `cache_dir` once.

    Returns:
        (held-out catalog path, a note saying what it is, for the report).
    """
    from pipeline.fashion_mnist import find_source

    if requested:
        return os.path.abspath(requested), f"given with --heldout: {requested}"
    if tiny:
        return SHIPPED_HELDOUT, SHIPPED_NOTE
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
        return SHIPPED_HELDOUT, "FALLBACK (Fashion-MNIST not installed): " + SHIPPED_NOTE
    return _cached_test_catalog(cache_dir)


def _cached_test_catalog(cache_dir: str) -> tuple[str, str]:
    """Builds the Fashion-MNIST test catalog into a staging directory and swaps it in whole, so an
    interrupted build is never mistaken for a finished one."""
    from pipeline.fashion_mnist import STUDY_COUNTS, build_catalog

    target = os.path.join(cache_dir, f"heldout-test-{HELDOUT_PER_CLASS}-seed{HELDOUT_SEED}")
    if not os.path.exists(os.path.join(target, ".complete")):
        counts = {name: HELDOUT_PER_CLASS for name in STUDY_COUNTS}
        staging = f"{target}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        logger.info("building the held-out catalog (%s, Fashion-MNIST test split) in %s", counts, target)
        build_catalog(staging, counts, "test", HELDOUT_SEED)
        with open(os.path.join(staging, ".complete"), "w") as handle:
            handle.write("built by benchmarks.accuracy\n")
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
    """Decodes with the product's own image code; undecodable images are left out, with a warning."""
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

    def catalog_counts(self) -> dict[str, int]:
        """Images per class in the training catalog (all three splits)."""
        return {
            name: int(sum((part.labels == index).sum() for part in (self.train, self.val, self.test)))
            for index, name in enumerate(self.class_names)
        }


def load_data(
    catalog: str, heldout: str, image_size: int, seed: int, val_fraction: float, test_fraction: float
) -> Data:
    """Splits `catalog` as the product does and decodes every split and the held-out catalog.

    Raises:
        ValueError: The held-out catalog has a class the training catalog lacks.
    """
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
