"""Training-batch augmentation in NumPy: random rotation, shift, shear, zoom and flip.

It runs as a Ray Data task on every training batch of every epoch. Keras' random layers did the
same work, but each task then imported TensorFlow (seconds of start-up and a screen of C++ logs per
task process); these few affine maps need nothing beyond NumPy. Edges are filled with the nearest
pixel and values interpolated bilinearly, as Keras' layers did with `fill_mode="nearest"`.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import AugmentConfig


def random_affine(count: int, settings: AugmentConfig, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random 2×3 maps from an output pixel (y, x, 1) to the input pixel it is read from."""
    angle = np.deg2rad(rng.uniform(-settings.rotation_degrees, settings.rotation_degrees, count))
    shear = rng.uniform(-settings.shear, settings.shear, (count, 2))
    zoom = 1.0 + rng.uniform(-settings.zoom, settings.zoom, (count, 2))
    extent = np.array([settings.height_shift * height, settings.width_shift * width])
    shift = rng.uniform(-1.0, 1.0, (count, 2)) * extent
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shearing = np.stack([np.stack([np.ones(count), shear[:, 0]], -1), np.stack([shear[:, 1], np.ones(count)], -1)], -2)
    linear = rotation @ shearing * zoom[:, None, :]
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    # About the centre: input = linear · (output − centre) + centre + shift.
    offset = centre - linear @ centre + shift
    return np.concatenate([linear, offset[:, :, None]], axis=2)


def transform(pixels: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Each image (N, H, W, C) read through its map, bilinear, edges repeated; float32 out."""
    count, height, width = pixels.shape[:3]
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel(), np.ones(rows.size)])  # (3, H·W)
    source = maps @ grid  # (N, 2, H·W)
    y = np.clip(source[:, 0], 0, height - 1)
    x = np.clip(source[:, 1], 0, width - 1)
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    image = np.arange(count)[:, None]
    data = pixels.astype(np.float32)
    top = data[image, y0, x0] * (1 - wx) + data[image, y0, x1] * wx
    bottom = data[image, y1, x0] * (1 - wx) + data[image, y1, x1] * wx
    blended: np.ndarray = (top * (1 - wy) + bottom * wy).reshape(pixels.shape).astype(np.float32)
    return blended


def augment_images(pixels: np.ndarray, settings: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A uint8 batch (N, H, W, C) randomly rotated, shifted, sheared, zoomed and flipped; uint8 out."""
    if len(pixels) == 0:
        return pixels
    out = transform(pixels, random_affine(len(pixels), settings, pixels.shape[1], pixels.shape[2], rng))
    if settings.horizontal_flip:
        flip = rng.random(len(pixels)) < 0.5
        out[flip] = out[flip, :, ::-1]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
