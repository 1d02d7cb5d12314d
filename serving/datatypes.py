"""Open Inference Protocol datatypes and their numpy equivalents."""

from __future__ import annotations

import numpy as np

from serving.errors import InvalidInput

# OIP name -> numpy dtype. BYTES are object arrays of ``bytes``.
TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

FROM_NUMPY: dict[np.dtype[np.generic], str] = {v: k for k, v in TO_NUMPY.items()}
FROM_NUMPY[np.dtype(np.bytes_)] = "BYTES"

DATATYPES = frozenset(TO_NUMPY)


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    try:
        return TO_NUMPY[datatype]
    except KeyError:
        raise InvalidInput(
            f"unknown datatype '{datatype}'; expected one of {', '.join(sorted(DATATYPES))}"
        ) from None


def oip_datatype(dtype: np.dtype[np.generic]) -> str:
    try:
        return FROM_NUMPY[dtype]
    except KeyError:
        if dtype.kind in ("S", "U", "O"):
            return "BYTES"
        raise InvalidInput(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None
