"""95% bootstrap intervals for accuracy, macro-F1 and each class's F1, and for the difference of two models.

Why a bootstrap over cells rather than over images: accuracy and (macro) F1 depend on the images
only through the confusion matrix, so drawing n images with replacement is the same, in
distribution, as drawing a multinomial sample of n images over the matrix's cells with
probabilities count / n. A scoring run therefore gets its intervals from the summed tally of its
prediction files, without reading a row back. Two models scored on the same images are compared
the same way over the joint table (true, predicted by A, predicted by B): a paired bootstrap,
which keeps the correlation between the models' errors and so gives a much narrower interval of
the difference than two independent intervals would.

The routine is the plain percentile bootstrap (Efron & Tibshirani 1993, ch. 13): RESAMPLES
resamples from a generator seeded with SEED, interval = the (2.5, 97.5) percentiles of the
resampled metric. Only cells with a count take part (an empty cell has probability 0), so memory
scales with the occupied cells, not with classes², and resamples are drawn in chunks. Per-class F1
follows scikit-learn's definition with zero_division=0, as `pipeline.metrics` does, and macro-F1
averages over all the model's classes, so a class absent from a resample counts as F1 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0
_CELLS_PER_CHUNK = 4_000_000  # resamples × occupied cells held at once (32 MB of int64)


@dataclass(frozen=True)
class Resampled:
    """One model's metrics over the bootstrap resamples: (resamples,) and (resamples, classes)."""

    accuracy: np.ndarray
    macro_f1: np.ndarray
    f1: np.ndarray


def describe() -> dict[str, Any]:
    """How the intervals were made, written beside them so a reader can reproduce them."""
    return {
        "method": "percentile bootstrap over images (multinomial over the confusion matrix's cells)",
        "resamples": RESAMPLES,
        "confidence": CONFIDENCE,
        "seed": SEED,
    }


def percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> np.ndarray:
    """The central `confidence` percentile interval along the first axis: shape (2, ...)."""
    tail = (1.0 - confidence) / 2 * 100
    return np.asarray(np.percentile(values, [tail, 100 - tail], axis=0))


def confusion_intervals(confusion: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any]:
    """95% intervals of accuracy, macro-F1 and each class's F1 of the images behind a confusion matrix.

    Args:
        confusion: (classes, classes) counts, rows true, columns predicted.
        resamples: Bootstrap resamples.
        seed: Seed of the generator: the same matrix and seed give the same intervals.

    Returns:
        {"accuracy": [low, high], "macro_f1": [low, high], "f1": [[low, high] per class]}.

    Raises:
        ValueError: The matrix holds no image: there is nothing to resample.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.sum() == 0:
        raise ValueError("the confusion matrix holds no image: no interval without evaluated rows")
    true, predicted = np.nonzero(confusion)
    (resampled,) = resample_metrics(
        true, [predicted], confusion[true, predicted], confusion.shape[0], resamples=resamples, seed=seed
    )
    return {
        "accuracy": _pair(percentile_interval(resampled.accuracy)),
        "macro_f1": _pair(percentile_interval(resampled.macro_f1)),
        "f1": [_pair(column) for column in percentile_interval(resampled.f1).T],
    }


def paired_difference(
    true: np.ndarray,
    predicted_a: np.ndarray,
    predicted_b: np.ndarray,
    classes: int,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Any]:
    """Paired bootstrap of model A's accuracy and macro-F1 minus model B's, on the same images.

    Args:
        true: (n,) true class index of each image.
        predicted_a: (n,) model A's predicted class index of the same images.
        predicted_b: (n,) model B's.
        classes: Number of classes both models share.

    Returns:
        Per metric ("accuracy", "macro_f1"): the difference A - B, its interval [low, high], and
        a verdict, "A better than B" / "B better than A" only when the interval excludes 0,
        otherwise "no difference shown".

    Raises:
        ValueError: The arrays differ in length, or there are no images.
    """
    true, predicted_a, predicted_b = (np.asarray(a, dtype=np.int64) for a in (true, predicted_a, predicted_b))
    if not (len(true) == len(predicted_a) == len(predicted_b)) or len(true) == 0:
        raise ValueError(
            f"a paired comparison needs the same images for both models: got {len(true)} labels, "
            f"{len(predicted_a)} and {len(predicted_b)} predictions; join the runs on image_id first"
        )
    joint = (true * classes + predicted_a) * classes + predicted_b
    cells, counts = np.unique(joint, return_counts=True)
    cell_true, rest = np.divmod(cells, classes * classes)
    cell_a, cell_b = np.divmod(rest, classes)
    a, b = resample_metrics(cell_true, [cell_a, cell_b], counts, classes, resamples=resamples, seed=seed)
    point_a, point_b = _point(cell_true, cell_a, counts, classes), _point(cell_true, cell_b, counts, classes)
    result: dict[str, Any] = {"images": int(len(true)), **describe()}
    for metric in ("accuracy", "macro_f1"):
        interval = _pair(percentile_interval(getattr(a, metric) - getattr(b, metric)))
        result[metric] = {
            "difference": point_a[metric] - point_b[metric],
            "interval": interval,
            "verdict": verdict(interval),
        }
    return result


def verdict(interval: list[float]) -> str:
    """The wording of a difference A - B: a winner only when its interval excludes 0."""
    low, high = interval
    if low > 0:
        return "A better than B"
    if high < 0:
        return "B better than A"
    return "no difference shown"


def resample_metrics(
    true: np.ndarray,
    predictions: list[np.ndarray],
    counts: np.ndarray,
    classes: int,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> list[Resampled]:
    """Each model's accuracy, macro-F1 and per-class F1 over multinomial resamples of occupied cells.

    Args:
        true: (cells,) true class of each cell.
        predictions: Per model, (cells,) its predicted class of each cell.
        counts: (cells,) images in each cell; they sum to n, the size of every resample.
        classes: Number of classes.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    probabilities = counts / total
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // max(1, len(counts)))
    parts: list[list[Resampled]] = []
    for start in range(0, resamples, chunk):
        drawn = rng.multinomial(total, probabilities, size=min(chunk, resamples - start))
        parts.append([_metrics(drawn, true, predicted, classes, total) for predicted in predictions])
    return [
        Resampled(
            accuracy=np.concatenate([part[model].accuracy for part in parts]),
            macro_f1=np.concatenate([part[model].macro_f1 for part in parts]),
            f1=np.concatenate([part[model].f1 for part in parts]),
        )
        for model in range(len(predictions))
    ]


def _metrics(drawn: np.ndarray, true: np.ndarray, predicted: np.ndarray, classes: int, total: int) -> Resampled:
    """Metrics of resampled cell counts (resamples, cells) for one model's cells."""
    correct = true == predicted
    true_positive = _group_sum(drawn[:, correct], true[correct], classes)
    support = _group_sum(drawn, true, classes)
    predicted_count = _group_sum(drawn, predicted, classes)
    denominator = support + predicted_count
    f1 = np.zeros(denominator.shape, dtype=np.float64)
    np.divide(2 * true_positive, denominator, out=f1, where=denominator > 0)
    return Resampled(accuracy=true_positive.sum(axis=1) / total, macro_f1=f1.mean(axis=1), f1=f1)


def _group_sum(drawn: np.ndarray, groups: np.ndarray, classes: int) -> np.ndarray:
    """Sums the columns of `drawn` that share a class: (resamples, cells) → (resamples, classes)."""
    result = np.zeros((drawn.shape[0], classes), dtype=np.int64)
    if drawn.shape[1] == 0:
        return result
    order = np.argsort(groups, kind="stable")
    present, starts = np.unique(groups[order], return_index=True)
    result[:, present] = np.add.reduceat(drawn[:, order], starts, axis=1)
    return result


def _point(true: np.ndarray, predicted: np.ndarray, counts: np.ndarray, classes: int) -> dict[str, float]:
    """The metrics of the cells as they are (no resampling)."""
    observed = _metrics(np.asarray(counts, dtype=np.int64)[None, :], true, predicted, classes, int(np.sum(counts)))
    return {"accuracy": float(observed.accuracy[0]), "macro_f1": float(observed.macro_f1[0])}


def _pair(values: np.ndarray) -> list[float]:
    return [float(values[0]), float(values[1])]
