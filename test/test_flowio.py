"""Tests for flownet2_ros.flowio: .flo, PFM and KITTI PNG round trips and errors, and the colour coding."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flownet2_ros.flowio import (
    KITTI_FLOW_MAX,
    KITTI_FLOW_MIN,
    FlowFormatError,
    flow_magnitude,
    flow_to_color,
    make_colorwheel,
    read_flo,
    read_kitti_flow,
    read_pfm,
    read_pfm_flow,
    write_flo,
    write_kitti_flow,
    write_pfm,
)

RNG_SEED = 1234


def _random_flow(h: int = 5, w: int = 7, seed: int = RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=10.0, size=(h, w, 2)).astype(np.float32)


def _flo_bytes(width: int, height: int, payload: bytes) -> bytes:
    return b"PIEH" + struct.pack("<ii", width, height) + payload


# --------------------------------------------------------------------------------------------------- import


def test_import_does_not_load_cv2_or_torch() -> None:
    code = (
        "import sys, flownet2_ros.flowio; "
        "bad = [m for m in ('cv2', 'torch', 'rclpy') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------------- .flo


def test_flo_round_trip(tmp_path: Path) -> None:
    flow = _random_flow()
    flow[1, 2, 0] = np.nan
    path = tmp_path / "a.flo"
    write_flo(path, flow)
    back = read_flo(path)
    assert back.shape == (5, 7, 2)
    assert back.dtype == np.float32
    assert back.flags.c_contiguous and back.flags.writeable
    np.testing.assert_array_equal(back, flow)


def test_flo_byte_layout(tmp_path: Path) -> None:
    flow = np.arange(2 * 3 * 2, dtype=np.float64).reshape(2, 3, 2)  # float64 input is cast
    path = tmp_path / "layout.flo"
    write_flo(str(path), flow)
    raw = path.read_bytes()
    assert raw[:4] == b"PIEH"
    assert struct.unpack("<f", raw[:4])[0] == 202021.25
    assert struct.unpack("<ii", raw[4:12]) == (3, 2)  # width, height
    np.testing.assert_array_equal(np.frombuffer(raw[12:], dtype="<f4"), np.arange(12))


def test_flo_non_contiguous_input(tmp_path: Path) -> None:
    flow = _random_flow(6, 4).transpose(1, 0, 2)  # (4, 6, 2), not C-contiguous
    write_flo(tmp_path / "t.flo", flow)
    np.testing.assert_array_equal(read_flo(tmp_path / "t.flo"), flow)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flow=hnp.arrays(
        dtype=np.float32,
        shape=st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(2)),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=False),
    )
)
def test_flo_round_trip_property(tmp_path: Path, flow: np.ndarray) -> None:
    path = tmp_path / "h.flo"
    write_flo(path, flow)
    back = read_flo(path)
    assert back.shape == flow.shape
    np.testing.assert_array_equal(back.view(np.uint32), flow.view(np.uint32))  # bit-exact, signed zeros too


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty file"),
        (b"PIE", "truncated header"),
        (b"PIEH\x03\x00", "truncated header"),
        (b"XXXX" + struct.pack("<ii", 1, 1) + bytes(8), "wrong magic"),
        (_flo_bytes(0, 4, b""), "implausible width 0"),
        (_flo_bytes(4, -1, b""), "implausible height -1"),
        (_flo_bytes(100_001, 1, b""), "implausible width"),
        (
            _flo_bytes(640, 480, bytes(1000)),
            r"truncated: header says 640x480 \(2457600 bytes of data\) but only 1000",
        ),
        (_flo_bytes(2, 1, bytes(16 + 3)), "3 trailing bytes"),
    ],
)
def test_flo_errors(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.flo"
    path.write_bytes(content)
    with pytest.raises(FlowFormatError, match=match) as info:
        read_flo(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_flo_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_flo(tmp_path / "nope.flo")


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 5), np.float32),
        np.zeros((4, 5, 3), np.float32),
        np.zeros((2, 4, 5, 2), np.float32),
        np.zeros((0, 5, 2), np.float32),
        np.zeros((4, 5, 2), bool),
        np.zeros((4, 5, 2), np.complex64),
    ],
)
def test_flo_write_rejects_bad_arrays(tmp_path: Path, bad: np.ndarray) -> None:
    path = tmp_path / "w.flo"
    with pytest.raises(FlowFormatError, match=r"w\.flo"):
        write_flo(path, bad)
    assert not path.exists()


def test_flo_write_rejects_inf_and_overflow(tmp_path: Path) -> None:
    flow = np.zeros((2, 2, 2), np.float64)
    flow[0, 0, 1] = np.inf
    with pytest.raises(FlowFormatError, match="infinite"):
        write_flo(tmp_path / "i.flo", flow)
    flow[0, 0, 1] = 1e300  # finite in float64, inf in float32
    with pytest.raises(FlowFormatError, match="infinite"):
        write_flo(tmp_path / "i.flo", flow)


# --------------------------------------------------------------------------------------------------- PFM


def test_pfm_round_trip_colour(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).normal(size=(4, 6, 3)).astype(np.float32)
    write_pfm(tmp_path / "c.pfm", arr, scale=2.5)
    back, scale = read_pfm(tmp_path / "c.pfm")
    assert scale == 2.5
    assert back.dtype == np.float32 and back.shape == (4, 6, 3)
    assert back.flags.c_contiguous and back.flags.writeable
    np.testing.assert_array_equal(back, arr)
    assert (tmp_path / "c.pfm").read_bytes().startswith(b"PF\n6 4\n-2.5\n")


def test_pfm_round_trip_grey(tmp_path: Path) -> None:
    arr = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    arr[0, 0] = np.inf  # PFM keeps inf (e.g. disparity at infinity)
    write_pfm(tmp_path / "g.pfm", arr)
    back, scale = read_pfm(tmp_path / "g.pfm")
    assert scale == 1.0 and back.shape == (3, 5)
    np.testing.assert_array_equal(back, arr)
    write_pfm(tmp_path / "g1.pfm", arr[..., None])  # (H, W, 1) is written as 'Pf'
    assert (tmp_path / "g1.pfm").read_bytes()[:2] == b"Pf"


def test_pfm_bottom_to_top_and_big_endian(tmp_path: Path) -> None:
    # Hand-made big-endian file (positive scale): rows stored bottom row first.
    rows_on_disk = np.array([[1, 2, 3], [4, 5, 6]], dtype=">f4")
    path = tmp_path / "be.pfm"
    path.write_bytes(b"Pf\n3 2\n4.0\n" + rows_on_disk.tobytes())
    arr, scale = read_pfm(path)
    assert scale == 4.0
    assert arr.dtype == np.float32 and arr.dtype.isnative
    np.testing.assert_array_equal(arr, [[4, 5, 6], [1, 2, 3]])


def test_pfm_flow(tmp_path: Path) -> None:
    flow = _random_flow(4, 3)
    three = np.concatenate([flow, np.zeros((4, 3, 1), np.float32)], axis=2)
    write_pfm(tmp_path / "f.pfm", three)
    back = read_pfm_flow(tmp_path / "f.pfm")
    assert back.shape == (4, 3, 2) and back.flags.c_contiguous
    np.testing.assert_array_equal(back, flow)
    write_pfm(tmp_path / "grey.pfm", flow[..., 0])
    with pytest.raises(FlowFormatError, match="3-channel"):
        read_pfm_flow(tmp_path / "grey.pfm")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty file"),
        (b"P", "truncated header"),
        (b"PF\n3 2\n-1", "truncated header"),
        (b"P6\n3 2\n255\n" + bytes(18), "wrong identifier"),
        (b"PF\n3 x\n-1\n", "not non-negative integers"),
        (b"PF\n0 2\n-1\n", "implausible width 0"),
        (b"PF\n3 2\nabc\n", "not a number"),
        (b"PF\n3 2\n0\n", "non-zero"),
        (b"Pf\n3 2\n-1\n" + bytes(10), r"truncated: header says 3x2x1 \(24 bytes of data\) but only 10"),
        (b"PF\n1 1\n-1\n" + bytes(12 + 5), "5 trailing bytes"),
        (b"PF" + b" " * 300, "malformed header"),
    ],
)
def test_pfm_errors(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.pfm"
    path.write_bytes(content)
    with pytest.raises(FlowFormatError, match=match) as info:
        read_pfm(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("array", "scale", "match"),
    [
        (np.zeros((2, 3, 2), np.float32), 1.0, "shape"),
        (np.zeros((2,), np.float32), 1.0, "shape"),
        (np.zeros((0, 3), np.float32), 1.0, "shape"),
        (np.zeros((2, 3), bool), 1.0, "dtype"),
        (np.zeros((2, 3), np.float32), -1.0, "scale"),
        (np.zeros((2, 3), np.float32), math.nan, "scale"),
    ],
)
def test_pfm_write_errors(tmp_path: Path, array: np.ndarray, scale: float, match: str) -> None:
    with pytest.raises(FlowFormatError, match=match):
        write_pfm(tmp_path / "w.pfm", array, scale=scale)


def test_pfm_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_pfm(tmp_path / "nope.pfm")


# --------------------------------------------------------------------------------------------------- KITTI


def test_kitti_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    flow = (rng.integers(-400 * 64, 400 * 64, size=(6, 8, 2)) / 64.0).astype(np.float32)  # multiples of 1/64
    flow[0, 0] = (0.015625, -0.984375)
    valid = rng.random((6, 8)) > 0.3
    valid[0, 0] = True
    path = tmp_path / "k.png"
    write_kitti_flow(path, flow, valid)
    back, back_valid = read_kitti_flow(path)
    assert back.dtype == np.float32 and back.shape == (6, 8, 2)
    assert back_valid.dtype == np.bool_ and back_valid.shape == (6, 8)
    np.testing.assert_array_equal(back_valid, valid)
    np.testing.assert_array_equal(back[valid], flow[valid])
    np.testing.assert_array_equal(back[~valid], 0.0)


def test_kitti_channel_order_and_encoding(tmp_path: Path) -> None:
    import cv2

    flow = np.array([[[1.5, -2.25], [0.0, 0.0]]], np.float32)
    path = tmp_path / "o.png"
    write_kitti_flow(path, flow, valid=np.array([[True, False]]))
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # BGR
    assert raw.dtype == np.uint16 and raw.shape == (1, 2, 3)
    assert raw[0, 0].tolist() == [1, 32768 - 144, 32768 + 96]  # B=valid, G=v, R=u
    assert raw[0, 1].tolist() == [0, 0, 0]  # invalid pixel: all zero


def test_kitti_nan_clip_and_rounding(tmp_path: Path) -> None:
    flow = np.array([[[np.nan, 1.0], [1000.0, -1000.0], [0.01, 0.0]]], np.float32)
    path = tmp_path / "c.png"
    write_kitti_flow(path, flow)  # valid=None: all pixels valid except the NaN one
    back, valid = read_kitti_flow(path)
    assert valid.tolist() == [[False, True, True]]
    assert back[0, 1].tolist() == [KITTI_FLOW_MAX, KITTI_FLOW_MIN] == [511.984375, -512.0]
    assert back[0, 2, 0] == pytest.approx(1 / 64)  # 0.01 rounds to the nearest 1/64


def test_kitti_rejects_non_16bit_png(tmp_path: Path) -> None:
    import cv2

    path8 = tmp_path / "eight.png"
    cv2.imwrite(str(path8), np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(FlowFormatError, match="16-bit"):
        read_kitti_flow(path8)
    grey = tmp_path / "grey16.png"
    cv2.imwrite(str(grey), np.zeros((3, 4), np.uint16))
    with pytest.raises(FlowFormatError, match="3-channel"):
        read_kitti_flow(grey)
    rgba = tmp_path / "rgba16.png"
    cv2.imwrite(str(rgba), np.zeros((3, 4, 4), np.uint16))
    with pytest.raises(FlowFormatError, match="3-channel"):
        read_kitti_flow(rgba)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty file"),
        (b"PIEH" + bytes(20), "not a PNG"),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), "corrupt PNG"),
    ],
)
def test_kitti_bad_files(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(FlowFormatError, match=match):
        read_kitti_flow(path)


def test_kitti_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_kitti_flow(tmp_path / "nope.png")


def test_kitti_write_errors(tmp_path: Path) -> None:
    with pytest.raises(FlowFormatError, match="shape"):
        write_kitti_flow(tmp_path / "w.png", np.zeros((2, 3, 3), np.float32))
    with pytest.raises(FlowFormatError, match="valid mask"):
        write_kitti_flow(tmp_path / "w.png", np.zeros((2, 3, 2), np.float32), valid=np.ones((3, 2), bool))
    assert not (tmp_path / "w.png").exists()


# --------------------------------------------------------------------------------------------------- colour

# Entries of the wheel derived by hand from the definition (segments RY=15, YG=6, GC=4, CB=11, BM=13, MR=6).
WHEEL_ENTRIES = {
    0: (255, 0, 0),  # red, start of RY
    13: (255, 221, 0),  # RY i=13: floor(255*13/15)
    14: (255, 238, 0),
    15: (255, 255, 0),  # yellow, start of YG
    16: (213, 255, 0),  # YG i=1: 255 - floor(255/6)
    21: (0, 255, 0),  # green, start of GC
    25: (0, 255, 255),  # cyan, start of CB
    27: (0, 209, 255),  # CB i=2: 255 - floor(510/11)
    36: (0, 0, 255),  # blue, start of BM
    49: (255, 0, 255),  # magenta, start of MR
    54: (255, 0, 43),  # MR i=5: 255 - floor(1275/6)
}


def _color_of(u: float, v: float, max_flow: float | None = 1.0) -> tuple[int, ...]:
    return tuple(int(c) for c in flow_to_color(np.array([[[u, v]]], np.float32), max_flow=max_flow)[0, 0])


def test_colorwheel() -> None:
    wheel = make_colorwheel()
    assert wheel.shape == (55, 3) and wheel.dtype == np.uint8
    assert make_colorwheel() is wheel  # cached
    assert not wheel.flags.writeable
    for index, rgb in WHEEL_ENTRIES.items():
        assert tuple(wheel[index]) == rgb, index


def test_color_cardinal_directions() -> None:
    assert _color_of(0.0, 0.0) == (255, 255, 255)  # no motion: white
    assert _color_of(1.0, 0.0) == WHEEL_ENTRIES[0]  # rightward: a = atan2(-0, -1)/pi = -1 -> entry 0
    assert _color_of(1.0, -0.0) == WHEEL_ENTRIES[54]  # a = atan2(+0, -1)/pi = +1 -> entry 54
    assert _color_of(-1.0, 0.0) == WHEEL_ENTRIES[27]  # leftward: a = 0 -> entry 27
    # downward (v > 0): a = -1/2 -> position 13.5, halfway between entries 13 and 14
    assert _color_of(0.0, 1.0) == (255, (221 + 238) // 2, 0)
    # upward (v < 0): a = +1/2 -> position 40.5, between BM entries 40 and 41
    r40, r41 = (255 * 4) // 13, (255 * 5) // 13
    assert _color_of(0.0, -1.0) == ((r40 + r41) // 2, 0, 255)


def test_color_every_wheel_entry() -> None:
    # The direction whose wheel position is exactly k: a = 2k/54 - 1, (-u, -v) = (cos(pi a), sin(pi a)).
    k = np.arange(55)
    a = 2.0 * k / 54.0 - 1.0
    flow = np.stack([-np.cos(np.pi * a), -np.sin(np.pi * a)], axis=-1)[None].astype(np.float32)
    rgb = flow_to_color(flow, max_flow=1.0)[0].astype(int)
    assert np.abs(rgb - make_colorwheel().astype(int)).max() <= 1


def test_color_radius_scaling() -> None:
    assert _color_of(-0.5, 0.0) == (127, 232, 255)  # half max: 255 - 0.5 * (255 - c)
    assert _color_of(-0.5, 0.0, max_flow=0.5) == WHEEL_ENTRIES[27]
    assert _color_of(-2.0, 0.0) == (0, 156, 191)  # beyond max: 0.75 * c
    assert _color_of(1e-9, 0.0) == (255, 255, 255)


def test_color_nonfinite_is_black() -> None:
    flow = np.array(
        [[[np.nan, 0.0], [0.0, np.nan], [np.inf, 1.0], [-np.inf, -np.inf], [3.0, 4.0]]], np.float32
    )
    rgb = flow_to_color(flow)  # automatic normalisation ignores the non-finite pixels
    assert rgb[0, :4].tolist() == [[0, 0, 0]] * 4
    assert tuple(rgb[0, 4]) != (0, 0, 0) and tuple(rgb[0, 4]) != (255, 255, 255)
    assert tuple(rgb[0, 4]) == tuple(flow_to_color(flow[:, 4:], max_flow=5.0)[0, 0])


def test_color_fixed_vs_auto_normalisation() -> None:
    flow = np.zeros((2, 2, 2), np.float32)
    flow[0, 0] = (-4.0, 0.0)
    flow[1, 1] = (-2.0, 0.0)
    auto = flow_to_color(flow)
    assert tuple(auto[0, 0]) == WHEEL_ENTRIES[27]  # fastest pixel fully saturated
    assert tuple(auto[1, 1]) == (127, 232, 255)
    np.testing.assert_array_equal(flow_to_color(flow, max_flow=0), auto)
    np.testing.assert_array_equal(flow_to_color(flow, max_flow=-3.0), auto)
    fixed = flow_to_color(flow, max_flow=8.0)
    assert tuple(fixed[0, 0]) == (127, 232, 255)
    # Fixed normalisation: the same motion gets the same colour whatever else is in the frame.
    np.testing.assert_array_equal(
        flow_to_color(flow * 0.5, max_flow=8.0)[0, 0], flow_to_color(flow, max_flow=8.0)[1, 1]
    )


@pytest.mark.filterwarnings("error")
def test_color_all_zero_and_all_nan_auto() -> None:
    assert (flow_to_color(np.zeros((3, 4, 2), np.float32)) == 255).all()
    assert (flow_to_color(np.full((3, 4, 2), np.nan, np.float32)) == 0).all()
    assert flow_to_color(np.zeros((0, 4, 2), np.float32)).shape == (0, 4, 3)


def test_color_output_and_out_buffer() -> None:
    flow = _random_flow(8, 9)
    rgb = flow_to_color(flow, max_flow=20.0)
    assert rgb.shape == (8, 9, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    out = np.full((8, 9, 3), 7, np.uint8)
    result = flow_to_color(flow, max_flow=20.0, out=out)
    assert result is out
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(flow_to_color(flow.astype(np.float64), max_flow=20.0), rgb)
    with pytest.raises(ValueError, match="out"):
        flow_to_color(flow, out=np.zeros((8, 9, 3), np.float32))
    with pytest.raises(ValueError, match="out"):
        flow_to_color(flow, out=np.zeros((9, 8, 3), np.uint8))
    with pytest.raises(FlowFormatError, match="shape"):
        flow_to_color(flow[..., :1])
    with pytest.raises(ValueError, match="max_flow"):
        flow_to_color(flow, max_flow=math.inf)


def test_flow_magnitude() -> None:
    flow = _random_flow(6, 5)
    flow[2, 3, 1] = np.nan
    mag = flow_magnitude(flow)
    assert mag.shape == (6, 5) and mag.dtype == np.float32
    np.testing.assert_array_equal(mag, np.hypot(flow[..., 0], flow[..., 1]))
    assert np.isnan(mag[2, 3])
    out = np.empty((6, 5), np.float32)
    assert flow_magnitude(flow, out=out) is out
    np.testing.assert_array_equal(out, mag)
    mag64 = flow_magnitude(flow.astype(np.float64))
    assert mag64.dtype == np.float32
    np.testing.assert_allclose(mag64, mag, rtol=1e-6)
    with pytest.raises(ValueError, match="out"):
        flow_magnitude(flow, out=np.empty((5, 6), np.float32))
