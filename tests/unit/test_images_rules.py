"""What decoding promises, rule by rule: each failure's reason, each pixel format's colours, resizing, fetching."""

from __future__ import annotations

import io
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pipeline.images import ImageError, decode_batch, decode_image, fetch_all, ok_mask
from tests.factories import serve_fifos

WHITE = (255, 255, 255)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds almost no pixels: enough for a size check."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def uniform(pixels: np.ndarray) -> tuple[int, ...]:
    """The one colour of an image that has a single colour (fails otherwise)."""
    colours = {tuple(int(v) for v in pixel) for pixel in pixels.reshape(-1, pixels.shape[-1])}
    assert len(colours) == 1, colours
    return colours.pop()


# Reasons for the rows that cannot be scored.


def test_zero_bytes_is_empty():
    with pytest.raises(ImageError, match="^empty: the file has zero bytes$"):
        decode_image(b"", 8)


def test_unknown_bytes_are_not_an_image():
    with pytest.raises(ImageError, match="^not_an_image: no image format recognised$"):
        decode_image(b"GIF87 but not really, just text" * 4, 8)


def test_a_cut_off_jpeg_is_truncated():
    data = encoded(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG")
    with pytest.raises(ImageError, match="^truncated: .*(?i:truncated)"):
        decode_image(data[: len(data) // 2], 8)


def test_the_pixel_limit_counts_width_times_height():
    data = encoded(Image.new("RGB", (30, 20), (1, 2, 3)), "PNG")
    assert decode_image(data, 8, max_pixels=600).shape == (8, 8, 3)
    with pytest.raises(ImageError, match="^too_large: 30x20 pixels exceeds the limit of 599$"):
        decode_image(data, 8, max_pixels=599)


def test_images_pillow_warns_about_are_refused_as_too_large():
    """Between Pillow's warning (~89 Mpx) and its refusal (~179 Mpx), with the product's limit raised."""
    data = png_header_only(10_000, 10_000)
    with pytest.raises(ImageError, match="^too_large: Image size .* could be decompression bomb DOS attack"):
        decode_image(data, 8, max_pixels=10**12)


def test_images_pillow_refuses_are_too_large():
    data = png_header_only(20_000, 10_000)
    with pytest.raises(ImageError, match="^too_large: Image size .* exceeds limit"):
        decode_image(data, 8, max_pixels=10**12)


# Colours: every pixel format ends as 8-bit RGB.


def test_rgb_keeps_its_colour_as_uint8():
    pixels = decode_image(encoded(Image.new("RGB", (10, 10), (200, 30, 90)), "PNG"), 4)
    assert pixels.dtype == np.uint8 and pixels.shape == (4, 4, 3)
    assert uniform(pixels) == (200, 30, 90)


@pytest.mark.parametrize("value, expected", [(0, 0), (257 * 100, 100), (65535, 255), (257 * 7, 7)])
def test_16_bit_greyscale_is_scaled_to_8_bits(value, expected):
    image = Image.fromarray(np.full((6, 6), value, dtype=np.uint16))
    image.putpixel((0, 0), 65535)  # a bright pixel, so the image uses the 16-bit range
    pixels = decode_image(encoded(image, "PNG"), 6, resize_method="nearest")
    assert tuple(pixels[3, 3]) == (expected,) * 3
    assert tuple(pixels[0, 0]) == WHITE


def test_16_bit_greyscale_within_8_bit_values_is_taken_as_8_bit():
    image = Image.fromarray(np.full((6, 6), 200, dtype=np.uint16))
    assert uniform(decode_image(encoded(image, "PNG"), 6)) == (200, 200, 200)


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_16_bit_tiff_in_either_byte_order_is_scaled(byte_order):
    image = Image.fromarray(np.full((6, 6), 257 * 40, dtype=f"{byte_order}u2"))
    image.putpixel((0, 0), 65535)
    pixels = decode_image(encoded(image, "TIFF"), 6, resize_method="nearest")
    assert tuple(pixels[3, 3]) == (40, 40, 40)


def test_32_bit_integer_greyscale_uses_the_16_bit_range_when_it_exceeds_8_bits():
    values = np.full((6, 6), 257 * 60, dtype=np.int32)
    values[0, 0] = 70_000  # beyond 16 bits: clipped to white
    values[0, 1] = -5  # below zero: clipped to black
    pixels = decode_image(encoded(Image.fromarray(values), "TIFF"), 6, resize_method="nearest")
    assert tuple(pixels[3, 3]) == (60, 60, 60)
    assert tuple(pixels[0, 0]) == WHITE
    assert tuple(pixels[0, 1]) == (0, 0, 0)


def test_32_bit_integer_greyscale_within_8_bits_is_unscaled():
    values = np.full((6, 6), 180, dtype=np.int32)
    values[0, 0] = -3
    pixels = decode_image(encoded(Image.fromarray(values), "TIFF"), 6, resize_method="nearest")
    assert tuple(pixels[3, 3]) == (180, 180, 180)
    assert tuple(pixels[0, 0]) == (0, 0, 0)


def test_float_greyscale_is_clipped_to_8_bits():
    values = np.full((6, 6), 99.0, dtype=np.float32)
    values[0, 0], values[0, 1] = 300.0, -20.0
    pixels = decode_image(encoded(Image.fromarray(values), "TIFF"), 6, resize_method="nearest")
    assert tuple(pixels[3, 3]) == (99, 99, 99)
    assert tuple(pixels[0, 0]) == WHITE
    assert tuple(pixels[0, 1]) == (0, 0, 0)


def test_8_bit_greyscale_becomes_grey_rgb():
    assert uniform(decode_image(encoded(Image.new("L", (8, 8), 77), "PNG"), 4)) == (77, 77, 77)


def test_a_palette_without_transparency_keeps_its_colours():
    image = Image.new("RGB", (8, 8), (10, 120, 240)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert uniform(decode_image(encoded(image, "PNG"), 4)) == (10, 120, 240)


def test_a_transparent_palette_entry_becomes_white():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.paste(1, (0, 0, 8, 4))  # top half opaque red, bottom half palette entry 0 (black, transparent)
    pixels = decode_image(encoded(image, "PNG", transparency=0), 8, resize_method="nearest")
    assert uniform(pixels[:4]) == (200, 10, 10)
    assert uniform(pixels[4:]) == WHITE


@pytest.mark.parametrize("mode, key", [("RGB", (0, 0, 0)), ("L", 0)])
def test_a_colour_key_in_an_rgb_or_grey_png_becomes_white(mode, key):
    image = Image.new(mode, (8, 8), key)
    image.paste((200, 10, 10) if mode == "RGB" else 90, (0, 0, 8, 4))  # top half opaque, bottom half the key
    pixels = decode_image(encoded(image, "PNG", transparency=key), 8, resize_method="nearest")
    assert uniform(pixels[:4]) == ((200, 10, 10) if mode == "RGB" else (90, 90, 90))
    assert uniform(pixels[4:]) == WHITE


def test_premultiplied_grey_with_alpha_decodes_onto_white():
    """A grey TIFF whose alpha is marked associated (ExtraSamples = 1) opens in mode La: opaque grey
    stays, clear becomes white."""
    image = Image.new("LA", (8, 8), (0, 0))
    image.paste((90, 255), (0, 0, 8, 4))
    unassociated = b"\x52\x01\x03\x00\x01\x00\x00\x00\x02\x00"  # IFD entry: ExtraSamples, SHORT, 1, 2
    data = encoded(image, "TIFF").replace(unassociated, unassociated[:-2] + b"\x01\x00")
    assert Image.open(io.BytesIO(data)).mode == "La"
    pixels = decode_image(data, 8, resize_method="nearest")
    assert uniform(pixels[:4]) == (90, 90, 90)
    assert uniform(pixels[4:]) == WHITE


def test_a_gif_transparent_index_becomes_white():
    image = Image.new("P", (8, 8), 3)
    image.putpalette([0, 0, 0] * 3 + [20, 20, 20] + [0] * 756)
    assert uniform(decode_image(encoded(image, "GIF", transparency=3), 4)) == WHITE


@pytest.mark.parametrize(
    "mode, colour, expected",
    [
        ("RGBA", (0, 0, 0, 0), WHITE),
        ("RGBA", (0, 0, 0, 255), (0, 0, 0)),
        ("RGBA", (100, 0, 200, 128), (177, 127, 227)),
        ("LA", (0, 0), WHITE),
        ("LA", (40, 255), (40, 40, 40)),
    ],
)
def test_alpha_is_flattened_onto_white(mode, colour, expected):
    pixels = decode_image(encoded(Image.new(mode, (8, 8), colour), "PNG"), 4)
    assert np.abs(np.array(uniform(pixels)) - expected).max() <= 1


def test_cmyk_jpeg_colours_come_out_as_rgb():
    image = Image.new("RGB", (32, 32), (220, 40, 40)).convert("CMYK")
    pixels = decode_image(encoded(image, "JPEG", quality=95), 8).astype(int)
    assert np.abs(pixels - (220, 40, 40)).max() < 12


# Orientation.


@pytest.mark.parametrize("orientation, stored", [(3, Image.Transpose.ROTATE_180), (8, Image.Transpose.ROTATE_270)])
def test_exif_orientation_turns_the_image_upright(orientation, stored):
    upright = Image.new("RGB", (8, 4), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 4, 4))  # red on the left half
    exif = Image.Exif()
    exif[0x0112] = orientation
    pixels = decode_image(encoded(upright.transpose(stored), "PNG", exif=exif), 8, resize_method="nearest")
    assert uniform(pixels[:, :4]) == (255, 0, 0)
    assert uniform(pixels[:, 4:]) == (0, 0, 255)


# Resizing.


def checkerboard(size: int, cell: int) -> Image.Image:
    rows, columns = np.indices((size, size)) // cell
    return Image.fromarray((((rows + columns) % 2) * 255).astype(np.uint8)).convert("RGB")


@pytest.mark.parametrize(
    "method, resampling",
    [
        ("bilinear", Image.Resampling.BILINEAR),
        ("bicubic", Image.Resampling.BICUBIC),
        ("nearest", Image.Resampling.NEAREST),
        ("area", Image.Resampling.BOX),
    ],
)
def test_each_resize_method_is_its_pillow_filter(method, resampling):
    image = checkerboard(30, 3)
    expected = np.asarray(image.resize((14, 14), resampling))
    assert np.array_equal(decode_image(encoded(image, "PNG"), 14, resize_method=method), expected)


def test_resize_methods_differ():
    data = encoded(checkerboard(30, 3), "PNG")
    results = [
        decode_image(data, 14, resize_method=method).tobytes() for method in ("bilinear", "bicubic", "nearest", "area")
    ]
    assert len(set(results)) == 4


def test_the_default_resize_is_bilinear():
    data = encoded(checkerboard(30, 3), "PNG")
    assert np.array_equal(decode_image(data, 14), decode_image(data, 14, resize_method="bilinear"))


def test_area_averages_whole_blocks():
    image = Image.fromarray(np.kron(np.array([[0, 200], [100, 40]], dtype=np.uint8), np.ones((4, 4), np.uint8)))
    pixels = decode_image(encoded(image, "PNG"), 2, resize_method="area")
    assert pixels[..., 0].tolist() == [[0, 200], [100, 40]]


def test_small_images_are_scaled_up():
    assert uniform(decode_image(encoded(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"), 16)) == (9, 8, 7)


# Large JPEGs decode at a reduced scale (draft mode), in colour, and still look the same.


def test_a_large_colour_jpeg_keeps_its_colours_when_drafted():
    image = Image.new("RGB", (512, 512), (30, 60, 220))
    image.paste((230, 200, 40), (0, 0, 256, 512))
    pixels = decode_image(encoded(image, "JPEG", quality=95), 8, resize_method="nearest").astype(int)
    assert np.abs(pixels[:, :3] - (230, 200, 40)).max() < 12
    assert np.abs(pixels[:, 5:] - (30, 60, 220)).max() < 12


def test_a_large_grey_jpeg_decodes_to_grey():
    pixels = decode_image(encoded(Image.new("L", (512, 512), 90), "JPEG", quality=95), 8).astype(int)
    assert pixels.shape == (8, 8, 3)
    assert np.abs(pixels - 90).max() <= 2


def test_a_drafted_jpeg_matches_the_full_decode_closely():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(np.kron(blocks, np.ones((64, 64, 1), np.uint8)))
    data = encoded(image, "JPEG", quality=95)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((8, 8), Image.Resampling.BOX)).astype(int)
    assert np.abs(decode_image(data, 8, resize_method="area").astype(int) - full).mean() < 4


# Batches: rows in equal rows out, errors as "" for success.


def test_a_batch_decodes_good_rows_and_flags_bad_ones_in_place(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encoded(Image.new("RGB", (4, 4), (5, 6, 7)), "PNG"))
    (tmp_path / "empty.png").write_bytes(b"")
    batch = {
        "image_uri": np.array([str(good), str(tmp_path / "empty.png"), str(good)], dtype=object),
        "sku": np.array(["a", "b", "c"]),
    }
    output = decode_batch(batch, image_size=3)
    assert output["error"].tolist() == ["", "empty: the file has zero bytes", ""]
    assert uniform(output["image"][0]) == (5, 6, 7) and uniform(output["image"][2]) == (5, 6, 7)
    assert not output["image"][1].any()
    assert output["image"].dtype == np.uint8 and output["image"].shape == (3, 3, 3, 3)
    assert output["sku"].tolist() == ["a", "b", "c"]
    assert ok_mask(output["error"]).tolist() == [True, False, True]
    assert set(batch) == {"image_uri", "sku"}  # the input batch is not changed


def test_a_batch_passes_the_pixel_limit_and_resize_method_on(tmp_path):
    path = tmp_path / "board.png"
    path.write_bytes(encoded(checkerboard(30, 3), "PNG"))
    uris = np.array([str(path)], dtype=object)
    nearest = decode_batch({"image_uri": uris}, image_size=14, resize_method="nearest")
    assert np.array_equal(nearest["image"][0], decode_image(path.read_bytes(), 14, resize_method="nearest"))
    limited = decode_batch({"image_uri": uris}, image_size=14, max_pixels=899)
    assert limited["error"][0] == "too_large: 30x30 pixels exceeds the limit of 899"


def test_an_empty_batch_stays_empty():
    output = decode_batch({"image_uri": np.array([], dtype=object)}, image_size=4)
    assert output["image"].shape == (0, 4, 4, 3) and len(output["error"]) == 0


@pytest.mark.parametrize(
    "errors, expected",
    [
        (["", None, float("nan"), "missing: x"], [True, True, True, False]),
        (np.array(["", "too_large: 9x9"], dtype=object), [True, False]),
        (np.array([np.nan, np.nan]), [True, True]),
    ],
)
def test_ok_mask(errors, expected):
    mask = ok_mask(np.asarray(errors, dtype=object) if isinstance(errors, list) else errors)
    assert mask.dtype == bool and mask.tolist() == expected


# Fetching: one result per URI, in input order, errors in place.


def test_fetch_all_keeps_input_order_with_errors_in_place(tmp_path):
    uris = []
    for number in range(40):
        path = tmp_path / f"{number}.bin"
        path.write_bytes(str(number).encode())
        uris.append(str(path))
    uris[7] = str(tmp_path / "gone.bin")
    uris[30] = ""
    fetched = fetch_all(uris, threads=3)
    assert len(fetched) == 40
    assert [item for position, item in enumerate(fetched) if position not in (7, 30)] == [
        str(number).encode() for number in range(40) if number not in (7, 30)
    ]
    assert str(fetched[7]) == f"missing: {tmp_path / 'gone.bin'} does not exist"
    assert str(fetched[30]) == "missing: the row has an empty image_uri"


@pytest.mark.parametrize("uris", [[], ["one"]])
def test_fetch_all_with_zero_or_one_uri(tmp_path, uris):
    paths = [str(tmp_path / name) for name in uris]
    for path in paths:
        open(path, "wb").write(b"bytes")
    assert fetch_all(paths) == [b"bytes"] * len(paths)


def test_a_directory_is_unreadable(tmp_path):
    (fetched,) = fetch_all([str(tmp_path)])
    assert isinstance(fetched, ImageError) and str(fetched) == f"unreadable: {tmp_path} is a directory"


def test_a_uri_the_store_rejects_is_unreadable_with_the_error_type():
    (fetched,) = fetch_all(["bad\x00name.png"])
    assert isinstance(fetched, ImageError)
    assert str(fetched) == "unreadable: ValueError: URI 'bad\\x00name.png' contains a NUL byte"


def test_a_missing_file_in_a_batch_is_a_missing_row(tmp_path):
    uri = os.path.join(str(tmp_path), "nope.png")
    output = decode_batch({"image_uri": np.array([uri, ""], dtype=object)}, image_size=4)
    assert output["error"].tolist() == [f"missing: {uri} does not exist", "missing: the row has an empty image_uri"]


# Formats met less often: alpha in TIFF and IM files, 16-bit boundaries, broken metadata.


def test_a_palette_with_an_alpha_band_is_flattened_onto_white():
    image = Image.new("PA", (8, 8), (1, 0))
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.paste((1, 255), (0, 0, 8, 4))  # top half opaque red, bottom half transparent
    data = encoded(image, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "PA"
    pixels = decode_image(data, 8, resize_method="nearest")
    assert uniform(pixels[:4]) == (200, 10, 10)
    assert uniform(pixels[4:]) == WHITE


@pytest.mark.filterwarnings(
    "ignore:IM image format is deprecated:DeprecationWarning"
)  # the one format that opens as I;16L
def test_little_endian_16_bit_greyscale_is_scaled():
    values = np.full((6, 6), 257 * 40, dtype="<u2")
    values[0, 0] = 65535
    data = encoded(Image.frombytes("I;16L", (6, 6), values.tobytes()), "IM")
    assert Image.open(io.BytesIO(data)).mode == "I;16L"
    assert tuple(decode_image(data, 6, resize_method="nearest")[3, 3]) == (40, 40, 40)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_16_bit_value_just_above_8_bits_is_nearly_black(fmt):
    """256 is past the 8-bit range, so the image is read as 16-bit: 256/65535 of full scale."""
    values = np.full((6, 6), 256, dtype=np.uint16 if fmt == "PNG" else np.int32)
    values[0, 0] = 0
    assert tuple(decode_image(encoded(Image.fromarray(values), fmt), 6, resize_method="nearest")[3, 3]) == (0, 0, 0)


def test_a_16_bit_image_whose_brightest_value_is_255_is_read_as_8_bit():
    values = np.full((6, 6), 255, dtype=np.uint16)
    values[0, 0] = 0
    assert tuple(decode_image(encoded(Image.fromarray(values), "PNG"), 6, resize_method="nearest")[3, 3]) == WHITE


def test_16_bit_values_scale_by_255_over_65535():
    values = np.full((6, 6), 65400, dtype=np.uint16)  # 254.47 on the 8-bit scale
    values[0, 0] = 0
    assert tuple(decode_image(encoded(Image.fromarray(values), "PNG"), 6, resize_method="nearest")[3, 3]) == (254,) * 3


def test_broken_exif_metadata_only_warns_and_the_image_decodes():
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010E] = "x" * 60
    data = encoded(Image.new("RGB", (16, 16), (10, 20, 30)), "JPEG", quality=95, exif=exif.tobytes()[:-40])
    with pytest.warns(UserWarning, match="Skipping tag"):
        pixels = decode_image(data, 4).astype(int)
    assert np.abs(pixels - (10, 20, 30)).max() <= 3


def pixel_checkerboard_jpeg(mode: str) -> bytes:
    rows, columns = np.indices((256, 256))
    image = Image.fromarray((((rows + columns) % 2) * 255).astype(np.uint8)).convert(mode)
    return encoded(image, "JPEG", quality=100, **({} if mode == "L" else {"subsampling": 0}))


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_a_large_jpeg_is_decoded_at_a_reduced_scale(mode):
    """Draft mode decodes a 256-pixel JPEG for an 8-pixel output at 1/8 scale, where each pixel is
    the mean of an 8x8 block: a one-pixel checkerboard comes out mid-grey even with `nearest`, which
    on the full-size decode picks single black or white pixels."""
    pixels = decode_image(pixel_checkerboard_jpeg(mode), 8, resize_method="nearest").astype(int)
    assert np.abs(pixels - 128).max() < 28


def fifo_fetch(tmp_path, count: int, give_up_s: float, **options) -> tuple[list, int]:
    paths = [str(tmp_path / f"{number}.fifo") for number in range(count)]
    for path in paths:
        os.mkfifo(path)
    with ThreadPoolExecutor(max_workers=1) as server:
        at_once = server.submit(serve_fifos, paths, lambda path: b"ok", give_up_s)
        fetched = fetch_all(paths, **options)
        return fetched, at_once.result()


def test_two_images_are_read_at_the_same_time(tmp_path):
    fetched, at_once = fifo_fetch(tmp_path, 2, give_up_s=20)
    assert at_once == 2 and fetched == [b"ok", b"ok"]


def test_no_more_images_are_read_at_once_than_threads(tmp_path):
    fetched, at_once = fifo_fetch(tmp_path, 4, give_up_s=1, threads=2)
    assert at_once == 2 and fetched == [b"ok"] * 4
