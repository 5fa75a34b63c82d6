"""Model artifacts: one directory per trained model (local or S3), and pretrained weights files.

Layout: model.keras, model_card.json, history.json, curves.png, split.csv (+ model.onnx).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from filelock import FileLock

from pipeline import storage
from pipeline.records import ModelCard

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
CARD_FILE = "model_card.json"
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "catalog-classifier")


@dataclass(frozen=True)
class WeightsChoice:
    """Pretrained weights as resolved on the driver: what to hand Keras, and what the card says."""

    uri: str | None  # None = random init, "imagenet" = Keras download, otherwise a file URI
    source: str


def resolve_weights(
    weights: str, fallback: str | None, image_size: int, check_weights: Callable[[str, int], str]
) -> WeightsChoice:
    """Checks the requested pretrained weights for one model before any work starts.

    "imagenet" is tried once (what it means is the model's: a Keras download for MobileNetV2, a
    pip-installed checkpoint for EfficientNet-Lite0); if that fails and the config names a
    fallback, the fallback is used and said loudly. A file must exist and fit the model's base.

    Args:
        weights: "imagenet", "none" or a weights-file URI.
        fallback: Used when `weights` fails; None means fail instead.
        image_size: Input side the base is built at.
        check_weights: The registry entry's check: builds the base with the weights, raising if
            they do not fit, and returns what the model card says.

    Raises:
        ValueError: Missing file, a file that does not match the architecture, or unavailable
            "imagenet" weights without a configured fallback.
    """
    try:
        return _resolve_one(weights, image_size, check_weights)
    except ValueError as error:
        if fallback is None:
            raise
        logger.warning("weights %r unavailable (%s); using the configured fallback %r", weights, error, fallback)
        choice = _resolve_one(fallback, image_size, check_weights)
        return WeightsChoice(choice.uri, f"{choice.source} (fallback: {weights!r} unavailable: {error})")


def _resolve_one(weights: str, image_size: int, check_weights: Callable[[str, int], str]) -> WeightsChoice:
    if weights.lower() == "none":
        return WeightsChoice(None, "none (random initialisation)")
    if weights.lower() == "imagenet":
        try:
            source = check_weights("imagenet", image_size)
        except Exception as error:  # no internet surfaces as many different exception types
            raise ValueError(
                f"--weights imagenet could not be loaded ({type(error).__name__}: "
                f"{error}); pass --weights none or a local/s3:// weights file"
            ) from error
        return WeightsChoice("imagenet", source)
    if not storage.exists(weights):
        raise ValueError(f"--weights {weights!r} does not exist; pass imagenet, none or a weights file")
    local_path = fetch_weights(weights)
    try:
        check_weights(local_path, image_size)
    except Exception as error:
        raise ValueError(
            f"--weights {weights!r} does not fit the model's base: {type(error).__name__}: {error}"
        ) from error
    digest = hashlib.sha256(storage.read_bytes(weights)).hexdigest()[:16]
    return WeightsChoice(storage.normalize(weights), f"file {storage.normalize(weights)} (sha256 {digest})")


def fetch_weights(uri: str) -> str:
    """Returns a local path for a weights file, downloading a remote one once per node.

    A file lock keeps concurrent workers on one node from racing on the download; the cache key
    includes the object's size and ETag, so a file replaced at the same URI is fetched again.
    """
    if not storage.is_remote(uri):
        return storage.normalize(uri)
    fingerprint = storage.fingerprints([uri])[uri] or ""
    name = hashlib.sha256(f"{uri}\0{fingerprint}".encode()).hexdigest()[:16] + "-" + os.path.basename(uri)
    os.makedirs(os.path.join(CACHE_DIR, "weights"), exist_ok=True)
    target = os.path.join(CACHE_DIR, "weights", name)
    with FileLock(target + ".lock"):
        if not os.path.exists(target):
            storage.write_bytes(target, storage.read_bytes(uri))
    return target


def content_version(path: str) -> str:
    """Short content hash of a model file: the model version recorded everywhere."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def library_versions() -> dict[str, str]:
    import keras
    import numpy
    import ray
    import tensorflow

    return {
        "python": platform.python_version(),
        "ray": ray.__version__,
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
    }


def localize(artifact_uri: str) -> str:
    """Returns a local directory holding the artifact (downloaded once per node when remote).

    The cache is keyed by the URI and the model card's content (whose `version` hashes the model),
    so an artifact replaced at the same URI, e.g. by retraining into the same --output, is fetched
    again rather than served stale under the new card.
    """
    if not storage.is_remote(artifact_uri):
        return storage.normalize(artifact_uri)
    card = storage.read_bytes(storage.join(artifact_uri, CARD_FILE))
    key = hashlib.sha256(artifact_uri.encode() + b"\0" + card).hexdigest()[:16]
    target = os.path.join(CACHE_DIR, "artifacts", key)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with FileLock(target + ".lock"):
        if not os.path.exists(os.path.join(target, CARD_FILE)):
            staging = tempfile.mkdtemp(dir=os.path.dirname(target))
            storage.download_directory(artifact_uri, staging)
            if os.path.exists(target):
                import shutil

                shutil.rmtree(target)
            os.replace(staging, target)
    return target


def read_card(artifact_uri: str) -> ModelCard:
    """Reads and checks a model card: the one reader of model_card.json.

    Raises:
        ValueError: The artifact is missing or unreadable.
    """
    card_uri = storage.join(artifact_uri, CARD_FILE)
    try:
        values = storage.read_json(card_uri)
    except FileNotFoundError as error:
        raise ValueError(
            f"--model {artifact_uri!r} is not a model artifact (no {CARD_FILE}); pass the "
            "directory that jobs.train wrote for one model"
        ) from error
    except Exception as error:
        raise ValueError(f"--model {artifact_uri!r} cannot be read: {type(error).__name__}: {error}") from error
    try:
        card = ModelCard.from_dict(values)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"model card {card_uri!r} {error}") from error
    if not storage.exists(storage.join(artifact_uri, MODEL_FILE)):
        raise ValueError(f"--model {artifact_uri!r} has no {MODEL_FILE}")
    return card


def write_card(directory: str, card: ModelCard) -> None:
    """The one writer of model_card.json (a local directory; artifacts are uploaded whole)."""
    with open(os.path.join(directory, CARD_FILE), "w") as handle:
        json.dump(card.to_dict(), handle, indent=2)


def load_keras_model(artifact_dir: str) -> Any:
    """Loads model.keras in safe mode: a file carrying a Lambda layer (arbitrary code) is refused.

    Raises:
        ValueError: The file is unsafe or not a Keras model.
    """
    import keras

    path = os.path.join(artifact_dir, MODEL_FILE)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as error:
        raise ValueError(f"model {path!r} was refused in Keras safe mode or is not a valid model: {error}") from error
