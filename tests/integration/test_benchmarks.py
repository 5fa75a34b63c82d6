"""The benchmarks run end to end in their tiny modes and write the JSON they promise.

No timing assertions: how fast things are is what the benchmarks report, not what tests decide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.common import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_score_throughput_tiny_writes_every_figure(tmp_path):
    from benchmarks import score_throughput

    output = tmp_path / "score.json"
    assert score_throughput.main(["--tiny", "--scale-images", "80", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert {"machine", "images", "settings", "models", "summary"} <= set(results)
    assert results["images"]["count"] == 40
    model = results["models"]["custom_cnn"]
    assert {"model_only", "handwritten", "product", "whole_process", "ratios"} <= set(model)
    assert "keras" in model["model_only"]
    for engine in model["model_only"].values():
        assert positive(engine["images_per_second"])
    for phase in ("handwritten", "product"):
        assert positive(model[phase]["images_per_second"])
        assert positive(model[phase]["peak_rss_mb"])
    assert model["product"]["images"] == 40
    for side in ("handwritten", "product"):
        assert positive(model["whole_process"][side]["images_per_second"])
        assert positive(model["whole_process"][side]["peak_rss_mb"])
    for key in ("product_over_handwritten", "product_over_model_only", "whole_process_product_over_handwritten"):
        assert positive(model["ratios"][key])
    scale = model["scale"]
    assert scale["images"] == 80 and scale["reference_images"] == 40
    for key in ("images_per_second", "peak_rss_mb", "throughput_over_reference", "peak_rss_over_reference"):
        assert positive(scale[key])


def test_train_overhead_tiny_writes_every_figure(tmp_path):
    from benchmarks import train_overhead

    output = tmp_path / "train.json"
    assert train_overhead.main(["--tiny", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert {"machine", "catalog", "settings", "plain", "product", "ratios", "summary"} <= set(results)
    assert positive(results["plain"]["median_epoch_seconds"])
    assert set(results["product"]) == {"1", "2"}
    for run in results["product"].values():
        assert positive(run["median_epoch_seconds"])
        assert positive(run["train_images_per_second"])
        assert len(run["epoch_seconds"]) == results["settings"]["epochs"]
    assert positive(results["ratios"]["product_1w_over_plain_epoch_time"])
    assert positive(results["ratios"]["speedup_2w_over_1w"])


def test_scale_tiny_writes_every_figure_and_loses_no_row(tmp_path):
    from benchmarks import scale
    from pipeline.score.tally import MISTAKES_KEPT, REVIEW_SAMPLE_KEPT

    output = tmp_path / "scale.json"
    assert scale.main(["--tiny", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert {"machine", "settings", "runs", "slopes", "s3", "targets", "summary"} <= set(results)
    assert [run["rows_in"] for run in results["runs"]] == [2000, 8000]
    for run in [*results["runs"], results["s3"]]:
        assert run["exit_code"] == 0
        assert run["rows_out"] == run["unique_ids_out"] == run["rows_in"]
        for key in ("wall_seconds", "driver_cpu_seconds", "driver_peak_rss_mb", "driver_serialized_mb"):
            assert positive(run[key])
    assert set(results["slopes"]) == {
        "driver_peak_rss_mb_per_million_rows",
        "driver_cpu_seconds_per_million_rows",
        "driver_serialized_mb_per_million_rows",
        "wall_seconds_per_million_rows",
    }
    assert all(isinstance(value, float) for value in results["slopes"].values())
    s3 = results["s3"]
    # One GET per image while scoring; the evaluation report then fetches its thumbnails (the
    # most confident mistakes and a review sample, each bounded).
    thumbnails = s3["requests"]["GET"] - s3["keys"]
    assert s3["keys"] == 200 and positive(s3["lists"]) and 0 <= thumbnails <= MISTAKES_KEPT + REVIEW_SAMPLE_KEPT
    assert s3["heads"] == 0  # one GET per image, and the catalog root checked by its listing
    assert "| 8,000 |" in (tmp_path / "scale.md").read_text()


def test_the_driver_probe_counts_what_the_driver_puts_and_sends_as_arguments(tmp_path):
    """The scale benchmark's object-store figure: a 1 MB `ray.put` and a 0.5 MB task argument
    both reach the probe's total, and the module still runs as `__main__` with its arguments."""
    (tmp_path / "putter.py").write_text(
        "import sys\nimport numpy as np\nimport ray\n"
        "def size(array):\n    return len(array)\n"
        "if __name__ == '__main__':\n"
        "    ray.init(num_cpus=1, include_dashboard=False)\n"
        "    ray.put(np.zeros(int(sys.argv[1]), dtype=np.uint8))\n"
        "    ray.get(ray.remote(size).remote(np.zeros(500_000, dtype=np.uint8)))\n"
    )
    probe = tmp_path / "probe.json"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "DRIVER_PROBE_OUT": str(probe)}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "benchmarks.driver_probe", "putter", "1000000"]
    subprocess.run(command, env=env, check=True, timeout=300, capture_output=True)
    totals = json.loads(probe.read_text())
    assert 1_500_000 <= totals["serialized_bytes"] < 1_600_000
    assert totals["serialized_values"] >= 2
