"""Tiny seeded images and catalogs: one colour per class so a small CNN learns them in an epoch."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 40), (200, 40, 200)]


def make_image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 32) -> Image.Image:
    noise = rng.integers(-25, 25, size=(size, size, 3))
    pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def make_tree_catalog(root: str, counts: dict[str, int], seed: int = 0, size: int = 32,
                      extension: str = ".png") -> str:
    """Writes `<root>/<label>/<n>.png` images, one colour per label."""
    rng = np.random.default_rng(seed)
    for index, (label, count) in enumerate(counts.items()):
        os.makedirs(os.path.join(root, label), exist_ok=True)
        for number in range(count):
            make_image(COLOURS[index % len(COLOURS)], rng, size).save(os.path.join(root, label, f"{number:04d}{extension}"))
    return root
