"""Every registered model builds small, outputs probabilities, and MobileNetV2 fine-tunes only its top."""

from __future__ import annotations

import numpy as np
import pytest

from models import MODEL_BUILDERS, build_model, get_entry
from models.mobilenet_v2 import base_model, unfreeze_top_layers


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_every_model_outputs_probabilities(name):
    model = build_model(name, num_classes=5, image_size=32)
    pixels = np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
    probabilities = model(pixels, training=False).numpy()
    assert probabilities.shape == (4, 5)
    assert not np.isnan(probabilities).any()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="custom_cnn"):
        build_model("resnet9000", num_classes=3, image_size=32)


def test_preprocessing_is_inside_the_model():
    """MobileNetV2 must see [-1, 1] (the study fed it [0, 1]); the CNN sees [0, 1]."""
    for name, expected in (("mobilenet_v2", (-1.0, 1.0)), ("custom_cnn", (0.0, 1.0))):
        model = build_model(name, num_classes=3, image_size=32)
        rescale = model.get_layer("rescale")
        low, high = (float(rescale(np.full((1, 1, 1, 1), v, "float32")).numpy().ravel()[0]) for v in (0, 255))
        assert (low, high) == pytest.approx(expected)
        assert get_entry(name).input_spec(32).pixel_range == expected


def _rescaled_ends(model):
    rescale = model.get_layer("rescale")
    return tuple(float(rescale(np.full((1, 1, 1, 1), v, "float32")).numpy().ravel()[0]) for v in (0, 255))


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_a_pixel_range_given_to_build_model_is_the_one_the_first_layer_maps_onto(name):
    """The accuracy benchmark rebuilds the study's MobileNetV2 fed [0, 1] through this option."""
    assert _rescaled_ends(build_model(name, num_classes=3, image_size=32, pixel_range=(0.0, 1.0))) == pytest.approx(
        (0.0, 1.0)
    )
    assert _rescaled_ends(build_model(name, num_classes=3, image_size=32, pixel_range=(-2.0, 3.0))) == pytest.approx(
        (-2.0, 3.0)
    )
    with pytest.raises(ValueError, match="pixel_range"):
        build_model(name, num_classes=3, image_size=32, pixel_range=(1.0, 1.0))


def test_custom_cnn_is_the_study_architecture():
    model = build_model("custom_cnn", num_classes=5, image_size=64)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [layer.filters for layer in convs] == [32, 64, 128]
    assert model.get_layer("dense").units == 128
    assert model.get_layer("dropout").rate == 0.5


@pytest.fixture(scope="module")
def local_base_weights(tmp_path_factory):
    """A Keras weights file for the no-top base, made here (no download)."""
    import keras

    path = str(tmp_path_factory.mktemp("weights") / "base.weights.h5")
    keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None).save_weights(path)
    return path


def test_pretrained_base_is_frozen_and_from_scratch_base_trains(local_base_weights):
    pretrained = build_model("mobilenet_v2", num_classes=3, image_size=32, weights=local_base_weights)
    base_paths = {v.path for v in base_model(pretrained).weights}
    assert not base_paths & {v.path for v in pretrained.trainable_variables}
    assert len(pretrained.trainable_variables) == 4  # Dense 128 and the classifier
    scratch = build_model("mobilenet_v2", num_classes=3, image_size=32, weights=None)
    scratch_base = base_model(scratch)
    assert {v.path for v in scratch_base.trainable_variables} == {
        v.path for v in scratch_base.weights if "moving_" not in v.path
    }


def test_fine_tuning_unfreezes_only_the_last_base_layers_and_keeps_batchnorm_frozen(local_base_weights):
    model = build_model("mobilenet_v2", num_classes=3, image_size=32, weights=local_base_weights)
    base = base_model(model)
    unfreeze_top_layers(model, 20)
    top = base.layers[-20:]
    trainable_base_layers = {layer.name for layer in base.layers if layer.trainable and layer.weights}
    assert trainable_base_layers <= {layer.name for layer in top}
    assert trainable_base_layers
    assert not any(layer.trainable for layer in base.layers if layer.__class__.__name__ == "BatchNormalization")
