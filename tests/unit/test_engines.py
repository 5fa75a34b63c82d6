"""The ONNX engine: the export records a chunk size, and chunked calls give the unchunked answer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pipeline.artifacts import read_card
from pipeline.engines import OnnxEngine, load_engine
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
