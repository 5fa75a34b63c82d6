"""The review export: only the queue's rows, margin order, Label Studio's task format, the CSV,
pre-signed URLs that really open the image, and bad input refused before anything is written."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime

import numpy as np
import pytest

from jobs import review as review_job
from pipeline import review
from pipeline.schema import prediction_schema, to_table
from pipeline.score.predictions import PREDICTIONS_DIR, write_prediction_file
from tests.s3_server import moto_s3

CLASSES = ["bag", "sandal", "trouser"]
# image_id → (probabilities, low_confidence, error)
ROWS = {
    "a.png": ([0.50, 0.45, 0.05], True, None),  # margin 0.05, confidence 0.50
    "b.png": ([0.40, 0.30, 0.30], True, None),  # margin 0.10, confidence 0.40 (lowest)
    "c.png": ([0.55, 0.05, 0.40], True, None),  # margin 0.15
    "d.png": ([0.98, 0.01, 0.01], False, None),  # confident: not in the queue
    "e.png": ([0.34, 0.33, 0.33], True, "decode: broken"),  # an error row: nothing to show a reviewer
}


def write_predictions(output: str, image_root: str, rows: dict | None = None) -> None:
    columns: dict[str, list] = {name: [] for name in prediction_schema(CLASSES).names}
    for image_id, (probabilities, low, error) in (rows or ROWS).items():
        best = int(np.argmax(probabilities))
        order = list(np.argsort(probabilities)[::-1][:2])
        row = {
            "image_id": image_id,
            "image_uri": f"{image_root}/{image_id}",
            "label": None,
            "predicted_label": CLASSES[best],
            "predicted_index": best,
            "confidence": probabilities[best],
            "top_k_labels": [CLASSES[i] for i in order],
            "top_k_scores": [probabilities[i] for i in order],
            "probabilities": probabilities,
            "low_confidence": low,
            "error": error,
            "model_name": "custom_cnn",
            "model_version": "abc123",
            "run_id": "r1",
            "scored_at": datetime(2026, 12, 1, tzinfo=UTC),
        }
        for name, value in row.items():
            columns[name].append(value)
    schema = prediction_schema(CLASSES)
    # Two files, so the export reads and merges every file of the run.
    table = to_table(columns, schema)
    directory = f"{output}/{PREDICTIONS_DIR}"
    write_prediction_file(directory, table.slice(0, 2), schema, "r1")
    write_prediction_file(directory, table.slice(2), schema, "r1")


@pytest.fixture
def scored(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for image_id in ROWS:
        (images / image_id).write_bytes(b"png")
    write_predictions(str(tmp_path / "scores"), str(images))
    return str(tmp_path / "scores"), str(images)


def test_the_queue_is_the_low_confidence_rows_without_errors_smallest_margin_first(scored):
    queue = review.read_queue(scored[0], "margin")
    assert list(queue.rows["image_id"]) == ["a.png", "b.png", "c.png"]
    assert queue.rows["margin"].round(4).tolist() == [0.05, 0.10, 0.15]
    assert list(queue.rows["second_label"]) == ["sandal", "sandal", "trouser"]
    by_confidence = review.read_queue(scored[0], "confidence")
    assert list(by_confidence.rows["image_id"]) == ["b.png", "a.png", "c.png"]


def test_export_writes_label_studio_tasks_its_config_and_the_csv_only_under_output(scored, tmp_path):
    output = str(tmp_path / "review")
    assert review_job.main(["export", "--predictions", scored[0], "--output", output]) == 0
    assert sorted(os.listdir(output)) == ["label_config.xml", "review.csv", "tasks.json"]
    tasks = json.load(open(os.path.join(output, "tasks.json")))
    assert [task["data"]["image_id"] for task in tasks] == ["a.png", "b.png", "c.png"]
    first = tasks[0]
    assert first["data"]["image"] == os.path.join(scored[1], "a.png")  # a local catalog: its path
    assert first["data"]["image_uri"] == os.path.join(scored[1], "a.png")
    (prediction,) = first["predictions"]
    assert prediction["model_version"] == "abc123" and prediction["score"] == 0.5
    assert prediction["result"] == [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["bag"]}}
    ]
    config = open(os.path.join(output, "label_config.xml")).read()
    assert '<Image name="image" value="$image"/>' in config
    assert all(f'<Choice value="{name}"/>' in config for name in CLASSES)
    rows = list(csv.DictReader(io.StringIO(open(os.path.join(output, "review.csv")).read())))
    assert [row["image_id"] for row in rows] == ["a.png", "b.png", "c.png"]
    assert rows[0]["label"] == "" and rows[0]["margin"] == "0.05" and rows[0]["predicted_label"] == "bag"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"--predictions": "nowhere"}, "nowhere"),
        ({"--expires": "0"}, "--expires 0"),
        ({"--expires": str(8 * 24 * 3600)}, "--expires 691200"),
    ],
)
def test_bad_input_exits_2_naming_it_and_writes_nothing(scored, tmp_path, capsys, change, named):
    output = tmp_path / "review"
    flags = {"--predictions": scored[0], "--output": str(output), **change}
    argv = ["export"] + [part for pair in flags.items() for part in pair]
    assert review_job.main(argv) == 2
    assert named in capsys.readouterr().err
    assert not output.exists()


def test_s3_images_get_presigned_urls_that_open_the_image_and_expire_as_asked(tmp_path):
    with moto_s3("review-bucket") as s3:
        s3.put("catalog/a.png", b"png-bytes-a")
        url = review.image_url("s3://review-bucket/catalog/a.png", 600)
        assert "X-Amz-Expires=600" in url and "X-Amz-Signature=" in url
        assert url.startswith(s3.endpoint)
        with urllib.request.urlopen(url) as response:  # no credentials: the signature is the key
            assert response.read() == b"png-bytes-a"
        # The whole export on S3: predictions read from and tasks written to the bucket.
        write_predictions("s3://review-bucket/scores", "s3://review-bucket/catalog")
        assert review.export_review("s3://review-bucket/scores", "s3://review-bucket/review", 900, "margin")
        tasks = json.loads(s3.get("review/tasks.json"))
        assert "X-Amz-Expires=900" in tasks[0]["data"]["image"]
        assert tasks[0]["data"]["image_uri"] == "s3://review-bucket/catalog/a.png"
        assert s3.keys("review/") == ["review/label_config.xml", "review/review.csv", "review/tasks.json"]


def test_the_readme_review_export_command_runs_as_written(tmp_path):
    """The README's export line, run from a folder holding the scoring output it names."""
    from tests import documented

    (export,) = [command for command in documented.readme_review_commands() if "jobs.review" in command]
    argv = shlex.split(export)
    assert argv[:3] == ["python", "-m", "jobs.review"]
    predictions = argv[argv.index("--predictions") + 1]
    images = tmp_path / "images"
    images.mkdir()
    write_predictions(str(tmp_path / predictions), str(images))
    done = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, env=_repo_env())
    assert done.returncode == 0, done.stderr[-2000:]
    output = tmp_path / argv[argv.index("--output") + 1]
    assert sorted(os.listdir(output)) == ["label_config.xml", "review.csv", "tasks.json"]
    assert "review queue: 3 images by margin" in done.stdout


def _repo_env() -> dict[str, str]:
    from tests.conftest import REPO

    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}


def test_a_run_without_low_confidence_rows_exports_an_empty_queue(tmp_path):
    confident = {image_id: (probabilities, False, error) for image_id, (probabilities, _, error) in ROWS.items()}
    write_predictions(str(tmp_path / "scores"), str(tmp_path / "images"), confident)
    output = tmp_path / "review"
    assert len(review.export_review(str(tmp_path / "scores"), str(output), 60, "margin").rows) == 0
    assert json.loads((output / "tasks.json").read_text()) == []
    assert (output / "review.csv").read_text().splitlines() == [",".join(review.CSV_COLUMNS)]


def test_the_readme_train_line_of_the_review_loop_parses_with_its_extra_labels_flag():
    from jobs import train
    from tests import documented

    (command,) = [command for command in documented.readme_review_commands() if "jobs.train" in command]
    args = train.build_parser().parse_args(shlex.split(command)[3:])
    assert args.extra_labels and args.extra_labels.startswith("outputs/demo/review/")
