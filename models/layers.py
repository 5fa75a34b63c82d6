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


def transfer_head(
    inputs: keras.KerasTensor,
    x: keras.KerasTensor,
    base: keras.Model,
    *,
    pretrained: bool,
    dropout: float,
    num_classes: int,
    name: str,
) -> keras.Model:
    """The pretrained backbones' shared top: base, pooling, a 128-unit layer, dropout, softmax.

    A pretrained base starts frozen and runs in inference mode (its BatchNorm statistics are
    ImageNet's and must not drift while the head learns). From scratch there is nothing to
    protect: the whole base trains, BatchNorm included, and Keras' BatchNorm momentum of 0.99
    needs thousands of steps before its moving statistics (used at validation and scoring) match
    training; small catalogs never get there, so validation collapses to one class. 0.9 converges
    within an epoch or two.
    """
    if pretrained:
        base.trainable = False
        x = base(x, training=False)
    else:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
        x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(128, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def unfreeze_top_layers(base: keras.Model, count: int) -> list[str]:
    """Makes the last `count` layers of `base` trainable, keeping BatchNorm frozen.

    Callers must rebuild their optimizer and step function afterwards: both captured the old
    trainable variable list.

    Returns:
        Names of the base layers that became trainable.
    """
    base.trainable = True
    unfrozen = []
    for index, layer in enumerate(base.layers):
        in_top = index >= len(base.layers) - count
        layer.trainable = in_top and not isinstance(layer, keras.layers.BatchNormalization)
        if layer.trainable and layer.weights:
            unfrozen.append(layer.name)
    return unfrozen
