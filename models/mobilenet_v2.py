"""MobileNetV2 transfer model: frozen base in inference mode, a small head, top-N fine-tuning."""

from __future__ import annotations

import warnings
from typing import Any

import keras

from models import layers
from models.layers import rescaling, transfer_head
from models.spec import InputSpec

BASE_NAME = "mobilenetv2_base"


def input_spec(image_size: int) -> InputSpec:
    return InputSpec(image_size=image_size, pixel_range=(-1.0, 1.0))


def build_mobilenet_v2(
    num_classes: int,
    spec: InputSpec,
    weights: str | None = None,
    dropout: float = 0.5,
) -> keras.Model:
    """Builds MobileNetV2 (alpha 1.0, no top) with a GAP → Dense 128 → Dropout → softmax head.

    The base is called with `training=False` so its BatchNorm statistics stay frozen even after
    fine-tuning unfreezes layers (keras-io transfer-learning guide). Pixels arrive in [0, 255] and
    are mapped onto `spec.pixel_range` inside the model: `input_spec` declares [-1, 1], which is
    what MobileNetV2 was trained on; the study fed it [0, 1], one of the defects this product must
    not copy (a benchmark reproduces it by passing another range).

    Args:
        num_classes: Output classes.
        spec: Input size and pixel range.
        weights: None (random init), "imagenet" (Keras download) or a local path to a Keras
            weights file for the no-top base.
        dropout: Dropout rate before the classifier.

    Returns:
        An uncompiled model; its base is frozen when pretrained weights are given.
    """
    inputs = keras.Input(shape=spec.shape, name="image")
    x = rescaling(spec)(inputs)
    base = _base(spec.shape, weights, name=BASE_NAME)
    return transfer_head(
        inputs, x, base, pretrained=weights is not None, dropout=dropout, num_classes=num_classes, name="mobilenet_v2"
    )


def check_weights(weights: str, image_size: int) -> str:
    """Builds the no-top base with `weights` ("imagenet" downloads through Keras, once per machine).

    Returns:
        What the model card says about the weights.

    Raises:
        Exception: Whatever Keras raises for a failed download or a file that does not fit.
    """
    _base((image_size, image_size, 3), weights)
    return "imagenet (Keras applications download)" if weights == "imagenet" else weights


def _base(shape: tuple[int, int, int], weights: str | None, **options: Any) -> keras.Model:
    """The no-top base. Keras warns that sizes other than 96..224 get the 224 px weights "as the
    default": for a no-top base those are the same convolutions at any size, so the warning (shown
    on every demo run at 64 px) says nothing a user should act on; the card records the weights."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`input_shape` is undefined or non-square", category=UserWarning)
        return keras.applications.MobileNetV2(
            input_shape=shape, alpha=1.0, include_top=False, weights=weights, **options
        )


def base_model(model: keras.Model) -> keras.Model:
    return model.get_layer(BASE_NAME)


def unfreeze_top_layers(model: keras.Model, count: int) -> list[str]:
    """Makes the last `count` layers of the base trainable, keeping BatchNorm frozen.

    Callers must rebuild their optimizer and step function afterwards: both captured the old
    trainable variable list.

    Returns:
        Names of the base layers that became trainable.
    """
    return layers.unfreeze_top_layers(base_model(model), count)
