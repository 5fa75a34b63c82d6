"""The held-out accuracy benchmark end to end in its CI mode (`--tiny`): a product custom_cnn trained on
Ray Train and scored through Ray Data, and the fixed baseline CNN, on the shipped catalogs. Checks the
shape of what it writes, never accuracy (one 32 px epoch says nothing about the models)."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.accuracy.__main__ import main
from benchmarks.accuracy.settings import TINY_REPEATS, TINY_VARIANTS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

METRICS = ("accuracy", "macro_f1", "weighted_f1", "minority_f1", "ece_uncalibrated", "ece_calibrated")


def test_tiny_run_writes_json_markdown_and_reliability_png_with_one_row_per_variant_and_repeat(tmp_path):
    import ray

    ray.shutdown()  # main starts (and stops) its own 2-CPU Ray
    output = tmp_path / "accuracy"
    assert main(["--tiny", "--output", str(output)]) == 0

    results = json.loads((output / "accuracy.json").read_text())
    assert results["failures"] == []
    assert sorted(row["variant"] for row in results["rows"]) == sorted(TINY_VARIANTS * TINY_REPEATS)
    assert sorted(row["repeat"] for row in results["rows"]) == sorted(list(range(1, TINY_REPEATS + 1)) * 2)
    assert [entry["repeats"] for entry in results["repeat_summary"]] == [TINY_REPEATS] * len(TINY_VARIANTS)
    assert results["image_size"] == 32 and results["minority"] == "sandal"
    assert results["heldout"]["rows"] == 500  # the shipped data/heldout_catalog
    for row in results["rows"]:
        held = row["heldout"]
        assert held["rows"] == 500
        for key in METRICS:
            assert 0.0 <= held[key] <= 1.0, (row["row"], key, held[key])
        for key in ("accuracy", "macro_f1", "minority_f1"):
            low, high = held[f"{key}_interval"]
            assert low <= held[key] <= high, (row["row"], key)
        assert set(held["per_class_f1"]) == set(results["class_names"])
        assert all(0.0 <= value <= 1.0 for value in held["per_class_f1"].values())
        assert held["log_loss"] > 0 and row["epochs_run"] == 1
        assert sum(b["count"] for b in row["reliability"]["calibrated"]) == 500
    product = next(row for row in results["rows"] if row["family"] == "product")
    assert os.path.exists(os.path.join(product["scores"], "evaluation", "summary.json")) is False  # work dir cleaned
    assert {t["status"] for t in results["targets"]} <= {"met", "missed", "not measured"}

    markdown = (output / "results.md").read_text()
    for row in results["rows"]:
        assert markdown.count(f"| `{row['row']}` |") == 2  # headline table + per-class table
    assert "python -m benchmarks.accuracy --tiny" in markdown
    for entry in results["repeat_summary"]:
        assert f"| `{entry['row']}` | {TINY_REPEATS} |" in markdown  # mean ± std over the repeats

    png = (output / "reliability.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
