"""TensorFlow's process settings, applied once before a model is built or loaded."""

from __future__ import annotations


def configure_tensorflow(cpus: float, gpu: bool) -> None:
    """Thread pools sized to the worker's CPU share; GPU memory grows on demand (never grabs all)."""
    import tensorflow as tf

    threads = max(1, int(round(cpus)))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:  # already initialised in this process (e.g. a reused worker)
        pass
    if gpu:
        for device in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(device, True)
