"""Reads a PyTorch state dict into NumPy arrays without PyTorch (the only checkpoint reader).

PyTorch's legacy `.pth` format (before torch 1.6) is five pickles in a row (magic number,
protocol version, system info, the state dict with tensors as persistent ids, the storage keys)
followed by each storage's raw little-endian bytes, each preceded by its element count as an int64.
Installing torch (about 200 MB) to read 18 MB of floats would not earn its place, and a plain
`pickle.load` of a foreign file can run arbitrary code: the unpickler below resolves only the
handful of globals a state dict needs and refuses everything else.
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path
from typing import IO, Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES: dict[str, type[np.generic]] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


class _TensorRef:
    """A tensor the state dict names before its storage's bytes have been read."""

    def __init__(
        self, storage_type: str, storage_key: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage_type = storage_type
        self.storage_key = storage_key
        self.offset = offset
        self.size = size
        self.stride = stride


def _rebuild_tensor(
    storage: tuple[str, str], offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    return _TensorRef(storage[0], storage[1], offset, tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only OrderedDict, tensor rebuilding and storage types; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing {module}.{name}: a state dict holds only tensors")

    def persistent_load(self, pid: Any) -> tuple[str, str]:
        # ("storage", storage type, key, device, element count, view metadata)
        _, storage_type, key, _, _, _ = pid
        return (storage_type, str(key))


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a legacy-format PyTorch state dict.

    Args:
        path: Local `.pth` file written by `torch.save(model.state_dict(), ...)` before torch 1.6
            (or with `_use_new_zipfile_serialization=False`).

    Returns:
        Parameter name → array with PyTorch's layout (convolutions OIHW).

    Raises:
        ValueError: The file is not a legacy PyTorch checkpoint, or it holds something other than
            tensors.
    """
    with open(path, "rb") as stream:
        if stream.read(2) == b"PK":
            raise ValueError(
                f"{path} is a zip-format PyTorch checkpoint; only the legacy format is read "
                "(re-save it with torch.save(..., _use_new_zipfile_serialization=False))"
            )
        stream.seek(0)
        try:
            # Every one of the five pickles goes through the restricted unpickler: the header
            # pickles of a foreign file can call globals just as the state dict can.
            magic = _StateDictUnpickler(stream).load()
            protocol = _StateDictUnpickler(stream).load()
            if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
                raise ValueError(f"{path} is not a legacy PyTorch checkpoint (magic {magic!r}, protocol {protocol!r})")
            _StateDictUnpickler(stream).load()  # system info: endianness and C type sizes
            state = _StateDictUnpickler(stream).load()
            keys = _StateDictUnpickler(stream).load()
        except pickle.UnpicklingError as error:
            raise ValueError(f"{path} is not a PyTorch checkpoint: {error}") from error
        except EOFError as error:
            raise ValueError(f"{path} is not a PyTorch checkpoint: it ends early") from error
        storages = _read_storages(stream, keys, _storage_types(state))
    return {name: _materialise(ref, storages) for name, ref in state.items()}


def _storage_types(state: dict[str, Any]) -> dict[str, str]:
    """Storage key → storage type, which only the tensors that view a storage record."""
    types: dict[str, str] = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise ValueError(f"state dict entry {name!r} is not a tensor")
        types.setdefault(ref.storage_key, ref.storage_type)
    return types


def _read_storages(stream: IO[bytes], keys: list[str], types: dict[str, str]) -> dict[str, np.ndarray]:
    storages = {}
    for key in keys:
        (count,) = struct.unpack("<q", stream.read(8))
        dtype = np.dtype(_STORAGE_DTYPES[types[str(key)]]).newbyteorder("<")
        storages[str(key)] = np.frombuffer(stream.read(count * dtype.itemsize), dtype=dtype)
    return storages


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages[ref.storage_key][ref.offset :]
    strides = tuple(step * flat.itemsize for step in ref.stride)
    view = np.lib.stride_tricks.as_strided(flat, shape=ref.size, strides=strides, writeable=False)
    return np.array(view, dtype=flat.dtype.newbyteorder("="))
