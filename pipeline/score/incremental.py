"""Incremental scoring for schedules: score only what is new or changed, publish a current view.

Layout under the root:
- `runs/<run_id>/` is an ordinary scoring output holding only the rows that run scored;
- `state/<run_id>/*.parquet` lists, for every live catalog image, its fingerprint and the run
  whose row is current; workers write it;
- `current/current.json`, the pointer, is written last: it names the state to read, so a view
  switches atomically and a crash part-way leaves the previous view published;
- `current/pending.json` names a run in progress, so a rerun after a crash resumes that run
  instead of starting another (a run that ended "failed" is not resumed: a new one starts).

Unchanged rows are never rewritten: the view is those runs' files joined with the state
(`STATE` is the pointer's `state` entry):

    SELECT p.* FROM read_parquet('ROOT/runs/*/predictions/*.parquet') p
    JOIN read_parquet('ROOT/STATE/*.parquet') s USING (image_id, run_id)

"Changed" means a different size or change marker (S3 ETag, local mtime): taken from the same
LIST pages that list the catalog, and an ETag changes whenever content does. The diff against
the previous state is a join on workers; the driver holds neither. Deleted images leave the
state, so they disappear from the view. A different model version rescores everything.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from pipeline import storage
from pipeline.config import JobConfig
from pipeline.records import ViewPointer
from pipeline.schema import IMAGE_ID
from pipeline.score.driver import ScoringPlan, prepare_scoring, score
from pipeline.score.predictions import read_predictions, read_run
from pipeline.score.source import FINGERPRINT, catalog_dataset, join_partitions, with_fingerprints

logger = logging.getLogger(__name__)

VIEW_FILE = "current/current.json"
PENDING_FILE = "current/pending.json"
STATE_DIR = "state"
PREVIOUS = "previous_fingerprint"
RUN_ID = "run_id"


@dataclass(frozen=True)
class IncrementalPlan:
    root_uri: str
    run_id: str
    plan: ScoringPlan  # scoring into runs/<run_id>; the new and changed rows are found on workers
    previous_view: ViewPointer | None


def read_view(root_uri: str) -> ViewPointer | None:
    """The published view's pointer; None when no run has completed."""
    uri = storage.join(root_uri, VIEW_FILE)
    return ViewPointer.from_dict(storage.read_json(uri)) if storage.exists(uri) else None


def write_view(root_uri: str, view: ViewPointer) -> None:
    storage.write_json(storage.join(root_uri, VIEW_FILE), view.to_dict())


def state_uri(root_uri: str, view: ViewPointer) -> str:
    return storage.join(root_uri, view.state)


def read_current_view(root_uri: str) -> pd.DataFrame:
    """All current predictions as one frame (a convenience for small catalogs and tests; large
    ones read the files with the query in the module docstring)."""
    view = read_view(root_uri)
    if view is None:
        raise ValueError(f"{root_uri!r} has no completed incremental run")
    path, filesystem = _arrow_paths(state_uri(root_uri, view))
    state = pq.read_table(path, filesystem=filesystem).to_pandas()
    frames = [read_predictions(storage.join(root_uri, "runs", run_id)) for run_id in view.runs]
    rows = pd.concat(frames, ignore_index=True)
    return rows.merge(state[[IMAGE_ID, RUN_ID]], on=[IMAGE_ID, RUN_ID], how="inner")


def prepare_incremental(catalog_uri: str, artifact_uri: str, root_uri: str, config: JobConfig) -> IncrementalPlan:
    """Checks model, catalog and root before any Ray work; resumes a run a crash left unfinished.

    Raises:
        ValueError: As `prepare_scoring`.
    """
    root_uri = storage.normalize(root_uri)
    view = read_view(root_uri)
    run_id = _unfinished_run(root_uri, view) or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    plan = prepare_scoring(catalog_uri, artifact_uri, storage.join(root_uri, "runs", run_id), config)
    if view is not None and view.latest_run and view.latest_run != run_id:  # drift's "previous run"
        plan = dataclasses.replace(plan, previous_run_uri=storage.join(root_uri, "runs", view.latest_run))
    return IncrementalPlan(root_uri, run_id, plan, view)


def _unfinished_run(root_uri: str, view: ViewPointer | None) -> str | None:
    pending_uri = storage.join(root_uri, PENDING_FILE)
    if not storage.exists(pending_uri):
        return None
    run_id = str(storage.read_json(pending_uri)["run_id"])
    if view is not None and run_id in view.runs:
        return None  # published after all: the crash came after the pointer
    run = read_run(storage.join(root_uri, "runs", run_id))
    if run is not None and run.status == "failed":
        return None  # it ended, over its error budget: rows it kept may be stale, so start afresh
    logger.info("resuming incremental run %s, which a crash left unfinished", run_id)
    return run_id


def score_incremental(incremental: IncrementalPlan) -> ViewPointer:
    """Scores new and changed images into the run and publishes the view (its pointer last).

    Returns:
        The new view pointer (also `current/current.json`), with what was scored and kept.

    Raises:
        RuntimeError: The run did not complete; the previous view stays published.
    """
    root_uri, run_id, plan = incremental.root_uri, incremental.run_id, incremental.plan
    storage.write_json(storage.join(root_uri, PENDING_FILE), {"run_id": run_id, "model_version": plan.card.version})
    listed = catalog_dataset(plan.source).materialize()
    catalog = with_fingerprints(listed, plan.source, listed.count()).materialize()
    todo, kept, deleted = _diff(catalog, _previous_state(root_uri, incremental.previous_view, plan))
    scored_now, errors = todo.count(), 0
    if scored_now:
        manifest = score(dataclasses.replace(plan, rows=todo.drop_columns([FINGERPRINT])), run_id=run_id)
        if manifest.status != "completed":
            raise RuntimeError(
                f"run {run_id} did not complete ({list(manifest.problems)}); the current view is unchanged"
            )
        errors = manifest.counts.errors if manifest.counts else 0
    state = kept.union(
        todo.select_columns([IMAGE_ID, FINGERPRINT]).map_batches(
            _stamp,  # type: ignore[arg-type]  # Ray's stubs know no keyword arguments
            batch_format="pyarrow",
            fn_kwargs={"run_id": run_id},
        )
    ).materialize()  # written, then asked for its runs: built once
    state_dir = f"{STATE_DIR}/{run_id}"
    paths, filesystem = _arrow_paths(storage.join(root_uri, state_dir))
    state.write_parquet(paths, filesystem=filesystem)
    previous = incremental.previous_view
    view = ViewPointer(
        model_version=plan.card.version,
        model_name=plan.card.name,
        catalog=plan.catalog_uri,
        state=state_dir,
        latest_run=run_id if scored_now else (previous.latest_run if previous else None),
        runs=tuple(sorted(str(r) for r in state.unique(RUN_ID))),
        rows=catalog.count(),
        scored_this_run=scored_now,
        unchanged=kept.count(),
        deleted=deleted,
        errors_this_run=errors,
        published_at=datetime.now(UTC).isoformat(),
    )
    write_view(root_uri, view)  # the switch
    storage.remove(storage.join(root_uri, PENDING_FILE))
    return view


def _previous_state(root_uri: str, view: ViewPointer | None, plan: ScoringPlan) -> ray.data.Dataset | None:
    if view is None:
        return None
    if view.model_version != plan.card.version:
        logger.info("model version changed (%s → %s): rescoring everything", view.model_version, plan.card.version)
        return None
    paths, filesystem = _arrow_paths(state_uri(root_uri, view))
    state: ray.data.Dataset = ray.data.read_parquet(paths, filesystem=filesystem).rename_columns(
        {FINGERPRINT: PREVIOUS}
    )
    return state


def _diff(
    catalog: ray.data.Dataset, previous: ray.data.Dataset | None
) -> tuple[ray.data.Dataset, ray.data.Dataset, int]:
    """(new or changed catalog rows, the state rows of unchanged images, deleted images), by joins
    on image_id that run on workers."""
    empty_state = pa.schema([(IMAGE_ID, pa.string()), (FINGERPRINT, pa.string()), (RUN_ID, pa.string())])
    if previous is None:
        return catalog, ray.data.from_arrow(empty_state.empty_table()), 0
    previous = previous.materialize()  # read once: the join and the count below both use it
    partitions = join_partitions(catalog.count())
    joined = catalog.join(previous, join_type="left_outer", num_partitions=partitions, on=(IMAGE_ID,)).materialize()
    todo = joined.map_batches(_changed, batch_format="pyarrow", fn_kwargs={"want": True}).drop_columns(
        [PREVIOUS, RUN_ID]
    )
    kept = joined.map_batches(_changed, batch_format="pyarrow", fn_kwargs={"want": False}).select_columns(
        [IMAGE_ID, FINGERPRINT, RUN_ID]
    )
    # Ids are unique on both sides, so every previous image still listed matched one catalog row:
    # the rest were deleted. A count over the join, not a second join.
    deleted = previous.count() - joined.map_batches(_matched, batch_format="pyarrow").count()
    logger.info("incremental: %d new or changed, %d deleted", todo.count(), deleted)
    return todo.materialize(), kept.materialize(), deleted


def _matched(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_valid(batch.column(PREVIOUS))).select([IMAGE_ID])


def _changed(batch: pa.Table, want: bool) -> pa.Table:
    """Rows whose image is new, changed, or unlisted (no fingerprint: rescored, so its error shows)."""
    current, previous = batch.column(FINGERPRINT), batch.column(PREVIOUS)
    same = pc.fill_null(pc.equal(current, previous), False)
    return batch.filter(pc.invert(same) if want else same)


def _stamp(batch: pa.Table, run_id: str) -> pa.Table:
    return batch.append_column(RUN_ID, pa.array([run_id] * batch.num_rows, pa.string()))


def _arrow_paths(uri: str) -> tuple[str, Any]:
    paths, filesystem = storage.arrow_paths([uri])
    return paths[0], filesystem
