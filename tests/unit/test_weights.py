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
