"""Data parallelism is exact: 2 Ray Train workers, each stepping on half of a batch, end with the
weights that 1 worker reaches stepping on the whole batch.

This is the worker loop's own step (`pipeline.train.worker._make_train_step`) under
MultiWorkerMirroredStrategy. Any accuracy gap between worker counts at one global batch must then
come from what differs between runs (which images share a batch, dropout draws), not from the
gradient arithmetic. Plain SGD, because Adam divides a gradient by its own scale: a loss averaged
over the replica's batch instead of the global one doubles every 2-worker gradient, which SGD shows
and Adam almost hides.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

IMAGES, SIZE, CLASSES, STEPS = 16, 32, 3, 3
CLASS_WEIGHTS = (1.0, 5.0, 0.5)  # unequal, so a weight applied on one replica only would show


def _step_on_my_half(config: dict) -> None:
    import ray.train

    from pipeline.tf_runtime import configure_tensorflow

    configure_tensorflow(0.5, False)
    import keras
    import tensorflow as tf

    from models import build_model
    from pipeline.train.worker import _make_train_step

    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = build_model("custom_cnn", CLASSES, SIZE, dropout=0.0)
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(IMAGES, SIZE, SIZE, 3)).astype(np.uint8)
    labels = rng.integers(0, CLASSES, size=IMAGES).astype(np.int32)
    context = ray.train.get_context()
    rank, workers = context.get_world_rank(), context.get_world_size()
    mine = slice(rank * IMAGES // workers, (rank + 1) * IMAGES // workers)
    step = _make_train_step(strategy, model, optimizer, CLASS_WEIGHTS, IMAGES)
    initial = [np.asarray(variable.numpy()) for variable in model.weights]
    for _ in range(STEPS):
        step(tf.constant(images[mine]), tf.constant(labels[mine]))
    final = [np.asarray(variable.numpy()) for variable in model.weights]
    np.savez(f"{config['output']}-rank{rank}.npz", *initial, *final)
    ray.train.report({"steps": STEPS})


def _trained_weights(directory: str, workers: int) -> list[dict[str, list[np.ndarray]]]:
    """Each rank's initial and final weights."""
    from ray.train import ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    output = f"{directory}/workers{workers}"
    TensorflowTrainer(
        _step_on_my_half,
        train_loop_config={"output": output},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 0.5}),
    ).fit()
    ranks = []
    for rank in range(workers):
        with np.load(f"{output}-rank{rank}.npz") as saved:
            arrays = [saved[f"arr_{index}"] for index in range(len(saved.files))]
        ranks.append({"initial": arrays[: len(arrays) // 2], "final": arrays[len(arrays) // 2 :]})
    return ranks


def test_two_workers_on_half_batches_reach_the_weights_of_one_worker_on_the_whole_batch(ray_local, tmp_path):
    (one,), two = _trained_weights(str(tmp_path), 1), _trained_weights(str(tmp_path), 2)
    for rank in two:
        assert len(rank["final"]) == len(one["final"])
        for single, split in zip(one["final"], rank["final"]):
            np.testing.assert_allclose(split, single, rtol=0, atol=1e-5)
    moved = max(float(np.abs(final - start).max()) for start, final in zip(one["initial"], one["final"]))
    assert moved > 1e-2  # the steps changed the weights far beyond the tolerance
