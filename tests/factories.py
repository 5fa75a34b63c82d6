"""Tiny seeded images and catalogs: one colour per class so a small CNN learns them in an epoch."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
from PIL import Image

from pipeline.artifacts import content_version, read_card, write_card
from pipeline.engines import export_onnx
from pipeline.records import Calibration, ModelCard, Review

COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 40), (200, 40, 200)]
NAMED = dict(zip(("red", "green", "blue", "yellow", "purple"), COLOURS))


def colour_of(label: str, index: int) -> tuple[int, int, int]:
    """Named colours look like their label; other labels take the index-th colour."""
    return NAMED.get(label, COLOURS[index % len(COLOURS)])


def make_image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 32) -> Image.Image:
    noise = rng.integers(-25, 25, size=(size, size, 3))
    pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def make_tree_catalog(root: str, counts: dict[str, int], seed: int = 0, size: int = 32, extension: str = ".png") -> str:
    """Writes `<root>/<label>/<n>.png` images, one colour per label."""
    rng = np.random.default_rng(seed)
    for index, (label, count) in enumerate(counts.items()):
        os.makedirs(os.path.join(root, label), exist_ok=True)
        for number in range(count):
            make_image(colour_of(label, index), rng, size).save(os.path.join(root, label, f"{number:04d}{extension}"))
    return root


def make_artifact(directory: str, class_names: list[str], image_size: int = 32, epochs: int = 12, seed: int = 0) -> str:
    """A real, small trained custom_cnn artifact (plain Keras fit on colour images, no Ray)."""
    import keras

    from models import build_model, get_entry

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index, label in enumerate(class_names):
        for _ in range(24):
            images.append(np.asarray(make_image(colour_of(label, index), rng, image_size)))
            labels.append(index)
    model = build_model("custom_cnn", len(class_names), image_size)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(np.stack(images).astype("float32"), np.array(labels), epochs=epochs, batch_size=16, verbose=0)
    os.makedirs(directory, exist_ok=True)
    model_path = os.path.join(directory, "model.keras")
    model.save(model_path)
    card = ModelCard(
        name="custom_cnn",
        version=content_version(model_path),
        class_names=tuple(class_names),
        input=get_entry("custom_cnn").input_spec(image_size),
        onnx=export_onnx(model, directory, np.stack(images[:16]).astype("float32")),
    )
    write_card(directory, card)
    return directory


def bad_image_corpus(directory: str, upright: Image.Image) -> dict[str, str]:
    """Writes the awkward files a real catalog meets; returns {kind: path}."""
    import io
    import struct
    import zlib

    os.makedirs(directory, exist_ok=True)
    paths = {}

    def write(name: str, data: bytes) -> None:
        paths[name.split(".")[0]] = os.path.join(directory, name)
        with open(paths[name.split(".")[0]], "wb") as handle:
            handle.write(data)

    def encoded(image: Image.Image, fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    write("zero_bytes.jpg", b"")
    jpeg = encoded(upright, "JPEG", quality=95)
    write("truncated.jpg", jpeg[: len(jpeg) // 2])
    write("random_bytes.jpg", np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    write("text.png", b"this is not an image, just text\n" * 10)
    grey16 = np.asarray(upright.convert("L"), dtype=np.uint16) * 257
    write("grey16.png", encoded(Image.fromarray(grey16), "PNG"))
    write("cmyk.jpg", encoded(upright.convert("CMYK"), "JPEG"))
    palette = upright.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    write("palette_transparent.png", encoded(palette, "PNG", transparency=0))
    write("upright.jpg", jpeg)
    # Stored rotated, with EXIF orientation 6 ("rotate 90° clockwise to display"): a viewer — and
    # the decoder — must show it upright.
    exif = Image.Exif()
    exif[0x0112] = 6
    write("exif_rotated.jpg", encoded(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif))
    write("one_pixel.png", encoded(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    # 48 Mpx: over the product's default limit (40 Mpx, data.max_image_pixels) and under Pillow's own
    # (about 89 Mpx warns, 179 Mpx refuses), so only the product's guard can refuse it.
    header = struct.pack(">IIBBBBB", 8000, 6000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )
    write("bomb.png", bomb)
    return paths


def with_calibration(artifact: str, directory: str, temperature: float, threshold: float) -> str:
    """A copy of `artifact` whose card carries what training fits on validation data: a
    temperature and a review threshold. The model file, and so the version, are unchanged."""
    import shutil

    shutil.copytree(artifact, directory)
    card = dataclasses.replace(
        read_card(directory),
        calibration=Calibration(temperature=temperature),
        review=Review(threshold=threshold, target_accuracy=0.99),
    )
    write_card(directory, card)
    return directory


def blended_catalog(root) -> str:
    """Red and green mixed in 18 proportions: images the colour model is unsure about, to a degree
    that varies from image to image (on pure colours it is certain, and every confidence is 1)."""
    for index, share in enumerate(np.linspace(0.1, 0.9, 18)):
        label = "red" if share > 0.5 else "green"
        colour = tuple(int(v) for v in share * np.array((220, 40, 40)) + (1 - share) * np.array((40, 200, 60)))
        os.makedirs(os.path.join(root, label), exist_ok=True)
        Image.new("RGB", (32, 32), colour).save(os.path.join(root, label, f"{index:04d}.png"))
    return str(root)


def serve_fifos(paths: list[str], payload: Callable[[str], bytes], give_up_s: float = 20.0) -> int:
    """Waits for a reader on every FIFO, then writes each its `payload(path)`; returns how many had
    a reader at the same moment (all of them, or as many as were open when it gave up). A
    sequential reader blocks on the first FIFO alone, so it never sees them all open."""
    import errno
    import time

    deadline = time.monotonic() + give_up_s
    handles: dict[str, int] = {}
    while time.monotonic() < deadline and len(handles) < len(paths):
        for path in paths:
            if path not in handles:
                try:
                    handles[path] = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as error:
                    if error.errno != errno.ENXIO:  # ENXIO: nobody is reading it yet
                        raise
        time.sleep(0.01)
    at_once = len(handles)
    for path in paths:  # unblock every reader either way, so a failing test ends
        handle = handles.get(path) or os.open(path, os.O_WRONLY)
        os.write(handle, payload(path))
        os.close(handle)
    return at_once
