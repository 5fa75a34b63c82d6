"""What a catalog promises, rule by rule: the label index, manifest columns and URIs, folder listing, errors."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.catalog import (
    IMAGE_EXTENSIONS,
    LabelIndex,
    has_labels,
    is_image_name,
    passthrough_columns,
    read_catalog_frame,
)
from tests.factories import make_tree_catalog


def write_parquet(path, columns) -> str:
    pd.DataFrame(columns).to_parquet(path, index=False)
    return str(path)


def write_csv(path, text: str) -> str:
    path.write_text(text)
    return str(path)


# LabelIndex: sorted class names, ids in that order.


def test_label_index_sorts_names_drops_missing_and_keeps_each_once():
    index = LabelIndex.fit(pd.Series(["shoe", None, "bag", "shoe", np.nan, "hat"]))
    assert index.class_names == ("bag", "hat", "shoe")
    assert len(index) == 3


def test_label_index_names_are_strings_sorted_as_strings():
    index = LabelIndex.fit(pd.Series([10, 2, 2]))
    assert index.class_names == ("10", "2")


def test_label_index_gives_each_name_its_position():
    index = LabelIndex(("bag", "hat", "shoe"))
    assert [index.index(name) for name in ("bag", "hat", "shoe")] == [0, 1, 2]
    with pytest.raises(ValueError):
        index.index("sock")


def test_label_index_encodes_a_column_to_int32_ids_in_row_order():
    encoded = LabelIndex(("bag", "hat", "shoe")).encode(pd.Series(["shoe", "bag", "hat", "shoe"]))
    assert encoded.tolist() == [2, 0, 1, 2]
    assert encoded.dtype == np.int32


def test_an_empty_label_index_has_no_classes():
    assert len(LabelIndex.fit(pd.Series([None, None], dtype=object))) == 0


# has_labels and passthrough_columns.


@pytest.mark.parametrize(
    "columns, labelled",
    [
        ({"image_id": ["a"], "label": ["x"]}, True),
        ({"image_id": ["a", "b"], "label": [None, "x"]}, True),
        ({"image_id": ["a", "b"], "label": [None, None]}, False),
        ({"image_id": ["a"]}, False),
    ],
    ids=["labelled", "partly", "all_none", "no_column"],
)
def test_has_labels(columns, labelled):
    assert has_labels(pd.DataFrame(columns)) is labelled


def test_passthrough_columns_are_the_others_in_their_order():
    frame = pd.DataFrame(columns=["sku", "image_uri", "price", "label", "image_id", "brand"])
    assert passthrough_columns(frame) == ["sku", "price", "brand"]


# Which file names are images.


@pytest.mark.parametrize("extension", IMAGE_EXTENSIONS)
def test_every_image_extension_counts_in_any_case(extension):
    assert is_image_name(f"a/photo{extension}")
    assert is_image_name(f"a/photo{extension.upper()}")


@pytest.mark.parametrize("name", ["notes.txt", "photo.png.bak", "png", "photo.svg", "manifest.csv"])
def test_other_names_are_not_images(name):
    assert not is_image_name(name)


# Folder trees and flat folders.


def test_tree_rows_are_sorted_by_id_with_full_uris_and_a_fresh_index(tmp_path):
    root = make_tree_catalog(str(tmp_path / "c"), {"b": 2, "a": 1})
    frame = read_catalog_frame(root)
    assert list(frame.columns) == ["image_id", "image_uri", "label"]
    assert frame["image_id"].tolist() == ["a/0000.png", "b/0000.png", "b/0001.png"]
    assert frame["image_uri"].tolist() == [os.path.join(root, row) for row in frame["image_id"]]
    assert frame["label"].tolist() == ["a", "b", "b"]
    assert frame.index.tolist() == [0, 1, 2]


def test_the_label_is_the_first_folder_under_the_root(tmp_path):
    root = make_tree_catalog(str(tmp_path / "c"), {"a": 1})
    os.makedirs(os.path.join(root, "a", "side"))
    Image.new("RGB", (4, 4)).save(os.path.join(root, "a", "side", "x.png"))
    frame = read_catalog_frame(root)
    assert frame["image_id"].tolist() == ["a/0000.png", "a/side/x.png"]
    assert frame["label"].tolist() == ["a", "a"]


def test_hidden_files_and_other_extensions_are_skipped(tmp_path, caplog):
    root = make_tree_catalog(str(tmp_path / "c"), {"a": 2})
    Image.new("RGB", (4, 4)).save(os.path.join(root, "a", ".hidden.png"))
    open(os.path.join(root, "a", "notes.txt"), "w").write("x")
    with caplog.at_level("INFO", logger="pipeline.catalog"):
        frame = read_catalog_frame(root)
    assert frame["image_id"].tolist() == ["a/0000.png", "a/0001.png"]
    assert f"catalog {root}: skipped 2 files without an image extension" in caplog.messages


def test_the_catalog_log_line_says_how_many_images_and_whether_labelled(tmp_path, caplog):
    root = make_tree_catalog(str(tmp_path / "c"), {"a": 2, "b": 1})
    with caplog.at_level("INFO", logger="pipeline.catalog"):
        read_catalog_frame(root)
        read_catalog_frame(os.path.join(root, "a"))
    assert f"catalog {root}: 3 images, labelled" in caplog.messages
    assert f"catalog {os.path.join(root, 'a')}: 2 images, unlabelled" in caplog.messages


def test_a_flat_folder_uses_file_names_as_ids_and_has_no_labels(tmp_path):
    root = make_tree_catalog(str(tmp_path / "c"), {"a": 2})
    frame = read_catalog_frame(os.path.join(root, "a") + "/")
    assert frame["image_id"].tolist() == ["0000.png", "0001.png"]
    assert frame["label"].tolist() == [None, None]
    assert not has_labels(frame)


def test_a_tree_whose_only_image_is_hidden_holds_no_images(tmp_path):
    os.makedirs(tmp_path / "c" / "a")
    Image.new("RGB", (4, 4)).save(tmp_path / "c" / "a" / ".x.png")
    with pytest.raises(ValueError, match=r"holds no images \(extensions \.jpg, \.jpeg, \.png, .*\.tiff\)"):
        read_catalog_frame(str(tmp_path / "c"))


def test_mixed_root_names_the_loose_file_and_both_layouts(tmp_path):
    root = make_tree_catalog(str(tmp_path / "c"), {"a": 1})
    Image.new("RGB", (4, 4)).save(os.path.join(root, "loose.png"))
    message = f"catalog '{root}' mixes images at its root (e.g. 'loose.png') with label folders; "
    with pytest.raises(ValueError) as raised:
        read_catalog_frame(root)
    assert str(raised.value) == message + "use either <root>/<label>/<file> or a flat folder"


# Manifests: CSV and Parquet.


def test_csv_manifest_keeps_ids_and_labels_as_written(tmp_path):
    path = write_csv(tmp_path / "m.csv", "image_uri,image_id,label,sku\na.png,007,NA,0012\nb.png,1.50,1,N/A\n")
    frame = read_catalog_frame(path)
    assert frame["image_id"].tolist() == ["007", "1.50"]
    assert frame["label"].tolist() == ["NA", "1"]  # "NA" is a class name, not a missing label
    assert frame["image_uri"].tolist() == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


def test_csv_manifest_empty_label_is_none(tmp_path):
    path = write_csv(tmp_path / "m.csv", "image_uri,label\na.png,\nb.png,x\n")
    assert read_catalog_frame(path)["label"].tolist() == [None, "x"]


@pytest.mark.parametrize("name", ["m.parquet", "m.pq", "M.PARQUET", "M.CSV"])
def test_manifest_is_read_by_its_extension_in_any_case(tmp_path, name):
    path = tmp_path / name
    columns = {"image_uri": ["a.png", "b.png"], "label": ["x", "y"]}
    if name.lower().endswith(".csv"):
        pd.DataFrame(columns).to_csv(path, index=False)
    else:
        write_parquet(path, columns)
    frame = read_catalog_frame(str(path))
    assert frame["image_uri"].tolist() == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert frame["label"].tolist() == ["x", "y"]


def test_parquet_manifest_labels_become_strings_and_missing_ones_none(tmp_path):
    path = write_parquet(tmp_path / "m.parquet", {"image_uri": ["a.png", "b.png", "c.png"], "label": [3.0, None, 1.0]})
    frame = read_catalog_frame(path)
    assert frame["label"].tolist() == ["3.0", None, "1.0"]
    assert has_labels(frame)


def test_parquet_manifest_integer_ids_become_strings(tmp_path):
    path = write_parquet(tmp_path / "m.parquet", {"image_uri": ["a.png", "b.png"], "image_id": [7, 8]})
    assert read_catalog_frame(path)["image_id"].tolist() == ["7", "8"]


def test_manifest_without_ids_or_labels_uses_the_uri_as_id(tmp_path):
    path = write_parquet(tmp_path / "m.parquet", {"brand": ["q", "r"], "image_uri": ["a.png", "sub/b.png"]})
    frame = read_catalog_frame(path)
    assert list(frame.columns) == ["image_id", "image_uri", "label", "brand"]
    assert (
        frame["image_id"].tolist()
        == frame["image_uri"].tolist()
        == [str(tmp_path / "a.png"), str(tmp_path / "sub/b.png")]
    )
    assert frame["label"].tolist() == [None, None]
    assert frame["brand"].tolist() == ["q", "r"]
    assert not has_labels(frame)


def test_manifest_uris_resolve_against_the_manifest_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    uris = ["a.png", "../up.png", "./x/../b.png", "/abs/../c.png", "file:///d/e.png", "s3://bucket/key/f.png"]
    path = write_parquet(tmp_path / "sub" / "m.parquet", {"image_uri": uris})
    assert read_catalog_frame(path)["image_uri"].tolist() == [
        str(tmp_path / "sub" / "a.png"),
        str(tmp_path / "up.png"),
        str(tmp_path / "sub" / "b.png"),
        "/c.png",
        "/d/e.png",
        "s3://bucket/key/f.png",
    ]


def test_a_manifest_read_through_file_uri_resolves_like_a_path(tmp_path):
    path = write_parquet(tmp_path / "m.parquet", {"image_uri": ["a.png"]})
    assert read_catalog_frame(f"file://{path}")["image_uri"].tolist() == [str(tmp_path / "a.png")]


def test_a_uri_with_a_nul_byte_is_kept_as_written_for_its_row_to_fail(tmp_path):
    path = write_parquet(tmp_path / "m.parquet", {"image_uri": ["a.png", "bad\x00name.png"]})
    assert read_catalog_frame(path)["image_uri"].tolist() == [str(tmp_path / "a.png"), "bad\x00name.png"]


def test_relative_uris_in_a_remote_manifest_stay_under_its_prefix():
    from pipeline.catalog import resolve_image_uri

    assert resolve_image_uri("sub/a.png", "s3://bucket/catalog") == "s3://bucket/catalog/sub/a.png"
    assert resolve_image_uri("s3://other/b.png/", "s3://bucket/catalog") == "s3://other/b.png"


# Errors name the fix.


def test_a_missing_catalog_says_what_to_pass(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ValueError) as raised:
        read_catalog_frame(missing)
    assert str(raised.value) == (
        f"catalog '{missing}' does not exist; pass --catalog a folder tree, "
        "a flat folder of images or a CSV/Parquet manifest"
    )


def test_a_catalog_the_store_cannot_open_names_the_error():
    with pytest.raises(ValueError, match=r"^catalog 'gs://bucket/c' cannot be read \(ImportError: .+\)$"):
        read_catalog_frame("gs://bucket/c")


def test_a_manifest_without_image_uri_lists_its_columns(tmp_path):
    path = write_csv(tmp_path / "m.csv", "path,label\na.png,x\n")
    with pytest.raises(ValueError) as raised:
        read_catalog_frame(path)
    assert str(raised.value) == (
        f"manifest '{path}' has no 'image_uri' column (columns: ['path', 'label']); "
        "add one with each image's path or s3:// URI"
    )


def test_a_parquet_row_without_image_uri_is_refused(tmp_path):
    path = write_parquet(tmp_path / "m.parquet", {"image_uri": ["a.png", None]})
    with pytest.raises(ValueError, match=f"^manifest '{path}' has rows with an empty image_uri$"):
        read_catalog_frame(path)


def test_duplicate_ids_name_the_first_repeat_and_the_rule(tmp_path):
    path = write_csv(tmp_path / "m.csv", "image_uri,image_id\na.png,x\nb.png,y\nc.png,y\nd.png,x\n")
    with pytest.raises(ValueError) as raised:
        read_catalog_frame(path)
    assert str(raised.value) == (
        f"catalog '{path}' has duplicate image_id values, e.g. 'y'; every row needs a unique image_id"
    )


def test_the_same_image_listed_twice_without_ids_is_a_duplicate(tmp_path):
    path = write_csv(tmp_path / "m.csv", "image_uri\na.png\n./a.png\n")
    with pytest.raises(ValueError, match="duplicate image_id values"):
        read_catalog_frame(path)
