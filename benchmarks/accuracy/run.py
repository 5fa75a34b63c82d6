"""One whole benchmark run: load the data once, produce every row (a failed row never loses the others), write."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from datetime import UTC, datetime
from typing import Any

import ray

from benchmarks.accuracy.data import Data, load_data, resolve_heldout
from benchmarks.accuracy.report import write_outputs
from benchmarks.accuracy.resume import merge_earlier
from benchmarks.accuracy.runners import configure_process, run_row
from benchmarks.accuracy.settings import (
    REPO,
    RowPlan,
    Settings,
    SettingsError,
    describe_weights,
    display_path,
)
from benchmarks.common import machine

logger = logging.getLogger(__name__)

# The product's split fractions (data.val_fraction, data.test_fraction defaults).
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15


def run_benchmark(settings: Settings) -> dict[str, Any]:
    """Runs every planned row and writes the outputs after each one.

    Returns:
        The results record, as written to accuracy.json.

    Raises:
        SettingsError: --append found earlier results made with different settings.
    """
    started = time.perf_counter()
    os.makedirs(settings.work_dir, exist_ok=True)
    configure_process()
    heldout, heldout_note = resolve_heldout(settings.heldout, settings.tiny, settings.cache_dir)
    data = load_data(settings.catalog, heldout, settings.image_size, settings.seed, VAL_FRACTION, TEST_FRACTION)
    logger.info(
        "split %s, classes %s, minority %s, held-out %d images",
        data.split_hash,
        data.class_names,
        data.minority,
        len(data.heldout.labels),
    )
    results = start_results(settings, data, heldout, heldout_note)
    plan = settings.rows()
    if settings.append:
        problem = merge_earlier(results, settings.output, {row.row_id for row in plan}, settings.reuse_work)
        if problem:
            raise SettingsError(f"--append: {problem}")
    started_ray = False
    try:
        for row in plan:
            if row.variant.is_product and not ray.is_initialized():
                # Dashboard on, as jobs/runtime.py: Ray Train's cleaner queries its state API.
                ray.init(num_cpus=2, log_to_driver=settings.verbose)
                started_ray = True
            _run_and_record(row, settings, heldout, data, results, started)
    finally:
        if started_ray:
            ray.shutdown()
    results["finished_at"] = datetime.now(UTC).isoformat()
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(results, settings.output)
    if not settings.keep_work:
        shutil.rmtree(settings.work_dir, ignore_errors=True)
    return results


def start_results(settings: Settings, data: Data, heldout: str, heldout_note: str) -> dict[str, Any]:
    """The results record before any row: what was run, on what, and how."""
    schedule = settings.schedule
    results: dict[str, Any] = {
        "benchmark": "accuracy",
        "started_at": datetime.now(UTC).isoformat(),
        "finished_at": None,
        "command": settings.command,
        "machine": machine(),
        "image_size": settings.image_size,
        "schedule": dataclasses.asdict(schedule),
        "schedule_text": schedule.describe(),
        "weights": describe_weights(settings.weights),
        "weights_path": settings.weights,
        "catalog": os.path.relpath(os.path.abspath(settings.catalog), REPO),
        "catalog_counts": data.catalog_counts(),
        "split": {"hash": data.split_hash, "seed": settings.seed, "counts": data.split_counts},
        "baseline_seed": settings.baseline_seed,
        "heldout": {"path": display_path(heldout), "note": heldout_note, "rows": int(len(data.heldout.labels))},
        "class_names": data.class_names,
        "minority": data.minority,
        "variants": list(settings.variants),
        "imbalance": {
            "product_custom_cnn": list(settings.cnn_imbalance),
            "product_mobilenet_v2": list(settings.mobilenet_imbalance),
        },
        "rows": [],
        "failures": [],
        "wall_seconds": 0.0,
    }
    if settings.notes:
        with open(settings.notes) as handle:
            results["notes"] = handle.read()
    return results


def _run_and_record(
    row: RowPlan, settings: Settings, heldout: str, data: Data, results: dict[str, Any], started: float
) -> None:
    """Runs one row and records it, or records its failure; the outputs are rewritten on success."""
    logger.info("=== %s", row.row_id)
    row_started = time.perf_counter()
    try:
        record = run_row(row, settings, heldout, data)
    except Exception as error:  # one failed variant must not lose the others' numbers
        logger.exception("%s failed", row.row_id)
        results["failures"].append({"row": row.row_id, "error": f"{type(error).__name__}: {error}"})
        return
    record["wall_seconds"] = round(time.perf_counter() - row_started, 1)
    if record.get("reused_work"):  # re-read, not rerun: report what the run took
        record["wall_seconds"] = round(record["train_seconds"] + record["score_seconds"], 1)
    results["rows"].append(record)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    results["failures"] = [f for f in results["failures"] if f["row"] != row.row_id]
    held = record["heldout"]
    logger.info(
        "%s: held-out accuracy %.4f macro-F1 %.4f %s F1 %.4f ECE %.4f→%.4f (%.0f s)",
        row.row_id,
        held["accuracy"],
        held["macro_f1"],
        data.minority,
        held["minority_f1"],
        held["ece_uncalibrated"],
        held["ece_calibrated"],
        record["wall_seconds"],
    )
    write_outputs(results, settings.output)
