"""Split sizes per class at the small-class edges, the small-class warning, and the card's counts."""

from __future__ import annotations

import logging

import pandas as pd

from pipeline.splits import make_split, split_counts


def catalog(counts):
    rows = [(f"{label}/{i:03d}", label) for label, count in counts.items() for i in range(count)]
    return pd.DataFrame(rows, columns=["image_id", "label"])


def sizes(split, label):
    return split.loc[split["label"] == label, "split"].value_counts().to_dict()


def test_a_class_of_three_gives_one_image_to_each_split():
    assert sizes(make_split(catalog({"a": 3}), 0.15, 0.15, seed=0), "a") == {"train": 1, "val": 1, "test": 1}


def test_test_images_are_capped_so_one_training_image_stays():
    # round(4 * 0.49) = 2 each would leave no training image: test gives one up.
    assert sizes(make_split(catalog({"a": 4}), 0.49, 0.49, seed=0), "a") == {"train": 1, "val": 2, "test": 1}


def test_classes_under_twenty_images_are_logged_with_their_split(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.splits"):
        make_split(catalog({"nineteen": 19, "twenty": 20}), 0.15, 0.15, seed=0)
    assert [record.getMessage() for record in caplog.records] == [
        "class 'nineteen' has only 19 images: 13 train / 3 val / 3 test; its metrics will be noisy"
    ]


def test_split_counts_give_images_per_label_for_each_split_present():
    frame = pd.DataFrame(
        {"image_id": ["1", "2", "3", "4"], "label": ["a", "b", "a", "a"], "split": ["train", "train", "val", "train"]}
    )
    assert split_counts(frame) == {"train": {"a": 2, "b": 1}, "val": {"a": 1}}


def test_a_class_of_five_at_fifteen_percent_gives_one_test_image_not_more():
    assert sizes(make_split(catalog({"a": 5}), 0.15, 0.15, seed=0), "a") == {"train": 3, "val": 1, "test": 1}
