"""The study's custom CNN: three conv/pool blocks, a dense layer and dropout."""

from __future__ import annotations

import keras

from models.layers import rescaling
from models.spec import InputSpec


def input_spec(image_size: int) -> InputSpec:
    return InputSpec(image_size=image_size, pixel_range=(0.0, 1.0))


def build_custom_cnn(num_classes: int, spec: InputSpec, dropout: float = 0.5) -> keras.Model:
    """Builds the CNN of the original study (Conv 32→64→128, Dense 128, Dropout, softmax).

    Args:
        num_classes: Output classes.
        spec: Input size and pixel range; pixels arrive in [0, 255] and the first layer maps them
            onto `spec.pixel_range` ([0, 1] as declared by `input_spec`).
        dropout: Dropout rate before the classifier.

    Returns:
        An uncompiled model that outputs class probabilities.
    """
    inputs = keras.Input(shape=spec.shape, name="image")
    x = rescaling(spec)(inputs)
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, activation="relu", padding="same", name=f"conv{filters}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{filters}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="custom_cnn")
