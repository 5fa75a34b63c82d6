"""Loads a job config: dataclass defaults, then a YAML preset, then `--set section.key=value`."""

from __future__ import annotations

import copy
import importlib.resources
from typing import Any

import yaml

from pipeline import storage
from pipeline.config import JobConfig


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parses `section.key=value`; the value is read as YAML (numbers, booleans, lists, null)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"--set {text!r} is malformed; use section.key=value, e.g. train.epochs=3")
    dotted, raw = text.split("=", 1)
    section, key = dotted.split(".", 1)
    return section, key, yaml.safe_load(raw) if raw != "" else ""


def preset_names() -> list[str]:
    """The presets shipped in the package (`jobs/configs/<name>.yaml`)."""
    folder = importlib.resources.files("jobs").joinpath("configs")
    return sorted(item.name.removesuffix(".yaml") for item in folder.iterdir() if item.name.endswith(".yaml"))


def read_preset(path: str) -> bytes:
    """The YAML of `--config`: a packaged preset by name (`cluster`, `local`), which works from any
    directory and from an installed wheel, else a file path or URI (relative paths from the working
    directory, which `ray job submit --working-dir` and the image both provide).

    Raises:
        ValueError: Neither a preset name nor an existing file.
    """
    if path in preset_names():
        return importlib.resources.files("jobs").joinpath("configs", f"{path}.yaml").read_bytes()
    try:
        return storage.read_bytes(path)
    except FileNotFoundError as error:
        raise ValueError(
            f"--config {path!r} is neither a packaged preset ({', '.join(preset_names())}) nor an existing file"
        ) from error


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = (), **flags: Any) -> JobConfig:
    """Resolves the job config.

    Args:
        path: Optional YAML preset with the same sections as `JobConfig`: a packaged preset's name,
            a path or an s3:// URI.
        overrides: `section.key=value` strings, applied after the preset.
        **flags: Public CLI flags already mapped to `section.key` (None means "not given").

    Raises:
        ValueError: Unreadable preset, unknown section/key, or a value out of range.
    """
    values: dict[str, dict[str, Any]] = {}
    if path:
        try:
            loaded = yaml.safe_load(read_preset(path)) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"--config {path!r} is not valid YAML: {error}") from error
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {path!r} must hold a mapping of sections")
        values = copy.deepcopy(loaded)
    for dotted, value in flags.items():
        if value is not None:
            section, key = dotted.split(".", 1)
            values.setdefault(section, {})[key] = value
    for text in overrides:
        section, key, value = parse_override(text)
        if not isinstance(values.setdefault(section, {}), dict):
            raise ValueError(f"config section {section!r} must be a mapping")
        values[section][key] = value
    try:
        return JobConfig.from_dict(values)
    except TypeError as error:
        raise ValueError(f"bad config value: {error}") from error
