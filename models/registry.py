"""Model registry: name → builder and the facts the pipeline acts on. Pure Keras, no Ray, no I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

from models import custom_cnn, efficientnet_lite0, mobilenet_v2
from models.spec import InputSpec


@dataclass(frozen=True)
class BackboneDefaults:
    """What a pretrained backbone was measured to need; the README's image-size table is the source.

    `image_size` is the side the backbone trains at when the run's `model.image_size` is null (the
    default); the epochs and layers say what to set per run (the config's apply to every model).
    """

    image_size: int
    head_epochs: int
    fine_tune_epochs: int
    fine_tune_layers: int
    # Side of the base's last feature map at `image_size` (input / 32 for both bases): at 2×2 the
    # global average pool sees four cells, too few for the head to find the object in.
    note: str = ""


@dataclass(frozen=True)
class ModelEntry:
    """A model's builder and the facts the pipeline acts on, so no caller branches on a name."""

    build: Callable[..., keras.Model]
    input_spec: Callable[[int], InputSpec]
    # Takes pretrained base weights (`build(..., weights=...)`): "imagenet", a local .h5 or None.
    takes_weights: bool = False
    # With weights: train the head first, then this unfreezes the top `count` base layers.
    unfreeze_top: Callable[[keras.Model, int], list[str]] | None = None
    # Builds the base with `weights` ("imagenet" or a local file) at an image size, raising if they
    # do not fit; returns what the model card says about them.
    check_weights: Callable[[str, int], str] | None = None
    defaults: BackboneDefaults | None = None
    # How training meets class imbalance when the run's `train.imbalance` is null (the default):
    # one of "none", "class_weight", "oversample", "both" (`pipeline.config.IMBALANCE_STRATEGIES`).
    imbalance: str = "class_weight"

    @property
    def two_phase(self) -> bool:
        """Head first, then fine-tune the top of a pretrained base."""
        return self.unfreeze_top is not None

    def image_size_for(self, configured: int | None) -> int:
        """The side this model trains at: the run's `model.image_size` when set, else the measured
        backbone default, else `SCRATCH_IMAGE_SIZE`."""
        if configured is not None:
            return configured
        return self.defaults.image_size if self.defaults is not None else SCRATCH_IMAGE_SIZE

    def imbalance_for(self, configured: str | None) -> str:
        """The imbalance strategy this model trains with: the run's `train.imbalance` when set,
        else the model's measured default."""
        return configured if configured is not None else self.imbalance


# A model trained from scratch has no measured size: the study's 224 px, what ImageNet-sized
# product photos are usually scaled to.
SCRATCH_IMAGE_SIZE = 224

# Both pretrained bases shrink their input 32 times: 96 px is the cheapest size whose last feature
# map is 3×3, not 2×2 (benchmarks/backbone_image_size.py); epochs and layers are the config's.
PRETRAINED_DEFAULTS = BackboneDefaults(
    image_size=96, head_epochs=10, fine_tune_epochs=5, fine_tune_layers=20, note="3×3 final map at 96 px"
)

# The CNN, trained from scratch, learns a class of 10 training images from oversampled, augmented
# copies far better than from a 27× class weight on those 10: held-out macro-F1 0.93 against 0.88
# at 96 px over six seeds (p = 0.005), with the rare class's F1 0.89 against 0.76 (README Results). The
# pretrained bases keep class weights: MobileNetV2 showed no gain from oversampling (0.922 against
# 0.921), and EfficientNet-Lite0 was measured with class weights only.
SCRATCH_IMBALANCE = "oversample"

MODEL_BUILDERS: dict[str, ModelEntry] = {
    "custom_cnn": ModelEntry(custom_cnn.build_custom_cnn, custom_cnn.input_spec, imbalance=SCRATCH_IMBALANCE),
    "mobilenet_v2": ModelEntry(
        mobilenet_v2.build_mobilenet_v2,
        mobilenet_v2.input_spec,
        takes_weights=True,
        unfreeze_top=mobilenet_v2.unfreeze_top_layers,
        check_weights=mobilenet_v2.check_weights,
        defaults=PRETRAINED_DEFAULTS,
    ),
    "efficientnet_lite0": ModelEntry(
        efficientnet_lite0.build_efficientnet_lite0,
        efficientnet_lite0.input_spec,
        takes_weights=True,
        unfreeze_top=efficientnet_lite0.unfreeze_top_layers,
        check_weights=efficientnet_lite0.check_weights,
        defaults=PRETRAINED_DEFAULTS,
    ),
}


def get_entry(name: str) -> ModelEntry:
    """Looks a model up by name.

    Raises:
        ValueError: The name is not registered; the message lists the valid names.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model name {name!r}; choose from {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name]


def image_sizes(names: tuple[str, ...], configured: int | None) -> dict[str, int]:
    """{model name: the side it trains at} for one run (see `ModelEntry.image_size_for`).

    Raises:
        ValueError: An unknown name.
    """
    return {name: get_entry(name).image_size_for(configured) for name in names}


def imbalances(names: tuple[str, ...], configured: str | None) -> dict[str, str]:
    """{model name: the imbalance strategy it trains with} for one run (`ModelEntry.imbalance_for`).

    Raises:
        ValueError: An unknown name.
    """
    return {name: get_entry(name).imbalance_for(configured) for name in names}


def build_model(
    name: str,
    num_classes: int,
    image_size: int,
    *,
    pixel_range: tuple[float, float] | None = None,
    **options: Any,
) -> keras.Model:
    """Builds a registered model with its declared input spec.

    Args:
        name: Registry key, e.g. "custom_cnn".
        num_classes: Output classes (at least 2).
        image_size: Square input side in pixels.
        pixel_range: What the first layer maps [0, 255] onto, instead of the range the builder
            declares; for comparisons against models fed the wrong range, never for the product.
        **options: Builder-specific options (e.g. `weights` for the pretrained backbones).

    Raises:
        ValueError: Unknown name, fewer than two classes or an empty pixel range.
    """
    entry = get_entry(name)
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}; a classifier needs at least 2 classes")
    spec = entry.input_spec(image_size)
    if pixel_range is not None:
        spec = dataclasses.replace(spec, pixel_range=pixel_range)
    return entry.build(num_classes, spec, **options)
