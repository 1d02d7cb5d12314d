"""Raw tensor bytes, shared by the REST binary extension and gRPC ``raw_*_contents``.

Fixed-size datatypes are little-endian, row-major and decoded with ``np.frombuffer``: no copy.
BYTES elements are each prefixed with their length as a 4-byte little-endian unsigned int.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from serving.datatypes import TO_NUMPY, numpy_dtype
from serving.errors import InvalidInput
from serving.inference import Array

_LENGTH = struct.Struct("<I")

# Fixed-size datatypes as raw bytes carry them (little-endian), built once.
RAW_DTYPES = {name: dtype.newbyteorder("<") for name, dtype in TO_NUMPY.items() if name != "BYTES"}


def _raw_dtype(datatype: str) -> np.dtype[np.generic]:
    dtype = RAW_DTYPES.get(datatype)
    if dtype is None:
        numpy_dtype(datatype)  # raises InvalidInput naming the datatypes there are
        raise AssertionError(f"{datatype} has a numpy type but no raw layout")
    return dtype


def split_bytes(name: str, buffer: bytes | memoryview) -> list[bytes]:
    """Length-prefixed BYTES elements -> list of bytes; InvalidInput if the framing is broken."""
    view = memoryview(buffer)
    items: list[bytes] = []
    offset, end = 0, len(view)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(f"input '{name}': BYTES data ends inside a 4-byte length prefix")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(
                f"input '{name}': BYTES element of {length} bytes runs past the end of the data"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items


def from_raw(name: str, datatype: str, shape: tuple[int, ...], buffer: bytes | memoryview) -> Array:
    """Raw bytes -> array of ``shape``. Zero-copy (read-only view) for fixed-size datatypes
    whose bytes are aligned for their type."""
    count = math.prod(shape)
    if datatype == "BYTES":
        items = split_bytes(name, buffer)
        if len(items) != count:
            raise InvalidInput(
                f"input '{name}': raw BYTES data holds {len(items)} elements but shape {list(shape)} needs {count}"
            )
        array: Array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = _raw_dtype(datatype)
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"input '{name}': raw data has {len(buffer)} bytes but shape {list(shape)} of {datatype} "
            f"needs {expected}"
        )
    array = np.ndarray(shape, dtype, buffer)  # one call: view, dtype and shape
    if not array.flags.aligned:
        # A binary section after a JSON header of odd length; runtimes (XGBoost) refuse
        # misaligned pointers, so this one case pays for a copy.
        array = array.copy()
    return array


def to_raw(datatype: str, array: Array) -> bytes:
    """Array -> raw bytes (little-endian, row-major; BYTES length-prefixed)."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in array.ravel():
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    dtype = _raw_dtype(datatype)
    if array.dtype != dtype:
        array = array.astype(dtype)
    return array.tobytes()  # row-major whatever the array's layout
