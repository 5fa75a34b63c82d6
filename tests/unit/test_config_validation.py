"""Every config key refuses the first value outside its range, naming key, value and allowed range,
and accepts the values at the edge of that range."""

from __future__ import annotations

import re

import pytest

from pipeline.config import (
    AugmentConfig,
    DataConfig,
    JobConfig,
    ModelConfig,
    PredictConfig,
    ResourcesConfig,
    TrainConfig,
)

SECTIONS = {
    "augment": AugmentConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "resources": ResourcesConfig,
    "predict": PredictConfig,
}
POSITIVE = "a positive integer"
# (section.key, refused values, accepted values, allowed range as the message states it)
RANGES = [
    ("augment.rotation_degrees", [-0.1, 180.1], [0, 180], "0..180"),
    *[
        (f"augment.{key}", [-0.01, 1.0], [0, 0.99], "0 <= x < 1")
        for key in ("width_shift", "height_shift", "shear", "zoom")
    ],
    ("data.val_fraction", [0, 0.5], [0.01, 0.49], "0 < x < 0.5"),
    ("data.test_fraction", [0, 0.5], [0.01, 0.49], "0 < x < 0.5"),
    ("data.max_image_pixels", [0], [1], "> 0"),
    ("data.rows_per_block", [0], [1], "> 0"),
    ("model.names", [()], [("custom_cnn",)], "one or more of custom_cnn, mobilenet_v2, efficientnet_lite0"),
    ("model.image_size", [31, 1025], [None, 32, 1024], "32..1024, or null for each model's registry size"),
    ("model.dropout", [-0.01, 1.0], [0, 0.99], "0 <= x < 1"),
    ("model.weights", [""], ["none"], "imagenet, none or a weights-file URI"),
    *[
        (f"train.{key}", [0], [1], POSITIVE)
        for key in ("epochs", "head_epochs", "batch_size_per_worker", "cnn_patience", "transfer_patience")
    ],
    ("train.fine_tune_epochs", [-1], [0], ">= 0"),
    ("train.fine_tune_layers", [-1], [0], ">= 0"),
    ("train.learning_rate", [0, 1], [1e-9, 0.99], "0 < x < 1"),
    ("train.fine_tune_learning_rate", [0, 1], [1e-9, 0.99], "0 < x < 1"),
    (
        "train.imbalance",
        ["magic"],
        ["none", "class_weight", "oversample", "both", None],
        "none, class_weight, oversample, both, or null for each model's registry default",
    ),
    ("train.max_failures", [-1], [0], ">= 0"),
    ("train.keep_checkpoints", [0], [1], POSITIVE),
    ("train.review_target_accuracy", [0, 1.01], [0.01, 1], "0 < x <= 1"),
    ("resources.workers", [0], [1], POSITIVE),
    ("resources.actors", [0, True, "many", 1.5], ["auto", 1], 'a positive integer or "auto"'),
    ("resources.cpus_per_worker", [0], [0.01], "> 0"),
    ("resources.cpus_per_actor", [0], [0.01], "> 0"),
    ("resources.num_cpus", [0], [None, 1], "> 0 or null"),
    ("resources.stall_timeout_s", [-0.1], [0], ">= 0 (0 = off)"),
    ("predict.batch_size", [0], [1], POSITIVE),
    ("predict.top_k", [0], [1], POSITIVE),
    ("predict.low_confidence_threshold", [-0.01, 1.01], [None, 0, 1], "0..1"),
    ("predict.max_bad_fraction", [-0.01, 1.01], [0, 1], "0..1"),
    ("predict.rows_per_file", [0], [1], "> 0"),
    ("predict.engine", ["tpu"], ["auto", "onnx", "keras"], "auto, onnx, keras"),
    ("predict.threads_per_actor", [0], [1], POSITIVE),
]
REFUSED = [(key, value, allowed) for key, refused, _, allowed in RANGES for value in refused]
ACCEPTED = [(key, value) for key, _, accepted, _ in RANGES for value in accepted]


def build(key, value):
    section, name = key.split(".")
    return getattr(SECTIONS[section](**{name: value}), name)


@pytest.mark.parametrize("key, value, allowed", REFUSED, ids=[f"{k}={v!r}" for k, v, _ in REFUSED])
def test_a_value_outside_the_range_is_refused_naming_key_value_and_range(key, value, allowed):
    with pytest.raises(ValueError, match=f"^{re.escape(f'{key}={value!r} is invalid; allowed: {allowed}')}$"):
        build(key, value)


@pytest.mark.parametrize("key, value", ACCEPTED, ids=[f"{k}={v!r}" for k, v in ACCEPTED])
def test_the_edges_of_each_range_are_accepted(key, value):
    assert build(key, value) == value


def test_model_names_given_as_a_list_become_a_tuple():
    assert ModelConfig(names=["mobilenet_v2"]).names == ("mobilenet_v2",)


def test_from_dict_builds_each_named_section_and_defaults_the_rest():
    config = JobConfig.from_dict({"train": {"epochs": 3}, "predict": None, "data": {}})
    assert config.train.epochs == 3 and config.train.head_epochs == TrainConfig().head_epochs
    assert config.predict == PredictConfig() and config.model == ModelConfig()
    assert JobConfig.from_dict(config.to_dict()) == config


def test_from_dict_refuses_unknown_sections_and_keys_listing_the_known_ones():
    with pytest.raises(ValueError, match=re.escape("unknown config section 'bogus'; known: ['augment', 'data',")):
        JobConfig.from_dict({"bogus": {}})
    with pytest.raises(
        ValueError,
        match=re.escape(
            "unknown key(s) ['nope', 'zzz'] in section 'data'; known: ['max_image_pixels', 'rows_per_block',"
        ),
    ):
        JobConfig.from_dict({"data": {"zzz": 1, "nope": 2}})
