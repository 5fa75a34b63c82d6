"""Catalogs: folder trees, flat folders and CSV/Parquet manifests, turned into checked rows.

A catalog becomes a pandas frame of {image_id, image_uri, label, ...passthrough} listed on the
driver (listing is cheap next to decoding), then a Ray Dataset for the heavy work.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pandas as pd

from pipeline import storage
from pipeline.schema import IMAGE_ID, IMAGE_URI, LABEL

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MANIFEST_EXTENSIONS = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class LabelIndex:
    """Class names ↔ integer ids, in the model's output order (sorted names)."""

    class_names: tuple[str, ...]

    @classmethod
    def fit(cls, labels: pd.Series) -> LabelIndex:
        return cls(tuple(sorted(str(label) for label in labels.dropna().unique())))

    def index(self, label: str) -> int:
        return self.class_names.index(label)

    def encode(self, labels: pd.Series) -> pd.Series:
        mapping = {name: index for index, name in enumerate(self.class_names)}
        return labels.map(mapping).astype("int32")

    def __len__(self) -> int:
        return len(self.class_names)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def read_catalog_frame(uri: str) -> pd.DataFrame:
    """Lists a catalog as rows.

    Args:
        uri: A `<root>/<label>/<file>` tree, a flat folder of images (unlabelled), or a CSV/Parquet
            manifest with `image_uri` (+ optional `label`, `image_id`, passthrough columns).
            Local path, file:// or s3://.

    Returns:
        A frame with image_id, image_uri (full URI), label (None when unlabelled) and any
        passthrough columns, in a stable order.

    Raises:
        ValueError: The catalog is missing, empty, malformed or has duplicate image ids.
    """
    uri = storage.normalize(uri)
    try:
        found = storage.exists(uri)
    except Exception as error:  # e.g. no credentials, unknown bucket: the user's to fix
        raise ValueError(f"catalog {uri!r} cannot be read ({type(error).__name__}: {error})") from error
    if not found:
        raise ValueError(
            f"catalog {uri!r} does not exist; pass --catalog a folder tree, a flat "
            "folder of images or a CSV/Parquet manifest"
        )
    if uri.lower().endswith(MANIFEST_EXTENSIONS):
        frame = _read_manifest(uri)
    else:
        frame = _read_folder(uri)
    if frame.empty:
        raise ValueError(f"catalog {uri!r} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
    duplicated = frame[IMAGE_ID][frame[IMAGE_ID].duplicated()]
    if not duplicated.empty:
        raise ValueError(
            f"catalog {uri!r} has duplicate image_id values, e.g. {duplicated.iloc[0]!r}; "
            "every row needs a unique image_id"
        )
    logger.info("catalog %s: %d images, %s", uri, len(frame), "labelled" if has_labels(frame) else "unlabelled")
    return frame.reset_index(drop=True)


def has_labels(frame: pd.DataFrame) -> bool:
    return LABEL in frame and bool(frame[LABEL].notna().any())


def passthrough_columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if column not in (IMAGE_ID, IMAGE_URI, LABEL)]


def _read_folder(uri: str) -> pd.DataFrame:
    files = [(file_uri, size) for file_uri, size in storage.find(uri)]
    prefix = uri.rstrip("/") + "/"
    rows, skipped = [], 0
    for file_uri, _ in files:
        relative = file_uri[len(prefix) :] if file_uri.startswith(prefix) else os.path.basename(file_uri)
        if not is_image_name(relative) or os.path.basename(relative).startswith("."):
            skipped += 1
            continue
        parts = relative.split("/")
        rows.append({IMAGE_ID: relative, IMAGE_URI: file_uri, LABEL: parts[0] if len(parts) > 1 else None})
    if skipped:
        logger.info("catalog %s: skipped %d files without an image extension", uri, skipped)
    frame = pd.DataFrame(rows, columns=[IMAGE_ID, IMAGE_URI, LABEL])
    labelled = frame[LABEL].notna()
    if labelled.any() and not labelled.all():
        loose = frame.loc[~labelled, IMAGE_ID].iloc[0]
        raise ValueError(
            f"catalog {uri!r} mixes images at its root (e.g. {loose!r}) with label "
            "folders; use either <root>/<label>/<file> or a flat folder"
        )
    return frame.sort_values(IMAGE_ID, kind="stable")


def _read_manifest(uri: str) -> pd.DataFrame:
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as handle:
        if uri.lower().endswith(".csv"):
            frame = pd.read_csv(
                handle, dtype={IMAGE_URI: str, IMAGE_ID: str, LABEL: str}, keep_default_na=False, na_values=[""]
            )
        else:
            frame = pd.read_parquet(handle)
    if IMAGE_URI not in frame.columns:
        raise ValueError(
            f"manifest {uri!r} has no 'image_uri' column (columns: {list(frame.columns)}); "
            "add one with each image's path or s3:// URI"
        )
    if frame[IMAGE_URI].isna().any():
        raise ValueError(f"manifest {uri!r} has rows with an empty image_uri")
    base = uri.rsplit("/", 1)[0]
    frame[IMAGE_URI] = [resolve_image_uri(str(value), base) for value in frame[IMAGE_URI]]
    if IMAGE_ID not in frame.columns:
        frame[IMAGE_ID] = frame[IMAGE_URI]
    frame[IMAGE_ID] = frame[IMAGE_ID].astype(str)
    if LABEL not in frame.columns:
        frame[LABEL] = None
    frame[LABEL] = frame[LABEL].astype(object).where(frame[LABEL].notna(), None)
    frame[LABEL] = [None if value is None else str(value) for value in frame[LABEL]]
    ordered = [IMAGE_ID, IMAGE_URI, LABEL] + passthrough_columns(frame)
    return frame[ordered]


def resolve_image_uri(image_uri: str | None, base: str) -> str:
    """Manifest URIs may be relative to the manifest's own folder. A malformed one (NUL byte) or an
    empty one is kept as it is: that row becomes an error row when read, instead of failing the
    catalog."""
    if image_uri is None or image_uri == "" or "\x00" in image_uri:
        return "" if image_uri is None else image_uri
    if storage.is_remote(image_uri) or image_uri.startswith("file://") or os.path.isabs(image_uri):
        return storage.normalize(image_uri)
    if storage.is_remote(base):
        return f"{base}/{image_uri}"
    return os.path.normpath(os.path.join(base, image_uri))
