"""Batch scoring driver: catalog on workers → decode → `Predictor` actor pool → Parquet predictions, resumable.

The catalog is listed or read on workers (`source.py`) and kept in the object store. Workers
write the predictions: one file per scoring block (at most `predict.rows_per_file` rows), made
visible atomically (temporary name then rename; an S3 PUT is atomic), its tally in the footer, its
name derived from its rows so a retried write replaces rather than duplicates. The driver receives
one small row per file (name, rows, tally) and holds no prediction. A rerun into the same output
after a crash scores only the catalog rows no file holds yet (a left-anti join on workers), so
every catalog row ends up exactly once, and at most the blocks in flight at the crash are scored
twice.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline import artifacts, images, storage
from pipeline.catalog import IMAGE_EXTENSIONS
from pipeline.config import JobConfig
from pipeline.engines import choose_engine
from pipeline.progress import Progress
from pipeline.records import ModelCard, ModelRef, RunCounts, RunManifest
from pipeline.resources import ClusterShape, decode_in_actors, fit_scoring
from pipeline.schema import IMAGE_ID, RESERVED_COLUMNS, prediction_schema
from pipeline.score.drift import measure_drift
from pipeline.score.evaluation import evaluate_output
from pipeline.score.predictions import (
    DRIFT_DIR,
    EVALUATION_DIR,
    PREDICTIONS_DIR,
    RUN_FILE,
    prediction_files,
    read_run,
    read_tally,
    write_batch,
    write_run,
)
from pipeline.score.predictor import Predictor
from pipeline.score.source import FINGERPRINT, CatalogSource, catalog_dataset, describe_catalog, join_partitions
from pipeline.score.tally import Tally
from pipeline.watchdog import Watchdog

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringPlan:
    """Everything checked before Ray starts. The catalog's rows are not here: workers read them."""

    catalog_uri: str
    artifact_uri: str
    output_uri: str
    card: ModelCard
    source: CatalogSource
    config: JobConfig
    schema: pa.Schema
    engine: str
    threshold: float
    rows: ray.data.Dataset | None = None  # a chosen subset of the catalog (incremental runs); None: all
    previous_run_uri: str | None = None  # the schedule's previous run, the drift report's second reference


def prepare_scoring(catalog_uri: str, artifact_uri: str, output_uri: str, config: JobConfig) -> ScoringPlan:
    """Checks model, catalog and output before any work starts.

    A completed run already in `output_uri` is refused unless `predict.overwrite` is true, in which
    case it is removed first (its run.json before anything else, so it never looks complete).
    An unfinished run (no run.json, or one that says "running"/"failed") is resumed, unless
    `predict.overwrite` is true: then it is removed too, so overwrite also replaces an unfinished
    run of another model version, which cannot be resumed.

    Raises:
        ValueError: Unreadable model, bad catalog, unwritable or already-complete output.
    """
    card = artifacts.read_card(artifact_uri)
    source = describe_catalog(catalog_uri)
    clashes = sorted(set(source.passthrough.names) & RESERVED_COLUMNS)
    if clashes:
        raise ValueError(f"manifest columns {clashes} clash with prediction columns; rename them")
    storage.check_writable(output_uri)
    if config.predict.overwrite:
        for name in (RUN_FILE, PREDICTIONS_DIR, EVALUATION_DIR, DRIFT_DIR):
            storage.remove(storage.join(output_uri, name))
    previous = read_run(output_uri)
    if previous is not None and previous.status == "completed":
        raise ValueError(
            f"output {output_uri!r} already holds a completed run ({previous.run_id}); "
            "choose a new --output or pass --set predict.overwrite=true to replace it"
        )
    schema = prediction_schema(list(card.class_names), source.passthrough)
    engine = choose_engine(config.predict.engine, card, config.resources.gpu)
    threshold = config.predict.low_confidence_threshold
    if threshold is None:
        threshold = card.review_threshold
    return ScoringPlan(
        storage.normalize(catalog_uri),
        storage.normalize(artifact_uri),
        storage.normalize(output_uri),
        card,
        source,
        config,
        schema,
        engine,
        threshold,
    )


def score(plan: ScoringPlan, run_id: str | None = None) -> RunManifest:
    """Scores every catalog row not yet in the output; writes predictions, evaluation, run.json.

    Returns:
        The run manifest (also written as run.json, last).

    Raises:
        ValueError: The catalog turned out empty or with duplicate ids (found on workers).
    """
    resources = fit_scoring(plan.config.resources, plan.config.predict.threads_per_actor, ClusterShape.current())
    plan = dataclasses.replace(plan, config=dataclasses.replace(plan.config, resources=resources))
    run_id = run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    started_at, started = datetime.now(UTC), time.perf_counter()
    catalog, rows_in = _read_catalog(plan)
    earlier = _earlier_tally(plan)
    resumed = earlier.rows
    manifest = RunManifest(
        run_id=run_id,
        status="running",
        started_at=started_at.isoformat(),
        model=ModelRef(plan.artifact_uri, plan.card.name, plan.card.version),
        catalog=plan.catalog_uri,
        output=plan.output_uri,
        engine=plan.engine,
        low_confidence_threshold=plan.threshold,
        config={
            "predict": plan.config.to_dict()["predict"],
            "resources": dataclasses.asdict(resources),
            "drift": plan.config.to_dict()["drift"],
        },
        model_warnings=plan.card.warnings,
    )
    for warning in plan.card.warnings:
        logger.warning("model %s: %s", plan.card.name, warning)
    write_run(plan.output_uri, manifest)
    pending = _not_yet_scored(plan, catalog, rows_in) if resumed else catalog
    logger.info("run %s: %d catalog rows, %d already scored", run_id, rows_in, resumed)
    written = _write_predictions(plan, pending, run_id)
    scored_this_run = written.rows
    seconds = time.perf_counter() - started
    total = earlier.add(written)
    drift = measure_drift(plan.output_uri, plan.card, plan.config.drift, total, plan.previous_run_uri)
    evaluation = evaluate_output(plan.output_uri, plan.card, plan.catalog_uri, run_id, plan.threshold, total, drift)
    counts = RunCounts(
        rows_in=rows_in,
        rows_out=evaluation.rows,
        scored=evaluation.rows - evaluation.error_rows,
        errors=evaluation.error_rows,
        resumed=resumed,
        scored_this_run=scored_this_run,
        prediction_files=len(prediction_files(plan.output_uri)),
    )
    problems = _problems(counts, plan.config.predict.max_bad_fraction)
    manifest = dataclasses.replace(
        manifest,
        status="failed" if problems else "completed",
        problems=problems,
        counts=counts,
        timings={
            "seconds": round(seconds, 2),
            "images_per_second": round(scored_this_run / seconds, 1) if seconds else None,
            "finished_at": datetime.now(UTC).isoformat(),
        },
        evaluation=evaluation.headline,
        drift=drift,
    )
    write_run(plan.output_uri, manifest)
    return manifest


def _read_catalog(plan: ScoringPlan) -> tuple[ray.data.Dataset, int]:
    """The catalog's rows, listed or read once on workers and kept in the object store; the
    driver holds block references and the count."""
    if plan.rows is not None:
        return plan.rows, plan.rows.count()
    catalog = catalog_dataset(plan.source).materialize()
    rows = catalog.count()
    if rows == 0:
        raise ValueError(f"catalog {plan.catalog_uri!r} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
    if plan.source.is_manifest:  # a folder's ids are its paths: unique by construction
        _check_unique_ids(plan.catalog_uri, catalog)
    logger.info("catalog %s: %d rows", plan.catalog_uri, rows)
    return catalog, rows


def _check_unique_ids(catalog_uri: str, catalog: ray.data.Dataset) -> None:
    counts = catalog.select_columns([IMAGE_ID]).groupby(IMAGE_ID).count()
    repeated = counts.map_batches(_repeated, batch_format="pyarrow").take(1)
    if repeated:
        raise ValueError(
            f"catalog {catalog_uri!r} has duplicate image_id values, e.g. {repeated[0][IMAGE_ID]!r}; "
            "every row needs a unique image_id"
        )


def _repeated(counts: pa.Table) -> pa.Table:
    return counts.filter(pc.greater(counts.column(counts.column_names[-1]), 1))


def _earlier_tally(plan: ScoringPlan) -> Tally:
    """What an earlier, unfinished run wrote, from the files' footers; refuses another model's."""
    tally = read_tally(plan.output_uri, list(plan.card.class_names))
    if tally.model_versions - {plan.card.version}:
        raise ValueError(
            f"output {plan.output_uri!r} holds predictions of model version(s) {sorted(tally.model_versions)}, "
            f"not {plan.card.version}; choose a new --output or pass --set predict.overwrite=true"
        )
    return tally


def _not_yet_scored(plan: ScoringPlan, catalog: ray.data.Dataset, rows: int) -> ray.data.Dataset:
    """A left-anti join on image_id, on workers: the catalog rows no prediction file holds yet."""
    paths, filesystem = storage.arrow_paths(prediction_files(plan.output_uri))
    done = ray.data.read_parquet(paths, filesystem=filesystem, columns=[IMAGE_ID])
    pending: ray.data.Dataset = catalog.join(
        done, join_type="left_anti", num_partitions=join_partitions(rows), on=(IMAGE_ID,)
    )
    materialized: ray.data.Dataset = pending.materialize()
    return materialized


def _write_predictions(plan: ScoringPlan, pending: ray.data.Dataset, run_id: str) -> Tally:
    """Streams the pending rows through the pipeline into prediction files written by workers;
    returns the sum of the files' tallies."""
    written = Tally(len(plan.card.class_names))
    to_score = pending.count()
    if not to_score:
        return written
    resources = plan.config.resources
    files = build_dataset(plan, pending, run_id).map_batches(
        write_batch,  # type: ignore[arg-type]  # Ray's stubs know no keyword arguments
        batch_format="pyarrow",
        batch_size=None,  # one file per scoring block
        # No CPU asked: the actors may hold every CPU (a small node), and a write waiting for one
        # would wait for ever. The pool is capped instead; a write is mostly encoding and a PUT.
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=max(2, int(resources.actors))),
        fn_kwargs={
            "directory_uri": storage.join(plan.output_uri, PREDICTIONS_DIR),
            "schema": plan.schema,
            "run_id": run_id,
        },
    )
    watchdog = Watchdog(f"scoring run {run_id}", resources.stall_timeout_s)
    with watchdog, Progress(to_score, f"scoring {plan.card.name}") as progress:
        for batch in files.iter_batches(batch_size=None, batch_format="pyarrow"):
            assert isinstance(batch, pa.Table)
            for tally in batch.column("tally").to_pylist():
                written.add(Tally.from_json(tally))
            watchdog.beat()
            progress.advance(int(pc.sum(batch.column("rows")).as_py() or 0))
    return written


def _problems(counts: RunCounts, max_bad_fraction: float) -> tuple[str, ...]:
    """Why a finished run is "failed": a row lost, or more bad images than the budget allows."""
    problems = []
    if counts.rows_out != counts.rows_in:
        problems.append(f"rows out {counts.rows_out} != rows in {counts.rows_in}")
    error_share = counts.errors / max(counts.rows_out, 1)
    if error_share > max_bad_fraction:
        problems.append(f"error share {error_share:.3f} exceeds predict.max_bad_fraction={max_bad_fraction}")
    return tuple(problems)


def block_rows(total: int, actors: int, rows_per_block: int, rows_per_file: int) -> int:
    """Rows per scoring block: `rows_per_block`, grown on big catalogs while every actor keeps 8 or
    more blocks (for overlap and balance), up to `rows_per_file`, since a block is one file.

    The driver pays a little per block (Ray Data schedules each through every stage), so on a
    catalog of millions the larger blocks are what keep its CPU per row low.
    """
    wanted = -(-total // (8 * max(actors, 1)))
    return max(1, min(rows_per_file, max(rows_per_block, wanted)))


def build_dataset(plan: ScoringPlan, rows: ray.data.Dataset, run_id: str) -> ray.data.Dataset:
    """The Ray Data pipeline: catalog blocks → decode → a pool of `Predictor` actors.

    Shaped by measurements on 2 cores (MobileNetV2 224 px, 2,000 600×600 JPEGs; benchmarks/):
    - The catalog's blocks are cut even on workers (`repartition`, materialized before the actors
      start), at least one per actor, so every actor has work and no block is a whole listing.
      Each block becomes one prediction file (`block_rows`). Images are decoded `batch_size` at a
      time, so a large block never holds all its pixels at once.
    - With several CPU actors, decoding asks for the actors' own resources so Ray Data fuses it
      into them: each actor reads, decodes and scores its blocks, with no decode tasks competing
      for the cores and no decoded pixels crossing the object store. One actor (or a GPU actor)
      keeps decoding in separate tasks, which overlap it with inference instead of serialising it.
    """
    predict, resources, data = plan.config.predict, plan.config.resources, plan.config.data
    actors = int(resources.actors)  # fitted to the cluster by `score` (pipeline/resources.py)
    fused = decode_in_actors(resources, actors)
    logger.info(
        "scoring with %d %s actor(s), decoding %s",
        actors,
        "GPU" if resources.gpu else "CPU",
        "in them" if fused else "in separate tasks",
    )
    total = rows.count()
    blocks = max(-(-total // block_rows(total, actors, data.rows_per_block, predict.rows_per_file)), min(total, actors))
    if FINGERPRINT in (rows.schema().names if rows.schema() else []):
        rows = rows.drop_columns([FINGERPRINT])
    # Cut the blocks before any actor starts: once the actors hold their CPUs (all of them, on a
    # small node), a task left upstream of them would wait for a CPU for ever.
    rows = rows.repartition(blocks).materialize()
    spec = plan.card.input
    dataset: ray.data.Dataset = rows.map_batches(
        images.decode_batch,  # type: ignore[arg-type]  # Ray's stubs know no keyword arguments
        batch_format="numpy",
        batch_size=predict.batch_size,
        num_cpus=resources.cpus_per_actor if fused else 1,
        fn_kwargs={
            "image_size": spec.image_size,
            "max_pixels": data.max_image_pixels,
            "resize_method": spec.resize_method,
        },
    ).map_batches(
        Predictor,
        batch_format="numpy",
        batch_size=predict.batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=resources.cpus_per_actor,
        num_gpus=1 if resources.gpu else 0,
        fn_constructor_kwargs={
            "artifact_uri": plan.artifact_uri,
            "card": plan.card,
            "run_id": run_id,
            "top_k": predict.top_k,
            "low_confidence_threshold": plan.threshold,
            "engine": plan.engine,
            "threads": predict.threads_per_actor,
            "gpu": resources.gpu,
        },
    )
    return dataset
