"""Middlebury ``.flo`` optical-flow files.

Layout (all little-endian)::

    bytes 0..3    magic: float32 202021.25, i.e. the ASCII bytes b"PIEH"
    bytes 4..7    int32 width  W
    bytes 8..11   int32 height H
    bytes 12..    H * W * 2 float32: (u, v) interleaved, row-major, top row first

The file must end right after the data: trailing bytes are an error, as is truncation.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import FlowFormatError

__all__ = ["FLO_MAGIC", "MAX_DIMENSION", "read_flo", "write_flo"]

#: The first four bytes of every ``.flo`` file (float32 202021.25, little-endian).
FLO_MAGIC = b"PIEH"
#: Largest width or height accepted by the readers and writers (a sanity limit against corrupt headers).
MAX_DIMENSION = 100_000

_HEADER_BYTES = 12


def check_dimensions(name: str, width: int, height: int) -> None:
    """Raise :class:`FlowFormatError` unless ``1 <= width, height <= MAX_DIMENSION``."""
    for label, value in (("width", width), ("height", height)):
        if not 1 <= value <= MAX_DIMENSION:
            raise FlowFormatError(
                f"{name}: implausible {label} {value} in header (must be 1..{MAX_DIMENSION}): corrupt file?"
            )


def check_flow_array(flow: ArrayLike, name: str) -> NDArray[Any]:
    """Return ``flow`` as an ndarray after checking it is a real-valued ``(H, W, 2)`` array.

    Raises:
        FlowFormatError: wrong number of dimensions, last axis not 2, or a non-real dtype
            (bool, complex, object, strings).
    """
    arr = np.asarray(flow)
    if arr.ndim != 3 or arr.shape[2] != 2:
        raise FlowFormatError(f"{name}: flow must have shape (H, W, 2), got {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise FlowFormatError(f"{name}: flow must be a real float or integer array, got dtype {arr.dtype}")
    return arr


def read_flo(path: str | os.PathLike[str]) -> NDArray[np.float32]:
    """Read a Middlebury ``.flo`` file.

    Args:
        path: the file to read.

    Returns:
        The flow, shape ``(H, W, 2)``, dtype float32 (native byte order), C-contiguous and writable;
        ``[..., 0]`` is u (rightward, pixels), ``[..., 1]`` is v (downward, pixels).

    Raises:
        FileNotFoundError: the file does not exist.
        FlowFormatError: empty file, wrong magic, implausible dimensions, truncated data or trailing bytes.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header = f.read(_HEADER_BYTES)
        if not header:
            raise FlowFormatError(f"{name}: empty file")
        if len(header) < _HEADER_BYTES and FLO_MAGIC.startswith(header[:4]):
            raise FlowFormatError(
                f"{name}: truncated header: {len(header)} bytes, a .flo header needs {_HEADER_BYTES}"
            )
        if header[:4] != FLO_MAGIC:
            raise FlowFormatError(
                f"{name}: wrong magic {header[:4]!r}, expected {FLO_MAGIC!r} (float32 202021.25): "
                "not a Middlebury .flo file"
            )
        if len(header) < _HEADER_BYTES:
            raise FlowFormatError(
                f"{name}: truncated header: {len(header)} bytes, a .flo header needs {_HEADER_BYTES}"
            )
        width, height = struct.unpack("<ii", header[4:12])
        check_dimensions(name, width, height)
        count = width * height * 2
        expected = count * 4
        available = size - _HEADER_BYTES
        if available < expected:
            raise FlowFormatError(
                f"{name}: truncated: header says {width}x{height} ({expected} bytes of data) "
                f"but only {available} bytes follow"
            )
        if available > expected:
            raise FlowFormatError(
                f"{name}: {available - expected} trailing bytes after the {width}x{height} flow data "
                f"({expected} bytes expected after the header)"
            )
        data = np.fromfile(f, dtype="<f4", count=count)
    if data.size != count:  # the file shrank while we read it
        raise FlowFormatError(f"{name}: truncated: expected {count} float32 values, read {data.size}")
    return data.reshape(height, width, 2).astype(np.float32, copy=False)


def write_flo(path: str | os.PathLike[str], flow: ArrayLike) -> None:
    """Write a Middlebury ``.flo`` file.

    Args:
        path: the file to write (overwritten if it exists).
        flow: shape ``(H, W, 2)``, real dtype; stored as little-endian float32. NaN is allowed (it is
            written as is); ±inf, and values that overflow float32, are rejected.

    Raises:
        FlowFormatError: wrong shape or dtype, an empty or over-large image, or infinite values.
    """
    name = os.fspath(path)
    arr = check_flow_array(flow, name)
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise FlowFormatError(f"{name}: cannot write an empty flow of shape {arr.shape}")
    if height > MAX_DIMENSION or width > MAX_DIMENSION:
        raise FlowFormatError(f"{name}: flow of shape {arr.shape} exceeds the {MAX_DIMENSION} pixel limit")
    with np.errstate(over="ignore"):
        data = arr.astype("<f4", order="C")
    if np.isinf(data).any():
        raise FlowFormatError(f"{name}: flow contains infinite values (or values beyond float32 range)")
    with open(path, "wb") as f:
        f.write(FLO_MAGIC)
        f.write(struct.pack("<ii", width, height))
        data.tofile(f)
