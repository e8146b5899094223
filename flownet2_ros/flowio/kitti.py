"""KITTI optical-flow ground truth: 16-bit 3-channel PNG.

Per pixel, in RGB order: ``R = u * 64 + 2**15``, ``G = v * 64 + 2**15``, ``B = valid`` (non-zero means the
pixel has ground truth). The representable flow range is therefore ``[-512, 511.984375]`` in steps of
1/64 pixel. OpenCV decodes PNGs as BGR, so u lives in channel 2 and the mask in channel 0 of what it
returns. OpenCV is imported lazily, so importing :mod:`flownet2_ros.flowio` does not load it.
"""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import FlowFormatError
from .flo import MAX_DIMENSION, check_flow_array

__all__ = ["KITTI_FLOW_MAX", "KITTI_FLOW_MIN", "read_kitti_flow", "write_kitti_flow"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SCALE = 64.0
_OFFSET = 2.0**15
#: Smallest flow component a KITTI PNG can store.
KITTI_FLOW_MIN = (0 - _OFFSET) / _SCALE
#: Largest flow component a KITTI PNG can store.
KITTI_FLOW_MAX = (65535 - _OFFSET) / _SCALE


def read_kitti_flow(path: str | os.PathLike[str]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Read a KITTI flow PNG.

    Args:
        path: the file to read.

    Returns:
        ``(flow, valid)``: ``flow`` of shape ``(H, W, 2)`` float32 (u, v in pixels; exactly 0 where the
        pixel is invalid, as the KITTI devkit does) and ``valid`` of shape ``(H, W)`` bool.

    Raises:
        FileNotFoundError: the file does not exist.
        FlowFormatError: empty file, not a PNG, an undecodable PNG, or a PNG that is not 16-bit 3-channel.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if not raw:
        raise FlowFormatError(f"{name}: empty file")
    if not raw.startswith(_PNG_SIGNATURE):
        raise FlowFormatError(f"{name}: not a PNG file (signature {raw[:8]!r}); KITTI flow is a 16-bit PNG")

    import cv2

    image = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FlowFormatError(f"{name}: corrupt PNG: OpenCV could not decode it")
    image = np.asarray(image)
    if image.dtype != np.uint16:
        raise FlowFormatError(
            f"{name}: KITTI flow must be a 16-bit PNG, got {image.dtype.itemsize * 8}-bit ({image.dtype})"
        )
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels != 3:
        raise FlowFormatError(f"{name}: KITTI flow must be a 3-channel PNG, got {channels} channel(s)")
    valid = image[..., 0] > 0
    flow = np.empty((*image.shape[:2], 2), dtype=np.float32)
    flow[..., 0] = image[..., 2]  # R: u
    flow[..., 1] = image[..., 1]  # G: v
    flow -= np.float32(_OFFSET)
    flow /= np.float32(_SCALE)  # exact: integers < 2**16 over a power of two
    flow[~valid] = 0.0
    return flow, valid


def write_kitti_flow(path: str | os.PathLike[str], flow: ArrayLike, valid: ArrayLike | None = None) -> None:
    """Write a KITTI flow PNG.

    Flow components are rounded to the nearest 1/64 pixel (the devkit truncates; rounding halves the
    error and decodes identically) and clipped to ``[KITTI_FLOW_MIN, KITTI_FLOW_MAX]``. Invalid pixels
    are written as all-zero (u, v and valid channels 0).

    Args:
        path: the file to write (overwritten if it exists); PNG is written whatever the extension.
        flow: shape ``(H, W, 2)``, real dtype, in pixels.
        valid: optional ``(H, W)`` mask, non-zero/True where the flow is valid. ``None`` means every
            pixel is valid. Pixels where either flow component is NaN or ±inf are invalid regardless.

    Raises:
        FlowFormatError: wrong shape or dtype of ``flow`` or ``valid``, an empty or over-large image, or
            OpenCV failing to encode the PNG.
    """
    name = os.fspath(path)
    arr = check_flow_array(flow, name)
    height, width = arr.shape[:2]
    if not (1 <= height <= MAX_DIMENSION and 1 <= width <= MAX_DIMENSION):
        raise FlowFormatError(
            f"{name}: cannot write a flow of shape {arr.shape} (each side must be 1..{MAX_DIMENSION})"
        )
    mask = np.isfinite(arr).all(axis=2)
    if valid is not None:
        valid_arr = np.asarray(valid)
        if valid_arr.shape != (height, width):
            raise FlowFormatError(
                f"{name}: valid mask must have shape {(height, width)}, got {valid_arr.shape}"
            )
        if valid_arr.dtype.kind not in "biuf":
            raise FlowFormatError(
                f"{name}: valid mask must be boolean or numeric, got dtype {valid_arr.dtype}"
            )
        mask &= valid_arr != 0

    encoded = arr.astype(np.float64)
    encoded *= _SCALE
    encoded += _OFFSET
    np.rint(encoded, out=encoded)
    np.clip(encoded, 0.0, 65535.0, out=encoded)
    encoded[~mask] = 0.0

    image = np.empty((height, width, 3), dtype=np.uint16)  # BGR for OpenCV
    image[..., 0] = mask
    image[..., 1] = encoded[..., 1]
    image[..., 2] = encoded[..., 0]

    import cv2

    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise FlowFormatError(f"{name}: OpenCV failed to encode the PNG")
    with open(path, "wb") as f:
        f.write(np.asarray(buffer).tobytes())
