"""Catalog listing and its checks."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from pipeline.catalog import LabelIndex, read_catalog_frame
from tests.factories import make_tree_catalog


def test_tree_catalog_has_labels_and_relative_ids(tmp_path):
    root = make_tree_catalog(str(tmp_path / "c"), {"a": 2, "b": 3})
    os.rename(os.path.join(root, "b", "0000.png"), os.path.join(root, "b", "0000.PNG"))
    open(os.path.join(root, "a", "notes.txt"), "w").write("not an image")
    frame = read_catalog_frame(root)
    assert len(frame) == 5
    assert sorted(frame["label"].unique()) == ["a", "b"]
    assert "b/0000.PNG" in set(frame["image_id"])  # extensions match case-insensitively


def test_flat_folder_is_unlabelled(tmp_path):
    root = make_tree_catalog(str(tmp_path / "c"), {"a": 3})
    frame = read_catalog_frame(os.path.join(root, "a"))
    assert len(frame) == 3 and frame["label"].isna().all()


def test_manifest_keeps_passthrough_and_resolves_relative_uris(tmp_path):
    root = make_tree_catalog(str(tmp_path / "c"), {"a": 2})
    manifest = tmp_path / "c" / "manifest.csv"
    pd.DataFrame({"image_uri": ["a/0000.png", "a/0001.png"], "sku": ["X1", "X2"], "label": ["a", ""]}).to_csv(
        manifest, index=False
    )
    frame = read_catalog_frame(str(manifest))
    assert list(frame.columns) == ["image_id", "image_uri", "label", "sku"]
    assert frame["image_uri"].iloc[0] == os.path.join(root, "a", "0000.png")
    assert frame["label"].tolist() == ["a", None]


def manifest(directory, columns) -> str:
    path = directory / "manifest.csv"
    pd.DataFrame(columns).to_csv(path, index=False)
    return str(path)


def mixed_root(directory) -> str:
    make_tree_catalog(str(directory / "mixed"), {"a": 1})
    make_tree_catalog(str(directory / "flat"), {"x": 1})
    os.rename(directory / "flat" / "x" / "0000.png", directory / "mixed" / "loose.png")
    return str(directory / "mixed")


def test_file_uris_read_like_paths(tmp_path):
    root = make_tree_catalog(str(tmp_path / "tree"), {"a": 2, "b": 1})
    by_path, by_uri = read_catalog_frame(root), read_catalog_frame(f"file://{root}")
    assert by_uri["image_id"].tolist() == by_path["image_id"].tolist() == ["a/0000.png", "a/0001.png", "b/0000.png"]
    assert by_uri["label"].tolist() == ["a", "a", "b"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: str(p / "missing"), "does not exist"),
        (lambda p: (p / "empty").mkdir() or str(p / "empty"), "holds no images"),
        (lambda p: pd.DataFrame({"path": ["x.png"]}).to_csv(p / "m.csv", index=False) or str(p / "m.csv"), "image_uri"),
        (
            lambda p: manifest(p, {"image_uri": ["a.png", "b.png"], "image_id": ["same", "same"]}),
            "duplicate image_id values, e.g. 'same'",
        ),
        (lambda p: manifest(p, {"image_uri": ["a.png", ""]}), "rows with an empty image_uri"),
        (lambda p: mixed_root(p), "mixes images at its root .*'loose.png'"),
    ],
    ids=["missing", "empty", "no_image_uri", "duplicate_ids", "empty_image_uri", "mixed_root"],
)
def test_bad_catalogs_raise_with_the_fix(tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        read_catalog_frame(make(tmp_path))


def test_label_index_is_sorted_and_integer_encoded():
    index = LabelIndex.fit(pd.Series(["b", "a", "b"]))
    assert index.class_names == ("a", "b")
    assert index.encode(pd.Series(["b", "a"])).tolist() == [1, 0]


@pytest.mark.parametrize("part", ["../x", "a/../../x", "/etc/passwd", "nul\x00"])
def test_storage_join_refuses_parts_that_leave_the_root(part):
    from pipeline import storage

    with pytest.raises(ValueError):
        storage.join("/tmp/output-root", part)
