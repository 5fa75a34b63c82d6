"""The train/val/test split: stratified, seeded, made once per training run and persisted."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from pipeline.schema import IMAGE_ID, LABEL

logger = logging.getLogger(__name__)

SPLIT = "split"
SPLITS = ("train", "val", "test")


def make_split(frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.DataFrame:
    """Assigns every labelled row to train, val or test, per class.

    Per class of n images: round(n * fraction) to test and to val, but at least one each while
    at least one image stays for training (n >= 3); a class of 2 gives one to val and keeps one
    for training; a class of 1 trains only. Small classes are logged, never silently merged.
    sklearn's `train_test_split` refuses classes this small, hence the per-class loop.

    Returns:
        A copy of `frame` with a `split` column, in the input row order.
    """
    rng = np.random.default_rng(seed)
    assignment = pd.Series("train", index=frame.index, dtype=object)
    for label in sorted(frame[LABEL].unique()):
        members = frame.index[frame[LABEL] == label].to_numpy()
        members = members[np.argsort(frame.loc[members, IMAGE_ID].to_numpy(), kind="stable")]
        members = rng.permutation(members)
        count = len(members)
        n_test = max(1, round(count * test_fraction)) if count >= 3 else 0
        n_val = max(1, round(count * val_fraction)) if count >= 2 else 0
        n_test = min(n_test, max(0, count - n_val - 1))
        assignment[members[:n_test]] = "test"
        assignment[members[n_test : n_test + n_val]] = "val"
        if count < 20:
            logger.warning(
                "class %r has only %d images: %d train / %d val / %d test; its metrics will be noisy",
                label,
                count,
                count - n_val - n_test,
                n_val,
                n_test,
            )
    result = frame.copy()
    result[SPLIT] = assignment
    return result


def split_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{split: {label: count}} for the model card."""
    table = frame.groupby([SPLIT, LABEL]).size()
    return {
        split: {str(label): int(count) for label, count in table[split].items()}
        for split in SPLITS
        if split in table.index.get_level_values(0)
    }


def split_hash(frame: pd.DataFrame) -> str:
    """A short hash of which image went where: equal hashes mean identical splits."""
    lines = sorted(f"{image_id}\t{split}" for image_id, split in zip(frame[IMAGE_ID], frame[SPLIT]))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
