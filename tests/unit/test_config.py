"""Config precedence and validation."""

from __future__ import annotations

import pytest

from jobs.config import load_config


def test_precedence_defaults_preset_flags_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("train:\n  epochs: 7\n  batch_size_per_worker: 4\nresources:\n  workers: 3\n")
    config = load_config(str(preset), ["train.epochs=9"], **{"resources.workers": None, "train.head_epochs": 2})
    assert config.train.epochs == 9 and config.train.batch_size_per_worker == 4
    assert config.resources.workers == 3 and config.train.head_epochs == 2
    assert config.train.learning_rate == 1e-3


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=0", "train.epochs"),
        ("train.nope=1", "unknown key"),
        ("bogus.x=1", "unknown config section"),
        ("resources.workers=-1", "resources.workers"),
        ("train.imbalance=magic", "train.imbalance"),
        ("epochs=3", "malformed"),
        ("resources.actors=0", "resources.actors"),
        ("resources.actors=many", "auto"),
        ("resources.actors=true", "resources.actors"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_presets_load():
    for name in ("local", "cluster"):
        load_config(f"jobs/configs/{name}.yaml")
