"""Picking up earlier work: rows kept from an earlier run (--append) and finished product runs (--reuse-work)."""

from __future__ import annotations

import json
import os
from typing import Any

from benchmarks.accuracy.settings import REPO, display_path

# An earlier run's rows are comparable only if these match exactly (plus the split and held-out catalog).
COMPATIBLE_KEYS = ("image_size", "schedule", "weights_path", "catalog", "class_names")


def completed(artifact: str, scores_dir: str) -> bool:
    """True when `artifact` has a model card and `scores_dir` a scoring run that completed."""
    try:
        with open(os.path.join(scores_dir, "run.json")) as handle:
            status = json.load(handle)["status"]
        return os.path.exists(os.path.join(artifact, "model_card.json")) and status == "completed"
    except (OSError, ValueError, KeyError):
        return False


def merge_earlier(results: dict[str, Any], output: str, redo: set[str], reuse: bool) -> str | None:
    """Takes the rows of an earlier run in `output` that this run does not redo.

    With `reuse` (rows re-read from the earlier run's work directory, not retrained) the earlier
    command stays the one that reproduces the results.

    Returns:
        Why the earlier rows cannot be kept (they were made with different settings), or None.
    """
    path = os.path.join(output, "accuracy.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        earlier = json.load(handle)
    differing = [key for key in COMPATIBLE_KEYS if earlier.get(key) != results[key]]
    if earlier["split"]["hash"] != results["split"]["hash"]:
        differing.append("split")
    if display_path(os.path.join(REPO, earlier["heldout"]["path"])) != results["heldout"]["path"]:
        differing.append("heldout")
    if differing:
        return f"{path} was made with different {differing}; use another --output or drop --append"
    results["rows"] = [row for row in earlier["rows"] if row["row"] not in redo]
    results["failures"] = [f for f in earlier.get("failures", []) if f["row"] not in redo]
    results["earlier_wall_seconds"] = earlier.get("earlier_wall_seconds", 0.0) + earlier.get("wall_seconds", 0.0)
    if reuse:
        results["rerendered_with"] = earlier.get("rerendered_with", []) + [results["command"]]
        results["earlier_commands"] = earlier.get("earlier_commands", [])
        results["command"] = earlier["command"]
    else:
        results["earlier_commands"] = earlier.get("earlier_commands", []) + [earlier["command"]]
    results["started_at"] = earlier["started_at"]
    return None
