"""A run's evaluation is the sum of its files' footer tallies: equal to scikit-learn on all rows."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support

from pipeline.schema import prediction_schema
from pipeline.score.predictions import prediction_file_name, read_tally, write_batch
from pipeline.score.rows import RowContext, prediction_table
from pipeline.score.tally import FOOTER_KEY, MISTAKES_KEPT, REVIEW_SAMPLE_KEPT, Tally, tally_table

CLASSES = ("boots", "dress", "shirt", "socks")


def scored_rows(seed: int, count: int = 997):
    """Prediction tables of a random labelled catalog: some errors, some unknown labels, some
    rows without a label, probabilities peaked enough that calibration bins fill unevenly."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(count, len(CLASSES))) * rng.uniform(0.5, 4.0, size=(count, 1))
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    truth = rng.integers(0, len(CLASSES), count)
    labels = np.array([CLASSES[i] for i in truth], dtype=object)
    labels[rng.random(count) < 0.05] = "hat"  # a class the model does not know
    labels[rng.random(count) < 0.05] = None
    errors = np.where(rng.random(count) < 0.03, "decode_failed: truncated", "").astype(object)
    batch = {
        "image_id": np.array([f"id-{seed}-{i}" for i in range(count)], dtype=object),
        "image_uri": np.array([f"/c/{seed}/{i}.jpg" for i in range(count)], dtype=object),
        "label": labels,
        "error": errors,
    }
    context = RowContext(CLASSES, 3, 0.55, "custom_cnn", "v1", "run")
    return prediction_table(batch, probabilities, errors == "", context, datetime.now(UTC))


def assert_same_metrics(actual, expected):
    """Equal up to the order floating-point sums were taken in."""
    assert actual["confusion_matrix"] == expected["confusion_matrix"]
    for key in ("accuracy", "loss", "expected_calibration_error"):
        assert actual[key] == pytest.approx(expected[key], abs=1e-12)
    assert actual["weighted"] == pytest.approx(expected["weighted"], abs=1e-12)
    macro, expected_macro = dict(actual["macro"]), dict(expected["macro"])
    # The bootstrap intervals depend on the confusion matrix and the seed only: equal, not close.
    assert macro.pop("f1_interval") == expected_macro.pop("f1_interval")
    assert macro == pytest.approx(expected_macro, abs=1e-12)
    assert actual["accuracy_interval"] == expected["accuracy_interval"]
    assert actual["per_class"] == expected["per_class"]


def reference(table):
    """Figures computed the slow way, from every row at once."""
    frame = table.to_pandas()
    rows = frame[frame["error"].isna() & frame["label"].isin(CLASSES)]
    truth = np.array([CLASSES.index(label) for label in rows["label"]])
    probabilities = np.stack(rows["probabilities"].to_numpy())
    return rows, truth, probabilities


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summed_file_tallies_equal_scikit_learn_on_all_rows(seed):
    import pyarrow as pa

    table = scored_rows(seed)
    bounds = [0, 1, 150, 151, 600, table.num_rows]  # uneven files, one of a single row
    total = Tally(len(CLASSES))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        total.add(Tally.from_json(tally_table(table.slice(start, stop - start), list(CLASSES)).to_json()))
    metrics = total.metrics(list(CLASSES))
    rows, truth, probabilities = reference(table)
    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(CLASSES)))
    assert metrics["confusion_matrix"] == confusion_matrix(truth, predicted, labels=labels).tolist()
    assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-12)
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    for i, row in enumerate(metrics["per_class"]):
        assert row["precision"] == pytest.approx(precision[i], abs=1e-12)
        assert row["recall"] == pytest.approx(recall[i], abs=1e-12)
        assert row["f1"] == pytest.approx(f1[i], abs=1e-12)
        assert row["support"] == support[i]
    for average in ("macro", "weighted"):
        expected = precision_recall_fscore_support(truth, predicted, labels=labels, average=average, zero_division=0)
        assert [metrics[average][k] for k in ("precision", "recall", "f1")] == pytest.approx(expected[:3], abs=1e-12)
    clipped = np.clip(probabilities.astype(np.float64), 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    assert metrics["loss"] == pytest.approx(log_loss(truth, clipped, labels=labels), abs=1e-9)
    confidence, correct = probabilities.max(axis=1).astype(np.float64), predicted == truth
    ece = 0.0
    for low, high in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    assert metrics["expected_calibration_error"] == pytest.approx(ece, abs=1e-9)
    frame = table.to_pandas()
    assert total.rows == table.num_rows and total.error_rows == int(frame["error"].notna().sum())
    assert total.evaluated_rows == len(rows)
    unknown = frame[frame["error"].isna() & (frame["label"] == "hat")]
    assert total.unknown_labels == {"hat": len(unknown)}
    low = rows["low_confidence"].to_numpy(dtype=bool)
    assert total.review_rows == int(low.sum())
    assert total.kept_correct == int((correct & ~low).sum())
    mistakes = rows[~correct].sort_values("confidence", ascending=False, kind="stable").head(MISTAKES_KEPT)
    assert [m["image_uri"] for m in total.mistakes] == mistakes["image_uri"].tolist()
    review = frame[frame["error"].isna() & frame["low_confidence"]]
    sample = review.sort_values("confidence", kind="stable").head(REVIEW_SAMPLE_KEPT)
    assert len(sample) == REVIEW_SAMPLE_KEPT  # the bound is reached, so it is what is checked
    assert [r["image_uri"] for r in total.review_sample] == sample["image_uri"].tolist()
    assert [r["confidence"] for r in total.review_sample] == sample["confidence"].astype(float).tolist()
    assert [r["label"] for r in total.review_sample] == sample["label"].tolist()  # None for unlabelled rows
    assert [r["predicted_label"] for r in total.review_sample] == sample["predicted_label"].tolist()
    assert total.model_versions == {"v1"}
    assert pa  # the tables above are Arrow throughout


def test_each_written_file_commits_its_tally_in_its_footer_and_the_reader_sums_footers_only(tmp_path):
    table = scored_rows(7, count=300)
    schema = prediction_schema(list(CLASSES))
    directory = str(tmp_path / "predictions")
    reports = [write_batch(table.slice(start, 120), directory, schema, "r") for start in range(0, 300, 120)]
    files = sorted((tmp_path / "predictions").glob("*.parquet"))
    assert len(files) == 3 and [r.column("rows")[0].as_py() for r in reports] == [120, 120, 60]
    for path, report in zip(files, sorted(reports, key=lambda r: r.column("name")[0].as_py())):
        footer = pq.read_metadata(path).metadata
        assert path.name == report.column("name")[0].as_py()
        assert footer[FOOTER_KEY] == report.column("tally")[0].as_py()  # the driver sums what is committed
        assert Tally.from_json(footer[FOOTER_KEY]).rows == pq.read_metadata(path).num_rows
    summed = read_tally(str(tmp_path), list(CLASSES))
    whole = tally_table(table, list(CLASSES))
    assert_same_metrics(summed.metrics(list(CLASSES)), whole.metrics(list(CLASSES)))
    assert (summed.rows, summed.error_rows, summed.review_rows) == (whole.rows, whole.error_rows, whole.review_rows)
    skipped = read_tally(str(tmp_path), list(CLASSES), skip=frozenset({files[0].name}))
    assert skipped.rows == 300 - pq.read_metadata(files[0]).num_rows


def test_a_retried_write_replaces_its_file_and_another_block_gets_another_name(tmp_path):
    """The name comes from the rows: a task Ray retries after its PUT rewrites the same file."""
    table = scored_rows(5, count=50)
    schema = prediction_schema(list(CLASSES))
    directory = str(tmp_path / "predictions")
    first = write_batch(table, directory, schema, "r").column("name")[0].as_py()
    again = write_batch(table, directory, schema, "r").column("name")[0].as_py()
    other = write_batch(table.slice(1), directory, schema, "r").column("name")[0].as_py()
    assert first == again != other and first.startswith("part-r-")
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == sorted({first, other})
    ids = table.column("image_id").to_pylist()
    assert prediction_file_name("r", pa.array(["ab", "c"])) != prediction_file_name("r", pa.array(["a", "bc"]))
    assert prediction_file_name("r", pa.array(ids)) == first


def test_an_empty_block_writes_no_file(tmp_path):
    schema = prediction_schema(list(CLASSES))
    report = write_batch(scored_rows(1, count=10).slice(0, 0), str(tmp_path / "p"), schema, "r")
    assert report.num_rows == 0 and not (tmp_path / "p").exists()


def test_a_file_without_a_tally_is_tallied_from_its_rows(tmp_path):
    table = scored_rows(3, count=80)
    (tmp_path / "predictions").mkdir()
    pq.write_table(table.replace_schema_metadata(prediction_schema(list(CLASSES)).metadata),
                   tmp_path / "predictions" / "part-old-00000.parquet")  # fmt: skip
    summed = read_tally(str(tmp_path), list(CLASSES))
    assert summed.rows == 80
    assert_same_metrics(summed.metrics(list(CLASSES)), tally_table(table, list(CLASSES)).metrics(list(CLASSES)))


def test_a_footer_written_before_the_review_sample_reads_as_an_empty_sample():
    import json

    values = json.loads(tally_table(scored_rows(4, count=50), list(CLASSES)).to_json())
    assert values["review_sample"]  # the new footer carries it
    del values["review_sample"]
    old = Tally.from_json(json.dumps(values).encode())
    assert old.review_sample == []
    assert old.add(tally_table(scored_rows(5, count=50), list(CLASSES))).review_sample


@pytest.mark.parametrize(
    ("total", "actors", "expected"),
    [
        (18, 2, 256),  # a small catalog: the floor (build_dataset still cuts at least one block per actor)
        (10_000, 2, 625),  # grown so that each actor keeps 8 blocks
        (250_000, 2, 4096),  # capped: a block is one file of at most rows_per_file rows
        (1_000_000, 16, 4096),
        (40_000, 16, 313),
    ],
)
def test_scoring_blocks_grow_with_the_catalog_keeping_eight_per_actor_up_to_a_file(total, actors, expected):
    from pipeline.score.driver import block_rows

    assert block_rows(total, actors, rows_per_block=256, rows_per_file=4096) == expected
    assert block_rows(total, actors, rows_per_block=256, rows_per_file=100) == min(expected, 100)
