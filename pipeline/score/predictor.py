"""The Ray Data actor that turns decoded image batches into prediction rows."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from pipeline import artifacts, images
from pipeline.calibration import apply_temperature
from pipeline.engines import load_engine
from pipeline.records import ModelCard
from pipeline.schema import ERROR, IMAGE
from pipeline.score.rows import RowContext, prediction_table
from pipeline.tf_runtime import configure_tensorflow


class Predictor:
    """Ray Data actor: loads the model once, then turns decoded batches into prediction rows."""

    def __init__(
        self,
        artifact_uri: str,
        card: ModelCard,
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
        local_version = artifacts.read_card(local).version
        if local_version != card.version:
            raise RuntimeError(
                f"model at {artifact_uri} changed during the run (version {local_version}, "
                f"run started with {card.version}); rerun to resume with one model"
            )
        self.engine = load_engine(engine, local, card, threads, gpu)
        self.temperature = card.temperature
        self.context = RowContext(card.class_names, top_k, low_confidence_threshold, card.name, card.version, run_id)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        ok = images.ok_mask(batch[ERROR])
        probabilities = np.zeros((len(ok), len(self.context.class_names)), dtype=np.float32)
        if ok.any():
            probabilities[ok] = apply_temperature(self.engine.predict(batch[IMAGE][ok]), self.temperature)
        return prediction_table(batch, probabilities, ok, self.context, datetime.now(UTC))
