"""sensor_msgs <-> numpy conversion (flownet2_ros.ros.image_convert), with real rclpy messages."""

from __future__ import annotations

import struct
import sys
import time
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("rclpy")
cv2 = pytest.importorskip("cv2")

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from flownet2_ros.ros import image_convert  # noqa: E402
from flownet2_ros.ros.image_convert import (  # noqa: E402
    ERROR_KINDS,
    IMAGE_ENCODINGS,
    RGB_ENCODINGS,
    ImageConversionError,
    RgbScratch,
    compressed_dimensions,
    compressed_msg_to_rgb,
    flow_to_image_msg,
    header_stamp_seconds,
    image_msg_to_array,
    image_msg_to_rgb,
    rgb_to_image_msg,
    scalar_to_image_msg,
    to_rgb,
)

pytestmark = pytest.mark.ros

NATIVE_BIG = sys.byteorder == "big"


def make_msg(
    array: np.ndarray,
    encoding: str,
    step: int | None = None,
    big_endian: bool | None = None,
) -> Image:
    """An Image holding ``array`` (H, W[, C]) with optional row padding and byte order."""
    height, width = array.shape[:2]
    if big_endian is None:
        big_endian = NATIVE_BIG
    if array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder(">" if big_endian else "<"))
    row = np.ascontiguousarray(array).reshape(height, -1).view(np.uint8)
    row_bytes = row.shape[1]
    step = row_bytes if step is None else step
    padded = np.full((height, step), 0xEE, dtype=np.uint8)
    padded[:, :row_bytes] = row
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
    msg.is_bigendian = int(big_endian)
    msg.data.frombytes(padded.tobytes())
    return msg


def msg_bytes(msg: Image | CompressedImage) -> np.ndarray:
    return np.frombuffer(msg.data, dtype=np.uint8)


def rgb_image(height: int = 6, width: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# encodings with known pixel values


def test_rgb8_is_zero_copy_view() -> None:
    rgb = rgb_image()
    msg = make_msg(rgb, "rgb8")
    assert type(msg.data).__name__ == "array"  # rclpy stores uint8[] as array.array('B')
    arr, enc = image_msg_to_array(msg)
    assert enc == "rgb8" and arr.shape == (6, 8, 3) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, rgb)
    assert np.shares_memory(arr, msg_bytes(msg))
    out = to_rgb(arr, enc)
    assert out is arr  # no copy for rgb8
    # With an out buffer the pixels are copied there.
    buf = np.zeros_like(rgb)
    assert to_rgb(arr, enc, out=buf) is buf
    np.testing.assert_array_equal(buf, rgb)


@pytest.mark.parametrize(
    ("encoding", "make"),
    [
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
    ],
)
def test_colour_encodings(encoding: str, make: Callable[[np.ndarray], np.ndarray]) -> None:
    rgb = rgb_image()
    msg = make_msg(make(rgb), encoding)
    arr, enc = image_msg_to_array(msg)
    assert np.shares_memory(arr, msg_bytes(msg))
    np.testing.assert_array_equal(to_rgb(arr, enc), rgb)
    out = np.empty_like(rgb)
    assert to_rgb(arr, enc, out=out) is out
    np.testing.assert_array_equal(out, rgb)


def test_known_pixel_values_bgr8() -> None:
    msg = make_msg(np.array([[[1, 2, 3], [10, 20, 30]]], np.uint8), "bgr8")
    rgb = to_rgb(*image_msg_to_array(msg))
    assert rgb.tolist() == [[[3, 2, 1], [30, 20, 10]]]


def test_mono8() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    arr, enc = image_msg_to_array(make_msg(grey, "mono8"))
    assert arr.shape == (3, 4)
    rgb = to_rgb(arr, enc)
    assert rgb.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], grey)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("big_endian", [False, True])
def test_16bit(encoding: str, big_endian: bool) -> None:
    values = np.array([[0, 255, 256, 0x1234], [0x8000, 0xABCD, 0xFF00, 0xFFFF]], dtype=np.uint16)
    msg = make_msg(values, encoding, big_endian=big_endian)
    raw = msg_bytes(msg)
    # 0x1234 is stored in the byte order the message declares.
    assert raw[6:8].tolist() == ([0x12, 0x34] if big_endian else [0x34, 0x12])
    arr, enc = image_msg_to_array(msg)
    assert arr.dtype == np.uint16 and arr.dtype.isnative
    np.testing.assert_array_equal(arr, values)
    # A view when the byte order is native, a swapped copy otherwise.
    assert np.shares_memory(arr, raw) == (big_endian == NATIVE_BIG)
    rgb = to_rgb(arr, enc)
    expected = (values >> 8).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], expected)
    np.testing.assert_array_equal(image_msg_to_rgb(msg)[0], rgb)
    # Layouts without a byte view (Fortran order, reversed columns) are read correctly too.
    np.testing.assert_array_equal(to_rgb(np.asfortranarray(arr), enc), rgb)
    np.testing.assert_array_equal(to_rgb(arr[:, ::-1], enc), rgb[:, ::-1])


def test_16bit_padded_odd_step_big_endian() -> None:
    values = np.arange(15, dtype=np.uint16).reshape(3, 5) * 4099
    msg = make_msg(values, "mono16", step=13, big_endian=True)  # odd step: unaligned rows
    arr, _ = image_msg_to_array(msg)
    np.testing.assert_array_equal(arr, values)


# ---------------------------------------------------------------------------------------------
# step padding


@pytest.mark.parametrize(
    "encoding", ["rgb8", "bgr8", "mono8", "bayer_rggb8", "16UC1", "32FC2", "uyvy", "rgba16", "bayer_gbrg16"]
)
def test_step_padding_is_a_strided_view(encoding: str) -> None:
    fmt = IMAGE_ENCODINGS[encoding]
    rng = np.random.default_rng(1)
    width = 8 if fmt.layout != "packed" else 7  # YUV 4:2:2 needs an even width
    shape = (5, width) if fmt.channels == 1 else (5, width, fmt.channels)
    if fmt.dtype_char == "f4":
        pixels = rng.standard_normal(shape).astype(np.float32)
    else:
        pixels = rng.integers(0, 2 ** (8 * fmt.itemsize), shape).astype(np.dtype(fmt.dtype_char))
    step = width * fmt.bytes_per_pixel + 6
    msg = make_msg(pixels, encoding, step=step)
    arr, _ = image_msg_to_array(msg)
    assert arr.shape == shape
    assert arr.strides[0] == step
    assert np.shares_memory(arr, msg_bytes(msg))
    np.testing.assert_array_equal(arr, pixels)
    if encoding in RGB_ENCODINGS:
        rgb = to_rgb(arr, encoding)
        assert rgb.shape == (5, width, 3)
        # The one-step conversion reads the padded message in place and agrees.
        np.testing.assert_array_equal(image_msg_to_rgb(msg)[0], rgb)


def test_padded_rgb8_pixels_and_no_copy() -> None:
    rgb = rgb_image(4, 3)
    msg = make_msg(rgb, "rgb8", step=16)
    arr, enc = image_msg_to_array(msg)
    assert to_rgb(arr, enc) is arr
    assert arr.base is not None and np.shares_memory(arr, msg_bytes(msg))
    np.testing.assert_array_equal(arr, rgb)
    assert msg_bytes(msg)[9:16].tolist() == [0xEE] * 7  # the padding stays outside the view


def test_data_longer_than_needed_is_accepted() -> None:
    rgb = rgb_image(2, 2)
    msg = make_msg(rgb, "rgb8")
    msg.data.frombytes(b"\x00" * 11)
    arr, _ = image_msg_to_array(msg)
    np.testing.assert_array_equal(arr, rgb)


def test_last_row_without_padding_is_accepted() -> None:
    rgb = rgb_image(3, 2)
    msg = make_msg(rgb, "rgb8", step=10)
    del msg.data[-4:]  # len(data) == step * (h - 1) + w * bpp
    arr, _ = image_msg_to_array(msg)
    np.testing.assert_array_equal(arr, rgb)


# ---------------------------------------------------------------------------------------------
# Bayer

_BAYER_LAYOUT = {  # channel index (0=R, 1=G, 2=B) at (row % 2, col % 2)
    "bayer_rggb8": ((0, 1), (1, 2)),
    "bayer_bggr8": ((2, 1), (1, 0)),
    "bayer_gbrg8": ((1, 2), (0, 1)),
    "bayer_grbg8": ((1, 0), (2, 1)),
}


def mosaic(rgb: np.ndarray, encoding: str) -> np.ndarray:
    layout = _BAYER_LAYOUT[encoding]
    out = np.empty(rgb.shape[:2], np.uint8)
    for dy in range(2):
        for dx in range(2):
            out[dy::2, dx::2] = rgb[dy::2, dx::2, layout[dy][dx]]
    return out


@pytest.mark.parametrize("encoding", sorted(_BAYER_LAYOUT))
@pytest.mark.parametrize("colour", [(200, 60, 10), (10, 60, 200), (30, 220, 90)])
def test_bayer_flat_colour(encoding: str, colour: tuple[int, int, int]) -> None:
    rgb = np.empty((12, 16, 3), np.uint8)
    rgb[:] = colour
    arr, enc = image_msg_to_array(make_msg(mosaic(rgb, encoding), encoding))
    out = to_rgb(arr, enc)
    assert out.shape == rgb.shape
    np.testing.assert_array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2])


@pytest.mark.parametrize("encoding", sorted(_BAYER_LAYOUT))
def test_bayer_gradient(encoding: str) -> None:
    ys, xs = np.mgrid[0:16, 0:20]
    rgb = np.stack([xs * 10 + 20, np.full_like(xs, 128), ys * 12 + 10], axis=-1).astype(np.uint8)
    arr, enc = image_msg_to_array(make_msg(mosaic(rgb, encoding), encoding, step=24))
    out = to_rgb(arr, enc).astype(int)
    diff = np.abs(out[2:-2, 2:-2] - rgb[2:-2, 2:-2].astype(int))
    assert diff.max() <= 2, diff.max()


# ---------------------------------------------------------------------------------------------
# compressed


@pytest.mark.parametrize(("fmt", "ext", "tol"), [("png", ".png", 0), ("jpeg", ".jpg", 12)])
def test_compressed_round_trip(fmt: str, ext: str, tol: int) -> None:
    ys, xs = np.mgrid[0:32, 0:48]
    rgb = np.stack([xs * 5, ys * 7, 255 - xs * 5], axis=-1).astype(np.uint8)
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format=f"bgr8; {fmt} compressed bgr8")
    msg.data.frombytes(encoded.tobytes())
    out = compressed_msg_to_rgb(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() <= tol


def test_compressed_grey_png_gives_rgb() -> None:
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    ok, encoded = cv2.imencode(".png", grey)
    assert ok
    msg = CompressedImage(format="png")
    msg.data.frombytes(encoded.tobytes())
    out = compressed_msg_to_rgb(msg)
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out[..., 1], grey)


# ---------------------------------------------------------------------------------------------
# errors


def _kind(fn: Callable[..., object], *args: object, **kwargs: object) -> str:
    with pytest.raises(ImageConversionError) as info:
        fn(*args, **kwargs)
    assert info.value.kind in ERROR_KINDS
    assert str(info.value)
    return info.value.kind


def test_error_kinds() -> None:
    good = make_msg(rgb_image(4, 4), "rgb8")

    msg = make_msg(rgb_image(4, 4), "nv24")
    assert _kind(image_msg_to_array, msg) == "unsupported_encoding"
    assert _kind(image_msg_to_rgb, msg) == "unsupported_encoding"

    for h, w in [(0, 4), (4, 0)]:
        msg = make_msg(rgb_image(4, 4), "rgb8")
        msg.height, msg.width = h, w
        assert _kind(image_msg_to_array, msg) == "zero_size"

    assert _kind(image_msg_to_array, good, max_pixels=15) == "too_large"
    huge = Image(height=2**31, width=2**31, encoding="rgb8", step=3 * 2**31)
    assert _kind(image_msg_to_array, huge) == "too_large"

    msg = make_msg(rgb_image(4, 4), "rgb8")
    msg.step = 11
    assert _kind(image_msg_to_array, msg) == "bad_step"

    msg = make_msg(rgb_image(4, 4), "rgb8")
    del msg.data[-1:]
    assert _kind(image_msg_to_array, msg) == "short_data"
    assert _kind(image_msg_to_array, Image(height=1, width=1, encoding="mono8", step=1)) == "short_data"

    arr, _ = image_msg_to_array(good)
    assert _kind(to_rgb, np.zeros((4, 4, 2), np.float32), "32FC2") == "unsupported_encoding"
    assert _kind(to_rgb, arr, "something") == "unsupported_encoding"
    assert _kind(to_rgb, arr, "mono8") == "bad_shape"
    assert _kind(to_rgb, arr.astype(np.uint16), "rgb8") == "bad_shape"
    assert _kind(to_rgb, np.zeros((0, 4), np.uint8), "mono8") == "bad_shape"

    assert _kind(compressed_msg_to_rgb, CompressedImage(format="jpeg", data=b"not a jpeg")) == "decode_failed"
    assert _kind(compressed_msg_to_rgb, CompressedImage(format="png")) == "decode_failed"
    assert _kind(compressed_msg_to_rgb, CompressedImage(format="tiff", data=b"x")) == "unsupported_encoding"
    depth = CompressedImage(format="16UC1; compressedDepth png", data=b"x")
    assert _kind(compressed_msg_to_rgb, depth) == "unsupported_encoding"

    ok, encoded = cv2.imencode(".png", rgb_image(8, 8))
    assert ok
    big = CompressedImage(format="png")
    big.data.frombytes(encoded.tobytes())
    assert _kind(compressed_msg_to_rgb, big, max_pixels=63) == "too_large"


def test_error_is_value_error() -> None:
    assert issubclass(ImageConversionError, ValueError)
    err = ImageConversionError("bad_step", "x")
    assert err.kind == "bad_step"


def test_out_buffer_wrong_shape_is_value_error() -> None:
    arr, enc = image_msg_to_array(make_msg(rgb_image(4, 4), "bgr8"))
    with pytest.raises(ValueError, match="out must be"):
        to_rgb(arr, enc, out=np.empty((4, 5, 3), np.uint8))


def test_non_contiguous_out_is_filled() -> None:
    rgb = rgb_image(4, 6)
    arr, enc = image_msg_to_array(make_msg(rgb[..., ::-1], "bgr8"))
    big = np.zeros((4, 12, 3), np.uint8)
    out = big[:, ::2]
    assert to_rgb(arr, enc, out=out) is out
    np.testing.assert_array_equal(out, rgb)


# ---------------------------------------------------------------------------------------------
# output builders


def _header(sec: int = 12, nanosec: int = 500_000_000, frame_id: str = "cam") -> Header:
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def test_header_stamp_seconds() -> None:
    assert header_stamp_seconds(_header(12, 500_000_000)) == pytest.approx(12.5)
    assert header_stamp_seconds(Header()) == 0.0
    assert header_stamp_seconds(_header(1_700_000_000, 1)) == pytest.approx(1_700_000_000 + 1e-9, abs=1e-6)


def test_flow_to_image_msg_round_trip() -> None:
    flow = np.random.default_rng(2).standard_normal((5, 7, 2)).astype(np.float32)
    header = _header()
    msg = flow_to_image_msg(flow, header)
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (5, 7, "32FC2", 7 * 8)
    assert msg.is_bigendian == int(NATIVE_BIG)
    assert msg.header.frame_id == "cam" and header_stamp_seconds(msg.header) == pytest.approx(12.5)
    assert len(msg.data) == 5 * 7 * 8 and msg.data.typecode == "B"
    arr, enc = image_msg_to_array(msg)
    assert enc == "32FC2"
    np.testing.assert_array_equal(arr, flow)
    # The message owns its data: changing the source does not change the message.
    flow[:] = 0
    assert np.abs(arr).sum() > 0


def test_flow_to_image_msg_converts_dtype_and_layout() -> None:
    flow64 = np.random.default_rng(3).standard_normal((4, 6, 2))
    msg = flow_to_image_msg(flow64[:, ::-1])  # float64, non-contiguous
    arr, _ = image_msg_to_array(msg)
    np.testing.assert_array_equal(arr, flow64[:, ::-1].astype(np.float32))


def test_scalar_to_image_msg_round_trip() -> None:
    values = np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6)
    msg = scalar_to_image_msg(values, _header())
    assert (msg.encoding, msg.step) == ("32FC1", 24)
    arr, _ = image_msg_to_array(msg)
    np.testing.assert_array_equal(arr, values)


def test_rgb_to_image_msg_round_trip() -> None:
    rgb = rgb_image(5, 9)
    msg = rgb_to_image_msg(rgb, _header())
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("rgb8", 27, 0)
    arr, enc = image_msg_to_array(msg)
    np.testing.assert_array_equal(to_rgb(arr, enc), rgb)


def test_builder_messages_serialize() -> None:
    from rclpy.serialization import deserialize_message, serialize_message

    rgb = rgb_image(3, 4)
    msg = deserialize_message(serialize_message(rgb_to_image_msg(rgb, _header())), Image)
    arr, enc = image_msg_to_array(msg)
    assert enc == "rgb8" and np.shares_memory(arr, msg_bytes(msg))
    np.testing.assert_array_equal(arr, rgb)


def test_builders_reject_bad_shapes() -> None:
    with pytest.raises(ValueError):
        flow_to_image_msg(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError):
        scalar_to_image_msg(np.zeros((4, 4, 1), np.float32))
    with pytest.raises(ValueError):
        rgb_to_image_msg(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError):
        rgb_to_image_msg(np.zeros((0, 4, 3), np.uint8))


# ---------------------------------------------------------------------------------------------
# 16-bit colour and Bayer

_RGB16_MAKE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rgb16": lambda rgb: rgb,
    "bgr16": lambda rgb: rgb[..., ::-1],
    "rgba16": lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 0x1234, np.uint16)]),
    "bgra16": lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 0x1234, np.uint16)]),
}


@pytest.mark.parametrize("encoding", sorted(_RGB16_MAKE))
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("pad", [0, 5])
def test_16bit_colour(encoding: str, big_endian: bool, pad: int) -> None:
    rgb16 = np.random.default_rng(4).integers(0, 65536, (5, 6, 3)).astype(np.uint16)
    rgb16[0, 0] = (0xFF00, 0x00FF, 0x8001)  # high bytes 0xFF, 0x00, 0x80
    pixels = _RGB16_MAKE[encoding](rgb16)
    step = 6 * pixels.shape[2] * 2 + pad  # odd padding: unaligned 16-bit rows
    msg = make_msg(pixels, encoding, step=step, big_endian=big_endian)
    expected = (rgb16 >> 8).astype(np.uint8)
    assert expected[0, 0].tolist() == [0xFF, 0x00, 0x80]
    arr, enc = image_msg_to_array(msg)
    np.testing.assert_array_equal(to_rgb(arr, enc), expected)
    out, enc = image_msg_to_rgb(msg)
    assert enc == encoding
    np.testing.assert_array_equal(out, expected)
    # to_rgb also reads arrays that are still in the message's byte order.
    raw = np.ndarray(
        pixels.shape,
        np.dtype(">u2" if big_endian else "<u2"),
        msg_bytes(msg),
        0,
        (step, 2 * pixels.shape[2], 2),
    )
    np.testing.assert_array_equal(to_rgb(raw, encoding), expected)


@pytest.mark.parametrize("encoding", sorted(_BAYER_LAYOUT))
@pytest.mark.parametrize("big_endian", [False, True])
def test_bayer16_is_8bit_demosaic_of_the_high_byte(encoding: str, big_endian: bool) -> None:
    ys, xs = np.mgrid[0:12, 0:16]
    rgb = np.stack([xs * 12 + 20, np.full_like(xs, 128), ys * 15 + 10], axis=-1).astype(np.uint8)
    name8 = encoding
    name16 = encoding[:-1] + "16"
    mosaic8 = mosaic(rgb, name8)
    low = np.random.default_rng(5).integers(0, 256, mosaic8.shape).astype(np.uint16)
    mosaic16 = (mosaic8.astype(np.uint16) << 8) | low  # the low byte must not matter
    expected = to_rgb(*image_msg_to_array(make_msg(mosaic8, name8)))
    msg = make_msg(mosaic16, name16, step=16 * 2 + 3, big_endian=big_endian)
    np.testing.assert_array_equal(image_msg_to_rgb(msg)[0], expected)
    np.testing.assert_array_equal(to_rgb(*image_msg_to_array(msg)), expected)


# ---------------------------------------------------------------------------------------------
# YUV


def smooth_rgb(height: int = 12, width: int = 16) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 4 + 30, ys * 5 + 40, 200 - xs * 2 - ys * 3], axis=-1).astype(np.uint8)


def yuv420_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y (H, W), U and V (H/2, W/2) from OpenCV's forward BT.601 conversion."""
    height, width = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    chroma = i420[height:].reshape(-1)
    quarter = height * width // 4
    u = chroma[:quarter].reshape(height // 2, width // 2)
    v = chroma[quarter:].reshape(height // 2, width // 2)
    return i420[:height], u, v


def reference_rgb(rgb: np.ndarray) -> np.ndarray:
    """What a 4:2:0 round trip through OpenCV gives (the best any YUV decoder here can do)."""
    return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), cv2.COLOR_YUV2RGB_I420)


def to_nv(rgb: np.ndarray, vu: bool = False) -> np.ndarray:
    y, u, v = yuv420_planes(rgb)
    chroma = np.empty((rgb.shape[0] // 2, rgb.shape[1]), np.uint8)
    chroma[:, 0::2], chroma[:, 1::2] = (v, u) if vu else (u, v)
    return np.vstack([y, chroma])


def to_422(rgb: np.ndarray, uyvy: bool) -> np.ndarray:
    """(H, W, 2) packed 4:2:2, with 4:2:0 chroma repeated on both rows of each pair."""
    y, u, v = yuv420_planes(rgb)
    u_full, v_full = np.repeat(u, 2, axis=0), np.repeat(v, 2, axis=0)
    chroma = np.empty_like(y)
    chroma[:, 0::2], chroma[:, 1::2] = u_full, v_full
    return np.dstack([chroma, y] if uyvy else [y, chroma])


def nv_msg(planes: np.ndarray, encoding: str, step: int | None = None) -> Image:
    msg = make_msg(planes, encoding, step=step)
    msg.height = planes.shape[0] * 2 // 3
    return msg


def _close(actual: np.ndarray, expected: np.ndarray, tol: int) -> None:
    diff = np.abs(actual.astype(int) - expected.astype(int))
    assert diff.max() <= tol, diff.max()


@pytest.mark.parametrize(
    ("encoding", "uyvy"), [("uyvy", True), ("yuv422", True), ("yuyv", False), ("yuv422_yuy2", False)]
)
def test_yuv422(encoding: str, uyvy: bool) -> None:
    rgb = smooth_rgb()
    packed = to_422(rgb, uyvy)
    msg = make_msg(packed, encoding)
    arr, enc = image_msg_to_array(msg)
    assert arr.shape == (12, 16, 2) and np.shares_memory(arr, msg_bytes(msg))
    out = to_rgb(arr, enc)
    _close(out, reference_rgb(rgb), 1)
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() <= 4  # chroma subsampling of a smooth image
    np.testing.assert_array_equal(image_msg_to_rgb(msg)[0], out)


@pytest.mark.parametrize("encoding", ["uyvy", "yuyv"])
def test_yuv422_known_pixels(encoding: str) -> None:
    # Video-range BT.601: Y 16 is black, Y 235 is white, U = V = 128 is grey; U/V extremes are colours.
    if encoding == "uyvy":
        row = [[128, 16], [128, 235], [90, 81], [240, 81]]  # U Y0 V Y1 | U Y0 V Y1
    else:
        row = [[16, 128], [235, 128], [81, 90], [81, 240]]  # Y0 U Y1 V | Y0 U Y1 V
    out, _ = image_msg_to_rgb(make_msg(np.array([row], np.uint8), encoding))
    _close(out[0, 0], np.array([0, 0, 0]), 1)
    _close(out[0, 1], np.array([255, 255, 255]), 1)
    _close(out[0, 2], np.array([255, 0, 0]), 3)  # Y 81, U 90, V 240: red
    _close(out[0, 3], np.array([255, 0, 0]), 3)


@pytest.mark.parametrize("encoding", ["nv12", "nv21"])
@pytest.mark.parametrize("pad", [0, 7])
def test_nv12_nv21(encoding: str, pad: int) -> None:
    rgb = smooth_rgb()
    planes = to_nv(rgb, vu=encoding == "nv21")
    msg = nv_msg(planes, encoding, step=16 + pad)
    assert (msg.height, msg.width, msg.step) == (12, 16, 16 + pad)
    arr, enc = image_msg_to_array(msg)
    # OpenCV's layout, as a strided view on the message: no copy even with padded rows.
    assert arr.shape == (18, 16) and arr.strides[0] == 16 + pad
    assert np.shares_memory(arr, msg_bytes(msg))
    out = to_rgb(arr, enc)
    assert out.shape == (12, 16, 3)
    _close(out, reference_rgb(rgb), 1)
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() <= 4
    scratch = RgbScratch()
    direct, enc2 = image_msg_to_rgb(msg, 10_000, scratch)
    assert enc2 == encoding and direct.shape == (12, 16, 3) and direct is scratch.get(12, 16)
    np.testing.assert_array_equal(direct, out)


def test_nv12_known_pixels() -> None:
    planes = np.array(
        [[16, 16, 81, 81], [16, 16, 81, 81], [128, 128, 90, 240]],  # Y, Y, U V U V
        np.uint8,
    )
    out, _ = image_msg_to_rgb(nv_msg(planes, "nv12"))
    _close(out[:, :2], np.zeros((2, 2, 3)), 1)  # neutral chroma under black
    _close(out[:, 2:], np.array([255, 0, 0]), 3)  # Y 81, U 90, V 240: red
    # NV21 reads V then U: the same bytes give another colour.
    out21, _ = image_msg_to_rgb(nv_msg(planes, "nv21"))
    _close(out21[:, :2], np.zeros((2, 2, 3)), 1)
    _close(out21[:, 2:], np.array([15, 63, 255]), 3)  # Y 81, U 240, V 90: blue


def test_yuv_wrong_sizes() -> None:
    # Odd width for 4:2:2.
    msg = make_msg(np.zeros((4, 5, 2), np.uint8), "uyvy")
    assert _kind(image_msg_to_array, msg) == "bad_shape"
    assert _kind(image_msg_to_rgb, msg) == "bad_shape"
    assert _kind(to_rgb, np.zeros((4, 5, 2), np.uint8), "yuyv") == "bad_shape"
    # Odd height or width for 4:2:0.
    msg = nv_msg(np.zeros((6, 8), np.uint8), "nv12")
    msg.height = 3
    assert _kind(image_msg_to_rgb, msg) == "bad_shape"
    msg = nv_msg(np.zeros((6, 7), np.uint8), "nv21")
    assert _kind(image_msg_to_rgb, msg) == "bad_shape"
    assert _kind(to_rgb, np.zeros((7, 8), np.uint8), "nv12") == "bad_shape"  # rows not 3/2 * H
    assert _kind(to_rgb, np.zeros((6, 7), np.uint8), "nv12") == "bad_shape"
    # NV12 data holding only the luma plane.
    msg = nv_msg(np.zeros((6, 8), np.uint8), "nv12")
    del msg.data[4 * 8 :]
    assert _kind(image_msg_to_array, msg) == "short_data"
    assert _kind(image_msg_to_rgb, msg) == "short_data"
    # The last chroma row may end without padding; one byte less is short.
    msg = nv_msg(np.zeros((6, 8), np.uint8), "nv12", step=10)
    del msg.data[-2:]
    assert image_msg_to_rgb(msg)[0].shape == (4, 8, 3)
    del msg.data[-1:]
    assert _kind(image_msg_to_rgb, msg) == "short_data"


# ---------------------------------------------------------------------------------------------
# image_msg_to_rgb and RgbScratch


def test_image_msg_to_rgb_reuses_scratch() -> None:
    scratch = RgbScratch()
    first, enc = image_msg_to_rgb(make_msg(rgb_image(4, 6, seed=1)[..., ::-1], "bgr8"), 1000, scratch)
    assert enc == "bgr8"
    np.testing.assert_array_equal(first, rgb_image(4, 6, seed=1))
    second, _ = image_msg_to_rgb(make_msg(rgb_image(4, 6, seed=2)[..., ::-1], "bgr8"), 1000, scratch)
    assert second is first  # same buffer, new pixels
    np.testing.assert_array_equal(second, rgb_image(4, 6, seed=2))
    third, _ = image_msg_to_rgb(make_msg(rgb_image(5, 6), "bgr8"), 1000, scratch)
    assert third is not first and third.shape == (5, 6, 3)  # a new size reallocates
    assert scratch.get(5, 6) is third


def test_image_msg_to_rgb_rgb8_is_a_view_without_scratch() -> None:
    class Recording(RgbScratch):
        calls = 0

        def get(self, height: int, width: int) -> np.ndarray:
            Recording.calls += 1
            return super().get(height, width)

    rgb = rgb_image(4, 5)
    msg = make_msg(rgb, "rgb8", step=17)
    out, enc = image_msg_to_rgb(msg, 1000, Recording())
    assert enc == "rgb8" and np.shares_memory(out, msg_bytes(msg))
    np.testing.assert_array_equal(out, rgb)
    assert Recording.calls == 0
    # Too large: refused before the scratch buffer is asked for.
    huge = Image(height=2**31, width=2**31, encoding="bgr8", step=3 * 2**31)
    assert _kind(image_msg_to_rgb, huge, 1000, Recording()) == "too_large"
    assert _kind(image_msg_to_rgb, make_msg(rgb_image(4, 5), "bgr8"), 19, Recording()) == "too_large"
    assert Recording.calls == 0


def test_image_msg_to_rgb_errors() -> None:
    assert _kind(image_msg_to_rgb, Image(height=0, width=4, encoding="bgr8", step=12)) == "zero_size"
    msg = make_msg(rgb_image(4, 4), "bgr8")
    msg.step = 11
    assert _kind(image_msg_to_rgb, msg) == "bad_step"
    msg = make_msg(rgb_image(4, 4), "bgr8")
    del msg.data[-1:]
    assert _kind(image_msg_to_rgb, msg) == "short_data"
    flow = flow_to_image_msg(np.zeros((3, 4, 2), np.float32))
    with pytest.raises(ImageConversionError) as info:
        image_msg_to_rgb(flow)
    assert info.value.kind == "unsupported_encoding" and info.value.encoding == "32FC2"


def test_unsupported_encoding_is_named_and_truncated() -> None:
    for fn, msg in [
        (image_msg_to_array, make_msg(rgb_image(2, 2), "nv24")),
        (image_msg_to_rgb, make_msg(rgb_image(2, 2), "x" * 1000)),
    ]:
        with pytest.raises(ImageConversionError) as info:
            fn(msg)
        assert info.value.kind == "unsupported_encoding"
        assert info.value.encoding == str(msg.encoding)[:64]
        assert len(str(info.value)) < 200
    with pytest.raises(ImageConversionError) as info:
        to_rgb(np.zeros((2, 2), np.float32), "32FC1")
    assert info.value.encoding == "32FC1"
    with pytest.raises(ImageConversionError) as info:
        compressed_msg_to_rgb(CompressedImage(format="tiff", data=b"x"))
    assert info.value.encoding == "tiff"
    # Other kinds carry no encoding.
    with pytest.raises(ImageConversionError) as info:
        image_msg_to_array(make_msg(rgb_image(4, 4), "rgb8"), max_pixels=3)
    assert info.value.encoding is None


# ---------------------------------------------------------------------------------------------
# compressed images: sizes from the header, before decoding


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bomb_png(side: int = 30000, raw_bytes: int = 1 << 20) -> bytes:
    """A valid PNG header declaring side x side grey pixels, with a small zlib stream of zeros."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * raw_bytes, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def encoded(ext: str, height: int = 32, width: int = 48, params: list[int] | None = None) -> bytes:
    ok, data = cv2.imencode(ext, cv2.cvtColor(smooth_rgb(height, width), cv2.COLOR_RGB2BGR), params or [])
    assert ok
    return data.tobytes()


def compressed(data: bytes, fmt: str = "png") -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data.frombytes(data)
    return msg


@pytest.fixture
def no_decode(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Makes cv2.imdecode (as the module sees it) record calls and fail the test if called."""
    calls: list[object] = []

    def forbidden(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise AssertionError("cv2.imdecode must not be called")

    monkeypatch.setattr(image_convert.cv2, "imdecode", forbidden)
    return calls


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_dimensions_of_real_files(ext: str) -> None:
    data = encoded(ext, 32, 48)
    assert compressed_dimensions(data) == (48, 32)
    assert compressed_dimensions(np.frombuffer(data, np.uint8)) == (48, 32)
    assert compressed_dimensions(bytearray(data)) == (48, 32)
    assert compressed_dimensions(encoded(ext, 1, 7)) == (7, 1)


def test_png_bomb_is_rejected_without_decoding(no_decode: list[object]) -> None:
    data = bomb_png()
    assert len(data) < 20_000
    assert compressed_dimensions(data) == (30000, 30000)
    start = time.perf_counter()
    with pytest.raises(ImageConversionError) as info:
        compressed_msg_to_rgb(compressed(data), 4096 * 4096)
    assert time.perf_counter() - start < 1.0
    assert info.value.kind == "too_large" and "30000x30000" in str(info.value)
    assert no_decode == []


def test_too_large_real_png_is_not_decoded(no_decode: list[object]) -> None:
    assert _kind(compressed_msg_to_rgb, compressed(encoded(".png", 8, 8)), max_pixels=63) == "too_large"
    assert no_decode == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage, not an image",
        b"\x89PNG\r\n\x1a\n",  # signature only
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00",  # truncated IHDR
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + bytes(8),  # zero size
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dtEXt" + bytes([0, 0, 1, 0, 0, 0, 1, 0]),  # IHDR not first
        b"\xff\xd8",  # SOI only
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # APP0 cut short, no SOF
        b"\xff\xd8\xff\xc0\x00\x11\x08\x00",  # SOF cut inside the dimensions
        b"\xff\xd8\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00",  # SOS before any SOF
        b"\xff\xd8\xff\xd9",  # EOI
        b"\xff\xd8\xff\xc0\x00\x0b\x08\x00\x00\x00\x10\x01\x01\x11\x00",  # height 0 (DNL)
        b"\xff\xd8\xff\xe0\x00\x01",  # segment length < 2
        b"\xff\xd8" + b"\xff" * 100_000,  # only fill bytes
        b"\xff\xd8" + b"\x00" * 100_000,  # only stray bytes
    ],
)
def test_compressed_dimensions_unknown(data: bytes, no_decode: list[object]) -> None:
    assert compressed_dimensions(data) is None
    if data:
        assert _kind(compressed_msg_to_rgb, compressed(data, "jpeg")) == "decode_failed"
    assert no_decode == []


def _sof(marker: int, height: int, width: int) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"


def test_jpeg_marker_walk() -> None:
    soi = b"\xff\xd8"
    app = b"\xff\xe1" + struct.pack(">H", 6) + b"Exif"
    # DHT (C4), JPG (C8) and DAC (CC) are not frame headers even though they sit among the SOFs.
    fake_sof = b"\xff\xc4" + struct.pack(">HBHHB", 11, 8, 9, 9, 1) + b"\x01\x11\x00"
    dac = b"\xff\xcc" + struct.pack(">HBHHB", 11, 8, 7, 7, 1) + b"\x01\x11\x00"
    data = soi + app + fake_sof + dac + b"\xff\x01" + b"\xff\xd3" + b"\xff\xff\xff" + _sof(0xC2, 480, 640)
    assert compressed_dimensions(data) == (640, 480)
    for marker in [0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF]:
        assert compressed_dimensions(soi + _sof(marker, 3, 65535)) == (65535, 3)
    # Stray bytes between segments are skipped as libjpeg does (with a warning there).
    assert compressed_dimensions(soi + app + b"\x00\x12" + _sof(0xC0, 5, 6)) == (6, 5)
    # The segment limit bounds the walk.
    many = soi + app * 5000 + _sof(0xC0, 5, 6)
    assert compressed_dimensions(many) is None


def test_jpeg_with_many_app_segments_decodes() -> None:
    data = encoded(".jpg", 24, 40)
    apps = b"".join(
        bytes([0xFF, 0xE0 + i % 16]) + struct.pack(">H", 2 + 300) + bytes([i % 256]) * 300 for i in range(60)
    )
    data = data[:2] + apps + data[2:]
    assert compressed_dimensions(data) == (40, 24)
    out = compressed_msg_to_rgb(compressed(data, "jpeg"))
    assert out.shape == (24, 40, 3)


def test_progressive_jpeg() -> None:
    data = encoded(".jpg", 20, 36, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert b"\xff\xc2" in data and b"\xff\xc0" not in data
    assert compressed_dimensions(data) == (36, 20)
    out = compressed_msg_to_rgb(compressed(data, "jpeg"))
    assert out.shape == (20, 36, 3)
    _close(out, smooth_rgb(20, 36), 40)


def test_decoded_size_must_match_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_convert.cv2, "imdecode", lambda buf, flags: np.zeros((5, 5, 3), np.uint8))
    assert _kind(compressed_msg_to_rgb, compressed(encoded(".png", 8, 8))) == "decode_failed"
    # Transposed (EXIF orientation applied by OpenCV) is accepted.
    monkeypatch.setattr(image_convert.cv2, "imdecode", lambda buf, flags: np.zeros((48, 32, 3), np.uint8))
    assert compressed_msg_to_rgb(compressed(encoded(".png", 32, 48))).shape == (48, 32, 3)


_FUZZ_FILES = {".png": encoded(".png", 6, 9), ".jpg": encoded(".jpg", 6, 9)}


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from([".png", ".jpg"]),
    cut=st.integers(0, 700),
    edits=st.lists(st.tuples(st.integers(0, 700), st.integers(0, 255)), max_size=6),
)
def test_fuzz_compressed_dimensions(base: str, cut: int, edits: list[tuple[int, int]]) -> None:
    data = bytearray(_FUZZ_FILES[base][:cut])
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    dims = compressed_dimensions(bytes(data))
    assert dims is None or (len(dims) == 2 and all(isinstance(v, int) and v > 0 for v in dims))
    try:
        out = compressed_msg_to_rgb(compressed(bytes(data), "jpeg"), max_pixels=10_000)
    except ImageConversionError as exc:
        assert exc.kind in ("decode_failed", "too_large")
        return
    assert dims is not None and out.shape[:2] in ((dims[1], dims[0]), dims)


# ---------------------------------------------------------------------------------------------
# fuzzing: either a correctly shaped result or ImageConversionError, nothing else

_FUZZ_ENCODINGS = [*IMAGE_ENCODINGS, "nv24", "", "RGB8", "64FC1"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.one_of(st.integers(0, 9), st.just(2**32 - 1)),
    width=st.one_of(st.integers(0, 9), st.just(2**32 - 1)),
    encoding=st.sampled_from(_FUZZ_ENCODINGS),
    step_delta=st.integers(-5, 5),
    data_delta=st.integers(-20, 20),
    is_bigendian=st.integers(0, 255),
    max_pixels=st.sampled_from([1, 30, 10_000]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_image_msg(
    height: int,
    width: int,
    encoding: str,
    step_delta: int,
    data_delta: int,
    is_bigendian: int,
    max_pixels: int,
    seed: int,
) -> None:
    fmt = IMAGE_ENCODINGS.get(encoding)
    bpp = fmt.bytes_per_pixel if fmt else 3
    rows = fmt.rows(height) if fmt else height
    step = max(0, width * bpp + step_delta)
    size = max(0, min(step * max(rows - 1, 0) + width * bpp, 2000) + data_delta)
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=is_bigendian)
    msg.data.frombytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    scratch = RgbScratch()
    try:
        direct, direct_enc = image_msg_to_rgb(msg, max_pixels, scratch)
    except ImageConversionError as exc:
        direct = None
        if exc.kind == "unsupported_encoding":
            assert exc.encoding == encoding
        else:
            assert exc.encoding is None
    try:
        arr, enc = image_msg_to_array(msg, max_pixels=max_pixels)
    except ImageConversionError:
        assert direct is None
        return
    assert fmt is not None and enc == encoding
    assert arr.shape[:2] == (rows, width)
    assert arr.dtype.isnative
    if fmt.channels > 1:
        assert arr.shape[2] == fmt.channels
    try:
        rgb = to_rgb(arr, enc)
    except ImageConversionError as exc:
        assert encoding not in RGB_ENCODINGS and exc.kind == "unsupported_encoding"
        assert direct is None
        return
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    # Both routes give the same pixels, whatever the byte order and padding.
    assert direct is not None and direct_enc == encoding
    np.testing.assert_array_equal(direct, rgb)


@settings(max_examples=50, deadline=None)
@given(fmt=st.sampled_from(["jpeg", "png", "bgr8; jpeg compressed bgr8", "bmp"]), data=st.binary(max_size=64))
def test_fuzz_compressed(fmt: str, data: bytes) -> None:
    msg = CompressedImage(format=fmt)
    msg.data.frombytes(data)
    try:
        out = compressed_msg_to_rgb(msg)
    except ImageConversionError:
        return
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
