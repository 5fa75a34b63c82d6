"""Keras layers the builders share (kept apart from `models.spec`, which must not import Keras)."""

from __future__ import annotations

import keras

from models.spec import InputSpec


def rescaling(spec: InputSpec) -> keras.layers.Rescaling:
    """The first layer of every model: maps raw [0, 255] pixels onto `spec.pixel_range`.

    Deriving the layer from the spec keeps the model card's `pixel_range` and what the model does
    from ever disagreeing.
    """
    low, high = spec.pixel_range
    return keras.layers.Rescaling((high - low) / 255.0, offset=low, name="rescale")
