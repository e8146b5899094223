"""Portable Float Map (``.pfm``) files, as used by FlyingThings3D / the Freiburg scene-flow datasets.

Layout::

    "PF" (3 channels) or "Pf" (1 channel), whitespace
    "<width> <height>", whitespace
    "<scale>", exactly one whitespace character (normally a newline)
    H * W * C float32, rows stored bottom-to-top, channels interleaved

A negative scale means little-endian data, a positive one big-endian; its magnitude is an
application-defined scale factor. Arrays are returned top row first, as images usually are.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import FlowFormatError
from .flo import MAX_DIMENSION, check_dimensions

__all__ = ["read_pfm", "read_pfm_flow", "write_pfm"]

_MAX_HEADER_BYTES = 256
_WHITESPACE = b" \t\n\r\x0b\x0c"
_IDENTIFIERS = (b"PF", b"Pf")


def _parse_header(head: bytes, name: str, at_eof: bool) -> tuple[int, int, int, float, int]:
    """Parse a PFM header from the first bytes of a file.

    Returns:
        ``(channels, width, height, signed_scale, data_offset)``.
    """
    tokens: list[bytes] = []
    pos = 0
    n = len(head)
    while len(tokens) < 4:
        while pos < n and head[pos] in _WHITESPACE:
            pos += 1
        start = pos
        while pos < n and head[pos] not in _WHITESPACE:
            pos += 1
        token = head[start:pos]
        complete = pos < n  # the token is followed by a whitespace character
        if not tokens:
            could_be_ident = (
                token in _IDENTIFIERS if complete else any(i.startswith(token) for i in _IDENTIFIERS)
            )
            if not could_be_ident:
                raise FlowFormatError(
                    f"{name}: wrong identifier {token[:16]!r}, expected b'PF' or b'Pf': not a PFM file"
                )
        if not complete:
            if at_eof:
                raise FlowFormatError(
                    f"{name}: truncated header ({n} bytes, the file ends inside the header)"
                )
            raise FlowFormatError(f"{name}: malformed header: no complete header in the first {n} bytes")
        tokens.append(token)
    ident, width_tok, height_tok, scale_tok = tokens
    if not (width_tok.isdigit() and height_tok.isdigit()):
        raise FlowFormatError(
            f"{name}: malformed header: dimensions {width_tok[:16]!r} {height_tok[:16]!r} are not "
            "non-negative integers"
        )
    width, height = int(width_tok), int(height_tok)
    check_dimensions(name, width, height)
    try:
        scale = float(scale_tok.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise FlowFormatError(f"{name}: malformed header: scale {scale_tok[:16]!r} is not a number") from None
    if scale == 0.0 or not math.isfinite(scale):
        raise FlowFormatError(f"{name}: malformed header: scale must be finite and non-zero, got {scale}")
    channels = 3 if ident == b"PF" else 1
    return channels, width, height, scale, pos + 1


def read_pfm(path: str | os.PathLike[str]) -> tuple[NDArray[np.float32], float]:
    """Read a PFM file.

    Args:
        path: the file to read.

    Returns:
        ``(array, scale)``: ``array`` has shape ``(H, W, 3)`` for ``PF`` and ``(H, W)`` for ``Pf``, dtype
        float32 (native byte order), C-contiguous, writable, top row first; ``scale`` is the absolute
        value of the header's scale (its sign only encodes the byte order).

    Raises:
        FileNotFoundError: the file does not exist.
        FlowFormatError: empty file, wrong identifier, malformed header, truncated data or trailing bytes.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_MAX_HEADER_BYTES)
        if not head:
            raise FlowFormatError(f"{name}: empty file")
        channels, width, height, scale, offset = _parse_header(head, name, at_eof=size <= len(head))
        count = width * height * channels
        expected = count * 4
        available = size - offset
        if available < expected:
            raise FlowFormatError(
                f"{name}: truncated: header says {width}x{height}x{channels} ({expected} bytes of data) "
                f"but only {available} bytes follow"
            )
        if available > expected:
            raise FlowFormatError(
                f"{name}: {available - expected} trailing bytes after the {width}x{height}x{channels} data "
                f"({expected} bytes expected after the header)"
            )
        f.seek(offset)
        data = np.fromfile(f, dtype="<f4" if scale < 0 else ">f4", count=count)
    if data.size != count:  # the file shrank while we read it
        raise FlowFormatError(f"{name}: truncated: expected {count} float32 values, read {data.size}")
    shape = (height, width, 3) if channels == 3 else (height, width)
    array = np.ascontiguousarray(data.reshape(shape)[::-1], dtype=np.float32)
    return array, abs(scale)


def read_pfm_flow(path: str | os.PathLike[str]) -> NDArray[np.float32]:
    """Read optical flow stored as a 3-channel PFM (FlyingThings3D): channels 0 and 1 are u and v.

    Returns:
        The flow, shape ``(H, W, 2)``, float32, C-contiguous, top row first. The third channel (zero in
        FlyingThings3D) and the header's scale are dropped.

    Raises:
        FlowFormatError: as :func:`read_pfm`, or the file is a 1-channel ``Pf`` map.
    """
    array, _ = read_pfm(path)
    if array.ndim != 3:
        raise FlowFormatError(
            f"{os.fspath(path)}: greyscale 'Pf' file of shape {array.shape}; flow needs a 3-channel 'PF' file"
        )
    return np.ascontiguousarray(array[..., :2])


def write_pfm(path: str | os.PathLike[str], array: ArrayLike, scale: float = 1.0) -> None:
    """Write a PFM file, little-endian.

    Args:
        path: the file to write (overwritten if it exists).
        array: shape ``(H, W, 3)`` (written as ``PF``), or ``(H, W)`` / ``(H, W, 1)`` (written as ``Pf``),
            real dtype, top row first; stored as float32 (NaN and inf are kept as they are).
        scale: positive, finite scale factor for the header; written negated to mark little-endian data.

    Raises:
        FlowFormatError: wrong shape or dtype, an empty or over-large image, or a bad scale.
    """
    name = os.fspath(path)
    arr: NDArray[Any] = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        ident = b"Pf"
    elif arr.ndim == 3 and arr.shape[2] == 3:
        ident = b"PF"
    else:
        raise FlowFormatError(
            f"{name}: PFM array must have shape (H, W), (H, W, 1) or (H, W, 3), got {arr.shape}"
        )
    if arr.dtype.kind not in "fiu":
        raise FlowFormatError(
            f"{name}: PFM array must be a real float or integer array, got dtype {arr.dtype}"
        )
    height, width = arr.shape[:2]
    if not (1 <= height <= MAX_DIMENSION and 1 <= width <= MAX_DIMENSION):
        raise FlowFormatError(
            f"{name}: cannot write an array of shape {arr.shape} (each side must be 1..{MAX_DIMENSION})"
        )
    scale = float(scale)
    if not (scale > 0 and math.isfinite(scale)):
        raise FlowFormatError(f"{name}: PFM scale must be positive and finite, got {scale}")
    with np.errstate(over="ignore"):
        data = np.ascontiguousarray(arr[::-1], dtype="<f4")
    header = ident + f"\n{width} {height}\n{-scale!r}\n".encode("ascii")
    with open(path, "wb") as f:
        f.write(header)
        data.tofile(f)
