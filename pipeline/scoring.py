"""Batch scoring: decode tasks → `Predictor` actor pool → Parquet predictions, resumable.

Predictions stream back to the driver, which writes them in files of `rows_per_file` rows, each
made visible atomically (temporary name then rename; an S3 PUT is atomic). A rerun into the same
output after a crash reads the ids already written and scores only the rest, so every catalog row
ends up exactly once, and at most the rows in flight at the crash are scored twice.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from pipeline import artifacts, images, storage
from pipeline.calibration import apply_temperature
from pipeline.catalog import passthrough_columns, read_catalog_frame
from pipeline.config import JobConfig, PredictConfig, ResourcesConfig
from pipeline.engines import choose_engine, load_engine
from pipeline.resources import ClusterShape, decode_in_actors, fit_scoring
from pipeline.schema import ERROR, IMAGE, IMAGE_ID, IMAGE_URI, LABEL, PREDICTION_COLUMNS, prediction_schema
from pipeline.watchdog import Watchdog

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
PREDICTIONS_DIR = "predictions"
EVALUATION_DIR = "evaluation"
RESERVED_COLUMNS = set(PREDICTION_COLUMNS) | {IMAGE}


class Predictor:
    """Ray Data actor: loads the model once, then turns decoded batches into prediction rows."""

    def __init__(
        self,
        artifact_uri: str,
        card: dict[str, Any],
        run_id: str,
        top_k: int,
        low_confidence_threshold: float,
        engine: str,
        threads: int,
        gpu: bool,
    ):
        if engine == "keras":
            # Only here: importing TensorFlow costs an ONNX actor ~3.5 CPU-seconds and ~600 MB.
            from pipeline.training import configure_tensorflow

            configure_tensorflow(threads, gpu)
        local = artifacts.localize(artifact_uri)
        with open(os.path.join(local, artifacts.CARD_FILE)) as handle:
            local_version = json.load(handle)["version"]
        if local_version != card["version"]:
            raise RuntimeError(
                f"model at {artifact_uri} changed during the run (version {local_version}, "
                f"run started with {card['version']}); rerun to resume with one model"
            )
        self.engine = load_engine(engine, local, card, threads, gpu)
        self.class_names = np.array(card["class_names"], dtype=object)
        self.temperature = float(card.get("calibration", {}).get("temperature", 1.0))
        self.model_name, self.model_version = card["name"], card["version"]
        self.run_id, self.top_k = run_id, min(top_k, len(self.class_names))
        self.threshold = low_confidence_threshold

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        count = len(batch[IMAGE_ID])
        ok = images.ok_mask(batch[ERROR])
        classes = len(self.class_names)
        probabilities = np.zeros((count, classes), dtype=np.float32)
        if ok.any():
            raw = self.engine.predict(batch[IMAGE][ok])
            probabilities[ok] = apply_temperature(raw, self.temperature)
        order = np.argsort(-probabilities, axis=1)[:, : self.top_k]
        predicted = order[:, 0]
        confidence = probabilities[np.arange(count), predicted]
        errors = [None if good else str(error) for good, error in zip(ok, batch[ERROR])]
        labels = batch.get(LABEL)
        columns: dict[str, Any] = {
            IMAGE_ID: [str(v) for v in batch[IMAGE_ID]],
            IMAGE_URI: [str(v) for v in batch[IMAGE_URI]],
            LABEL: [
                None if labels is None or not isinstance(v, str) else v
                for v in (labels if labels is not None else [None] * count)
            ],
            "predicted_label": [self.class_names[p] if good else None for p, good in zip(predicted, ok)],
            "predicted_index": [int(p) if good else None for p, good in zip(predicted, ok)],
            "confidence": [float(c) if good else None for c, good in zip(confidence, ok)],
            "top_k_labels": [list(self.class_names[o]) if good else None for o, good in zip(order, ok)],
            "top_k_scores": [
                probabilities[i, o].tolist() if good else None for i, (o, good) in enumerate(zip(order, ok))
            ],
            "probabilities": [row.tolist() if good else None for row, good in zip(probabilities, ok)],
            "low_confidence": [bool(good and c < self.threshold) for c, good in zip(confidence, ok)],
            ERROR: errors,
            "model_name": [self.model_name] * count,
            "model_version": [self.model_version] * count,
            "run_id": [self.run_id] * count,
            "scored_at": [datetime.now(UTC)] * count,
        }
        schema = prediction_schema(list(self.class_names))
        table = pa.Table.from_pydict(columns, schema=pa.schema(list(schema)))
        for name in batch:
            if name not in RESERVED_COLUMNS and name not in (IMAGE, ERROR):
                table = table.append_column(name, pa.array(list(batch[name]), from_pandas=True))
        return table


@dataclass(frozen=True)
class ScoringPlan:
    catalog_uri: str
    artifact_uri: str
    output_uri: str
    card: dict[str, Any]
    frame: pd.DataFrame
    config: JobConfig
    schema: pa.Schema
    engine: str
    threshold: float


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
    frame = read_catalog_frame(catalog_uri)
    clashes = sorted(set(passthrough_columns(frame)) & RESERVED_COLUMNS)
    if clashes:
        raise ValueError(f"manifest columns {clashes} clash with prediction columns; rename them")
    storage.check_writable(output_uri)
    run_uri = storage.join(output_uri, RUN_FILE)
    if config.predict.overwrite:
        for name in (RUN_FILE, PREDICTIONS_DIR, EVALUATION_DIR):
            storage.remove(storage.join(output_uri, name))
    elif storage.exists(run_uri):
        previous = storage.read_json(run_uri)
        if previous.get("status") == "completed":
            raise ValueError(
                f"output {output_uri!r} already holds a completed run ({previous.get('run_id')}); "
                "choose a new --output or pass --set predict.overwrite=true to replace it"
            )
    try:
        passthrough = pa.Schema.from_pandas(frame[passthrough_columns(frame)], preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ValueError(f"manifest columns cannot be carried to Parquet: {error}") from error
    schema = prediction_schema(list(card["class_names"]), passthrough.remove_metadata())
    engine = choose_engine(config.predict.engine, card, config.resources.gpu)
    threshold = config.predict.low_confidence_threshold
    if threshold is None:
        threshold = float(card.get("review", {}).get("threshold", 0.5))
    return ScoringPlan(
        storage.normalize(catalog_uri),
        storage.normalize(artifact_uri),
        storage.normalize(output_uri),
        card,
        frame,
        config,
        schema,
        engine,
        threshold,
    )


class PredictionWriter:
    """Writes prediction tables in files of about `rows_per_file` rows, or of what arrived in
    `seconds_per_file` seconds if that is less, each appearing atomically. The time bound caps the
    work a crash loses (a rerun resumes from the files written) on slow, large runs."""

    def __init__(
        self,
        directory_uri: str,
        schema: pa.Schema,
        rows_per_file: int,
        run_id: str,
        seconds_per_file: float = float("inf"),
    ):
        self.directory_uri, self.schema, self.rows_per_file = directory_uri, schema, rows_per_file
        self.seconds_per_file = seconds_per_file
        self.prefix = f"part-{run_id}"
        self.pending: list[pa.Table] = []
        self.pending_rows = self.files = self.rows = 0
        self.first_pending = 0.0  # when the oldest row not yet written arrived

    def add(self, table: pa.Table) -> None:
        if not self.pending_rows:
            self.first_pending = time.monotonic()
        self.pending.append(table.select(self.schema.names).cast(self.schema))
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.rows_per_file or time.monotonic() - self.first_pending >= self.seconds_per_file:
            self.flush()

    def flush(self) -> None:
        if not self.pending_rows:
            return
        table = pa.concat_tables(self.pending).replace_schema_metadata(self.schema.metadata)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        storage.write_bytes(
            storage.join(self.directory_uri, f"{self.prefix}-{self.files:05d}.parquet"), buffer.getvalue()
        )
        self.files += 1
        self.rows += table.num_rows
        self.pending, self.pending_rows = [], 0


def _prediction_files(output_uri: str) -> list[str]:
    return [uri for uri in storage.listdir(storage.join(output_uri, PREDICTIONS_DIR)) if uri.endswith(".parquet")]


def read_predictions(output_uri: str, columns: list[str] | None = None) -> pd.DataFrame:
    tables = []
    for uri in _prediction_files(output_uri):
        fs, path = storage.filesystem(uri)
        tables.append(pq.read_table(path, filesystem=fs, columns=columns))
    if not tables:
        return pd.DataFrame(columns=columns or list(PREDICTION_COLUMNS))
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def _already_scored(plan: ScoringPlan) -> set[str]:
    if not _prediction_files(plan.output_uri):
        return set()
    done = read_predictions(plan.output_uri, [IMAGE_ID, "model_version"])
    versions = set(done["model_version"].unique())
    if versions - {plan.card["version"]}:
        raise ValueError(
            f"output {plan.output_uri!r} holds predictions of model version(s) {sorted(versions)}, "
            f"not {plan.card['version']}; choose a new --output or pass --set predict.overwrite=true"
        )
    return set(done[IMAGE_ID])


def score(plan: ScoringPlan, run_id: str | None = None) -> dict[str, Any]:
    """Scores every catalog row not yet in the output; writes predictions, evaluation, run.json.

    Returns:
        The run manifest (also written as run.json, last).
    """
    from pipeline.evaluation import evaluate_output

    config, predict = plan.config, plan.config.predict
    resources = fit_scoring(config.resources, predict.threads_per_actor, ClusterShape.current())
    run_id = run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    started_at, started = datetime.now(UTC), time.perf_counter()
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "status": "running",
        "started_at": started_at.isoformat(),
        "model": {"uri": plan.artifact_uri, "name": plan.card["name"], "version": plan.card["version"]},
        "catalog": plan.catalog_uri,
        "output": plan.output_uri,
        "engine": plan.engine,
        "low_confidence_threshold": plan.threshold,
        "config": {"predict": config.to_dict()["predict"], "resources": dataclasses.asdict(resources)},
    }
    done = _already_scored(plan)
    storage.write_json(storage.join(plan.output_uri, RUN_FILE), manifest)
    pending = plan.frame[~plan.frame[IMAGE_ID].isin(done)]
    logger.info(
        "run %s: %d catalog rows, %d already scored, %d to score", run_id, len(plan.frame), len(done), len(pending)
    )
    writer = PredictionWriter(
        storage.join(plan.output_uri, PREDICTIONS_DIR),
        plan.schema,
        predict.rows_per_file,
        run_id,
        predict.seconds_per_file,
    )
    if len(pending):
        dataset = build_dataset(
            pending,
            plan.artifact_uri,
            plan.card,
            run_id,
            plan.engine,
            plan.threshold,
            predict,
            resources,
            config.data.rows_per_block,
            config.data.max_image_pixels,
        )
        with Watchdog(f"scoring run {run_id}", resources.stall_timeout_s) as watchdog:
            for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                writer.add(table)
                watchdog.beat()
    writer.flush()
    seconds = time.perf_counter() - started
    evaluation = evaluate_output(plan.output_uri, plan.card, plan.catalog_uri, run_id, plan.threshold)
    rows_out, errors = evaluation["rows"], evaluation["error_rows"]
    error_share = errors / max(rows_out, 1)
    status = "completed"
    problems = []
    if rows_out != len(plan.frame):
        problems.append(f"rows out {rows_out} != rows in {len(plan.frame)}")
    if error_share > predict.max_bad_fraction:
        problems.append(f"error share {error_share:.3f} exceeds predict.max_bad_fraction={predict.max_bad_fraction}")
    if problems:
        status = "failed"
    manifest.update(
        {
            "status": status,
            "problems": problems,
            "counts": {
                "in": len(plan.frame),
                "out": rows_out,
                "scored": rows_out - errors,
                "errors": errors,
                "resumed": len(done),
                "scored_this_run": writer.rows,
                "prediction_files": len(_prediction_files(plan.output_uri)),
            },
            "timings": {
                "seconds": round(seconds, 2),
                "images_per_second": round(writer.rows / seconds, 1) if seconds else None,
                "finished_at": datetime.now(UTC).isoformat(),
            },
            "evaluation": evaluation.get("headline"),
        }
    )
    storage.write_json(storage.join(plan.output_uri, RUN_FILE), manifest)
    return manifest


def build_dataset(
    frame: pd.DataFrame,
    artifact_uri: str,
    card: dict[str, Any],
    run_id: str,
    engine: str,
    threshold: float,
    predict: PredictConfig,
    resources: ResourcesConfig,
    rows_per_block: int,
    max_pixels: int,
) -> ray.data.Dataset:
    """The Ray Data pipeline: catalog blocks → decode → a pool of `Predictor` actors.

    Shaped by measurements on 2 cores (MobileNetV2 224 px, 2,000 600×600 JPEGs; benchmarks/):
    - The catalog is cut into even blocks on the driver with `from_blocks` (a Ray DeveloperAPI;
      Ray is pinned): unlike `from_pandas(...).repartition(...)` it starts no task, so no worker
      spends start-up time importing Ray Data just to slice a small frame.
    - With several CPU actors, decoding asks for the actors' own resources so Ray Data fuses it
      into them: each actor reads, decodes and scores its blocks, with no decode tasks competing
      for the cores and no decoded pixels crossing the object store. One actor (or a GPU actor)
      keeps decoding in separate tasks, which overlap it with inference instead of serialising it.
    """
    actors = int(resources.actors)  # fitted to the cluster by `score` (pipeline/resources.py)
    fused = decode_in_actors(resources, actors)
    logger.info(
        "scoring with %d %s actor(s), decoding %s",
        actors,
        "GPU" if resources.gpu else "CPU",
        "in them" if fused else "in separate tasks",
    )
    count = min(10_000, max(-(-len(frame) // rows_per_block), min(len(frame), actors), 1))
    bounds = np.linspace(0, len(frame), count + 1).astype(int)
    blocks = [frame.iloc[start:stop].reset_index(drop=True) for start, stop in zip(bounds[:-1], bounds[1:])]
    spec = card["input"]
    dataset: ray.data.Dataset = (
        ray.data.from_blocks(blocks)
        .map_batches(
            images.decode_batch,
            batch_format="numpy",
            num_cpus=resources.cpus_per_actor if fused else 1,
            fn_kwargs={
                "image_size": spec["image_size"],
                "max_pixels": max_pixels,
                "resize_method": spec.get("resize_method", "bilinear"),
            },
        )
        .map_batches(
            Predictor,
            batch_format="numpy",
            batch_size=predict.batch_size,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=resources.cpus_per_actor,
            num_gpus=1 if resources.gpu else 0,
            fn_constructor_kwargs={
                "artifact_uri": artifact_uri,
                "card": card,
                "run_id": run_id,
                "top_k": predict.top_k,
                "low_confidence_threshold": threshold,
                "engine": engine,
                "threads": predict.threads_per_actor,
                "gpu": resources.gpu,
            },
        )
    )
    return dataset
