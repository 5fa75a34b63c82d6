"""Decoding: every awkward file gives a correct array or a specific error, never an exception."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.images import ImageError, decode_batch, decode_image, ok_mask
from tests.factories import bad_image_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    upright = Image.new("RGB", (60, 40), (250, 250, 250))
    upright.paste((200, 20, 20), (0, 0, 30, 20))  # a red block in the top-left corner
    return bad_image_corpus(str(tmp_path_factory.mktemp("corpus")), upright)


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("zero_bytes", "empty"),
        ("truncated", "truncated"),
        ("random_bytes", "not_an_image"),
        ("text", "not_an_image"),
        ("bomb", "too_large"),
    ],
)
def test_bad_files_are_flagged_with_a_reason(corpus, kind, reason):
    batch = decode_batch({"image_uri": np.array([corpus[kind]], dtype=object)}, image_size=32)
    assert batch["error"][0].startswith(reason), batch["error"][0]
    assert batch["image"].shape == (1, 32, 32, 3)


@pytest.mark.parametrize("kind", ["grey16", "cmyk", "palette_transparent", "one_pixel", "upright"])
def test_odd_modes_decode_to_rgb(corpus, kind):
    with open(corpus[kind], "rb") as handle:
        pixels = decode_image(handle.read(), 32)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8


def test_exif_orientation_is_honoured(corpus):
    upright = decode_image(open(corpus["upright"], "rb").read(), 32).astype(int)
    rotated = decode_image(open(corpus["exif_rotated"], "rb").read(), 32).astype(int)
    assert np.abs(upright - rotated).mean() < 6  # JPEG noise only; unrotated it would differ by ~50
    assert upright[4, 4, 0] > 150 and upright[4, 4, 1] < 100  # red block stays top-left


def test_transparency_is_flattened_onto_white():
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    assert decode_image(buffer.getvalue(), 32).min() == 255


def test_bomb_is_refused_from_the_header_without_allocating(corpus):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="too_large"):
        decode_image(open(corpus["bomb"], "rb").read(), 32)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: < 100 MB


def test_the_bomb_is_one_pillow_itself_would_open():
    assert 40_000_000 < 8000 * 6000 < Image.MAX_IMAGE_PIXELS  # the product's limit, not Pillow's, refuses it


def test_a_configured_lower_pixel_limit_is_enforced(corpus):
    data = open(corpus["one_pixel"], "rb").read()
    assert decode_image(data, 32, max_pixels=1).shape == (32, 32, 3)
    upright = open(corpus["upright"], "rb").read()
    with pytest.raises(ImageError, match="too_large: 60x40 pixels exceeds the limit of 2399"):
        decode_image(upright, 32, max_pixels=2399)
    assert decode_image(upright, 32, max_pixels=2400).shape == (32, 32, 3)


def test_missing_file_is_an_error_row(tmp_path):
    batch = decode_batch({"image_uri": np.array([str(tmp_path / "nope.png")], dtype=object)}, image_size=32)
    assert batch["error"][0].startswith("missing")
    assert not ok_mask(batch["error"])[0]


def test_rows_in_equal_rows_out(corpus):
    uris = np.array(sorted(corpus.values()), dtype=object)
    batch = decode_batch({"image_uri": uris, "image_id": uris}, image_size=32)
    assert len(batch["error"]) == len(batch["image"]) == len(uris)
    assert list(batch["image_id"]) == list(uris)


def test_a_png_whose_pixel_data_is_not_zlib_is_a_decode_failed_row(tmp_path):
    """A well-formed PNG signature and IHDR, then IDAT bytes that are not a zlib stream: Pillow
    recognises the format and fails in the pixel decoder, so the reason is `decode_failed:`."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", b"not a zlib stream" * 4)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")
    with pytest.raises(ImageError, match="^decode_failed: broken data stream"):
        decode_image(data, 32)
    path = tmp_path / "broken.png"
    path.write_bytes(data)
    batch = decode_batch({"image_uri": np.array([str(path)], dtype=object), "image_id": np.array(["b"])}, image_size=32)
    assert batch["error"][0].startswith("decode_failed: ")
    assert not ok_mask(batch["error"])[0]
    assert list(batch["image_id"]) == ["b"] and not batch["image"].any()  # the row stays, all zeros
