"""Bootstrap intervals (pipeline/intervals.py) against scikit-learn and a direct bootstrap over images."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from pipeline import intervals
from pipeline.metrics import summarize


def _images(n: int, classes: int, skill: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True classes (imbalanced: the last class is rare) and predictions right with probability `skill`."""
    rng = np.random.default_rng(seed)
    weights = np.array([4.0] * (classes - 1) + [1.0])
    true = rng.choice(classes, size=n, p=weights / weights.sum())
    wrong = (true + rng.integers(1, classes, size=n)) % classes
    return true, np.where(rng.random(n) < skill, true, wrong)


def test_intervals_cover_the_point_estimate_and_are_reproducible_for_a_seed():
    true, predicted = _images(300, 3, 0.8, seed=1)
    confusion = confusion_matrix(true, predicted, labels=[0, 1, 2])
    first = intervals.confusion_intervals(confusion)
    assert first == intervals.confusion_intervals(confusion)
    assert first != intervals.confusion_intervals(confusion, seed=1)
    low, high = first["accuracy"]
    assert low < accuracy_score(true, predicted) < high
    low, high = first["macro_f1"]
    assert low < f1_score(true, predicted, average="macro") < high
    for (low, high), f1 in zip(first["f1"], f1_score(true, predicted, average=None)):
        assert low < f1 < high


def test_resampled_cell_metrics_equal_scikit_learn_on_the_images_they_stand_for():
    true, predicted = _images(80, 4, 0.6, seed=2)
    confusion = confusion_matrix(true, predicted, labels=range(4))
    cell_true, cell_predicted = np.nonzero(confusion)
    drawn = np.random.default_rng(3).multinomial(80, confusion[cell_true, cell_predicted] / 80, size=5)
    for counts in drawn:
        images_true, images_predicted = np.repeat(cell_true, counts), np.repeat(cell_predicted, counts)
        point = intervals._metrics(counts[None, :], cell_true, cell_predicted, 4, 80)
        assert point.accuracy[0] == pytest.approx(accuracy_score(images_true, images_predicted))
        sklearn_f1 = f1_score(images_true, images_predicted, labels=range(4), average=None, zero_division=0)
        np.testing.assert_allclose(point.f1[0], sklearn_f1)
        assert point.macro_f1[0] == pytest.approx(sklearn_f1.mean())


def test_cell_bootstrap_equals_a_direct_bootstrap_over_images_in_distribution():
    true, predicted = _images(120, 3, 0.75, seed=4)
    confusion = confusion_matrix(true, predicted, labels=[0, 1, 2])
    cell_true, cell_predicted = np.nonzero(confusion)
    (cells,) = intervals.resample_metrics(cell_true, [cell_predicted], confusion[cell_true, cell_predicted], 3)
    rng = np.random.default_rng(5)
    direct = []
    for _ in range(1000):
        pick = rng.integers(0, len(true), size=len(true))
        direct.append(f1_score(true[pick], predicted[pick], labels=[0, 1, 2], average="macro", zero_division=0))
    direct_values = np.array(direct)
    assert cells.macro_f1.mean() == pytest.approx(direct_values.mean(), abs=0.01)
    assert cells.macro_f1.std() == pytest.approx(direct_values.std(), rel=0.15)
    np.testing.assert_allclose(
        intervals.percentile_interval(cells.macro_f1), intervals.percentile_interval(direct_values), atol=0.025
    )


def test_paired_difference_names_a_clearly_better_model_and_no_difference_for_identical_ones():
    true, good = _images(400, 3, 0.9, seed=6)
    _, poor = _images(400, 3, 0.6, seed=7)
    poor = np.where(np.random.default_rng(8).random(400) < 0.6, true, (true + 1) % 3)
    better = intervals.paired_difference(true, good, poor, 3)
    for metric in ("accuracy", "macro_f1"):
        assert better[metric]["interval"][0] > 0
        assert better[metric]["verdict"] == "A better than B"
    assert intervals.paired_difference(true, poor, good, 3)["macro_f1"]["verdict"] == "B better than A"
    same = intervals.paired_difference(true, good, good, 3)
    for metric in ("accuracy", "macro_f1"):
        assert same[metric]["difference"] == 0.0
        low, high = same[metric]["interval"]
        assert low <= 0 <= high
        assert same[metric]["verdict"] == "no difference shown"


def test_paired_difference_of_two_models_a_few_images_apart_shows_no_difference():
    true, first = _images(300, 3, 0.8, seed=9)
    second = first.copy()
    second[:3] = true[:3]  # B fixes three of A's images...
    second[3:5] = (true[3:5] + 1) % 3  # ...and breaks two
    result = intervals.paired_difference(true, first, second, 3)
    assert result["accuracy"]["interval"][0] < 0 < result["accuracy"]["interval"][1]
    assert result["accuracy"]["verdict"] == "no difference shown"


def test_paired_difference_refuses_predictions_of_other_images():
    with pytest.raises(ValueError, match="join the runs on image_id"):
        intervals.paired_difference(np.array([0, 1]), np.array([0, 1, 1]), np.array([0, 1]), 2)


def test_summary_carries_intervals_around_its_figures_and_keeps_the_low_support_warning():
    true, predicted = _images(200, 3, 0.85, seed=10)
    summary = summarize(true, np.eye(3)[predicted], ["a", "b", "rare"])
    low, high = summary["accuracy_interval"]
    assert low <= summary["accuracy"] <= high
    low, high = summary["macro"]["f1_interval"]
    assert low <= summary["macro"]["f1"] <= high
    for row in summary["per_class"]:
        assert row["f1_interval"][0] <= row["f1"] <= row["f1_interval"][1]
    assert summary["per_class"][2]["low_support"]
    assert summary["intervals"]["resamples"] == intervals.RESAMPLES
    empty = summarize(np.zeros(0, dtype=int), np.zeros((0, 3)), ["a", "b", "rare"])
    assert empty["accuracy_interval"] is None and empty["per_class"][0]["f1_interval"] is None


def test_paired_difference_sees_a_small_consistent_gain_that_separate_intervals_would_miss():
    true, first = _images(300, 3, 0.8, seed=11)
    second = first.copy()
    fixed = np.flatnonzero(first != true)[:12]
    second[fixed] = true[fixed]  # B is A with 12 mistakes fixed and nothing broken
    separate = [
        intervals.confusion_intervals(confusion_matrix(true, p, labels=[0, 1, 2]))["accuracy"] for p in (first, second)
    ]
    assert separate[1][0] < separate[0][1]  # the two intervals overlap...
    result = intervals.paired_difference(true, second, first, 3)
    assert result["accuracy"]["difference"] == pytest.approx(12 / 300)
    assert result["accuracy"]["verdict"] == "A better than B"  # ...yet pairing shows the gain


def test_training_comparison_table_gives_each_test_figure_its_interval(tmp_path):
    from pipeline.train.driver import write_comparison

    true, good = _images(200, 3, 0.9, seed=12)
    _, poor = _images(200, 3, 0.5, seed=13)
    names = ["a", "b", "rare"]
    results = {name: {"test": summarize(true, np.eye(3)[p], names)} for name, p in (("cnn", good), ("mnv2", poor))}
    write_comparison(str(tmp_path), results, tuple(names))
    table = (tmp_path / "comparison.md").read_text()
    test = results["cnn"]["test"]
    low, high = test["macro"]["f1_interval"]
    assert f"| {test['macro']['f1']:.4f} [{low:.4f}, {high:.4f}] |" in table
    low, high = test["per_class"][2]["f1_interval"]
    assert f"{test['per_class'][2]['f1']:.3f} [{low:.3f}, {high:.3f}] |" in table
    assert "95% interval, percentile bootstrap over the test images" in table
    assert "Classes with under 20 test images give noisy F1" in table
