"""Pure batch functions that turn image URIs into fixed-size RGB arrays.

An image that cannot be read or decoded is flagged in the `error` column with a specific reason
and gets an all-zero array, so rows in always equals rows out.
"""

from __future__ import annotations

import io
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline import storage
from pipeline.schema import ERROR, IMAGE, IMAGE_URI, Batch

logger = logging.getLogger(__name__)

# Pillow raises its own DecompressionBombError only at 2x its limit; we refuse at our own limit
# from the header, before any pixel is allocated.
DEFAULT_MAX_PIXELS = 40_000_000
# Images fetched at once per decode batch. Decode batches are `predict.batch_size` rows (32 on
# CPU), so a batch's GETs all start together and cost one round trip (~50 ms on S3), not two;
# few enough that a batch never opens hundreds of connections. 16 gave 0.76x local throughput
# against an S3 answering each GET after 50 ms (benchmarks/scale.py --s3-get-latency 0.05).
FETCH_THREADS = 64
_RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
}


class ImageError(Exception):
    """An image that cannot be scored; the message is the row's `error` value."""


def decode_image(
    data: bytes, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS, resize_method: str = "bilinear"
) -> np.ndarray:
    """Decodes encoded bytes to a (size, size, 3) uint8 RGB array.

    Honours EXIF orientation, flattens transparency onto white (catalog photos are shot on white),
    scales 16/32-bit greyscale to 8 bits and uses JPEG draft mode to decode large JPEGs at a
    reduced scale when they are being shrunk anyway.

    Raises:
        ImageError: With a reason starting `empty:`, `not_an_image:`, `too_large:`, `truncated:`
            or `decode_failed:`.
    """
    if not data:
        raise ImageError("empty: the file has zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"too_large: {width}x{height} pixels exceeds the limit of {max_pixels}")
            if image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
                image.draft("RGB" if image.mode != "L" else "L", (image_size, image_size))
            image.load()
            # In place: the default returns a full copy of every upright image (~10% of a decode).
            ImageOps.exif_transpose(image, in_place=True)
            image = _to_rgb(image)
            image = image.resize((image_size, image_size), _RESAMPLING[resize_method])
    except ImageError:
        raise
    except UnidentifiedImageError as error:
        raise ImageError("not_an_image: no image format recognised") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"too_large: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        reason = "truncated" if "truncated" in str(error).lower() else "decode_failed"
        raise ImageError(f"{reason}: {error}") from error
    return np.asarray(image, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = np.asarray(image)
        if image.mode.startswith("I;16") or (image.mode == "I" and pixels.max(initial=0) > 255):
            scale = 65535.0 if pixels.max(initial=0) > 255 else 255.0
            pixels = pixels.astype(np.float64) * (255.0 / scale)
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")
    if "transparency" in image.info:  # a palette entry, or a colour key in an RGB or grey PNG
        image = image.convert("RGBA")
    if image.mode == "La":  # premultiplied grey: Pillow converts it to RGBA only through LA
        image = image.convert("LA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def decode_batch(
    batch: Batch, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS, resize_method: str = "bilinear"
) -> Batch:
    """Ray Data batch function: reads and decodes `image_uri`, adding `image` and `error`.

    Other columns pass through unchanged, so no row is ever dropped.
    """
    uris = [str(uri) for uri in batch[IMAGE_URI]]
    images = np.zeros((len(uris), image_size, image_size, 3), dtype=np.uint8)
    errors = np.empty(len(uris), dtype=object)
    for position, fetched in enumerate(fetch_all(uris)):
        try:
            if isinstance(fetched, ImageError):
                raise fetched
            images[position] = decode_image(fetched, image_size, max_pixels, resize_method)
            errors[position] = ""
        except ImageError as error:
            errors[position] = str(error)
    output = dict(batch)
    output[IMAGE] = images
    output[ERROR] = errors
    return output


def ok_mask(errors: np.ndarray) -> np.ndarray:
    """True where a row decoded. Errors travel as "" for success: Ray turns an all-None column
    into NaN, which no identity check survives."""
    return np.array([not isinstance(error, str) or error == "" for error in errors], dtype=bool)


def fetch_all(uris: list[str], threads: int = FETCH_THREADS) -> list[bytes | ImageError]:
    """Every image's bytes (or why not), fetched by a bounded pool of threads in input order, so
    object-store latency overlaps instead of adding up (one GET per image, no HEAD)."""
    if len(uris) <= 1:
        return [_read_or_error(uri) for uri in uris]
    with ThreadPoolExecutor(max_workers=min(threads, len(uris)), thread_name_prefix="fetch") as pool:
        return list(pool.map(_read_or_error, uris))


def _read_or_error(uri: str) -> bytes | ImageError:
    try:
        return _read(uri)
    except ImageError as error:
        return error


def _read(uri: str) -> bytes:
    if not uri:
        raise ImageError("missing: the row has an empty image_uri")
    try:
        return storage.read_bytes(uri)
    except FileNotFoundError as error:
        raise ImageError(f"missing: {uri} does not exist") from error
    except IsADirectoryError as error:
        raise ImageError(f"unreadable: {uri} is a directory") from error
    except Exception as error:  # storage backends raise many types; the row records which
        raise ImageError(f"unreadable: {type(error).__name__}: {error}") from error
