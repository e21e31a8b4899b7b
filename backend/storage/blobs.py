"""How run_variables stores values SQLite has no type for: complex numbers, numpy arrays (trendlines and
``numpy`` summaries) and PNG thumbnails, as blobs (docs/spec.md "Database: runs.sqlite v4")."""

from __future__ import annotations

import io
import struct
from enum import Enum
from typing import Any

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"


class BlobTypes(Enum):
    png = "png"
    numpy = "numpy"
    unknown = "unknown"

    @classmethod
    def identify(cls, blob: bytes) -> BlobTypes:
        if blob.startswith(PNG_MAGIC):
            return cls.png
        if blob.startswith(NPY_MAGIC):
            return cls.numpy
        return cls.unknown


def complex2blob(value: complex) -> bytes:
    return struct.pack("<dd", value.real, value.imag)


def blob2complex(blob: bytes) -> complex:
    return complex(*struct.unpack("<dd", blob))


def numpy2blob(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def blob2numpy(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


def decode_summary(value: Any, summary_type: str | None) -> Any:
    """DB cell → Python value: complex and numpy blobs decoded, PNG kept as bytes."""
    if isinstance(value, bytes):
        if summary_type == "complex":
            return blob2complex(value)
        if summary_type in ("numpy", "trendline") or BlobTypes.identify(value) is BlobTypes.numpy:
            return blob2numpy(value)
    return value
