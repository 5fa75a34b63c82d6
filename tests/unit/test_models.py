"""Every registered model builds small, outputs probabilities, and pretrained bases fine-tune only their top."""

from __future__ import annotations

import numpy as np
import pytest

from models import MODEL_BUILDERS, build_model, efficientnet_lite0, get_entry, mobilenet_v2
from models.registry import PRETRAINED_DEFAULTS, SCRATCH_IMAGE_SIZE, BackboneDefaults, image_sizes, imbalances
from pipeline.config import IMBALANCE_STRATEGIES, TrainConfig


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
    """MobileNetV2 must see [-1, 1] (the study fed it [0, 1]); the CNN sees [0, 1]; EfficientNet-Lite0
    sees (pixel - 127) / 128, what its TensorFlow-trained checkpoint was fed."""
    expectations = (
        ("mobilenet_v2", (-1.0, 1.0)),
        ("custom_cnn", (0.0, 1.0)),
        ("efficientnet_lite0", (-127.0 / 128.0, 1.0)),
    )
    for name, expected in expectations:
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
    """Pretrained weights per backbone with no download: a MobileNetV2 Keras file made here, and
    EfficientNet-Lite0's checkpoint from its pip package."""
    import keras

    path = str(tmp_path_factory.mktemp("weights") / "base.weights.h5")
    keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None).save_weights(path)
    return {"mobilenet_v2": path, "efficientnet_lite0": "imagenet"}


BACKBONES = {"mobilenet_v2": mobilenet_v2, "efficientnet_lite0": efficientnet_lite0}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_pretrained_base_is_frozen_and_from_scratch_base_trains(local_base_weights, name):
    base_model = BACKBONES[name].base_model
    pretrained = build_model(name, num_classes=3, image_size=32, weights=local_base_weights[name])
    base_paths = {v.path for v in base_model(pretrained).weights}
    assert not base_paths & {v.path for v in pretrained.trainable_variables}
    assert len(pretrained.trainable_variables) == 4  # Dense 128 and the classifier
    scratch = build_model(name, num_classes=3, image_size=32, weights=None)
    scratch_base = base_model(scratch)
    assert {v.path for v in scratch_base.trainable_variables} == {
        v.path for v in scratch_base.weights if "moving_" not in v.path
    }


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_fine_tuning_unfreezes_only_the_last_base_layers_and_keeps_batchnorm_frozen(local_base_weights, name):
    model = build_model(name, num_classes=3, image_size=32, weights=local_base_weights[name])
    base = BACKBONES[name].base_model(model)
    assert get_entry(name).unfreeze_top is BACKBONES[name].unfreeze_top_layers
    get_entry(name).unfreeze_top(model, 20)
    top = base.layers[-20:]
    trainable_base_layers = {layer.name for layer in base.layers if layer.trainable and layer.weights}
    assert trainable_base_layers <= {layer.name for layer in top}
    assert trainable_base_layers
    assert not any(layer.trainable for layer in base.layers if layer.__class__.__name__ == "BatchNormalization")
    # The base still runs in inference mode: BatchNorm keeps its ImageNet statistics while training.
    pixels = np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
    before = [v.numpy().copy() for v in base.weights if "moving_" in v.path]
    model(pixels, training=True)
    after = [v.numpy() for v in base.weights if "moving_" in v.path]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_pretrained_backbone_records_defaults_that_avoid_a_2x2_final_map(name):
    defaults = get_entry(name).defaults
    assert isinstance(defaults, BackboneDefaults)
    model = build_model(name, num_classes=3, image_size=defaults.image_size)
    final_map = BACKBONES[name].base_model(model).output.shape[1]
    assert final_map >= 3
    assert defaults.head_epochs > 0 and defaults.fine_tune_epochs > 0 and defaults.fine_tune_layers > 0


def test_a_null_image_size_trains_each_model_at_its_registry_size_and_a_set_one_applies_to_all():
    names = ("custom_cnn", "mobilenet_v2", "efficientnet_lite0")
    assert image_sizes(names, None) == {
        "custom_cnn": SCRATCH_IMAGE_SIZE,
        "mobilenet_v2": PRETRAINED_DEFAULTS.image_size,
        "efficientnet_lite0": PRETRAINED_DEFAULTS.image_size,
    }
    assert PRETRAINED_DEFAULTS.image_size != SCRATCH_IMAGE_SIZE  # else the test above proves nothing
    assert image_sizes(names, 64) == dict.fromkeys(names, 64)
    with pytest.raises(ValueError, match="unknown model name 'resnet'"):
        image_sizes(("resnet",), None)


def test_a_null_imbalance_trains_each_model_with_its_measured_strategy_and_a_set_one_applies_to_all():
    """The CNN oversamples (measured: README Results); the pretrained bases keep class weights."""
    names = ("custom_cnn", "mobilenet_v2", "efficientnet_lite0")
    assert imbalances(names, None) == {
        "custom_cnn": "oversample",
        "mobilenet_v2": "class_weight",
        "efficientnet_lite0": "class_weight",
    }
    assert imbalances(names, "none") == dict.fromkeys(names, "none")
    assert all(entry.imbalance in IMBALANCE_STRATEGIES for entry in MODEL_BUILDERS.values())
    assert TrainConfig().imbalance is None  # the registry's strategies are the default
