"""Images of a decode batch are fetched concurrently, one request each, in input order."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
from PIL import Image

from pipeline import images
from tests.factories import serve_fifos

PNG = io.BytesIO()
Image.new("RGB", (8, 8), (200, 30, 30)).save(PNG, format="PNG")


def serve_when_all_open(paths: list[str], seen_all_open: threading.Event) -> None:
    """Each FIFO's image, written once every FIFO has a reader at the same moment."""
    payload = lambda path: PNG.getvalue() if not path.endswith("bad.png") else b"not an image"  # noqa: E731
    if serve_fifos(paths, payload) == len(paths):
        seen_all_open.set()


def test_a_batch_reads_its_images_at_the_same_time_and_keeps_their_order(tmp_path):
    paths = [str(tmp_path / f"{i}.png") for i in range(6)] + [str(tmp_path / "bad.png")]
    for path in paths:
        os.mkfifo(path)
    seen_all_open = threading.Event()
    server = threading.Thread(target=serve_when_all_open, args=(paths, seen_all_open), daemon=True)
    server.start()
    batch = {"image_uri": np.array(paths + [str(tmp_path / "gone.png"), ""], dtype=object)}
    decoded = images.decode_batch(batch, image_size=32)
    server.join()
    assert seen_all_open.is_set(), "the batch's images were not all being read at once"
    errors = list(decoded["error"])
    assert errors[:6] == [""] * 6 and (decoded["image"][:6, :, :, 0] == 200).all()
    assert errors[6].startswith("not_an_image:")
    assert errors[7].startswith("missing:") and errors[8] == "missing: the row has an empty image_uri"
