"""The input contract every model builder declares: what pixels the saved model expects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InputSpec:
    """What the model takes in.

    Models take raw RGB pixels in [0, 255] and rescale inside themselves, so scoring only has to
    decode and resize: `pixel_range` records what the first layer maps them to, for the model card.
    """

    image_size: int
    channels: int = 3
    pixel_range: tuple[float, float] = (0.0, 1.0)
    resize_method: str = "bilinear"

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size={self.image_size} is too small; use 32 or more")
        if self.channels != 3:
            raise ValueError(f"channels={self.channels} is not supported; models take RGB (3)")
        low, high = self.pixel_range
        if not low < high:
            raise ValueError(f"pixel_range={self.pixel_range} is empty; give (low, high) with low < high")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "input_pixels": [0, 255],
            "pixel_range": list(self.pixel_range),
            "color_mode": "RGB",
            "resize_method": self.resize_method,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InputSpec:
        """The spec a model card recorded (`to_dict`); the fixed facts it adds are not fields."""
        return cls(
            image_size=int(values["image_size"]),
            channels=int(values.get("channels", 3)),
            pixel_range=(float(values["pixel_range"][0]), float(values["pixel_range"][1]))
            if "pixel_range" in values
            else (0.0, 1.0),
            resize_method=str(values.get("resize_method", "bilinear")),
        )
