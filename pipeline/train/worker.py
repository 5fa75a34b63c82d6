"""The Ray Train worker loop: one or two phases of a `tf.function` step, early stopping, checkpoints.

Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the loop
is a `tf.function` step run through `strategy.run`; the same code serves 1 and N workers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import ray.train
from ray.train import Checkpoint

from models import build_model, get_entry
from pipeline import console
from pipeline.artifacts import fetch_weights
from pipeline.config import TrainConfig
from pipeline.schema import IMAGE
from pipeline.tf_runtime import configure_tensorflow
from pipeline.train.data import LABEL_INDEX
from pipeline.train.learning_rates import make_schedule, scaled_learning_rate
from pipeline.train.selection import balanced_loss, class_loss_sums
from pipeline.watchdog import HeartbeatSender

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
CURRENT_WEIGHTS = "current.npz"
BEST_WEIGHTS = "best.npz"
# Adam's step count and moments for the phase in progress: without them a resumed phase restarts
# with zero moments and a fresh bias correction, a different trajectory from an uninterrupted run.
OPTIMIZER_STATE = "optimizer.npz"
FINAL_MODEL = "model.keras"


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
    # Seeds weight initialisation and dropout (`JobConfig.training_seed`).
    seed: int = 0
    # The strategy this model's data and `class_weights` were made with: `train.imbalance`, or the
    # model's registry default when that is null. The card records it.
    imbalance: str = "class_weight"
    # Optimizer steps over which a scaled learning rate ramps up, per phase (`warmup_steps`).
    warmup_steps: int = 0
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
    def batch_size_per_worker(self) -> int:
        return self.train.batch_per_worker(self.workers)

    @property
    def global_batch_size(self) -> int:
        return self.train.global_batch(self.workers)


@dataclass
class TrainingState:
    """What a checkpoint must carry for a restarted worker group to continue where it stopped."""

    phase: int = 0
    epoch_in_phase: int = 0
    epochs_done: int = 0
    best_val_loss: float = float("inf")  # the plain validation loss at the best epoch
    best_score: float = float("inf")  # the selection criterion (`train.selection`) at the best epoch
    best_epoch: int = -1
    wait: int = 0
    done: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    # Epochs at which a restarted worker group (killed worker, or a rerun after a killed driver)
    # picked up from a checkpoint: the model card reports them, so a recovery is never invisible.
    resumed_at_epochs: list[int] = field(default_factory=list)


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


def _evaluate(
    predict: Any, iterator: Any, batch_size: int, num_classes: int, beat: Callable[[], None]
) -> tuple[float, float, float]:
    """Unweighted loss, accuracy and class-balanced loss over a whole (unsplit) dataset on this worker."""
    import keras
    import tensorflow as tf

    loss_sums, counts, correct = np.zeros(num_classes), np.zeros(num_classes), 0.0
    for batch in iterator.iter_tf_batches(batch_size=batch_size):
        probabilities = predict(batch[IMAGE])
        labels = batch[LABEL_INDEX]
        per_example = keras.losses.sparse_categorical_crossentropy(labels, probabilities).numpy()
        batch_sums, batch_counts = class_loss_sums(labels.numpy(), per_example, num_classes)
        loss_sums, counts = loss_sums + batch_sums, counts + batch_counts
        hits = tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), tf.cast(labels, tf.int32))
        correct += float(tf.reduce_sum(tf.cast(hits, tf.float32)))
        beat()
    count = max(float(counts.sum()), 1.0)
    return float(loss_sums.sum()) / count, correct / count, balanced_loss(loss_sums, counts)


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


@dataclass(frozen=True)
class Phase:
    name: str  # "train" (one phase), or "head" then "fine_tune"
    epochs: int
    learning_rate: float  # after scaling with the global batch (pipeline/train/learning_rates.py)
    patience: int
    base_learning_rate: float  # as configured; a warm-up starts from it


def plan_phases(settings: WorkerConfig) -> list[Phase]:
    """One phase for a model trained whole; head then fine-tune for a pretrained base."""
    train = settings.train

    def phase(name: str, epochs: int, base: float, patience: int) -> Phase:
        rule, reference = train.learning_rate_scaling, train.reference_batch
        return Phase(
            name, epochs, scaled_learning_rate(base, settings.global_batch_size, reference, rule), patience, base
        )

    if not settings.two_phase:
        return [phase("train", train.epochs, train.learning_rate, train.cnn_patience)]
    phases = [phase("head", train.head_epochs, train.learning_rate, train.transfer_patience)]
    if train.fine_tune_epochs > 0:
        phases.append(
            phase("fine_tune", train.fine_tune_epochs, train.fine_tune_learning_rate, train.transfer_patience)
        )
    return phases


@dataclass
class WorkerRun:
    """One worker's model, state and collectives: what the phases of the loop share."""

    settings: WorkerConfig
    strategy: Any
    model: Any
    rank: int
    beat: HeartbeatSender
    state: TrainingState = field(default_factory=TrainingState)
    best_weights: dict[str, np.ndarray] = field(default_factory=dict)
    saved_optimizer: list[np.ndarray] | None = None  # Adam's state to continue the restored phase
    restored_phase: int | None = None  # the phase a checkpoint was taken in, until it is continued

    def __post_init__(self) -> None:
        self.predict, self.agree = _make_predict(self.model), _make_agree(self.strategy)
        self.best_weights = self.best_weights or _weights_by_path(self.model)

    def unfreeze(self) -> None:
        unfreeze_top = get_entry(self.settings.model_name).unfreeze_top
        if unfreeze_top is not None:
            unfreeze_top(self.model, self.settings.train.fine_tune_layers)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: builds the model under the strategy, trains one or two phases with early
    stopping on the validation criterion (`train.selection`), reports metrics and a checkpoint
    every epoch, and resumes from `ray.train.get_checkpoint()` after a restart."""
    settings = WorkerConfig.from_dict(config)
    beat = HeartbeatSender(settings.heartbeat)
    beat()  # start-up (TensorFlow import, strategy set-up, weights) is progress too
    configure_tensorflow(settings.cpus_per_worker, settings.gpu)
    import keras
    import tensorflow as tf

    # Same seed on every worker: MultiWorkerMirroredStrategy broadcasts rank 0's initial weights
    # anyway, and dropout then depends on the seed and the (seeded) batches only. Op determinism
    # makes TensorFlow's kernels repeat their results, which the seed alone does not promise.
    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = _build_model(settings)
    beat(force=True)
    run = WorkerRun(settings, strategy, model, ray.train.get_context().get_world_rank(), beat)
    _restore(run, ray.train.get_checkpoint())
    if run.rank == 0:
        logger.info(
            "training %s: batch_size_per_worker=%d global_batch_size=%d workers=%d",
            settings.model_name,
            settings.batch_size_per_worker,
            settings.global_batch_size,
            settings.workers,
        )
    for index, phase in enumerate(plan_phases(settings)):
        if not run.state.done and index >= run.state.phase:
            _train_phase(run, index, phase)
    _finish(run)


def _build_model(settings: WorkerConfig) -> Any:
    options: dict[str, Any] = {"dropout": settings.dropout}
    if get_entry(settings.model_name).takes_weights:
        weights = settings.weights
        options["weights"] = fetch_weights(weights) if weights not in (None, "imagenet") else weights
    return build_model(settings.model_name, settings.num_classes, settings.image_size, **options)


def _restore(run: WorkerRun, checkpoint: Checkpoint | None) -> None:
    """Continues from Ray Train's latest checkpoint after a restart: state, weights, Adam's state."""
    if checkpoint is None:
        return
    with checkpoint.as_directory() as directory:
        with open(os.path.join(directory, STATE_FILE)) as handle:
            run.state = TrainingState(**json.load(handle))
        run.state.resumed_at_epochs.append(run.state.epochs_done)
        if run.settings.two_phase and run.state.phase >= 1:
            run.unfreeze()
        _assign_by_path(run.model, _load_npz(os.path.join(directory, CURRENT_WEIGHTS)))
        run.best_weights = _load_npz(os.path.join(directory, BEST_WEIGHTS))
        if os.path.exists(os.path.join(directory, OPTIMIZER_STATE)):
            saved = _load_npz(os.path.join(directory, OPTIMIZER_STATE))
            run.saved_optimizer = [saved[key] for key in sorted(saved)]
    run.restored_phase = run.state.phase
    logger.info("resumed %s at phase %d, epoch %d", run.settings.model_name, run.state.phase, run.state.epochs_done)


def _train_phase(run: WorkerRun, index: int, phase: Phase) -> None:
    """Epochs of one phase until its budget or early stopping; leaves the best weights in place."""
    import keras

    state, settings = run.state, run.settings
    # Only the phase the checkpoint was taken in continues; a later one starts as in a fresh run
    # (a run resumed during the head phase still unfreezes the base for fine-tuning).
    continuing, run.restored_phase = run.restored_phase == index, None
    if phase.name == "fine_tune" and not continuing:
        run.unfreeze()
    # A fresh optimizer and step per phase: both captured the old trainable variables.
    with run.strategy.scope():
        optimizer = keras.optimizers.Adam(
            make_schedule(phase.base_learning_rate, phase.learning_rate, settings.warmup_steps)
        )
        optimizer.build(run.model.trainable_variables)
        if run.saved_optimizer is not None and continuing and state.epoch_in_phase > 0:
            _restore_optimizer(optimizer, run.saved_optimizer)
        run.saved_optimizer = None
    step = _make_train_step(run.strategy, run.model, optimizer, settings.class_weights, settings.global_batch_size)
    while state.epoch_in_phase < phase.epochs:
        row = _one_epoch(run, phase, step, optimizer)
        if _should_stop(run, row, index, phase, optimizer):
            return


def _one_epoch(run: WorkerRun, phase: Phase, step: Any, optimizer: Any) -> dict[str, Any]:
    """Trains on this worker's shard once, then validates on the whole validation set."""
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    loss_sum, correct, steps = 0.0, 0.0, 0
    shard = ray.train.get_dataset_shard("train")
    for batch in shard.iter_tf_batches(batch_size=run.settings.batch_size_per_worker, drop_last=True):
        loss, hits = step(batch[IMAGE], tf.cast(batch[LABEL_INDEX], tf.int32))
        loss_sum, correct, steps = loss_sum + float(loss), correct + float(hits), steps + 1
        run.beat()
    val_data = ray.train.get_dataset_shard("val")
    val_loss, val_accuracy, val_balanced_loss = _evaluate(
        run.predict, val_data, run.settings.batch_size_per_worker * 2, run.settings.num_classes, run.beat
    )
    return {
        "phase": phase.name,
        "epoch": run.state.epochs_done + 1,
        "loss": loss_sum / max(steps, 1),
        "accuracy": correct / max(steps * run.settings.global_batch_size, 1),
        "val_loss": run.agree(val_loss),  # every worker takes the same stopping decision
        "val_accuracy": val_accuracy,
        "val_balanced_loss": run.agree(val_balanced_loss),
        "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
        "steps": steps,
        "seconds": time.perf_counter() - started,
        "optimizer_steps": int(optimizer.iterations.numpy()),
        "rss_mb": _rss_mb(),
        "trainable_weights": len(run.model.trainable_weights),  # shows the base unfrozen for fine-tuning
    }


def _should_stop(run: WorkerRun, row: dict[str, Any], index: int, phase: Phase, optimizer: Any) -> bool:
    """Records the epoch, keeps the best weights, reports a checkpoint; True when the phase ends."""
    state = run.state
    state.history.append(row)
    state.epochs_done += 1
    state.epoch_in_phase += 1
    epoch_in_phase = state.epoch_in_phase
    score = row["val_balanced_loss"] if run.settings.train.selection == "balanced_loss" else row["val_loss"]
    if score < state.best_score - 1e-6:
        state.best_score, state.best_val_loss = score, row["val_loss"]
        state.best_epoch, state.wait = state.epochs_done, 0
        run.best_weights = _weights_by_path(run.model)
    else:
        state.wait += 1
    stop = state.wait >= phase.patience
    phase_over = stop or state.epoch_in_phase >= phase.epochs
    if phase_over:
        _assign_by_path(run.model, run.best_weights)  # restore the best weights before the next phase
        state.phase, state.epoch_in_phase, state.wait = index + 1, 0, 0
    # At a phase's end the next phase starts a fresh optimizer: nothing to carry over.
    _report(run.rank, row, state, run.model, run.best_weights, optimizer=None if phase_over else optimizer)
    if run.rank == 0:
        later = sum(later_phase.epochs for later_phase in plan_phases(run.settings)[index + 1 :])
        epochs_left = later + (0 if phase_over else phase.epochs - epoch_in_phase)
        console.say(
            console.epoch_line(
                run.settings.model_name, phase.name, epoch_in_phase, phase.epochs, row, row["seconds"] * epochs_left
            )
        )
    if stop:
        logger.info(
            "early stopping %s in phase %s at epoch %d (best epoch %d)",
            run.settings.model_name,
            phase.name,
            state.epochs_done,
            state.best_epoch,
        )
    return phase_over


def _finish(run: WorkerRun) -> None:
    """The best epoch's weights, saved whole in the final checkpoint."""
    run.state.done = True
    _assign_by_path(run.model, run.best_weights)
    final = {
        "final": True,
        "best_epoch": run.state.best_epoch,
        "best_val_loss": run.state.best_val_loss,
        "best_score": run.state.best_score,
    }
    _report(run.rank, final, run.state, run.model, run.best_weights, final=True)


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
