"""A scoring catalog as a Ray Dataset built on workers: the driver keeps no per-row state.

The driver only looks at what is small whatever the catalog's size: a folder's top level, or a
manifest's footer (Parquet) or first block (CSV). Workers list each top-level prefix, taking each
image's fingerprint (size plus ETag or mtime) from the same LIST page, and read manifest files
with Ray Data's readers. A catalog of ten million images costs the driver a few hundred prefixes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray

from pipeline import storage
from pipeline.catalog import IMAGE_EXTENSIONS, MANIFEST_EXTENSIONS, is_image_name, resolve_image_uri
from pipeline.images import FETCH_THREADS
from pipeline.schema import IMAGE_ID, IMAGE_URI, LABEL

FINGERPRINT = "fingerprint"
ROWS_PER_JOIN_PARTITION = 200_000  # a hash partition of a join: ~20-40 MB of ids on one worker


def join_partitions(rows: int) -> int:
    """Hash partitions for a join over `rows` rows: enough to spread it, few enough to start fast."""
    return max(1, min(64, -(-rows // ROWS_PER_JOIN_PARTITION)))


CATALOG_COLUMNS = (IMAGE_ID, IMAGE_URI, LABEL)


@dataclass(frozen=True)
class CatalogSource:
    """What the driver learnt about a catalog without reading its rows."""

    uri: str
    kind: str  # "folder" or "manifest"
    prefixes: tuple[str, ...] = ()  # folder: one listing task each
    labelled_tree: bool = False  # folder: <root>/<label>/<file>, else a flat folder
    csv_types: dict[str, pa.DataType] = field(default_factory=dict)  # manifest: every column's type
    passthrough: pa.Schema = field(default_factory=lambda: pa.schema([]))

    @property
    def is_manifest(self) -> bool:
        return self.kind == "manifest"


def describe_catalog(uri: str) -> CatalogSource:
    """Checks a catalog from its top level or its header, before any Ray work.

    Raises:
        ValueError: Missing, empty, malformed or mixed catalog, named with the fix.
    """
    uri = storage.normalize(uri)
    missing = ValueError(
        f"catalog {uri!r} does not exist; pass --catalog a folder tree, a flat "
        "folder of images or a CSV/Parquet manifest"
    )
    try:
        if uri.lower().endswith(MANIFEST_EXTENSIONS):
            if not storage.exists(uri):
                raise missing
            return _describe_manifest(uri)
        return _describe_folder(uri)  # its listing is the existence check: no HEAD
    except FileNotFoundError as error:
        raise missing from error
    except ValueError:
        raise
    except Exception as error:  # e.g. no credentials, unknown bucket: the user's to fix
        raise ValueError(f"catalog {uri!r} cannot be read ({type(error).__name__}: {error})") from error


def _describe_folder(uri: str) -> CatalogSource:
    fs, path = storage.filesystem(uri)
    if not storage.is_remote(uri) and not os.path.isdir(path):
        raise FileNotFoundError(path)  # a local file that is not a manifest is no catalog either
    entries = fs.ls(path, detail=True)
    folders = sorted(storage.to_uri(fs, e["name"]) for e in entries if e.get("type") == "directory")
    images = [e["name"] for e in entries if e.get("type") == "file" and _is_catalog_image(e["name"])]
    if folders and images:
        loose = os.path.basename(images[0])
        raise ValueError(
            f"catalog {uri!r} mixes images at its root (e.g. {loose!r}) with label "
            "folders; use either <root>/<label>/<file> or a flat folder"
        )
    if not folders and not images:
        raise ValueError(f"catalog {uri!r} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return CatalogSource(uri, "folder", tuple(folders) if folders else (uri,), labelled_tree=bool(folders))


def _describe_manifest(uri: str) -> CatalogSource:
    fs, path = storage.filesystem(uri)
    csv_types: dict[str, pa.DataType] = {}
    if uri.lower().endswith(".csv"):
        with fs.open(path, "rb") as handle:
            reader = pacsv.open_csv(handle, convert_options=_csv_options({}))
            schema = reader.schema
        csv_types = {name: schema.field(name).type for name in schema.names}
        csv_types.update({name: pa.string() for name in CATALOG_COLUMNS if name in csv_types})
    else:
        paths, arrow_fs = storage.arrow_paths([uri])
        schema = pq.read_schema(paths[0], filesystem=arrow_fs)
    if IMAGE_URI not in schema.names:
        raise ValueError(
            f"manifest {uri!r} has no 'image_uri' column (columns: {schema.names}); "
            "add one with each image's path or s3:// URI"
        )
    passthrough = pa.schema([schema.field(name) for name in schema.names if name not in CATALOG_COLUMNS])
    return CatalogSource(uri, "manifest", csv_types=csv_types, passthrough=passthrough.remove_metadata())


def _csv_options(types: dict[str, pa.DataType]) -> pacsv.ConvertOptions:
    # Only an empty cell is missing: "NA" or "null" may be a real label or id.
    return pacsv.ConvertOptions(
        column_types={IMAGE_URI: pa.string(), IMAGE_ID: pa.string(), LABEL: pa.string(), **types},
        null_values=[""],
        strings_can_be_null=True,
    )


def _is_catalog_image(path: str) -> bool:
    name = os.path.basename(path)
    return is_image_name(name) and not name.startswith(".")


# --------------------------------------------------------------------------- on workers


def catalog_dataset(source: CatalogSource) -> ray.data.Dataset:
    """The catalog's rows {image_id, image_uri, label, [fingerprint], passthrough...}, built on workers."""
    if source.is_manifest:
        return _manifest_dataset(source)
    return ray.data.from_items(
        [{"prefix": prefix} for prefix in source.prefixes], override_num_blocks=len(source.prefixes)
    ).map_batches(
        list_prefix,  # type: ignore[arg-type]  # Ray's stubs know no keyword arguments
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"root": source.uri, "labelled_tree": source.labelled_tree},
    )


def list_prefix(batch: pa.Table, root: str, labelled_tree: bool) -> pa.Table:
    """Ray Data task: one prefix's images as catalog rows, fingerprints from the listing itself."""
    prefix = str(batch.column("prefix")[0].as_py())
    fs, path = storage.filesystem(prefix)
    base = root.rstrip("/") + "/"
    rows: dict[str, list[Any]] = {IMAGE_ID: [], IMAGE_URI: [], LABEL: [], FINGERPRINT: []}
    listing = fs.find(path, detail=True) if labelled_tree else {e["name"]: e for e in fs.ls(path, detail=True)}
    for name, info in sorted(listing.items()):
        if info.get("type") != "file" or not _is_catalog_image(name):
            continue
        file_uri = storage.to_uri(fs, name)
        relative = file_uri[len(base) :] if file_uri.startswith(base) else os.path.basename(file_uri)
        rows[IMAGE_ID].append(relative)
        rows[IMAGE_URI].append(file_uri)
        rows[LABEL].append(relative.split("/", 1)[0] if labelled_tree else None)
        rows[FINGERPRINT].append(storage.fingerprint(info))
    fs.invalidate_cache(path)  # s3fs keeps every listing otherwise, for the worker's whole life
    return pa.table(rows, schema=pa.schema([(column, pa.string()) for column in rows]))


def with_fingerprints(dataset: ray.data.Dataset, source: CatalogSource, rows: int) -> ray.data.Dataset:
    """Adds each manifest row's fingerprint on workers (a folder's listing already has them): each
    distinct parent prefix is listed once, joined to the rows on image_uri, and only rows that no
    listing found get a HEAD, concurrently."""
    if not source.is_manifest:
        return dataset
    parents = sorted(str(p) for p in dataset.map_batches(_parents, batch_format="pyarrow").unique("parent"))
    if not parents:
        return dataset.map_batches(_head_missing, batch_format="pyarrow")
    prefixes = ray.data.from_items([{"prefix": p} for p in parents], override_num_blocks=min(len(parents), 1000))
    listed = prefixes.map_batches(_list_parents, batch_format="pyarrow")
    joined = dataset.join(listed, join_type="left_outer", num_partitions=join_partitions(rows), on=(IMAGE_URI,))
    return joined.map_batches(_head_missing, batch_format="pyarrow")


def _parents(batch: pa.Table) -> pa.Table:
    uris = [str(uri) for uri in batch.column(IMAGE_URI).to_pylist()]
    return pa.table({"parent": sorted({uri.rsplit("/", 1)[0] for uri in uris if "/" in uri})})


def _list_parents(batch: pa.Table) -> pa.Table:
    """Ray Data task: (image_uri, fingerprint) of every object directly under some prefixes."""
    found: dict[str, str] = {}
    for parent in batch.column("prefix").to_pylist():
        try:
            fs, path = storage.filesystem(str(parent))
            entries = fs.ls(path, detail=True)
            fs.invalidate_cache(path)
        except (OSError, ValueError):  # not a listable folder: its rows fall back to a HEAD each
            continue
        found.update((storage.to_uri(fs, e["name"]), storage.fingerprint(e)) for e in entries if e["type"] == "file")
    return pa.table({IMAGE_URI: list(found), FINGERPRINT: list(found.values())}, schema=_LISTED)


_LISTED = pa.schema([(IMAGE_URI, pa.string()), (FINGERPRINT, pa.string())])


def _head_missing(batch: pa.Table) -> pa.Table:
    """Ray Data task: fingerprints by HEAD, concurrently, for the rows no listing found."""
    uris = [str(uri) for uri in batch.column(IMAGE_URI).to_pylist()]
    marks = batch.column(FINGERPRINT).to_pylist() if FINGERPRINT in batch.column_names else [None] * len(uris)
    missing = [i for i, mark in enumerate(marks) if mark is None and uris[i]]
    if missing:
        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(missing))) as pool:
            for i, mark in zip(missing, pool.map(_head, [uris[i] for i in missing])):
                marks[i] = mark
    if FINGERPRINT in batch.column_names:
        batch = batch.drop_columns([FINGERPRINT])
    return batch.append_column(FINGERPRINT, pa.array(marks, pa.string()))


def _head(uri: str) -> str | None:
    try:
        fs, path = storage.filesystem(uri)
        return storage.fingerprint(fs.info(path))
    except (OSError, ValueError):
        return None


def _manifest_dataset(source: CatalogSource) -> ray.data.Dataset:
    paths, arrow_fs = storage.arrow_paths([source.uri])
    if source.csv_types:
        dataset = ray.data.read_csv(paths, filesystem=arrow_fs, convert_options=_csv_options(source.csv_types))
    else:
        dataset = ray.data.read_parquet(paths, filesystem=arrow_fs)
    base = source.uri.rsplit("/", 1)[0]
    return dataset.map_batches(
        normalize_manifest,  # type: ignore[arg-type]  # Ray's stubs know no keyword arguments
        batch_format="pyarrow",
        fn_kwargs={"base": base},
    )


def normalize_manifest(batch: pa.Table, base: str) -> pa.Table:
    """Ray Data task: manifest rows with full URIs, string ids (the URI when absent) and labels.

    An empty `image_uri` stays a row (its decode records why), so no row is ever dropped.
    """
    uris = [resolve_image_uri(None if v is None else str(v), base) for v in batch.column(IMAGE_URI).to_pylist()]
    image_uri = pa.array(uris, pa.string())
    ids = batch.column(IMAGE_ID) if IMAGE_ID in batch.column_names else image_uri
    labels = batch.column(LABEL) if LABEL in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    columns = {
        IMAGE_ID: pc.cast(ids, pa.string()),
        IMAGE_URI: image_uri,
        LABEL: pc.cast(labels, pa.string()),
    }
    for name in batch.column_names:
        if name not in CATALOG_COLUMNS:
            columns[name] = batch.column(name)
    return pa.table(columns)
