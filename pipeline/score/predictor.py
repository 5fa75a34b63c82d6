"""The Ray Data actor that turns decoded image batches into prediction rows."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import artifacts, images
from pipeline.calibration import apply_temperature
from pipeline.engines import load_engine
from pipeline.schema import ERROR, IMAGE, IMAGE_ID, IMAGE_URI, LABEL, RESERVED_COLUMNS, prediction_schema
from pipeline.tf_runtime import configure_tensorflow


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
            configure_tensorflow(threads, gpu)  # imports TensorFlow: only Keras actors pay for it
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
