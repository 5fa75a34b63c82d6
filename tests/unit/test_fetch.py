"""Images of a decode batch are fetched concurrently, one request each, in input order."""

from __future__ import annotations

import errno
import io
import os
import threading
import time

import numpy as np
from PIL import Image

from pipeline import images

PNG = io.BytesIO()
Image.new("RGB", (8, 8), (200, 30, 30)).save(PNG, format="PNG")


def serve_when_all_open(paths: list[str], seen_all_open: threading.Event, give_up_s: float = 20.0) -> None:
    """Writes each FIFO's image once every FIFO has a reader at the same moment (or gives up). A
    sequential reader blocks on the first FIFO alone, so the moment never comes."""
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
    if len(handles) == len(paths):
        seen_all_open.set()
    for path in paths:  # unblock every reader either way, so a failing test ends
        handle = handles.get(path) or os.open(path, os.O_WRONLY)
        os.write(handle, PNG.getvalue() if not path.endswith("bad.png") else b"not an image")
        os.close(handle)


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
