"""sensor_msgs <-> numpy conversion (flownet2_ros.ros.image_convert), with real rclpy messages."""

from __future__ import annotations

import sys
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

from flownet2_ros.ros.image_convert import (  # noqa: E402
    ERROR_KINDS,
    IMAGE_ENCODINGS,
    RGB_ENCODINGS,
    ImageConversionError,
    compressed_msg_to_rgb,
    flow_to_image_msg,
    header_stamp_seconds,
    image_msg_to_array,
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


def test_16bit_padded_odd_step_big_endian() -> None:
    values = np.arange(15, dtype=np.uint16).reshape(3, 5) * 4099
    msg = make_msg(values, "mono16", step=13, big_endian=True)  # odd step: unaligned rows
    arr, _ = image_msg_to_array(msg)
    np.testing.assert_array_equal(arr, values)


# ---------------------------------------------------------------------------------------------
# step padding


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "bayer_rggb8", "16UC1", "32FC2"])
def test_step_padding_is_a_strided_view(encoding: str) -> None:
    fmt = IMAGE_ENCODINGS[encoding]
    rng = np.random.default_rng(1)
    shape = (5, 7) if fmt.channels == 1 else (5, 7, fmt.channels)
    if fmt.dtype_char == "f4":
        pixels = rng.standard_normal(shape).astype(np.float32)
    else:
        pixels = rng.integers(0, 2 ** (8 * fmt.itemsize), shape).astype(np.dtype(fmt.dtype_char))
    step = 7 * fmt.bytes_per_pixel + 6
    msg = make_msg(pixels, encoding, step=step)
    arr, _ = image_msg_to_array(msg)
    assert arr.shape == shape
    assert arr.strides[0] == step
    assert np.shares_memory(arr, msg_bytes(msg))
    np.testing.assert_array_equal(arr, pixels)
    if encoding in RGB_ENCODINGS:
        assert to_rgb(arr, encoding).shape == (5, 7, 3)


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

    msg = make_msg(rgb_image(4, 4), "yuv422")
    assert _kind(image_msg_to_array, msg) == "unsupported_encoding"

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
# fuzzing: either a correctly shaped result or ImageConversionError, nothing else

_FUZZ_ENCODINGS = [*IMAGE_ENCODINGS, "yuv422", "", "RGB8", "64FC1"]


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
    step = max(0, width * bpp + step_delta)
    size = max(0, min(step * max(height - 1, 0) + width * bpp, 2000) + data_delta)
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=is_bigendian)
    msg.data.frombytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    try:
        arr, enc = image_msg_to_array(msg, max_pixels=max_pixels)
    except ImageConversionError:
        return
    assert fmt is not None and enc == encoding
    assert arr.shape[:2] == (height, width)
    assert arr.dtype.isnative
    if fmt.channels > 1:
        assert arr.shape[2] == fmt.channels
    try:
        rgb = to_rgb(arr, enc)
    except ImageConversionError as exc:
        assert encoding not in RGB_ENCODINGS and exc.kind == "unsupported_encoding"
        return
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8


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
