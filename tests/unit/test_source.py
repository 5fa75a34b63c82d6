"""The scoring catalog is described from its top level or header, and read by worker functions."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.score.source import describe_catalog, list_prefix, normalize_manifest
from tests.factories import make_tree_catalog


def test_a_tree_is_described_by_its_label_folders_and_listed_per_prefix_with_fingerprints(tmp_path):
    root = make_tree_catalog(str(tmp_path / "tree"), {"red": 3, "blue": 2})
    os.makedirs(tmp_path / "tree" / "red" / "nested")
    (tmp_path / "tree" / "red" / "nested" / "deep.png").write_bytes(b"x")
    (tmp_path / "tree" / "red" / "notes.txt").write_text("not an image")
    (tmp_path / "tree" / "red" / ".hidden.png").write_bytes(b"x")
    source = describe_catalog(root)
    assert source.kind == "folder" and source.labelled_tree
    assert [os.path.basename(p) for p in source.prefixes] == ["blue", "red"]
    red = list_prefix(pa.table({"prefix": [source.prefixes[1]]}), root, True).to_pylist()
    assert [row["image_id"] for row in red] == ["red/0000.png", "red/0001.png", "red/0002.png", "red/nested/deep.png"]
    assert {row["label"] for row in red} == {"red"}
    size = os.path.getsize(os.path.join(root, "red", "0000.png"))
    assert red[0]["fingerprint"].startswith(f"{size}:") and red[0]["image_uri"] == os.path.join(root, "red/0000.png")


def test_a_flat_folder_is_one_unlabelled_prefix(tmp_path):
    make_tree_catalog(str(tmp_path / "staging"), {"x": 2})
    flat = str(tmp_path / "staging" / "x")
    source = describe_catalog(flat)
    assert source.prefixes == (flat,) and not source.labelled_tree
    rows = list_prefix(pa.table({"prefix": [flat]}), flat, False).to_pylist()
    assert [(row["image_id"], row["label"]) for row in rows] == [("0000.png", None), ("0001.png", None)]


@pytest.mark.parametrize(
    "layout, message",
    [
        ("mixed", "mixes images at its root"),
        ("empty", "holds no images"),
        ("missing", "does not exist"),
    ],
)
def test_folder_problems_are_refused_from_the_top_level(tmp_path, layout, message):
    root = tmp_path / "catalog"
    if layout != "missing":
        root.mkdir()
    if layout == "mixed":
        make_tree_catalog(str(root), {"red": 1})
        (root / "loose.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=message):
        describe_catalog(str(root))


def test_manifest_headers_give_the_passthrough_schema_and_refuse_a_missing_image_uri(tmp_path):
    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.table({"image_uri": ["a.png"], "sku": ["s1"], "price": [9.5]}), parquet)
    source = describe_catalog(str(parquet))
    assert source.is_manifest and source.passthrough.names == ["sku", "price"]
    assert source.passthrough.field("price").type == pa.float64()
    csv = tmp_path / "m.csv"
    csv.write_text("image_uri,label,image_id,qty\na.png,NA,007,3\n")
    described = describe_catalog(str(csv))
    assert described.csv_types["image_id"] == pa.string() and described.csv_types["label"] == pa.string()
    assert described.passthrough.names == ["qty"]
    (tmp_path / "bad.csv").write_text("path,label\na.png,x\n")
    with pytest.raises(ValueError, match="has no 'image_uri' column"):
        describe_catalog(str(tmp_path / "bad.csv"))


def test_manifest_rows_get_full_uris_string_ids_and_labels_and_an_empty_uri_stays_a_row(tmp_path):
    batch = pa.table(
        {
            "image_uri": ["a.png", "/abs/b.png", "s3://bucket/c.png", None, "file:///x/d.png"],
            "label": [1, 2, None, 3, 4],
            "sku": ["s1", "s2", "s3", "s4", "s5"],
        }
    )
    rows = normalize_manifest(batch, str(tmp_path)).to_pylist()
    assert [row["image_uri"] for row in rows] == [
        str(tmp_path / "a.png"),
        "/abs/b.png",
        "s3://bucket/c.png",
        "",
        "/x/d.png",
    ]
    assert [row["image_id"] for row in rows] == [row["image_uri"] for row in rows]
    assert [row["label"] for row in rows] == ["1", "2", None, "3", "4"]
    assert [row["sku"] for row in rows] == ["s1", "s2", "s3", "s4", "s5"]
    remote = normalize_manifest(pa.table({"image_uri": ["c.png"], "image_id": [7]}), "s3://bucket/m").to_pylist()
    assert remote == [{"image_id": "7", "image_uri": "s3://bucket/m/c.png", "label": None}]
