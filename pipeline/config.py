"""Frozen config sections. Each validates itself and names the key, the value and the fix.

They live in `pipeline` (not `jobs`) because library code and Ray workers rebuild them from
dicts; `jobs/config.py` only loads presets and overrides into them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

IMBALANCE_STRATEGIES = ("none", "class_weight", "oversample", "both")
LEARNING_RATE_SCALINGS = ("linear", "none")
SELECTION_CRITERIA = ("balanced_loss", "loss")
ENGINES = ("auto", "onnx", "keras")


def _check(condition: bool, key: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ValueError(f"{key}={value!r} is invalid; allowed: {allowed}")


@dataclass(frozen=True)
class AugmentConfig:
    """The study's augmentation, applied to training batches only."""

    enabled: bool = True
    rotation_degrees: float = 20.0
    width_shift: float = 0.1
    height_shift: float = 0.1
    shear: float = 0.1
    zoom: float = 0.1
    horizontal_flip: bool = True

    def __post_init__(self) -> None:
        _check(0 <= self.rotation_degrees <= 180, "augment.rotation_degrees", self.rotation_degrees, "0..180")
        for key in ("width_shift", "height_shift", "shear", "zoom"):
            value = getattr(self, key)
            _check(0 <= value < 1, f"augment.{key}", value, "0 <= x < 1")


@dataclass(frozen=True)
class DataConfig:
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    max_image_pixels: int = 40_000_000
    rows_per_block: int = 256

    def __post_init__(self) -> None:
        _check(0 < self.val_fraction < 0.5, "data.val_fraction", self.val_fraction, "0 < x < 0.5")
        _check(0 < self.test_fraction < 0.5, "data.test_fraction", self.test_fraction, "0 < x < 0.5")
        _check(self.max_image_pixels > 0, "data.max_image_pixels", self.max_image_pixels, "> 0")
        _check(self.rows_per_block > 0, "data.rows_per_block", self.rows_per_block, "> 0")


@dataclass(frozen=True)
class ModelConfig:
    names: tuple[str, ...] = ("custom_cnn", "mobilenet_v2")
    # Input side in pixels for every model of the run. None: each model's registry size (96 px for
    # the pretrained bases, measured; 224 px for the CNN), so one run can train both at their own.
    image_size: int | None = None
    # "imagenet", "none", or a local/s3:// weights file for the base. "imagenet" is a Keras download
    # for mobilenet_v2 and the pip-installed checkpoint for efficientnet_lite0 (a file: a legacy
    # PyTorch state dict for efficientnet_lite0, a Keras no-top weights file for mobilenet_v2).
    weights: str = "imagenet"
    # Used only when `weights` cannot be fetched (e.g. no internet); None means fail instead.
    weights_fallback: str | None = None
    dropout: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        _check(
            len(self.names) > 0,
            "model.names",
            self.names,
            "one or more of custom_cnn, mobilenet_v2, efficientnet_lite0",
        )
        _check(
            self.image_size is None or 32 <= self.image_size <= 1024,
            "model.image_size",
            self.image_size,
            "32..1024, or null for each model's registry size",
        )
        _check(0 <= self.dropout < 1, "model.dropout", self.dropout, "0 <= x < 1")
        _check(bool(self.weights), "model.weights", self.weights, "imagenet, none or a weights-file URI")


@dataclass(frozen=True)
class TrainConfig:
    # custom_cnn epoch budget and mobilenet_v2 phase-1 (head) budget; `--epochs` sets both.
    epochs: int = 30
    head_epochs: int = 10
    fine_tune_epochs: int = 5
    fine_tune_layers: int = 20
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    batch_size_per_worker: int = 32
    cnn_patience: int = 5
    transfer_patience: int = 3
    # None: each model's registry default (`models.registry.ModelEntry.imbalance`: oversample for
    # the CNN, class weights for the pretrained bases, as measured); a strategy applies to every model.
    imbalance: str | None = None
    max_failures: int = 1
    run_name: str | None = None
    # Checkpoints kept per model (the latest ones): enough to resume from. Keeping every epoch's
    # filled the output with weights nobody reads (about 200 MB an epoch for custom_cnn at 224 px).
    keep_checkpoints: int = 2
    # Accuracy the rows *not* sent to review should reach; sets the card's review threshold.
    review_target_accuracy: float = 0.99
    # Seeds everything after the split: oversampling, shuffles, augmentation, weight
    # initialisation and dropout. None: `data.seed`, so one number reproduces a whole run; set it
    # to vary training over a fixed split.
    seed: int | None = None
    # Data parallelism grows the global batch (batch_size_per_worker × workers) and cuts the
    # optimizer steps per epoch; "linear" scales both learning rates by global batch /
    # `reference_batch_size` (Goyal et al. 2017), "none" keeps them as given.
    learning_rate_scaling: str = "linear"
    # The global batch the learning rates were chosen for. None: batch_size_per_worker, i.e. the
    # rates are right for one worker and scale with the worker count (the study's batch 32 on 1).
    reference_batch_size: int | None = None
    # Epochs over which a scaled learning rate ramps up from the unscaled one, per phase.
    warmup_epochs: float = 1.0
    # Early stopping and the best epoch: "balanced_loss" is the mean over classes of each class's
    # validation cross-entropy, so a 2-image class counts as much as a 200-image one; "loss" is
    # the plain per-image mean.
    selection: str = "balanced_loss"
    # Validation images a class needs for the card to trust the calibration temperature and the
    # review threshold fitted on them; fewer puts a warning in the card.
    min_fit_images_per_class: int = 10
    # 0: the temperature and review threshold are fitted on the validation split. k in 2..20:
    # they are fitted on out-of-fold predictions of k extra models, each trained on k-1 stratified
    # folds of train+validation, so a class with 2 validation images lends all its train+validation
    # images to the fit. The shipped model is still the one trained normally; training costs k+1 runs.
    calibration_folds: int = 0
    # None: the global batch is batch_size_per_worker × workers, so adding workers adds throughput
    # and `learning_rate_scaling` makes up for the fewer steps. Set: each worker takes
    # global_batch_size / workers images a step, so any worker count takes the steps one worker
    # takes at this batch, at the same learning rates (`reference_batch_size` defaults to it).
    global_batch_size: int | None = None

    @property
    def reference_batch(self) -> int:
        """The global batch the learning rates are meant for (`reference_batch_size` resolved)."""
        if self.reference_batch_size is not None:
            return self.reference_batch_size
        return self.batch_size_per_worker if self.global_batch_size is None else self.global_batch_size

    def batch_per_worker(self, workers: int) -> int:
        """Images each worker takes per optimizer step."""
        return self.batch_size_per_worker if self.global_batch_size is None else self.global_batch_size // workers

    def global_batch(self, workers: int) -> int:
        """Images per optimizer step over all workers."""
        return self.batch_per_worker(workers) * workers

    def smaller_batch_fix(self) -> str:
        """What shrinks the global batch: with `global_batch_size` set, the worker count does not."""
        if self.global_batch_size is not None:
            return "lower train.global_batch_size"
        return "lower --workers or train.batch_size_per_worker, or set a smaller train.global_batch_size"

    def __post_init__(self) -> None:
        for key in ("epochs", "head_epochs", "batch_size_per_worker", "cnn_patience", "transfer_patience"):
            _check(getattr(self, key) > 0, f"train.{key}", getattr(self, key), "a positive integer")
        _check(self.fine_tune_epochs >= 0, "train.fine_tune_epochs", self.fine_tune_epochs, ">= 0")
        _check(self.fine_tune_layers >= 0, "train.fine_tune_layers", self.fine_tune_layers, ">= 0")
        _check(0 < self.learning_rate < 1, "train.learning_rate", self.learning_rate, "0 < x < 1")
        _check(
            0 < self.fine_tune_learning_rate < 1,
            "train.fine_tune_learning_rate",
            self.fine_tune_learning_rate,
            "0 < x < 1",
        )
        _check(
            self.imbalance is None or self.imbalance in IMBALANCE_STRATEGIES,
            "train.imbalance",
            self.imbalance,
            ", ".join(IMBALANCE_STRATEGIES) + ", or null for each model's registry default",
        )
        _check(self.max_failures >= 0, "train.max_failures", self.max_failures, ">= 0")
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", self.keep_checkpoints, "a positive integer")
        _check(
            0 < self.review_target_accuracy <= 1,
            "train.review_target_accuracy",
            self.review_target_accuracy,
            "0 < x <= 1",
        )
        _check(self.seed is None or self.seed >= 0, "train.seed", self.seed, "a non-negative integer or null")
        _check(
            self.learning_rate_scaling in LEARNING_RATE_SCALINGS,
            "train.learning_rate_scaling",
            self.learning_rate_scaling,
            ", ".join(LEARNING_RATE_SCALINGS),
        )
        _check(
            self.reference_batch_size is None or self.reference_batch_size > 0,
            "train.reference_batch_size",
            self.reference_batch_size,
            "a positive integer or null (= batch_size_per_worker)",
        )
        _check(self.warmup_epochs >= 0, "train.warmup_epochs", self.warmup_epochs, ">= 0")
        _check(self.selection in SELECTION_CRITERIA, "train.selection", self.selection, ", ".join(SELECTION_CRITERIA))
        _check(
            self.min_fit_images_per_class >= 1,
            "train.min_fit_images_per_class",
            self.min_fit_images_per_class,
            "a positive integer",
        )
        _check(
            self.calibration_folds == 0 or 2 <= self.calibration_folds <= 20,
            "train.calibration_folds",
            self.calibration_folds,
            "0 (off: fit on the validation split) or 2..20 folds over train+validation",
        )
        _check(
            self.global_batch_size is None or self.global_batch_size > 0,
            "train.global_batch_size",
            self.global_batch_size,
            "a positive integer or null (= batch_size_per_worker × workers)",
        )


@dataclass(frozen=True)
class ResourcesConfig:
    """Named so it does not clash with Ray's ScalingConfig."""

    workers: int = 2
    gpu: bool = False
    cpus_per_worker: float = 1.0
    # Scoring actors, or "auto": one per GPU with `gpu`, else one per `predict.threads_per_actor`
    # CPUs of the Ray cluster as it is when scoring starts (2 on 2 cores, 8 on 8 with 1 thread).
    actors: int | str = 1
    cpus_per_actor: float = 1.0
    # Logical CPUs for an embedded local Ray; None = the machine's count. Ignored on a cluster.
    num_cpus: int | None = None
    # A run with no progress (a training step, a batch of predictions) for this long fails with
    # exit 1 instead of hanging; 0 turns the watchdog off.
    stall_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        _check(self.workers > 0, "resources.workers", self.workers, "a positive integer")
        _check(
            self.actors == "auto"
            or (isinstance(self.actors, int) and not isinstance(self.actors, bool) and self.actors > 0),
            "resources.actors",
            self.actors,
            'a positive integer or "auto"',
        )
        _check(self.cpus_per_worker > 0, "resources.cpus_per_worker", self.cpus_per_worker, "> 0")
        _check(self.cpus_per_actor > 0, "resources.cpus_per_actor", self.cpus_per_actor, "> 0")
        _check(self.num_cpus is None or self.num_cpus > 0, "resources.num_cpus", self.num_cpus, "> 0 or null")
        _check(self.stall_timeout_s >= 0, "resources.stall_timeout_s", self.stall_timeout_s, ">= 0 (0 = off)")


@dataclass(frozen=True)
class PredictConfig:
    # 32 scored ~15% faster than 64 on CPU (activations stay in cache); GPU presets set their own.
    batch_size: int = 32
    top_k: int = 3
    # None: the threshold the model card chose on validation data (train.review_target_accuracy),
    # or 0.5 for artifacts without one.
    low_confidence_threshold: float | None = None
    max_bad_fraction: float = 0.05
    # Rows per prediction file, at most. A file is one scoring block, written by the worker that
    # scored it, so a killed run loses at most the blocks in flight. Blocks grow from
    # data.rows_per_block to this size on big catalogs, keeping 8 or more per actor: fewer blocks
    # cost the driver less (benchmarks/scale.py).
    rows_per_file: int = 4096
    engine: str = "auto"
    # Inference threads per actor. With one actor, decode tasks run beside it and 2 threads pay
    # off; with several CPU actors each decodes its own images, so 1 thread per actor avoids
    # oversubscribing the cores (jobs/configs/local.yaml).
    threads_per_actor: int = 2
    overwrite: bool = False
    # Treat --output as the root of scheduled runs and score only new or changed images.
    incremental: bool = False

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "predict.batch_size", self.batch_size, "a positive integer")
        _check(self.top_k > 0, "predict.top_k", self.top_k, "a positive integer")
        _check(
            self.low_confidence_threshold is None or 0 <= self.low_confidence_threshold <= 1,
            "predict.low_confidence_threshold",
            self.low_confidence_threshold,
            "0..1",
        )
        _check(0 <= self.max_bad_fraction <= 1, "predict.max_bad_fraction", self.max_bad_fraction, "0..1")
        _check(self.rows_per_file > 0, "predict.rows_per_file", self.rows_per_file, "> 0")
        _check(self.engine in ENGINES, "predict.engine", self.engine, ", ".join(ENGINES))
        _check(self.threads_per_actor > 0, "predict.threads_per_actor", self.threads_per_actor, "a positive integer")


DRIFT_EXIT_ON = ("never", "warn", "alert")


@dataclass(frozen=True)
class DriftConfig:
    """When a scoring run's drift report (`pipeline/score/drift.py`) says warn or alert."""

    # Population-stability index bands, the usual ones: under 0.1 ok, under 0.25 warn, else alert.
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    # Fewer scored rows than this (this run, or the reference) are shown but not judged: a PSI of a
    # handful of rows is noise, and a nightly run with three new images would alert every night.
    min_rows: int = 100
    # "never" keeps exit 0 on drift (a scheduler reads run.json); "warn" or "alert" exit 3 at that
    # status or worse, after every row is written. Off by default: a RayJob or CronJob treats any
    # non-zero exit as a failure to retry.
    exit_on: str = "never"
    # Rows whose probabilities the EM prior estimate reads (a seeded sample of the prediction
    # files); 0 turns the estimate off.
    prior_sample_rows: int = 20_000

    def __post_init__(self) -> None:
        _check(0 < self.psi_warn < self.psi_alert, "drift.psi_warn", self.psi_warn, "0 < x < drift.psi_alert")
        _check(self.min_rows >= 1, "drift.min_rows", self.min_rows, "a positive integer")
        _check(self.exit_on in DRIFT_EXIT_ON, "drift.exit_on", self.exit_on, ", ".join(DRIFT_EXIT_ON))
        _check(self.prior_sample_rows >= 0, "drift.prior_sample_rows", self.prior_sample_rows, ">= 0 (0 = off)")


@dataclass(frozen=True)
class JobConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)

    def __post_init__(self) -> None:
        fixed, workers = self.train.global_batch_size, self.resources.workers
        _check(
            fixed is None or fixed % workers == 0,
            "train.global_batch_size",
            fixed,
            f"a multiple of resources.workers={workers}, so every worker takes the same batch "
            "(or null for batch_size_per_worker × workers)",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def training_seed(self) -> int:
        """`train.seed`, or `data.seed` when it is not set."""
        return self.data.seed if self.train.seed is None else self.train.seed

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> JobConfig:
        """Builds the config from nested dicts; unknown sections or keys are errors."""
        sections = {section.name: section.type for section in dataclasses.fields(cls)}
        built = {}
        for name, section_values in values.items():
            if name not in sections:
                raise ValueError(f"unknown config section {name!r}; known: {sorted(sections)}")
            section_type = _SECTION_TYPES[name]
            known = {f.name for f in dataclasses.fields(section_type)}
            unknown = set(section_values or {}) - known
            if unknown:
                raise ValueError(f"unknown key(s) {sorted(unknown)} in section {name!r}; known: {sorted(known)}")
            built[name] = section_type(**(section_values or {}))
        return cls(**built)


_SECTION_TYPES = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "resources": ResourcesConfig,
    "predict": PredictConfig,
    "drift": DriftConfig,
}
