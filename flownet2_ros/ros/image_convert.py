"""Conversion between ``sensor_msgs`` images and numpy arrays, without cv_bridge.

Input side
----------
:func:`image_msg_to_array` validates a ``sensor_msgs/Image`` and returns a numpy array that is a
**zero-copy view** on ``msg.data`` (rclpy stores ``uint8[]`` fields as ``array.array('B')``, which
exports the buffer protocol).  Row padding (``step > width * bytes_per_pixel``) is expressed with
strides, not with a copy.  The only case that copies is 16-bit data whose byte order
(``is_bigendian``) differs from the host's.

While a numpy view on ``msg.data`` is alive the ``array.array`` cannot be resized (Python raises
``BufferError``); messages received from rclpy are never resized, so this does not matter in a node.

:func:`to_rgb` turns any supported encoding into an ``(H, W, 3)`` ``uint8`` RGB array with OpenCV
(``rgb8`` is returned as is, without a copy, when no ``out`` buffer is given).  16-bit grey images
(``mono16``, ``16UC1``) are reduced to 8 bits by keeping the high byte (``value >> 8``): a fixed,
content-independent mapping, so that the network sees the same brightness for the same raw value
from frame to frame (no per-frame normalisation, which would create false flow).

Output side
-----------
The builders (:func:`flow_to_image_msg`, :func:`scalar_to_image_msg`, :func:`rgb_to_image_msg`) fill
``msg.data`` with exactly one memcpy: they extend the message's own (empty) ``array.array`` in
place with ``msg.data.frombytes(...)``.  Assigning to ``msg.data`` instead always goes through the
generated setter, which, with field checks off (the default), runs ``array.array('B', value)``: a
second full copy for ``bytes``/``array.array`` values, and a per-element Python loop for
``memoryview``/numpy values (~100 ms for a 640x480 flow field).

Errors
------
Every problem with a message's contents raises :class:`ImageConversionError`, whose ``kind``
attribute is one of the ``KIND_*`` constants, so that a node can count failures by kind.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ERROR_KINDS",
    "IMAGE_ENCODINGS",
    "KIND_BAD_DATA",
    "KIND_BAD_SHAPE",
    "KIND_BAD_STEP",
    "KIND_CONVERSION_FAILED",
    "KIND_DECODE_FAILED",
    "KIND_SHORT_DATA",
    "KIND_TOO_LARGE",
    "KIND_UNSUPPORTED_ENCODING",
    "KIND_ZERO_SIZE",
    "RGB_ENCODINGS",
    "ImageConversionError",
    "compressed_msg_to_rgb",
    "flow_to_image_msg",
    "header_stamp_seconds",
    "image_msg_to_array",
    "rgb_to_image_msg",
    "scalar_to_image_msg",
    "to_rgb",
]

#: Default upper bound on ``height * width`` accepted from a message (8192 x 8192).
DEFAULT_MAX_PIXELS = 8192 * 8192

KIND_UNSUPPORTED_ENCODING = "unsupported_encoding"
KIND_BAD_STEP = "bad_step"
KIND_SHORT_DATA = "short_data"
KIND_ZERO_SIZE = "zero_size"
KIND_TOO_LARGE = "too_large"
KIND_BAD_DATA = "bad_data"
KIND_BAD_SHAPE = "bad_shape"
KIND_DECODE_FAILED = "decode_failed"
KIND_CONVERSION_FAILED = "conversion_failed"

#: All values :attr:`ImageConversionError.kind` can take.
ERROR_KINDS: tuple[str, ...] = (
    KIND_UNSUPPORTED_ENCODING,
    KIND_BAD_STEP,
    KIND_SHORT_DATA,
    KIND_ZERO_SIZE,
    KIND_TOO_LARGE,
    KIND_BAD_DATA,
    KIND_BAD_SHAPE,
    KIND_DECODE_FAILED,
    KIND_CONVERSION_FAILED,
)


class ImageConversionError(ValueError):
    """A message could not be converted; ``kind`` is a short machine-readable category."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class _Format(NamedTuple):
    channels: int
    dtype_char: str  # numpy kind + item size, without byte order: "u1", "u2", "f4"

    @property
    def itemsize(self) -> int:
        return int(self.dtype_char[1:])

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.itemsize


#: Encodings :func:`image_msg_to_array` understands, with their layout.
IMAGE_ENCODINGS: dict[str, _Format] = {
    "rgb8": _Format(3, "u1"),
    "bgr8": _Format(3, "u1"),
    "rgba8": _Format(4, "u1"),
    "bgra8": _Format(4, "u1"),
    "mono8": _Format(1, "u1"),
    "mono16": _Format(1, "u2"),
    "16UC1": _Format(1, "u2"),
    "bayer_rggb8": _Format(1, "u1"),
    "bayer_bggr8": _Format(1, "u1"),
    "bayer_gbrg8": _Format(1, "u1"),
    "bayer_grbg8": _Format(1, "u1"),
    "32FC1": _Format(1, "f4"),
    "32FC2": _Format(2, "f4"),
}


def _cv_code(new_name: str, old_name: str) -> int:
    """OpenCV colour code by its unambiguous name when available, else by the legacy name.

    OpenCV's legacy Bayer names (``COLOR_BayerBG2RGB`` ...) describe the second row/column of the
    pattern, not its top-left 2x2 block; newer releases add aliases named after the real pattern
    (``COLOR_BayerRGGB2RGB`` == ``COLOR_BayerBG2RGB``).  Both spellings give the same value.
    """
    return int(getattr(cv2, new_name, getattr(cv2, old_name)))


# ROS ``bayer_XXXX8`` names the top-left 2x2 block, row by row.
_BAYER_CODES: dict[str, int] = {
    "bayer_rggb8": _cv_code("COLOR_BayerRGGB2RGB", "COLOR_BayerBG2RGB"),
    "bayer_bggr8": _cv_code("COLOR_BayerBGGR2RGB", "COLOR_BayerRG2RGB"),
    "bayer_gbrg8": _cv_code("COLOR_BayerGBRG2RGB", "COLOR_BayerGR2RGB"),
    "bayer_grbg8": _cv_code("COLOR_BayerGRBG2RGB", "COLOR_BayerGB2RGB"),
}

_CV_CODES: dict[str, int] = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    **_BAYER_CODES,
}

#: Encodings :func:`to_rgb` accepts.
RGB_ENCODINGS: frozenset[str] = frozenset({"rgb8", "mono16", "16UC1", *_CV_CODES})

_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


def _byte_view(data: Any) -> np.ndarray:
    """A flat ``uint8`` view on a message's ``data`` field (a copy only for non-buffer sequences)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    # Not a buffer-protocol object (e.g. a plain list): a copy is unavoidable.
    try:
        values = np.asarray(data)
        if values.ndim != 1 or (values.size and (values.min() < 0 or values.max() > 255)):
            raise ValueError("values must be a flat sequence of bytes")
        return values.astype(np.uint8)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageConversionError(KIND_BAD_DATA, f"data is not a byte buffer ({exc})") from exc


def image_msg_to_array(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Validate a ``sensor_msgs/Image`` and view its pixels as a numpy array.

    Returns ``(array, encoding)``.  ``array`` has shape ``(H, W)`` for single-channel encodings and
    ``(H, W, C)`` otherwise, in native byte order.  It is a view sharing memory with ``msg.data``
    (row padding is handled with strides), except for 16-bit data in the non-native byte order,
    which is byte-swapped into a new array.

    Raises :class:`ImageConversionError` (kinds ``unsupported_encoding``, ``zero_size``,
    ``too_large``, ``bad_step``, ``short_data``, ``bad_data``).
    """
    encoding = str(msg.encoding)
    fmt = IMAGE_ENCODINGS.get(encoding)
    if fmt is None:
        raise ImageConversionError(KIND_UNSUPPORTED_ENCODING, f"encoding {encoding!r} is not supported")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(KIND_ZERO_SIZE, f"image is {width}x{height}")
    if height * width > max_pixels:
        raise ImageConversionError(
            KIND_TOO_LARGE, f"image is {width}x{height} = {height * width} pixels, limit {max_pixels}"
        )
    row_bytes = width * fmt.bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            KIND_BAD_STEP, f"step {step} < width {width} x {fmt.bytes_per_pixel} bytes per pixel"
        )
    buf = _byte_view(msg.data)
    needed = step * (height - 1) + row_bytes
    if buf.size < needed:
        raise ImageConversionError(
            KIND_SHORT_DATA, f"data has {buf.size} bytes, {width}x{height} with step {step} needs {needed}"
        )

    big_endian = bool(msg.is_bigendian)
    order = ">" if big_endian else "<"
    dtype = np.dtype(order + fmt.dtype_char) if fmt.itemsize > 1 else np.dtype(fmt.dtype_char)
    if fmt.channels == 1:
        shape: tuple[int, ...] = (height, width)
        strides: tuple[int, ...] = (step, fmt.itemsize)
    else:
        shape = (height, width, fmt.channels)
        strides = (step, fmt.bytes_per_pixel, fmt.itemsize)
    array = np.ndarray(shape, dtype=dtype, buffer=buf, offset=0, strides=strides)
    if fmt.itemsize > 1 and big_endian != _NATIVE_BIG_ENDIAN:
        array = array.astype(dtype.newbyteorder("="))
    return array, encoding


def _check_out(out: np.ndarray, height: int, width: int) -> None:
    if out.shape != (height, width, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be a ({height}, {width}, 3) uint8 array, got {out.shape} {out.dtype}")


def _cvt(src: np.ndarray, code: int, out: np.ndarray | None) -> np.ndarray:
    # OpenCV can write into ``out`` only when each row is a packed run of 3-byte pixels.
    direct = out is not None and out.strides[1:] == (3, 1) and out.flags.writeable
    try:
        if out is None or not direct:
            result = cv2.cvtColor(src, code)
        else:
            result = cv2.cvtColor(src, code, dst=out)
    except cv2.error as exc:
        raise ImageConversionError(KIND_CONVERSION_FAILED, f"OpenCV conversion failed: {exc}") from exc
    if out is None:
        return np.asarray(result)
    if result is not out:  # not written in place (unusual ``out`` layout): copy, honouring the contract
        np.copyto(out, result)
    return out


def to_rgb(array: np.ndarray, encoding: str, out: np.ndarray | None = None) -> np.ndarray:
    """Convert an array from :func:`image_msg_to_array` to ``(H, W, 3)`` ``uint8`` RGB.

    ``rgb8`` without ``out`` returns ``array`` itself (no copy).  With ``out`` (a ``(H, W, 3)``
    ``uint8`` array) the result is written there and ``out`` is returned.  ``mono16``/``16UC1`` are
    mapped to 8 bits with ``value >> 8``; Bayer patterns are demosaiced bilinearly by OpenCV.

    Raises :class:`ImageConversionError` (``unsupported_encoding``, ``bad_shape``,
    ``conversion_failed``); a wrongly shaped ``out`` raises ``ValueError``.
    """
    if encoding not in RGB_ENCODINGS:
        raise ImageConversionError(KIND_UNSUPPORTED_ENCODING, f"cannot convert {encoding!r} to RGB")
    fmt = IMAGE_ENCODINGS[encoding]
    expected_ndim = 2 if fmt.channels == 1 else 3
    if (
        array.ndim != expected_ndim
        or (expected_ndim == 3 and array.shape[2] != fmt.channels)
        or array.dtype.kind != fmt.dtype_char[0]
        or array.dtype.itemsize != fmt.itemsize
        or array.shape[0] == 0
        or array.shape[1] == 0
    ):
        raise ImageConversionError(
            KIND_BAD_SHAPE, f"array {array.shape} {array.dtype} does not match encoding {encoding!r}"
        )
    height, width = array.shape[:2]
    if out is not None:
        _check_out(out, height, width)

    if encoding == "rgb8":
        if out is None:
            return array
        np.copyto(out, array)
        return out
    if encoding in ("mono16", "16UC1"):
        # Fixed 16 -> 8 bit mapping: keep the high byte.
        high = np.right_shift(array, 8).astype(np.uint8)
        return _cvt(high, cv2.COLOR_GRAY2RGB, out)
    return _cvt(array, _CV_CODES[encoding], out)


def compressed_msg_to_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG or PNG ``sensor_msgs/CompressedImage`` to ``(H, W, 3)`` ``uint8`` RGB.

    ``msg.format`` must mention ``jpeg``/``jpg`` or ``png`` (e.g. ``"jpeg"``,
    ``"bgr8; jpeg compressed bgr8"``); ``compressedDepth`` payloads are rejected.  The data is
    handed to ``cv2.imdecode`` through a zero-copy view.

    Raises :class:`ImageConversionError` (``unsupported_encoding``, ``decode_failed``,
    ``too_large``, ``bad_data``).
    """
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt or not any(name in fmt for name in ("jpeg", "jpg", "png")):
        raise ImageConversionError(KIND_UNSUPPORTED_ENCODING, f"compressed format {msg.format!r}")
    buf = _byte_view(msg.data)
    if buf.size == 0:
        raise ImageConversionError(KIND_DECODE_FAILED, "compressed image has no data")
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageConversionError(KIND_DECODE_FAILED, f"OpenCV could not decode ({exc})") from exc
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.size == 0:
        raise ImageConversionError(KIND_DECODE_FAILED, f"could not decode {len(buf)} bytes as {msg.format!r}")
    if bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise ImageConversionError(
            KIND_TOO_LARGE, f"decoded image is {bgr.shape[1]}x{bgr.shape[0]}, limit {max_pixels} pixels"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: no second buffer


def _build_msg(array: np.ndarray, header: Header | None, encoding: str) -> Image:
    """An ``Image`` holding ``array`` (H, W[, C]) with one copy into the message's own buffer."""
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = int(array.dtype.itemsize > 1 and _NATIVE_BIG_ENDIAN)
    msg.step = width * (array.strides[1] if array.ndim > 1 else array.dtype.itemsize)
    # Extend the message's empty array.array in place: one memcpy, no setter (see module docstring).
    msg.data.frombytes(array.data.cast("B"))
    return msg


def _require(array: np.ndarray, ndim: int, channels: int | None, what: str) -> None:
    if (
        array.ndim != ndim
        or (channels is not None and array.shape[2] != channels)
        or array.shape[0] == 0
        or array.shape[1] == 0
    ):
        raise ValueError(f"{what}: unexpected shape {array.shape}")


def flow_to_image_msg(flow: np.ndarray, header: Header | None = None) -> Image:
    """``(H, W, 2)`` flow (u, v in pixels) → ``32FC2`` Image, native byte order, ``step = W * 8``."""
    _require(flow, 3, 2, "flow")
    return _build_msg(np.asarray(flow, dtype=np.float32), header, "32FC2")


def scalar_to_image_msg(values: np.ndarray, header: Header | None = None) -> Image:
    """``(H, W)`` float map (e.g. flow magnitude) → ``32FC1`` Image, native byte order."""
    _require(values, 2, None, "scalar map")
    return _build_msg(np.asarray(values, dtype=np.float32), header, "32FC1")


def rgb_to_image_msg(rgb: np.ndarray, header: Header | None = None) -> Image:
    """``(H, W, 3)`` ``uint8`` RGB (e.g. a flow visualisation) → ``rgb8`` Image."""
    _require(rgb, 3, 3, "rgb image")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb image: dtype must be uint8, got {rgb.dtype}")
    return _build_msg(rgb, header, "rgb8")


def header_stamp_seconds(header: Header) -> float:
    """The header's stamp as float seconds (``sec + nanosec * 1e-9``)."""
    return float(header.stamp.sec) + float(header.stamp.nanosec) * 1e-9
