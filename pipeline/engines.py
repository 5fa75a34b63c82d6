"""Inference engines: the saved Keras model, or its ONNX export run by ONNX Runtime.

ONNX Runtime's CPU provider scored MobileNetV2 at 224 px 2-2.5x faster than Keras on the same
model (182-243 against 89-91 img/s, batch 32, 2 cores), so training exports every model and
scoring prefers ONNX when the export exists and was verified against Keras.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import numpy as np

from pipeline.artifacts import load_keras_model
from pipeline.records import ModelCard, OnnxExport

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
# Largest |onnx - keras| probability difference accepted on the probe batch.
ONNX_TOLERANCE = 1e-4
# Images per ONNX Runtime call on CPU for artifacts whose card does not record the fastest.
ONNX_CPU_CHUNK = 8


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(model: Any, directory: str, probe: np.ndarray) -> OnnxExport:
    """Exports `model` to `<directory>/model.onnx` and checks it against Keras on `probe`.

    An export whose outputs differ by more than `ONNX_TOLERANCE` is deleted, never shipped.

    Returns:
        What the model card records: file (or None), max_abs_diff, tolerance, reason.
    """
    import onnxruntime

    path = os.path.join(directory, ONNX_FILE)
    probe = probe.astype(np.float32)
    expected = np.asarray(model.predict_on_batch(probe))  # Keras needs one call before export
    try:
        model.export(path, format="onnx", verbose=False)
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        actual = session.run(None, {session.get_inputs()[0].name: probe})[0]
    except Exception as error:  # tf2onnx/ORT raise many types; Keras stays the engine then
        if os.path.exists(path):
            os.remove(path)
        logger.warning("ONNX export failed (%s); scoring will use Keras", error)
        return OnnxExport(file=None, reason=f"export failed: {type(error).__name__}: {error}")
    difference = float(np.abs(actual - expected).max())
    measured = OnnxExport(
        file=ONNX_FILE,
        max_abs_diff=difference,
        tolerance=ONNX_TOLERANCE,
        probe_images=int(len(probe)),
        onnxruntime=onnxruntime.__version__,
    )
    if difference > ONNX_TOLERANCE:
        os.remove(path)
        reason = f"outputs differ from Keras by {difference:.2e} > {ONNX_TOLERANCE}"
        logger.warning("ONNX export refused: %s", reason)
        return dataclasses.replace(measured, file=None, reason=reason)
    return dataclasses.replace(measured, cpu_chunk=fastest_cpu_chunk(path, probe))


def fastest_cpu_chunk(path: str, probe: np.ndarray, candidates: tuple[int, ...] = (4, 8, 16, 32)) -> int:
    """Images per ONNX Runtime call that ran fastest on the probe, single-threaded as in a scoring
    actor. It depends on the model: MobileNetV2's activations fit in cache at 4, while the custom
    CNN's large Dense layer is reused best at 32 (benchmarks/score_throughput.py)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = np.concatenate([probe] * max(1, -(-max(candidates) // len(probe))))[: max(candidates)]
    timings = {}
    for chunk in candidates:
        session.run(None, {name: batch[:chunk]})  # warm-up: allocations for this shape
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for start in range(0, len(batch), chunk):
                session.run(None, {name: batch[start : start + chunk]})
            best = min(best, time.perf_counter() - started)
        timings[chunk] = best
    return min(timings, key=lambda chunk: timings[chunk])


def onnx_cuda_available() -> bool:
    if not onnxruntime_available():
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def choose_engine(requested: str, card: ModelCard, gpu: bool = False) -> str:
    """Resolves `auto` to the fastest engine the artifact supports.

    On CPU that is ONNX Runtime whenever a verified export exists. With `--gpu` it is ONNX Runtime
    only where its CUDA provider is installed (the onnxruntime-gpu package, the same on every node
    of one image); otherwise Keras, which runs on the GPU by itself.

    Raises:
        ValueError: `onnx` was asked for but the artifact has no verified export.
    """
    has_onnx = bool(card.onnx and card.onnx.file) and onnxruntime_available()
    if requested == "onnx" and not has_onnx:
        raise ValueError(
            "--engine onnx, but the model artifact has no verified model.onnx (or onnxruntime is "
            "missing); retrain with this version or use --engine keras"
        )
    if requested == "auto":
        if gpu:
            return "onnx" if has_onnx and onnx_cuda_available() else "keras"
        return "onnx" if has_onnx else "keras"
    if requested == "onnx" and gpu and not onnx_cuda_available():
        logger.warning(
            "--engine onnx with --gpu, but ONNX Runtime has no CUDA provider here (install "
            "onnxruntime-gpu): inference runs on the CPU; --engine auto would pick Keras on the GPU"
        )
    return requested


class KerasEngine:
    def __init__(self, artifact_dir: str, image_size: int):
        import tensorflow as tf

        self.model = load_keras_model(artifact_dir)
        # A fixed-signature tf.function: no retracing per batch size, faster than predict_on_batch.
        self._predict = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)],
        )

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        probabilities: np.ndarray = self._predict(pixels.astype(np.float32)).numpy()
        return probabilities


class OnnxEngine:
    """ONNX Runtime session. On CPU it runs each batch in chunks of `cpu_chunk` images, the size
    export measured fastest for this model: for MobileNetV2, 4-8 images ran 15-30% faster per
    image than 32 or 64, since activations stay in cache. Ray Data's batches stay large enough
    that its per-batch overhead does not matter."""

    def __init__(self, artifact_dir: str, threads: int, gpu: bool, cpu_chunk: int = ONNX_CPU_CHUNK):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if gpu and onnx_cuda_available():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = onnxruntime.InferenceSession(os.path.join(artifact_dir, ONNX_FILE), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        on_gpu = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.chunk = None if on_gpu else cpu_chunk

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        pixels = pixels.astype(np.float32, copy=False)
        if not self.chunk or len(pixels) <= self.chunk:
            probabilities: np.ndarray = self.session.run(None, {self.input_name: pixels})[0]
            return probabilities
        return np.concatenate(
            [
                self.session.run(None, {self.input_name: pixels[start : start + self.chunk]})[0]
                for start in range(0, len(pixels), self.chunk)
            ]
        )


def load_engine(name: str, artifact_dir: str, card: ModelCard, threads: int, gpu: bool) -> KerasEngine | OnnxEngine:
    """Builds the named engine for a local artifact directory."""
    if name == "onnx":
        return OnnxEngine(artifact_dir, threads, gpu, (card.onnx and card.onnx.cpu_chunk) or ONNX_CPU_CHUNK)
    return KerasEngine(artifact_dir, card.input.image_size)
