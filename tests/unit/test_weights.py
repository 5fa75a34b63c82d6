"""Pretrained weights: a failed ImageNet download falls back to the configured weights, loudly."""

from __future__ import annotations

import logging

import pytest

from pipeline.artifacts import resolve_weights


def test_a_failed_imagenet_download_uses_the_configured_fallback_and_says_so(offline_keras, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.artifacts"):
        choice = resolve_weights("imagenet", "none", 32)
    assert choice.uri is None  # random initialisation, as the fallback "none" asks
    # What the model card's weights_source records (pipeline/train/driver.py copies it verbatim).
    assert choice.source.startswith("none (random initialisation) (fallback: 'imagenet' unavailable: ")
    assert "could not be downloaded" in choice.source
    assert "weights 'imagenet' unavailable" in caplog.text and "using the configured fallback 'none'" in caplog.text


def test_a_failed_imagenet_download_without_a_fallback_is_an_error_naming_the_fix(offline_keras):
    with pytest.raises(ValueError, match="--weights imagenet could not be downloaded .*pass --weights none"):
        resolve_weights("imagenet", None, 32)
