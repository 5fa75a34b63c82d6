"""Reviewed labels coming back: Label Studio's export and the CSV parsed alike, every bad row named."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from pipeline.extra_labels import read_extra_labels
from pipeline.schema import IMAGE_ID, IMAGE_URI, LABEL
from pipeline.splits import SPLIT

CLASSES = ("bag", "sandal", "trouser")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "nightly"
    folder.mkdir()
    for name in ("n1.png", "n2.png", "n3.png", "n4.png"):
        (folder / name).write_bytes(b"png")
    return folder


@pytest.fixture
def catalog(tmp_path):
    """The training catalog with its split: one image per split."""
    return pd.DataFrame(
        {
            IMAGE_ID: ["bag/t.png", "bag/v.png", "bag/s.png"],
            IMAGE_URI: [str(tmp_path / f"cat/{name}") for name in ("t.png", "v.png", "s.png")],
            LABEL: ["bag"] * 3,
            SPLIT: ["train", "val", "test"],
        }
    )


def task(task_id: int, image_uri: str, *answers: list[str], cancelled: bool = False) -> dict:
    return {
        "id": task_id,
        "data": {"image": f"https://signed/{task_id}", IMAGE_ID: image_uri.rsplit("/", 1)[-1], IMAGE_URI: image_uri},
        "annotations": [
            {
                "was_cancelled": cancelled,
                "result": [
                    {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": choices}}
                ],
            }
            for choices in answers
        ],
        "predictions": [],
    }


def write_json(path, tasks) -> str:
    path.write_text(json.dumps(tasks))
    return str(path)


def test_a_label_studio_export_becomes_one_row_per_answered_image_with_its_hash(tmp_path, images, catalog):
    tasks = [
        task(1, str(images / "n1.png"), ["sandal"]),
        task(2, str(images / "n2.png"), ["bag"], ["bag"]),  # two annotators agreeing: one row
        task(3, str(images / "n3.png")),  # nobody answered: skipped
        task(4, str(images / "n4.png"), ["trouser"], cancelled=True),  # skipped
    ]
    path = write_json(tmp_path / "export.json", tasks)
    extra = read_extra_labels(path, CLASSES, catalog)
    assert extra.rows.to_dict("records") == [
        {IMAGE_ID: "n1.png", IMAGE_URI: str(images / "n1.png"), LABEL: "sandal"},
        {IMAGE_ID: "n2.png", IMAGE_URI: str(images / "n2.png"), LABEL: "bag"},
    ]
    entry = extra.card_entry()
    assert entry["count"] == 2 and entry["source"] == path
    assert entry["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert entry["per_class"] == {"bag": 1, "sandal": 1}


def test_the_review_csv_with_labels_filled_in_reads_like_the_json(tmp_path, images, catalog):
    path = tmp_path / "review.csv"
    path.write_text(
        "image_id,image_uri,predicted_label,confidence,margin,second_label,label\n"
        f"n1.png,{images / 'n1.png'},bag,0.5,0.05,sandal,sandal\n"
        f"n2.png,{images / 'n2.png'},bag,0.5,0.1,sandal,\n"  # not reviewed yet
    )
    extra = read_extra_labels(str(path), CLASSES, catalog)
    assert extra.rows[[IMAGE_ID, LABEL]].values.tolist() == [["n1.png", "sandal"]]


def test_every_bad_row_is_named_at_once(tmp_path, images, catalog):
    tasks = [
        task(1, str(images / "n1.png"), ["sneaker"]),  # unknown class
        task(2, str(images / "n2.png"), ["bag"]),
        task(3, str(images / "n2.png"), ["bag"]),  # the same image again, same answer
        task(4, str(images / "n3.png"), ["bag"], ["sandal"]),  # annotators disagree
        task(5, str(images / "gone.png"), ["bag"]),  # deleted since the export
        task(6, catalog[IMAGE_URI][2], ["bag"]),  # the catalog's own test image
        task(7, catalog[IMAGE_URI][0], ["bag"]),  # a training image of the catalog
    ]
    with pytest.raises(ValueError) as raised:
        read_extra_labels(write_json(tmp_path / "export.json", tasks), CLASSES, catalog)
    message = str(raised.value)
    assert "6 problem(s)" in message
    assert "task 1 (n1.png): unknown class 'sneaker'" in message
    assert "task 2, task 3 (n2.png): duplicate answers ['bag']" in message
    assert "task 4 (n3.png): conflicting answers ['bag', 'sandal']" in message
    assert "task 5 (gone.png): image" in message and "no longer exists" in message
    assert "task 6 (s.png): already in the training catalog's test split" in message
    assert "task 7 (t.png): already in the training catalog's train split" in message


@pytest.mark.parametrize(
    ("name", "content", "named"),
    [
        ("export.json", "{not json", "is not JSON"),
        ("export.json", '{"tasks": []}', "must be a JSON list of tasks"),
        ("export.json", '[{"id": 9, "data": {"image": "x"}}]', "task 9: no data.image_id/data.image_uri"),
        ("export.json", "[]", "holds no answered image"),
        (
            "export.json",
            json.dumps([task(3, "/x/n1.png", ["bag", "sandal"])]),
            "task 3: an annotation with 2 choices ['bag', 'sandal']; one class per image",
        ),
        ("review.csv", "image_id,label\nn1.png,bag\n", "has no ['image_uri'] column"),
        ("labels.txt", "bag", "must be a .json"),
    ],
)
def test_malformed_files_are_refused_naming_the_fix(tmp_path, catalog, name, content, named):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match="--extra-labels") as raised:
        read_extra_labels(str(path), CLASSES, catalog)
    assert named in str(raised.value)


def test_a_missing_file_is_refused(tmp_path, catalog):
    with pytest.raises(ValueError, match="does not exist"):
        read_extra_labels(str(tmp_path / "none.json"), CLASSES, catalog)
