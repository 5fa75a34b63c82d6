"""Data-parallel training on Ray Train: datasets, the per-worker loop, and `fit`.

Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the loop
is a `tf.function` step run through `strategy.run`; the same code serves 1 and N workers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.train
from ray.data import RandomSeedConfig
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.tensorflow import TensorflowTrainer
from sklearn.utils.class_weight import compute_class_weight

from pipeline import images
from pipeline.catalog import LabelIndex
from pipeline.config import AugmentConfig, DataConfig, ResourcesConfig, TrainConfig
from pipeline.schema import ERROR, IMAGE, IMAGE_URI, LABEL
from pipeline.splits import SPLIT
from pipeline.watchdog import HeartbeatSender, Watchdog, start_heartbeat

logger = logging.getLogger(__name__)

LABEL_INDEX = "label_index"
STATE_FILE = "state.json"
CURRENT_WEIGHTS = "current.npz"
BEST_WEIGHTS = "best.npz"
# Adam's step count and moments for the phase in progress: without them a resumed phase restarts
# with zero moments and a fresh bias correction, a different trajectory from an uninterrupted run.
OPTIMIZER_STATE = "optimizer.npz"
FINAL_MODEL = "model.keras"


# --------------------------------------------------------------------------- data


def class_weight_vector(train_indices: np.ndarray, num_classes: int) -> np.ndarray:
    """ "Balanced" class weights as a vector indexed by integer class id.

    A vector (not a dict keyed by names) is what the loss gathers from, so a weight can never be
    silently ignored for a key mismatch, the defect of the original study.

    Raises:
        ValueError: A class has no training image (its weight would be undefined).
    """
    present = np.unique(train_indices)
    if len(present) != num_classes:
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        raise ValueError(f"classes {missing} have no training images; every class needs at least one")
    weights: np.ndarray = compute_class_weight("balanced", classes=np.arange(num_classes), y=train_indices)
    return weights.astype(np.float32)


def oversample(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Repeats minority-class training rows (with replacement) up to the largest class's count.

    Repeated rows differ once augmented, which is why oversampling is only offered with it.
    """
    rng = np.random.default_rng(seed)
    largest = frame[LABEL].value_counts().max()
    parts = [frame]
    for _, group in frame.groupby(LABEL):
        extra = largest - len(group)
        if extra > 0:
            parts.append(group.iloc[rng.integers(0, len(group), size=extra)])
    return pd.concat(parts, ignore_index=True)


def _keep_decoded(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ok = images.ok_mask(batch[ERROR])
    return {IMAGE: batch[IMAGE][ok], LABEL_INDEX: batch[LABEL_INDEX][ok].astype(np.int32)}


def augment_batch(batch: dict[str, np.ndarray], augment: dict[str, Any]) -> dict[str, np.ndarray]:
    """Random rotation, shift, shear, zoom and flip of a uint8 image batch (training data only).

    Runs as a Ray Data task on the training dataset, outside the saved model: Keras random layers
    inside a model make its ONNX export unloadable ("INVALID_GRAPH ...
    StatelessRandomUniformV2"), while the same model without them matches Keras to 4e-8.
    """
    import keras

    settings = AugmentConfig(**augment)
    layers = [
        keras.layers.RandomRotation(settings.rotation_degrees / 360.0, fill_mode="nearest"),
        keras.layers.RandomTranslation(settings.height_shift, settings.width_shift, fill_mode="nearest"),
        keras.layers.RandomShear(x_factor=settings.shear, y_factor=settings.shear, fill_mode="nearest"),
        keras.layers.RandomZoom(settings.zoom, settings.zoom, fill_mode="nearest"),
    ]
    if settings.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal"))
    pixels = batch[IMAGE].astype(np.float32)
    for layer in layers:
        pixels = layer(pixels, training=True)
    pixels = np.clip(np.round(np.asarray(pixels)), 0, 255).astype(np.uint8)
    return {IMAGE: pixels, LABEL_INDEX: batch[LABEL_INDEX]}


def build_datasets(
    frame: pd.DataFrame,
    label_index: LabelIndex,
    image_size: int,
    data: DataConfig,
    augment: AugmentConfig,
    imbalance: str,
) -> tuple[dict[str, ray.data.Dataset], dict[str, int]]:
    """Decodes each split once and returns Ray Datasets; only `train` is augmented/oversampled.

    Returns:
        ({"train", "val", "test"} datasets of {image, label_index}, {split: undecodable rows}).
    """
    datasets, skipped = {}, {}
    for split in ("train", "val", "test"):
        rows = frame[frame[SPLIT] == split]
        if split == "train" and imbalance in ("oversample", "both"):
            rows = oversample(rows, data.seed)
        table = pd.DataFrame(
            {IMAGE_URI: rows[IMAGE_URI].to_numpy(), LABEL_INDEX: label_index.encode(rows[LABEL]).to_numpy()}
        )
        blocks = max(1, min(64, len(table) // data.rows_per_block + 1))
        decoded = (
            ray.data.from_pandas(table)
            .repartition(blocks)
            .map_batches(
                images.decode_batch,  # type: ignore[arg-type]
                batch_format="numpy",
                fn_kwargs={"image_size": image_size, "max_pixels": data.max_image_pixels},
            )
        )
        flagged = decoded.map_batches(_keep_decoded, batch_format="numpy").materialize()
        skipped[split] = len(table) - flagged.count()
        if skipped[split]:
            logger.warning("%d %s images could not be decoded and are left out of training", skipped[split], split)
        if split == "train" and augment.enabled:
            # Reseeded per execution: Ray Train re-runs this dataset every epoch, and a fixed seed
            # would give every epoch the same batches.
            shuffle_seed = RandomSeedConfig(seed=data.seed, reseed_after_execution=True)
            flagged = flagged.random_shuffle(seed=shuffle_seed).map_batches(
                augment_batch, batch_format="numpy", fn_kwargs={"augment": dataclasses.asdict(augment)}
            )
        datasets[split] = flagged
    return datasets, skipped


# --------------------------------------------------------------------------- worker loop


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a training worker needs, rebuilt from Ray's dict in one step."""

    model_name: str
    num_classes: int
    image_size: int
    two_phase: bool
    weights: str | None
    dropout: float
    class_weights: tuple[float, ...]
    train: TrainConfig
    workers: int
    cpus_per_worker: float
    gpu: bool
    # Name of the driver's `Heartbeat` actor that steps beat (pipeline/watchdog.py); None: no beats.
    heartbeat: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WorkerConfig:
        values = dict(values)
        values["train"] = TrainConfig(**values["train"])
        values["class_weights"] = tuple(values["class_weights"])
        return cls(**values)

    @property
    def global_batch_size(self) -> int:
        return self.train.batch_size_per_worker * self.workers


@dataclass
class TrainingState:
    """What a checkpoint must carry for a restarted worker group to continue where it stopped."""

    phase: int = 0
    epoch_in_phase: int = 0
    epochs_done: int = 0
    best_val_loss: float = float("inf")
    best_epoch: int = -1
    wait: int = 0
    done: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    # Epochs at which a restarted worker group (killed worker, or a rerun after a killed driver)
    # picked up from a checkpoint: the model card reports them, so a recovery is never invisible.
    resumed_at_epochs: list[int] = field(default_factory=list)


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


def weighted_loss(labels: Any, probabilities: Any, class_weights: Any, global_batch_size: int) -> Any:
    """Per-example cross-entropy × its class weight, averaged over the *global* batch.

    Averaging over the global batch (not the replica's) keeps gradients equal to single-worker
    ones after the all-reduce sums them.
    """
    import keras
    import tensorflow as tf

    per_example = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    per_example = per_example * tf.gather(tf.constant(class_weights, tf.float32), labels)
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)


def _make_train_step(strategy: Any, model: Any, optimizer: Any, class_weights: Any, global_batch_size: int) -> Any:
    import tensorflow as tf

    def step(images_batch: Any, labels: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            probabilities = model(tf.cast(images_batch, tf.float32), training=True)
            loss = weighted_loss(labels, probabilities, class_weights, global_batch_size)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), labels), tf.float32)
        )
        return loss, correct

    @tf.function  # type: ignore[untyped-decorator]
    def distributed_step(images_batch: Any, labels: Any) -> tuple[Any, Any]:
        loss, correct = strategy.run(step, args=(images_batch, labels))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
        )

    return distributed_step


def _make_predict(model: Any) -> Any:
    """The model's inference call as one `tf.function`, built once per worker: a function defined
    inside the evaluation was traced again every epoch (TensorFlow's retracing warning)."""
    import tensorflow as tf

    return tf.function(lambda batch: model(tf.cast(batch, tf.float32), training=False), reduce_retracing=True)


def _evaluate(predict: Any, iterator: Any, batch_size: int, beat: Callable[[], None]) -> tuple[float, float]:
    """Unweighted loss and accuracy over a whole (unsplit) dataset on this worker."""
    import keras
    import tensorflow as tf

    total_loss, correct, count = 0.0, 0.0, 0
    for batch in iterator.iter_tf_batches(batch_size=batch_size):
        probabilities = predict(batch[IMAGE])
        labels = batch[LABEL_INDEX]
        total_loss += float(tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, probabilities)))
        hits = tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), tf.cast(labels, tf.int32))
        correct += float(tf.reduce_sum(tf.cast(hits, tf.float32)))
        count += int(labels.shape[0])
        beat()
    return total_loss / max(count, 1), correct / max(count, 1)


def _make_agree(strategy: Any) -> Any:
    """All-reduces a scalar so every worker takes the same early-stopping decision (a worker that
    stops alone leaves the others waiting in a collective forever). A `tf.function`: run eagerly,
    the collective is slow and TensorFlow warns about it every epoch."""
    import tensorflow as tf

    @tf.function  # type: ignore[untyped-decorator]
    def agree(value: Any) -> Any:
        per_replica = strategy.run(tf.identity, args=(value,))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    return lambda value: float(agree(tf.constant(value, tf.float32)))


def _weights_by_path(model: Any) -> dict[str, np.ndarray]:
    return {variable.path: np.asarray(variable.numpy()) for variable in model.weights}


def _assign_by_path(model: Any, values: dict[str, np.ndarray]) -> None:
    # By path, not position: Keras reorders `model.weights` when layers change `trainable`.
    for variable in model.weights:
        variable.assign(values[variable.path])


def _save_npz(path: str, values: dict[str, np.ndarray]) -> None:
    np.savez(path, **{key.replace("/", "|"): value for key, value in values.items()})  # type: ignore[arg-type]


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as loaded:
        return {key.replace("|", "/"): loaded[key] for key in loaded.files}


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: builds the model under the strategy, trains one or two phases with early
    stopping on validation loss, reports metrics and a checkpoint every epoch, and resumes from
    `ray.train.get_checkpoint()` after a restart."""
    settings = WorkerConfig.from_dict(config)
    beat = HeartbeatSender(settings.heartbeat)
    beat()  # start-up (TensorFlow import, strategy set-up, weights) is progress too
    configure_tensorflow(settings.cpus_per_worker, settings.gpu)
    import keras
    import tensorflow as tf

    from models import build_model, mobilenet_v2
    from pipeline.artifacts import fetch_weights

    context = ray.train.get_context()
    rank = context.get_world_rank()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    options: dict[str, Any] = {"dropout": settings.dropout}
    if settings.model_name == "mobilenet_v2":
        weights = settings.weights
        options["weights"] = fetch_weights(weights) if weights not in (None, "imagenet") else weights
    with strategy.scope():
        model = build_model(settings.model_name, settings.num_classes, settings.image_size, **options)
    beat(force=True)
    predict, agree = _make_predict(model), _make_agree(strategy)

    state = TrainingState()
    best_weights = _weights_by_path(model)
    saved_optimizer: list[np.ndarray] | None = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            with open(os.path.join(directory, STATE_FILE)) as handle:
                state = TrainingState(**json.load(handle))
            state.resumed_at_epochs.append(state.epochs_done)
            if settings.two_phase and state.phase >= 1:
                mobilenet_v2.unfreeze_top_layers(model, settings.train.fine_tune_layers)
            _assign_by_path(model, _load_npz(os.path.join(directory, CURRENT_WEIGHTS)))
            best_weights = _load_npz(os.path.join(directory, BEST_WEIGHTS))
            if os.path.exists(os.path.join(directory, OPTIMIZER_STATE)):
                saved = _load_npz(os.path.join(directory, OPTIMIZER_STATE))
                saved_optimizer = [saved[key] for key in sorted(saved)]
        logger.info("resumed %s at phase %d, epoch %d", settings.model_name, state.phase, state.epochs_done)

    train = settings.train
    phases = [
        (
            "head" if settings.two_phase else "train",
            train.head_epochs if settings.two_phase else train.epochs,
            train.learning_rate,
        )
    ]
    if settings.two_phase and train.fine_tune_epochs > 0:
        phases.append(("fine_tune", train.fine_tune_epochs, train.fine_tune_learning_rate))
    patience = train.transfer_patience if settings.two_phase else train.cnn_patience
    if rank == 0:
        logger.info(
            "training %s: batch_size_per_worker=%d global_batch_size=%d workers=%d",
            settings.model_name,
            train.batch_size_per_worker,
            settings.global_batch_size,
            settings.workers,
        )

    train_shard = ray.train.get_dataset_shard("train")
    val_data = ray.train.get_dataset_shard("val")
    for phase_index, (phase_name, epochs, learning_rate) in enumerate(phases):
        if state.done or phase_index < state.phase:
            continue
        if phase_name == "fine_tune" and not (checkpoint and state.phase == phase_index):
            mobilenet_v2.unfreeze_top_layers(model, train.fine_tune_layers)
        # A fresh optimizer and step per phase: both captured the old trainable variables.
        with strategy.scope():
            optimizer = keras.optimizers.Adam(learning_rate)
            optimizer.build(model.trainable_variables)
            if saved_optimizer is not None and state.phase == phase_index and state.epoch_in_phase > 0:
                _restore_optimizer(optimizer, saved_optimizer)
            saved_optimizer = None
        step = _make_train_step(strategy, model, optimizer, settings.class_weights, settings.global_batch_size)
        while state.epoch_in_phase < epochs:
            started = time.perf_counter()
            loss_sum, correct, steps = 0.0, 0.0, 0
            for batch in train_shard.iter_tf_batches(batch_size=train.batch_size_per_worker, drop_last=True):
                loss, hits = step(batch[IMAGE], tf.cast(batch[LABEL_INDEX], tf.int32))
                loss_sum, correct, steps = loss_sum + float(loss), correct + float(hits), steps + 1
                beat()
            val_loss, val_accuracy = _evaluate(predict, val_data, train.batch_size_per_worker * 2, beat)
            val_loss = agree(val_loss)
            row = {
                "phase": phase_name,
                "epoch": state.epochs_done + 1,
                "loss": loss_sum / max(steps, 1),
                "accuracy": correct / max(steps * settings.global_batch_size, 1),
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "steps": steps,
                "seconds": time.perf_counter() - started,
                "optimizer_steps": int(optimizer.iterations.numpy()),
                "rss_mb": _rss_mb(),
            }
            state.history.append(row)
            state.epochs_done += 1
            state.epoch_in_phase += 1
            if val_loss < state.best_val_loss - 1e-6:
                state.best_val_loss, state.best_epoch, state.wait = val_loss, state.epochs_done, 0
                best_weights = _weights_by_path(model)
            else:
                state.wait += 1
            stop = state.wait >= patience
            phase_over = stop or state.epoch_in_phase >= epochs
            if phase_over:
                _assign_by_path(model, best_weights)  # restore the best weights before the next phase
                state.phase, state.epoch_in_phase, state.wait = phase_index + 1, 0, 0
            # At a phase's end the next phase starts a fresh optimizer: nothing to carry over.
            _report(rank, row, state, model, best_weights, optimizer=None if phase_over else optimizer)
            if stop:
                logger.info(
                    "early stopping %s in phase %s at epoch %d (best epoch %d)",
                    settings.model_name,
                    phase_name,
                    state.epochs_done,
                    state.best_epoch,
                )
            if phase_over:
                break
    state.done = True
    _assign_by_path(model, best_weights)
    _report(
        rank,
        {"final": True, "best_epoch": state.best_epoch, "best_val_loss": state.best_val_loss},
        state,
        model,
        best_weights,
        final=True,
    )


def _restore_optimizer(optimizer: Any, values: list[np.ndarray]) -> None:
    """Assigns saved optimizer variables by position: the same model and phase build them in the
    same order. A mismatch (another Keras version, say) keeps the fresh state and says so."""
    variables = list(optimizer.variables)
    if len(variables) != len(values) or any(tuple(v.shape) != value.shape for v, value in zip(variables, values)):
        logger.warning(
            "checkpointed optimizer state does not match this optimizer (%d vs %d variables); "
            "the phase continues with fresh Adam moments",
            len(values),
            len(variables),
        )
        return
    for variable, value in zip(variables, values):
        variable.assign(value)


def _report(
    rank: int,
    metrics: dict[str, Any],
    state: TrainingState,
    model: Any,
    best_weights: dict[str, np.ndarray],
    final: bool = False,
    optimizer: Any = None,
) -> None:
    """Every rank reports; only rank 0 attaches the checkpoint (all ranks hold the same weights and
    optimizer state)."""
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, STATE_FILE), "w") as handle:
            json.dump(dataclasses.asdict(state), handle)
        _save_npz(os.path.join(directory, CURRENT_WEIGHTS), _weights_by_path(model))
        _save_npz(os.path.join(directory, BEST_WEIGHTS), best_weights)
        if optimizer is not None:
            _save_npz(
                os.path.join(directory, OPTIMIZER_STATE),
                {f"{index:05d}": np.asarray(variable.numpy()) for index, variable in enumerate(optimizer.variables)},
            )
        if final:
            model.save(os.path.join(directory, FINAL_MODEL))
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory))


# --------------------------------------------------------------------------- driver


def scaling_config(resources: ResourcesConfig) -> ScalingConfig:
    """Ray Train workers from config: `--gpu` is the one switch that gives each worker one GPU."""
    per_worker: dict[str, float] = {"CPU": resources.cpus_per_worker}
    if resources.gpu:
        per_worker["GPU"] = 1
    return ScalingConfig(num_workers=resources.workers, use_gpu=resources.gpu, resources_per_worker=per_worker)


def fit(
    model_name: str,
    datasets: dict[str, ray.data.Dataset],
    worker_config: WorkerConfig,
    resources: ResourcesConfig,
    storage_path: str,
    run_name: str,
) -> ray.train.Result:
    """Runs one model's data-parallel training; returns Ray's result (final checkpoint included).

    A rerun with the same `run_name` and `storage_path` resumes from the latest checkpoint. Workers
    beat a `Heartbeat` actor every few steps; no beat for `resources.stall_timeout_s` ends the run
    with `StalledError`.
    """
    scaling = scaling_config(resources)
    heartbeat, probe, stop_heartbeat = start_heartbeat()
    trainer = TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config=dataclasses.replace(worker_config, heartbeat=heartbeat).to_dict(),
        scaling_config=scaling,
        datasets={"train": datasets["train"], "val": datasets["val"]},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=worker_config.train.keep_checkpoints),
            failure_config=FailureConfig(max_failures=worker_config.train.max_failures),
        ),
    )
    logger.info(
        "fitting %s with %d worker(s) × %g CPU%s",
        model_name,
        resources.workers,
        resources.cpus_per_worker,
        " + 1 GPU" if resources.gpu else "",
    )
    # Ray Train installs a SIGINT handler for its run and leaves it behind; a later Ctrl-C (or the
    # watchdog's interrupt) in this process would then abort a controller that no longer exists.
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.getsignal(signal.SIGINT) if on_main_thread else None
    try:
        with Watchdog(f"training {model_name}", resources.stall_timeout_s, probe):
            return trainer.fit()
    finally:
        stop_heartbeat()
        if on_main_thread:
            signal.signal(signal.SIGINT, previous_handler)
