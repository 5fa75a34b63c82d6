"""EfficientNet-Lite0: the torch-free checkpoint reader, the PyTorch → Keras layout, and real ImageNet predictions."""

from __future__ import annotations

import pickle

import keras
import numpy as np
import pytest
from PIL import Image

from models.efficientnet_lite0 import (
    build_base,
    keras_to_torch_names,
    load_torch_weights,
    packaged_checkpoint,
    torch_to_keras_kernel,
)
from models.spec import InputSpec
from models.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, read_state_dict

# ImageNet-1k class indices (the standard synset order).
ESPRESSO, CUP = 967, 968
TABBY, TIGER_CAT, EGYPTIAN_CAT = 281, 282, 285


@pytest.fixture(scope="module")
def state():
    return read_state_dict(packaged_checkpoint())


def test_the_packaged_checkpoint_reads_into_arrays_with_pytorch_layouts(state):
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)  # OIHW
    assert state["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.running_var"].dtype == np.float32 and (state["_bn0.running_var"] >= 0).all()


EVIL = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."  # os.system("true")


@pytest.mark.parametrize("position", [0, 1, 2, 3])
def test_a_checkpoint_that_asks_for_anything_but_tensors_is_refused(tmp_path, position):
    """A plain pickle.load would run this; the reader must refuse it before calling anything, in
    the header pickles (magic, protocol, system info) as in the state dict."""
    path = tmp_path / "evil.pth"
    with open(path, "wb") as stream:
        for index, header in enumerate((LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True})):
            stream.write(EVIL) if index == position else pickle.dump(header, stream, protocol=2)
        if position == 3:
            stream.write(EVIL)
    with pytest.raises(ValueError, match="refusing os.system"):
        read_state_dict(path)


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n not a pickle")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        read_state_dict(path)


def _torch_conv2d(images: np.ndarray, weight: np.ndarray, groups: int = 1) -> np.ndarray:
    """PyTorch's conv2d semantics (NCHW-free: NHWC in and out), stride 1, valid, by definition."""
    batch, height, width, channels = images.shape
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    out = np.zeros((batch, height - kernel_h + 1, width - kernel_w + 1, out_channels), np.float64)
    per_group_out = out_channels // groups
    for o in range(out_channels):
        group = o // per_group_out
        for i in range(in_per_group):
            channel = group * in_per_group + i
            for dy in range(kernel_h):
                for dx in range(kernel_w):
                    patch = images[:, dy : dy + out.shape[1], dx : dx + out.shape[2], channel]
                    out[..., o] += weight[o, i, dy, dx] * patch
    return out


@pytest.mark.parametrize("depthwise", [False, True])
def test_converted_kernels_compute_what_pytorch_computes(depthwise):
    """Asymmetric kernels and distinct channels: any wrong transpose changes the output."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 7, 6, 4)).astype("float32")
    if depthwise:
        weight = rng.normal(size=(4, 1, 3, 2)).astype("float32")
        layer = keras.layers.DepthwiseConv2D((3, 2), use_bias=False)
        expected = _torch_conv2d(images, weight, groups=4)
    else:
        weight = rng.normal(size=(5, 4, 3, 2)).astype("float32")
        layer = keras.layers.Conv2D(5, (3, 2), use_bias=False)
        expected = _torch_conv2d(images, weight)
    layer.build(images.shape)
    layer.set_weights([torch_to_keras_kernel(weight, depthwise)])
    np.testing.assert_allclose(layer(images).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_every_base_layer_with_weights_has_a_checkpoint_entry(state):
    base = build_base(InputSpec(image_size=32), include_top=True)
    names = keras_to_torch_names(16)
    torch_modules = {key.rsplit(".", 1)[0] for key in state}
    layers_with_weights = [layer.name for layer in base.layers if layer.weights]
    assert {names[name] for name in layers_with_weights} == torch_modules


def test_a_checkpoint_of_another_shape_is_rejected_naming_the_layer(state):
    wrong = dict(state, **{"_blocks.5._project_conv.weight": np.zeros((40, 200, 1, 1), np.float32)})
    base = build_base(InputSpec(image_size=32))
    with pytest.raises(ValueError, match="_blocks.5._project_conv.* block5_project_conv"):
        load_torch_weights(base, wrong, block_count=16)


def _photo(name: str, size: int = 224) -> np.ndarray:
    """A scikit-image sample photo, centre-cropped to a square and resized as scoring does."""
    from skimage import data

    pixels = getattr(data, name)()
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(pixels[top : top + side, left : left + side])
    return np.asarray(square.resize((size, size), Image.BILINEAR), dtype="float32")


@pytest.fixture(scope="module")
def imagenet_classifier():
    """The packaged ImageNet weights with their 1000-class top, behind the product's rescaling."""
    from models.efficientnet_lite0 import input_spec
    from models.layers import rescaling

    spec = input_spec(224)
    inputs = keras.Input(shape=spec.shape)
    outputs = build_base(spec, "imagenet", include_top=True)(rescaling(spec)(inputs))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    ("photo", "expected"), [("coffee", {ESPRESSO, CUP}), ("chelsea", {TABBY, TIGER_CAT, EGYPTIAN_CAT})]
)
def test_packaged_weights_recognise_imagenet_sample_photos(imagenet_classifier, photo, expected):
    probabilities = imagenet_classifier(_photo(photo)[None], training=False).numpy()[0]
    top = int(np.argmax(probabilities))
    assert top in expected, f"{photo}: top-1 class {top} ({probabilities[top]:.2f}), expected one of {expected}"
    assert probabilities[sorted(expected)].sum() > 0.5
