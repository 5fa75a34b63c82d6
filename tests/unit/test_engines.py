"""The ONNX engine: the export records a chunk size, and chunked calls give the unchunked answer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from models.spec import InputSpec
from pipeline.artifacts import read_card
from pipeline.engines import OnnxEngine, load_engine
from pipeline.records import ModelCard
from tests.factories import make_artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return make_artifact(
        str(tmp_path_factory.mktemp("engine") / "artifact"), ["blue", "green", "red"], image_size=32, epochs=1
    )


def test_export_records_the_fastest_cpu_chunk_from_the_candidates(artifact):
    card = json.load(open(os.path.join(artifact, "model_card.json")))
    assert card["onnx"]["file"] == "model.onnx"
    assert card["onnx"]["cpu_chunk"] in (4, 8, 16, 32)
    assert load_engine("onnx", artifact, read_card(artifact), 1, False).chunk == card["onnx"]["cpu_chunk"]


@pytest.mark.parametrize("chunk", [4, 8, 32])
def test_chunked_calls_equal_one_call(artifact, chunk):
    pixels = np.random.default_rng(0).integers(0, 256, (19, 32, 32, 3)).astype(np.uint8)
    whole = OnnxEngine(artifact, 1, False, cpu_chunk=None).predict(pixels)
    chunked = OnnxEngine(artifact, 1, False, cpu_chunk=chunk).predict(pixels)
    assert chunked.shape == (19, 3)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_an_export_whose_outputs_differ_beyond_tolerance_is_deleted_and_scoring_uses_keras(tmp_path):
    """Huge weights make the outputs ~1e9, where TensorFlow's and ONNX Runtime's summation orders
    give different float32 roundings: a real disagreement, not a forced one."""
    import keras

    from pipeline.engines import ONNX_FILE, ONNX_TOLERANCE, choose_engine, export_onnx

    keras.utils.set_random_seed(0)
    huge = keras.initializers.RandomNormal(stddev=1000.0)
    inputs = keras.Input((32, 32, 3))
    hidden = keras.layers.Dense(64, kernel_initializer=huge)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, kernel_initializer=huge)(hidden))
    probe = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.float32)
    record = export_onnx(model, str(tmp_path), probe)
    assert record.max_abs_diff is not None and record.max_abs_diff > ONNX_TOLERANCE  # the premise: they disagree
    assert record.file is None
    assert record.reason == f"outputs differ from Keras by {record.max_abs_diff:.2e} > {ONNX_TOLERANCE}"
    assert not os.path.exists(tmp_path / ONNX_FILE)  # never shipped beside the model
    card = ModelCard("m", "v", ("a", "b", "c"), InputSpec(32), onnx=record)  # the card training writes
    assert choose_engine("auto", card) == "keras"
    with pytest.raises(ValueError, match="no verified model.onnx"):
        choose_engine("onnx", card)
