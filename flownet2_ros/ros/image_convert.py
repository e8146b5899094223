"""Conversion between ``sensor_msgs`` images and numpy arrays, without cv_bridge.

Input side
----------
:func:`image_msg_to_rgb` is what a node calls: it validates a ``sensor_msgs/Image`` and returns
``(H, W, 3)`` ``uint8`` RGB.  ``rgb8`` comes back as a **zero-copy view** on ``msg.data``; every other
encoding is converted by OpenCV (or one numpy/OpenCV pass for 16-bit data) straight into a reusable
:class:`RgbScratch` buffer, reading the message's bytes in place.

The two lower-level steps stay available: :func:`image_msg_to_array` validates a message and returns
a numpy view on ``msg.data`` (rclpy stores ``uint8[]`` fields as ``array.array('B')``, which exports
the buffer protocol); row padding (``step > width * bytes_per_pixel``) is expressed with strides, not
with a copy.  The only case that copies is 16-bit data whose byte order (``is_bigendian``) differs
from the host's (:func:`image_msg_to_rgb` does not copy even then: it reads the high bytes where they
lie).  :func:`to_rgb` turns such an array into RGB.

Supported encodings (names as in ROS ``sensor_msgs/image_encodings.hpp``):

* 8-bit: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``, ``bayer_{rggb,bggr,gbrg,grbg}8``.
* 16-bit: ``rgb16``, ``bgr16``, ``rgba16``, ``bgra16``, ``mono16``, ``16UC1``,
  ``bayer_{rggb,bggr,gbrg,grbg}16``.  Reduced to 8 bits by keeping the high byte (``value >> 8``):
  a fixed, content-independent mapping, so that the network sees the same brightness for the same
  raw value from frame to frame (no per-frame normalisation, which would create false flow).
* YUV 4:2:2, 2 bytes per pixel, even width: ``uyvy`` and its older name ``yuv422`` (byte order
  U Y0 V Y1), ``yuyv`` and its older name ``yuv422_yuy2`` (Y0 U Y1 V).
* YUV 4:2:0 semi-planar, even width and height: ``nv12`` (Y plane, then interleaved U V) and ``nv21``
  (Y plane, then V U).  As in V4L2 and rviz, ``step`` is the byte length of one row of the Y plane
  (usually ``width``) and the chroma plane's ``height / 2`` rows use the same ``step``, right after
  the ``height`` luma rows, so ``data`` holds ``height * 3 / 2`` rows.  OpenCV reads padded rows
  through strides: no copy.

YUV is decoded with OpenCV's BT.601 "video range" conversion (``COLOR_YUV2RGB_NV12`` ...), the
inverse of ``cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)``.  ``32FC1``/``32FC2`` are understood by
:func:`image_msg_to_array` only (flow fields), not converted to RGB.

Compressed images
-----------------
:func:`compressed_msg_to_rgb` decodes JPEG/PNG, but only after :func:`compressed_dimensions` has read
the width and height from the file header (PNG ``IHDR``; JPEG: the first ``SOFn`` segment) and the
pixel count has passed the ``max_pixels`` limit: a 1 MB PNG can declare 30000 x 30000 pixels and
would otherwise make the decoder allocate 2.7 GB before any check could run.  What cannot be sized
from its header is not decoded at all.  (OpenCV's own guard, ``CV_IO_MAX_IMAGE_PIXELS``, defaults to
2**30 pixels, far above what a node wants, and is a process-wide environment variable.)

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
attribute is one of the ``KIND_*`` constants, so that a node can count failures by kind; for
``unsupported_encoding`` its ``encoding`` attribute names what was refused.

While a numpy view on ``msg.data`` is alive the ``array.array`` cannot be resized (Python raises
``BufferError``); messages received from rclpy are never resized, so this does not matter in a node.
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
    "RgbScratch",
    "compressed_dimensions",
    "compressed_msg_to_rgb",
    "flow_to_image_msg",
    "header_stamp_seconds",
    "image_msg_to_array",
    "image_msg_to_rgb",
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

#: Encoding names are cut to this many characters in errors (they come from the network).
_MAX_NAME = 64


def _short(name: str) -> str:
    return name[:_MAX_NAME]


class ImageConversionError(ValueError):
    """A message could not be converted; ``kind`` is a short machine-readable category.

    ``encoding`` is the refused encoding (``msg.encoding``, or ``msg.format`` for compressed images,
    cut to 64 characters) when ``kind`` is ``unsupported_encoding``, else ``None``.
    """

    def __init__(self, kind: str, message: str, *, encoding: str | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.encoding = None if encoding is None else _short(str(encoding))


def _unsupported(encoding: str, message: str) -> ImageConversionError:
    return ImageConversionError(KIND_UNSUPPORTED_ENCODING, message, encoding=encoding)


# Memory layouts beyond "W pixels of C channels per row".
_PACKED = "packed"
_YUV422 = "yuv422"  # 2 bytes per pixel, one chroma pair per 2 pixels: even width
_YUV420SP = "yuv420sp"  # H luma rows, then H/2 interleaved chroma rows: even width and height


class _Format(NamedTuple):
    channels: int
    dtype_char: str  # numpy kind + item size, without byte order: "u1", "u2", "f4"
    layout: str = _PACKED

    @property
    def itemsize(self) -> int:
        return int(self.dtype_char[1:])

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.itemsize

    def rows(self, height: int) -> int:
        """Rows of ``step`` bytes an image ``height`` pixels high occupies in ``data``."""
        return height * 3 // 2 if self.layout == _YUV420SP else height


_U8_1 = _Format(1, "u1")
_U16_1 = _Format(1, "u2")
_YUV422_FMT = _Format(2, "u1", _YUV422)
_NV_FMT = _Format(1, "u1", _YUV420SP)

#: Encodings :func:`image_msg_to_array` understands, with their layout.
IMAGE_ENCODINGS: dict[str, _Format] = {
    "rgb8": _Format(3, "u1"),
    "bgr8": _Format(3, "u1"),
    "rgba8": _Format(4, "u1"),
    "bgra8": _Format(4, "u1"),
    "rgb16": _Format(3, "u2"),
    "bgr16": _Format(3, "u2"),
    "rgba16": _Format(4, "u2"),
    "bgra16": _Format(4, "u2"),
    "mono8": _U8_1,
    "mono16": _U16_1,
    "16UC1": _U16_1,
    "bayer_rggb8": _U8_1,
    "bayer_bggr8": _U8_1,
    "bayer_gbrg8": _U8_1,
    "bayer_grbg8": _U8_1,
    "bayer_rggb16": _U16_1,
    "bayer_bggr16": _U16_1,
    "bayer_gbrg16": _U16_1,
    "bayer_grbg16": _U16_1,
    "uyvy": _YUV422_FMT,
    "yuv422": _YUV422_FMT,
    "yuyv": _YUV422_FMT,
    "yuv422_yuy2": _YUV422_FMT,
    "nv12": _NV_FMT,
    "nv21": _NV_FMT,
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

_YUV_CODES: dict[str, int] = {
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,  # ROS's older name for UYVY
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "nv12": cv2.COLOR_YUV2RGB_NV12,
    "nv21": cv2.COLOR_YUV2RGB_NV21,
}

_CV_CODES: dict[str, int] = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    **_BAYER_CODES,
    **_YUV_CODES,
}

#: 16-bit colour encodings: the channel index holding R, G and B.
_RGB16_ORDER: dict[str, tuple[int, int, int]] = {
    "rgb16": (0, 1, 2),
    "bgr16": (2, 1, 0),
    "rgba16": (0, 1, 2),
    "bgra16": (2, 1, 0),
}

#: Single-channel 16-bit encodings: the 8-bit conversion applied to their high byte.
_GREY16_CODES: dict[str, int] = {
    "mono16": cv2.COLOR_GRAY2RGB,
    "16UC1": cv2.COLOR_GRAY2RGB,
    **{name[:-1] + "16": code for name, code in _BAYER_CODES.items()},
}

#: Encodings :func:`to_rgb` and :func:`image_msg_to_rgb` accept.
RGB_ENCODINGS: frozenset[str] = frozenset({"rgb8", *_CV_CODES, *_RGB16_ORDER, *_GREY16_CODES})

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


class _Checked(NamedTuple):
    """A validated message: its geometry and a flat byte view on its data."""

    encoding: str
    fmt: _Format
    height: int
    width: int
    step: int
    buf: np.ndarray
    big_endian: bool

    def view(self, byte_pairs: bool = False) -> np.ndarray:
        """The pixels as a strided view on ``buf`` (multi-byte items in the message's byte order).

        ``(H, W)`` for one channel, ``(H, W, C)`` otherwise; ``(H * 3 / 2, W)`` for NV12/NV21.  With
        ``byte_pairs`` a 16-bit image is viewed as ``(H, W, 2 * C)`` raw bytes instead.
        """
        fmt = self.fmt
        rows = fmt.rows(self.height)
        if byte_pairs:
            shape: tuple[int, ...] = (rows, self.width, fmt.bytes_per_pixel)
            strides: tuple[int, ...] = (self.step, fmt.bytes_per_pixel, 1)
            return np.ndarray(shape, dtype=np.uint8, buffer=self.buf, strides=strides)
        order = ">" if self.big_endian else "<"
        dtype = np.dtype(order + fmt.dtype_char) if fmt.itemsize > 1 else np.dtype(fmt.dtype_char)
        if fmt.channels == 1:
            shape = (rows, self.width)
            strides = (self.step, fmt.itemsize)
        else:
            shape = (rows, self.width, fmt.channels)
            strides = (self.step, fmt.bytes_per_pixel, fmt.itemsize)
        return np.ndarray(shape, dtype=dtype, buffer=self.buf, strides=strides)


def _check_msg(msg: Image, max_pixels: int) -> _Checked:
    """Validate a message's encoding, size, step and data length (no allocation before the size check)."""
    encoding = str(msg.encoding)
    fmt = IMAGE_ENCODINGS.get(encoding)
    if fmt is None:
        raise _unsupported(encoding, f"encoding {_short(encoding)!r} is not supported")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(KIND_ZERO_SIZE, f"image is {width}x{height}")
    if height * width > max_pixels:
        raise ImageConversionError(
            KIND_TOO_LARGE, f"image is {width}x{height} = {height * width} pixels, limit {max_pixels}"
        )
    if fmt.layout != _PACKED and width % 2:
        raise ImageConversionError(KIND_BAD_SHAPE, f"{encoding} needs an even width, got {width}")
    if fmt.layout == _YUV420SP and height % 2:
        raise ImageConversionError(KIND_BAD_SHAPE, f"{encoding} needs an even height, got {height}")
    row_bytes = width * fmt.bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            KIND_BAD_STEP, f"step {step} < width {width} x {fmt.bytes_per_pixel} bytes per pixel"
        )
    buf = _byte_view(msg.data)
    rows = fmt.rows(height)
    needed = step * (rows - 1) + row_bytes
    if buf.size < needed:
        raise ImageConversionError(
            KIND_SHORT_DATA,
            f"data has {buf.size} bytes, {encoding} {width}x{height} ({rows} rows) with step {step} "
            f"needs {needed}",
        )
    return _Checked(encoding, fmt, height, width, step, buf, bool(msg.is_bigendian))


def image_msg_to_array(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Validate a ``sensor_msgs/Image`` and view its pixels as a numpy array.

    Returns ``(array, encoding)``.  ``array`` has shape ``(H, W)`` for single-channel encodings,
    ``(H, W, C)`` otherwise (``(H, W, 2)`` for the YUV 4:2:2 encodings) and ``(H * 3 / 2, W)`` for
    ``nv12``/``nv21`` (OpenCV's layout for them: use :func:`image_msg_to_rgb` to get RGB of the
    message's height without thinking about it).  Items are in native byte order.  It is a view
    sharing memory with ``msg.data`` (row padding is handled with strides), except for 16-bit data
    in the non-native byte order, which is byte-swapped into a new array.

    Raises :class:`ImageConversionError` (kinds ``unsupported_encoding``, ``zero_size``,
    ``too_large``, ``bad_shape`` (odd width or height for YUV), ``bad_step``, ``short_data``,
    ``bad_data``).
    """
    checked = _check_msg(msg, max_pixels)
    array = checked.view()
    if checked.fmt.itemsize > 1 and checked.big_endian != _NATIVE_BIG_ENDIAN:
        array = array.astype(array.dtype.newbyteorder("="))
    return array, checked.encoding


class RgbScratch:
    """A reusable (H, W, 3) uint8 output buffer for conversions (one per camera; not thread-safe).

    The array :meth:`get` returns is overwritten by the next conversion of the same size: copy what
    must outlive it.
    """

    def __init__(self) -> None:
        self._buffer: np.ndarray | None = None

    def get(self, height: int, width: int) -> np.ndarray:
        """The ``(height, width, 3)`` ``uint8`` buffer; reallocates only when the size changes."""
        buffer = self._buffer
        if buffer is None or buffer.shape[:2] != (height, width):
            buffer = np.empty((height, width, 3), np.uint8)
            self._buffer = buffer
        return buffer


def image_msg_to_rgb(
    msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS, scratch: RgbScratch | None = None
) -> tuple[np.ndarray, str]:
    """Message -> ((H, W, 3) uint8 RGB, encoding).

    ``rgb8`` returns a zero-copy view of ``msg.data`` (no scratch use); every other encoding is
    converted into ``scratch.get(H, W)`` (a new array when ``scratch`` is None).

    Validates like :func:`image_msg_to_array` (encoding, zero size, ``max_pixels`` before anything is
    allocated, YUV parity, step, data length) and converts like :func:`to_rgb`, reading
    ``msg.data`` in place: padded rows and big-endian 16-bit data are not copied first.

    Raises :class:`ImageConversionError` (the kinds of :func:`image_msg_to_array`; ``32FC1``/``32FC2``
    give ``unsupported_encoding``; ``conversion_failed`` if OpenCV refuses).
    """
    checked = _check_msg(msg, max_pixels)
    encoding = checked.encoding
    if encoding not in RGB_ENCODINGS:
        raise _unsupported(encoding, f"cannot convert {_short(encoding)!r} to RGB")
    if encoding == "rgb8":
        return checked.view(), encoding
    out = (
        scratch.get(checked.height, checked.width)
        if scratch is not None
        else np.empty((checked.height, checked.width, 3), np.uint8)
    )
    if checked.fmt.itemsize == 2:
        pairs = checked.view(byte_pairs=True)
        return _from_byte_pairs(pairs, 0 if checked.big_endian else 1, encoding, out), encoding
    return _convert_8bit(checked.view(), encoding, out), encoding


def _check_out(out: np.ndarray, height: int, width: int) -> None:
    if out.shape != (height, width, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be a ({height}, {width}, 3) uint8 array, got {out.shape} {out.dtype}")


def _writes_in_place(out: np.ndarray | None) -> bool:
    # OpenCV can write into ``out`` only when each row is a packed run of 3-byte pixels.
    return out is not None and out.strides[1:] == (3, 1) and out.flags.writeable


def _cvt(src: np.ndarray, code: int, out: np.ndarray | None) -> np.ndarray:
    try:
        if out is None or not _writes_in_place(out):
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


def _convert_8bit(array: np.ndarray, encoding: str, out: np.ndarray | None) -> np.ndarray:
    """8-bit encodings (shape already checked) -> RGB, into ``out`` when given."""
    if encoding == "rgb8":
        if out is None:
            return array
        np.copyto(out, array)
        return out
    return _cvt(array, _CV_CODES[encoding], out)


def _from_byte_pairs(pairs: np.ndarray, high: int, encoding: str, out: np.ndarray | None) -> np.ndarray:
    """16-bit encodings -> RGB from an ``(H, W, 2 * C)`` byte view; ``high`` is 0 (big endian) or 1.

    Only the high byte of each value is read (the fixed ``value >> 8`` mapping).  Colour: one
    ``cv2.mixChannels`` pass picks the three high bytes into ``out`` (1.6 ms for 1920x1080 ``bgra16``
    here, against 3 ms for high bytes + ``cvtColor`` and 6 ms for a numpy strided copy).  Grey and
    Bayer: the ``(H, W)`` high-byte plane goes through the 8-bit conversion; for Bayer that measured
    1.0 ms against 2.3 ms for OpenCV's 16-bit demosaic followed by ``>> 8`` (1920x1080), so the
    demosaic runs on 8-bit values.
    """
    if encoding in _GREY16_CODES:
        return _cvt(pairs[..., high], _GREY16_CODES[encoding], out)
    red, green, blue = _RGB16_ORDER[encoding]
    from_to = [2 * red + high, 0, 2 * green + high, 1, 2 * blue + high, 2]
    height, width = pairs.shape[:2]
    target = out if out is not None and _writes_in_place(out) else np.empty((height, width, 3), np.uint8)
    try:
        cv2.mixChannels([pairs], [target], from_to)
    except cv2.error as exc:
        raise ImageConversionError(KIND_CONVERSION_FAILED, f"OpenCV channel copy failed: {exc}") from exc
    if out is None:
        return target
    if target is not out:
        np.copyto(out, target)
    return out


def _as_byte_pairs(array: np.ndarray) -> tuple[np.ndarray, int]:
    """An ``(H, W, 2 * C)`` ``uint8`` view of a 16-bit array and the index of each value's high byte."""
    order = array.dtype.byteorder
    big = order == ">" or (order in ("=", "|") and _NATIVE_BIG_ENDIAN)
    height, width = array.shape[:2]
    try:
        raw = array.view(np.uint8)  # numpy < 1.23 refuses when the rows are padded
    except ValueError:
        raw = np.ascontiguousarray(array).view(np.uint8)
    return raw.reshape(height, width, -1), (0 if big else 1)


def _shape_ok(array: np.ndarray, fmt: _Format) -> bool:
    expected_ndim = 2 if fmt.channels == 1 else 3
    if (
        array.ndim != expected_ndim
        or (expected_ndim == 3 and array.shape[2] != fmt.channels)
        or array.dtype.kind != fmt.dtype_char[0]
        or array.dtype.itemsize != fmt.itemsize
        or array.shape[0] == 0
        or array.shape[1] == 0
    ):
        return False
    if fmt.layout == _YUV422:
        return array.shape[1] % 2 == 0
    if fmt.layout == _YUV420SP:
        return array.shape[0] % 3 == 0 and array.shape[1] % 2 == 0
    return True


def to_rgb(array: np.ndarray, encoding: str, out: np.ndarray | None = None) -> np.ndarray:
    """Convert an array from :func:`image_msg_to_array` to ``(H, W, 3)`` ``uint8`` RGB.

    ``rgb8`` without ``out`` returns ``array`` itself (no copy).  With ``out`` (a ``(H, W, 3)``
    ``uint8`` array) the result is written there and ``out`` is returned.  16-bit encodings keep the
    high byte (``value >> 8``; arrays in either byte order are read correctly); Bayer patterns are
    demosaiced bilinearly by OpenCV; YUV uses OpenCV's BT.601 conversions.  For ``nv12``/``nv21``
    ``array`` is ``(H * 3 / 2, W)`` and the result ``(H, W, 3)``.

    Raises :class:`ImageConversionError` (``unsupported_encoding``, ``bad_shape``,
    ``conversion_failed``); a wrongly shaped ``out`` raises ``ValueError``.
    """
    if encoding not in RGB_ENCODINGS:
        raise _unsupported(encoding, f"cannot convert {_short(encoding)!r} to RGB")
    fmt = IMAGE_ENCODINGS[encoding]
    if not _shape_ok(array, fmt):
        raise ImageConversionError(
            KIND_BAD_SHAPE, f"array {array.shape} {array.dtype} does not match encoding {encoding!r}"
        )
    height, width = array.shape[:2]
    if fmt.layout == _YUV420SP:
        height = height * 2 // 3
    if out is not None:
        _check_out(out, height, width)
    if fmt.itemsize == 2:
        pairs, high = _as_byte_pairs(array)
        return _from_byte_pairs(pairs, high, encoding, out)
    return _convert_8bit(array, encoding, out)


# ---------------------------------------------------------------------------------------------
# compressed images

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MAX_SIDE = 2**31 - 1  # the PNG specification's limit for width and height
#: JPEG start-of-frame markers (SOF0-3, 5-7, 9-11, 13-15); C4 (DHT), C8 (JPG) and CC (DAC) are not.
_JPEG_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)})
#: Markers without a length field: TEM and RST0-7.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = 0xD8, 0xD9, 0xDA
#: Segments read before giving up on finding SOFn (real files have a few dozen at most).
_JPEG_MAX_SEGMENTS = 4096


def _find_byte(buf: np.ndarray, start: int, equal: bool) -> int:
    """Index of the first byte at or after ``start`` that is (``equal``) or is not 0xFF; -1 if none.

    Vectorised in growing chunks, so that long runs of garbage or fill bytes cost no Python loop.
    """
    size = buf.size
    pos, chunk = start, 64
    while pos < size:
        part = buf[pos : pos + chunk]
        hits = np.flatnonzero(part == 0xFF) if equal else np.flatnonzero(part != 0xFF)
        if hits.size:
            return pos + int(hits[0])
        pos += part.size
        chunk = min(chunk * 8, 1 << 20)
    return -1


def _be16(buf: np.ndarray, pos: int) -> int:
    return (int(buf[pos]) << 8) | int(buf[pos + 1])


def _png_dimensions(buf: np.ndarray) -> tuple[int, int] | None:
    # Signature, then the IHDR chunk: length (13), "IHDR", width, height (big endian), ...
    if buf.size < 24 or buf[8:16].tobytes() != b"\x00\x00\x00\x0dIHDR":
        return None
    width = int.from_bytes(buf[16:20].tobytes(), "big")
    height = int.from_bytes(buf[20:24].tobytes(), "big")
    if not (0 < width <= _PNG_MAX_SIDE and 0 < height <= _PNG_MAX_SIDE):
        return None
    return width, height


def _jpeg_dimensions(buf: np.ndarray) -> tuple[int, int] | None:
    size = buf.size
    pos = 2  # after SOI
    for _ in range(_JPEG_MAX_SEGMENTS):
        # Like libjpeg: skip stray bytes up to the next 0xFF, then any 0xFF fill bytes.
        ff = _find_byte(buf, pos, equal=True)
        if ff < 0:
            return None
        at = _find_byte(buf, ff + 1, equal=False)
        if at < 0:
            return None
        marker = int(buf[at])
        pos = at + 1
        if marker == 0x00 or marker in _JPEG_STANDALONE:
            continue  # a stuffed 0xFF00 or a marker without a segment
        if marker in (_JPEG_SOI, _JPEG_EOI, _JPEG_SOS):
            return None  # no frame header before the image data (or a second SOI): cannot tell
        if pos + 2 > size:
            return None
        length = _be16(buf, pos)  # counts itself
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            # length, precision (1 byte), number of lines, samples per line, ...
            if length < 8 or pos + 7 > size:
                return None
            height, width = _be16(buf, pos + 3), _be16(buf, pos + 5)
            if height == 0 or width == 0:  # height 0: defined later by a DNL marker
                return None
            return width, height
        pos += length
    return None


def compressed_dimensions(data: np.ndarray | bytes) -> tuple[int, int] | None:
    """``(width, height)`` read from a PNG or JPEG header, without decoding; ``None`` if unknown.

    PNG: the signature and the ``IHDR`` chunk.  JPEG: the markers from SOI up to the first
    start-of-frame (``SOF0``-``SOF15`` except ``DHT``/``JPG``/``DAC``), skipping other segments by
    their length, fill bytes and standalone markers (at most 4096 segments).  ``None`` for other
    formats, truncated or inconsistent headers, zero sizes and JPEGs whose height comes later (DNL).
    Accepts any bytes-like object or ``uint8`` array; does not copy it.
    """
    if isinstance(data, np.ndarray):
        buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size >= 8 and buf[:8].tobytes() == _PNG_SIGNATURE:
        return _png_dimensions(buf)
    if buf.size >= 4 and buf[0] == 0xFF and buf[1] == _JPEG_SOI:
        return _jpeg_dimensions(buf)
    return None


#: Decode straight to RGB where OpenCV offers it (4.10+), else BGR then an in-place swap.
_IMREAD_RGB: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)


def compressed_msg_to_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG or PNG ``sensor_msgs/CompressedImage`` to ``(H, W, 3)`` ``uint8`` RGB.

    ``msg.format`` must mention ``jpeg``/``jpg`` or ``png`` (e.g. ``"jpeg"``,
    ``"bgr8; jpeg compressed bgr8"``); ``compressedDepth`` payloads are rejected.  The size is read
    from the header first (:func:`compressed_dimensions`): data whose size cannot be read is not
    decoded (``decode_failed``), and more than ``max_pixels`` pixels is ``too_large`` without any
    decoding, so a small file declaring a huge image costs microseconds, not gigabytes.  The data is
    handed to ``cv2.imdecode`` through a zero-copy view, and the decoded size must match the header
    (either way round: OpenCV applies a JPEG's EXIF orientation).

    Raises :class:`ImageConversionError` (``unsupported_encoding``, ``decode_failed``,
    ``too_large``, ``bad_data``).
    """
    fmt_text = str(msg.format)
    fmt = fmt_text.lower()
    if "compresseddepth" in fmt or not any(name in fmt for name in ("jpeg", "jpg", "png")):
        raise _unsupported(fmt_text, f"compressed format {_short(fmt_text)!r}")
    buf = _byte_view(msg.data)
    if buf.size == 0:
        raise ImageConversionError(KIND_DECODE_FAILED, "compressed image has no data")
    dims = compressed_dimensions(buf)
    if dims is None:
        raise ImageConversionError(
            KIND_DECODE_FAILED, f"cannot read a PNG/JPEG size from the {buf.size}-byte header; not decoding"
        )
    width, height = dims
    if width * height > max_pixels:
        raise ImageConversionError(
            KIND_TOO_LARGE,
            f"header declares {width}x{height} = {width * height} pixels, limit {max_pixels}; not decoding",
        )
    try:
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR if _IMREAD_RGB is None else _IMREAD_RGB)
    except cv2.error as exc:
        raise ImageConversionError(KIND_DECODE_FAILED, f"OpenCV could not decode ({exc})") from exc
    if decoded is None or decoded.ndim != 3 or decoded.shape[2] != 3 or decoded.size == 0:
        raise ImageConversionError(
            KIND_DECODE_FAILED, f"could not decode {buf.size} bytes as {_short(fmt_text)!r}"
        )
    if decoded.shape[:2] not in ((height, width), (width, height)):
        raise ImageConversionError(
            KIND_DECODE_FAILED,
            f"decoded {decoded.shape[1]}x{decoded.shape[0]}, but the header declares {width}x{height}",
        )
    if _IMREAD_RGB is not None:
        return decoded
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB, dst=decoded)  # in place: no second buffer


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
