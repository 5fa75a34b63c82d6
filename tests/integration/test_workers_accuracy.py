"""benchmarks.workers_accuracy runs end to end in its tiny mode: one row per training seed, each
with its card's global batch and scaled learning rate, the CPU share training was granted, and the
held-out catalog's scored figures with their intervals; a summary and a verdict per worker count.
Slow: four tiny Ray Train runs, each scored (4 workers, the slowest on 2 cores, are left to the
unit tests of `--rows` and to the benchmark itself)."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1500)]


def test_workers_accuracy_tiny_records_each_rows_global_batch_rate_and_figures(tmp_path):
    from benchmarks import workers_accuracy
    from benchmarks.common import shape_labels

    output = tmp_path / "workers.json"
    assert workers_accuracy.main(["--tiny", "--rows", "1:linear,2:none", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    rows = report["rows"]
    assert sorted((row["workers"], row["learning_rate_scaling"], row["seed"]) for row in rows) == [
        (1, "linear", 42),
        (1, "linear", 43),
        (2, "none", 42),
        (2, "none", 43),
    ]
    for row in rows:
        workers = row["workers"]
        assert row["global_batch_size"] == 32 * workers and row["split_seed"] == 42
        rate = 1e-3 if row["learning_rate_scaling"] == "none" else 1e-3 * workers
        assert row["effective_learning_rate"] == {"train": pytest.approx(rate)}
        assert row["cpus_per_worker"] == pytest.approx(1.0 / workers)
        assert 0 <= row["test_macro_f1"] <= 1 and row["test_images"] > 0 and row["epochs_run"] == 1
        heldout = row["heldout"]
        assert heldout["images"] == 12 * len(shape_labels())  # the generated held-out catalog, every image
        low, high = heldout["macro_f1_interval"]
        assert low <= heldout["macro_f1"] <= high and heldout["minority_f1_interval"] is not None
    summary = {(entry["workers"], entry["learning_rate_scaling"]): entry for entry in report["summary"]}
    assert set(summary) == {(1, "linear"), (2, "none")}
    assert len(summary[(2, "none")]["macro_f1"]["values"]) == 2 and summary[(2, "none")]["macro_f1"]["std"] is not None
    verdicts = {(item["workers"], item["learning_rate_scaling"]): item for item in report["verdicts"]}
    assert set(verdicts) == {(2, "none")}
    assert verdicts[(2, "none")]["macro_f1"]["verdict"] in ("same within noise", "differs")
    assert "Welch" in report["verdict_rule"]
