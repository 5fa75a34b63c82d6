"""benchmarks.workers_accuracy runs end to end in its tiny mode: each row's card shows the global
batch and the learning rate the scaling gave it. Slow: three tiny Ray Train runs."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]


def test_workers_accuracy_tiny_records_each_rows_global_batch_rate_and_figures(tmp_path):
    from benchmarks import workers_accuracy

    output = tmp_path / "workers.json"
    assert workers_accuracy.main(["--tiny", "--output", str(output)]) == 0
    rows = {(row["workers"], row["learning_rate_scaling"]): row for row in json.loads(output.read_text())["rows"]}
    assert set(rows) == {(1, "linear"), (2, "none"), (2, "linear")}
    assert rows[(1, "linear")]["global_batch_size"] == 32 and rows[(2, "linear")]["global_batch_size"] == 64
    assert rows[(1, "linear")]["effective_learning_rate"] == pytest.approx(1e-3)
    assert rows[(2, "none")]["effective_learning_rate"] == pytest.approx(1e-3)
    assert rows[(2, "linear")]["effective_learning_rate"] == pytest.approx(2e-3)
    for row in rows.values():
        assert 0 <= row["test_macro_f1"] <= 1 and row["test_images"] > 0 and row["epochs_run"] == 1
