"""The split is stratified, seeded, disjoint, and deliberate about tiny classes."""

from __future__ import annotations

import pandas as pd

from pipeline.splits import make_split, split_hash


def catalog(counts):
    rows = [(f"{label}/{i}", label) for label, count in counts.items() for i in range(count)]
    return pd.DataFrame(rows, columns=["image_id", "label"])


def test_split_is_disjoint_complete_and_reproducible():
    frame = catalog({"a": 510, "b": 14, "c": 400})
    first = make_split(frame, 0.15, 0.15, seed=1)
    again = make_split(frame, 0.15, 0.15, seed=1)
    other = make_split(frame, 0.15, 0.15, seed=2)
    assert first["split"].tolist() == again["split"].tolist()
    assert split_hash(first) == split_hash(again) != split_hash(other)
    groups = [set(first.loc[first["split"] == s, "image_id"]) for s in ("train", "val", "test")]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert sum(map(len, groups)) == len(frame)
    counts = first.groupby(["label", "split"]).size()
    assert counts[("a", "test")] == round(510 * 0.15) and counts[("a", "val")] == round(510 * 0.15)
    assert counts[("b", "val")] >= 1 and counts[("b", "test")] >= 1 and counts[("b", "train")] >= 10


def test_tiny_classes_keep_a_training_image():
    split = make_split(catalog({"a": 50, "two": 2, "one": 1}), 0.15, 0.15, seed=0)
    assert sorted(split.loc[split["label"] == "two", "split"]) == ["train", "val"]
    assert split.loc[split["label"] == "one", "split"].tolist() == ["train"]
