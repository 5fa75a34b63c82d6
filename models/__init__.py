"""Pure Keras model builders, registered by name (`models.registry`).

The registry loads on first use of `build_model`, `get_entry`, `MODEL_BUILDERS` or `ModelEntry`:
`models.spec`, which scoring reads from model cards, must not import Keras (an ONNX scoring actor
never needs TensorFlow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.spec import InputSpec

if TYPE_CHECKING:
    from models.registry import MODEL_BUILDERS, ModelEntry, build_model, get_entry, image_sizes, imbalances

_REGISTRY_NAMES = ("MODEL_BUILDERS", "ModelEntry", "build_model", "get_entry", "image_sizes", "imbalances")


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        from models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


__all__ = ["MODEL_BUILDERS", "InputSpec", "ModelEntry", "build_model", "get_entry", "image_sizes", "imbalances"]
