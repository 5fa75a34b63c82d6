"""Cross-validated calibration fitting (`train.calibration_folds`): the key, the folds, the refusal
of a class too small to fill them, and what the card says it was fitted on. No Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ray

from jobs import train
from pipeline.config import TrainConfig
from pipeline.records import ModelCard
from pipeline.schema import IMAGE_ID, LABEL
from pipeline.splits import SPLIT
from pipeline.train.folds import OutOfFold, check_fold_steps, check_folds, fold_frame, split_folds
from pipeline.train.selection import too_few_warnings
from tests.factories import make_tree_catalog


def catalog_frame(counts: dict[str, dict[str, int]]) -> pd.DataFrame:
    """{label: {split: images}} as catalog rows with their split, in a fixed order."""
    rows = [
        {IMAGE_ID: f"{label}-{split}-{index}.png", LABEL: label, SPLIT: split}
        for label, splits in counts.items()
        for split, count in splits.items()
        for index in range(count)
    ]
    return pd.DataFrame(rows)


def test_calibration_folds_is_off_by_default_and_2_to_20_otherwise():
    assert TrainConfig().calibration_folds == 0
    for folds in (0, 2, 5, 20):
        assert TrainConfig(calibration_folds=folds).calibration_folds == folds
    for folds in (1, 21, -2):
        with pytest.raises(ValueError, match=rf"train.calibration_folds={folds} is invalid; allowed: 0 .* 2..20"):
            TrainConfig(calibration_folds=folds)


def test_folds_cover_train_and_validation_stratified_seeded_and_leave_test_out():
    frame = catalog_frame({"shoe": {"train": 20, "val": 4, "test": 4}, "sandal": {"train": 10, "val": 2, "test": 2}})
    folds = split_folds(frame, 3, seed=7)
    fit_rows = frame.index[frame[SPLIT] != "test"]
    assert sorted(folds.index) == sorted(fit_rows)  # every train+val row once, no test row
    per_fold = frame.loc[folds.index].groupby([folds, LABEL]).size().unstack()
    assert per_fold["shoe"].tolist() == [8, 8, 8] and per_fold["sandal"].tolist() == [4, 4, 4]
    assert folds.equals(split_folds(frame, 3, seed=7))  # same seed, same folds
    assert not folds.equals(split_folds(frame, 3, seed=8))  # the seed, not a constant, decides
    held_out = fold_frame(frame, folds, 1)
    assert (held_out[SPLIT] == "val").sum() == 12 and (held_out[SPLIT] == "train").sum() == 24
    assert set(held_out.index[held_out[SPLIT] == "val"]) == set(folds.index[folds == 1])


def test_a_class_with_fewer_train_and_validation_images_than_folds_is_refused_by_name():
    frame = catalog_frame({"shoe": {"train": 20, "val": 4, "test": 4}, "sandal": {"train": 3, "val": 1, "test": 9}})
    check_folds(frame, 4)  # 4 sandals: enough for 4 folds; the test split does not count
    check_folds(frame, 0)
    with pytest.raises(ValueError, match=r"\{'sandal': 4\} have fewer; lower train.calibration_folds"):
        check_folds(frame, 5)


def test_folds_whose_smallest_training_part_cannot_fill_one_step_are_refused():
    """36 train+val images in 3 folds: each fold trains on 24, so a 24-image step fits and 25 does not."""
    frame = catalog_frame({"shoe": {"train": 20, "val": 4, "test": 4}, "sandal": {"train": 10, "val": 2, "test": 2}})
    check_fold_steps(frame, TrainConfig(calibration_folds=3, global_batch_size=24), workers=1, seed=7)
    off = TrainConfig(calibration_folds=0, global_batch_size=10_000)
    check_fold_steps(frame, off, workers=1, seed=7)  # off: nothing to check
    with pytest.raises(ValueError, match=r"trains on 24 images but one step needs .* = 25; lower train.global"):
        check_fold_steps(frame, TrainConfig(calibration_folds=3, global_batch_size=25), workers=1, seed=7)


@pytest.mark.parametrize(
    ("settings", "fix", "not_suggested"),
    [
        (["train.batch_size_per_worker=16"], "lower --workers or train.batch_size_per_worker", None),
        (["train.global_batch_size=32"], "lower train.global_batch_size", "--workers"),
    ],
)
def test_jobs_train_refuses_a_global_batch_larger_than_the_train_split_naming_what_shrinks_it(
    tmp_path, capsys, settings, fix, not_suggested
):
    """With a fixed global batch, fewer workers do not shrink the step: the refusal must not say so."""
    catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 8, "green": 8, "blue": 8})
    output = tmp_path / "out"
    argv = ["--catalog", catalog, "--output", str(output), "--workers", "2"]
    assert train.main(argv + [arg for setting in settings for arg in ("--set", setting)]) == 2
    err = capsys.readouterr().err
    assert "one step needs the global batch of 32" in err and fix in err
    assert not_suggested is None or not_suggested not in err
    assert not ray.is_initialized() and not output.exists()


def test_jobs_train_refuses_too_many_folds_naming_the_class_before_ray_starts(tmp_path, capsys):
    catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 8, "green": 8, "blue": 4})
    output = tmp_path / "out"
    argv = ["--catalog", catalog, "--output", str(output), "--set", "train.batch_size_per_worker=2"]
    assert train.main(argv + ["--set", "train.calibration_folds=4"]) == 2
    err = capsys.readouterr().err
    assert "train.calibration_folds=4" in err and "{'blue': 3}" in err and "lower train.calibration_folds" in err
    assert not ray.is_initialized() and not output.exists()


def test_the_card_says_what_calibration_was_fitted_on_and_old_cards_say_validation():
    out_of_fold = OutOfFold(labels=np.array([0, 1, 1]), probabilities=np.full((3, 2), 0.5), folds=5)
    assert out_of_fold.description == "5-fold out-of-fold predictions over train+validation (3 images)"
    warnings = too_few_warnings({"sandal": 3}, 10, "the temperature was", "train+validation")
    assert warnings and "3 train+validation image(s) of class 'sandal'" in warnings[0]
    old = {
        "name": "custom_cnn",
        "version": "v",
        "class_names": ["a", "b"],
        "input": {"image_size": 32, "channels": 3, "pixel_range": [0, 255]},
        "calibration": {"temperature": 1.5, "fitted_images_per_class": {"a": 2, "b": 2}},
        "review": {"threshold": 0.7},
    }
    card = ModelCard.from_dict(old)
    assert card.calibration is not None and card.calibration.fitted_on == "validation split"
    assert card.review is not None and card.review.fitted_on == "validation split"
