"""Incremental scoring for schedules: score only what is new or changed, publish a current view.

Layout under the root: `runs/<run_id>/` is an ordinary scoring output holding only the rows that
run scored; `current/state.parquet` lists, for every live catalog image, its fingerprint and the
run whose row is current; `current/current.json` is written last and says the view is complete.
Unchanged rows are never rewritten: the view is those runs' files joined with the state:

    SELECT p.* FROM read_parquet('ROOT/runs/*/predictions/*.parquet') p
    JOIN read_parquet('ROOT/current/state.parquet') s USING (image_id, run_id)

"Changed" means a different size or change marker (S3 ETag, local mtime): cheap to list for
millions of objects, and an ETag changes whenever content does. Deleted images leave the state,
so they disappear from the view. A different model version rescores everything.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.catalog import MANIFEST_EXTENSIONS, read_catalog_frame
from pipeline.config import JobConfig
from pipeline.schema import IMAGE_ID, IMAGE_URI
from pipeline.score.driver import ScoringPlan, prepare_scoring, score
from pipeline.score.predictions import read_predictions
from pipeline.score.source import FINGERPRINT

logger = logging.getLogger(__name__)

STATE_FILE = "current/state.parquet"
VIEW_FILE = "current/current.json"


def read_state(root_uri: str) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The current view's state and manifest (empty when no run has completed)."""
    view_uri = storage.join(root_uri, VIEW_FILE)
    if not storage.exists(view_uri):
        return pd.DataFrame(columns=[IMAGE_ID, FINGERPRINT, "run_id"]), None
    fs, path = storage.filesystem(storage.join(root_uri, STATE_FILE))
    return pq.read_table(path, filesystem=fs).to_pandas(), storage.read_json(view_uri)


def read_current_view(root_uri: str) -> pd.DataFrame:
    """All current predictions: each live image's row from the run that last scored it."""
    state, view = read_state(root_uri)
    if view is None:
        raise ValueError(f"{root_uri!r} has no completed incremental run")
    frames = [read_predictions(storage.join(root_uri, "runs", run_id)) for run_id in view["runs"]]
    rows = pd.concat(frames, ignore_index=True)
    return rows.merge(state[[IMAGE_ID, "run_id"]], on=[IMAGE_ID, "run_id"], how="inner")


@dataclass(frozen=True)
class IncrementalPlan:
    root_uri: str
    run_id: str
    plan: ScoringPlan  # its frame holds only the new and changed rows
    kept: pd.DataFrame  # state rows of unchanged images
    todo: pd.DataFrame  # new and changed rows, with fingerprints
    deleted: int
    previous_view: dict[str, Any] | None


def prepare_incremental(catalog_uri: str, artifact_uri: str, root_uri: str, config: JobConfig) -> IncrementalPlan:
    """Works out what to score, before any Ray work.

    Raises:
        ValueError: As `prepare_scoring`.
    """
    root_uri = storage.normalize(root_uri)
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    run_uri = storage.join(root_uri, "runs", run_id)
    plan = prepare_scoring(catalog_uri, artifact_uri, run_uri, config)
    frame = read_catalog_frame(plan.catalog_uri)  # on the driver: not yet scaled (see README "Scale")
    is_folder = not catalog_uri.lower().endswith(MANIFEST_EXTENSIONS)
    marks = storage.fingerprints(list(frame[IMAGE_URI]), root=plan.catalog_uri if is_folder else None)
    frame = frame.assign(**{FINGERPRINT: [marks[uri] for uri in frame[IMAGE_URI]]})
    state, view = read_state(root_uri)
    if view is not None and view["model_version"] != plan.card.version:
        logger.info("model version changed (%s → %s): rescoring everything", view["model_version"], plan.card.version)
        state = state.iloc[0:0]
    known = dict(zip(state[IMAGE_ID], state[FINGERPRINT]))
    todo = frame[
        [
            known.get(image_id, "∅") != mark or mark is None
            for image_id, mark in zip(frame[IMAGE_ID], frame[FINGERPRINT])
        ]
    ]
    deleted = sorted(set(state[IMAGE_ID]) - set(frame[IMAGE_ID]))
    logger.info(
        "incremental: %d catalog rows, %d new or changed, %d unchanged, %d deleted",
        len(frame),
        len(todo),
        len(frame) - len(todo),
        len(deleted),
    )
    kept = state[state[IMAGE_ID].isin(set(frame[IMAGE_ID]) - set(todo[IMAGE_ID]))]
    rows = pa.Table.from_pandas(todo.drop(columns=[FINGERPRINT]), preserve_index=False)
    subset = dataclasses.replace(plan, rows=rows)
    return IncrementalPlan(root_uri, run_id, subset, kept, todo, len(deleted), view)


def score_incremental(incremental: IncrementalPlan) -> dict[str, Any]:
    """Scores new and changed images into a new run and publishes the view (its manifest last).

    Returns:
        The new view manifest (also `current/current.json`), with what was scored and kept.

    Raises:
        RuntimeError: The run did not complete; the previous view stays published.
    """
    root_uri, run_id, plan, kept, todo = (
        incremental.root_uri,
        incremental.run_id,
        incremental.plan,
        incremental.kept,
        incremental.todo,
    )
    view = incremental.previous_view
    manifest = None
    if len(todo):
        manifest = score(plan, run_id=run_id)
        if manifest.status != "completed":
            raise RuntimeError(
                f"run {run_id} did not complete ({list(manifest.problems)}); the current view is unchanged"
            )
    scored = pd.DataFrame({IMAGE_ID: todo[IMAGE_ID], FINGERPRINT: todo[FINGERPRINT], "run_id": run_id})
    new_state = pd.concat([kept, scored], ignore_index=True) if len(todo) else kept.reset_index(drop=True)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(new_state.astype({FINGERPRINT: "string"}), preserve_index=False), buffer)
    storage.write_bytes(storage.join(root_uri, STATE_FILE), buffer.getvalue())
    runs = sorted(set(new_state["run_id"]))
    view = {
        "model_version": plan.card.version,
        "model_name": plan.card.name,
        "catalog": plan.catalog_uri,
        "latest_run": run_id if len(todo) else (view or {}).get("latest_run"),
        "runs": runs,
        "rows": int(len(new_state)),
        "scored_this_run": int(len(todo)),
        "unchanged": int(len(kept)),
        "deleted": incremental.deleted,
        "errors_this_run": manifest.counts.errors if manifest and manifest.counts else 0,
        "published_at": datetime.now(UTC).isoformat(),
    }
    storage.write_json(storage.join(root_uri, VIEW_FILE), view)
    return view
