"""Optical-flow colour coding (the Middlebury / Baker et al. colour wheel) and flow magnitude.

Direction picks the hue from a 55-entry colour wheel, magnitude picks the saturation: zero motion is
white, motion of ``max_flow`` pixels is the fully saturated wheel colour, and anything faster is that
colour dimmed to 75 %. Pixels with NaN or infinite flow are black. Everything is vectorised numpy.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import FlowFormatError
from .flo import check_flow_array

__all__ = ["COLORWHEEL_SEGMENTS", "flow_magnitude", "flow_to_color", "make_colorwheel"]

#: Colour-wheel segment lengths: red→yellow, yellow→green, green→cyan, cyan→blue, blue→magenta, magenta→red.
COLORWHEEL_SEGMENTS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))


@functools.lru_cache(maxsize=1)
def make_colorwheel() -> NDArray[np.uint8]:
    """The Middlebury colour wheel, built once and cached.

    Each segment of length ``n`` ramps one RGB channel between 0 and 255 in steps ``floor(255 * i / n)``,
    ``i = 0 .. n-1``, while the others are held at 0 or 255: red→yellow (G rises), yellow→green (R falls),
    green→cyan (B rises), cyan→blue (G falls), blue→magenta (R rises), magenta→red (B falls).

    Returns:
        Shape ``(55, 3)``, uint8, RGB, read-only (it is shared; copy it to modify it).
    """
    # (channel that ramps, rising?, channels held at 255)
    ramps = (
        (1, True, (0,)),
        (0, False, (1,)),
        (2, True, (1,)),
        (1, False, (2,)),
        (0, True, (2,)),
        (2, False, (0,)),
    )
    rows = []
    for (_, n), (channel, rising, full) in zip(COLORWHEEL_SEGMENTS, ramps, strict=True):
        seg = np.zeros((n, 3), dtype=np.int64)
        ramp = (255 * np.arange(n)) // n
        seg[:, channel] = ramp if rising else 255 - ramp
        seg[:, list(full)] = 255
        rows.append(seg)
    wheel = np.concatenate(rows).astype(np.uint8)
    wheel.setflags(write=False)
    return wheel


@functools.lru_cache(maxsize=1)
def _wheel_float() -> NDArray[np.float32]:
    wheel = make_colorwheel().astype(np.float32)
    wheel.setflags(write=False)
    return wheel


def _check_out(out: NDArray[Any] | None, shape: tuple[int, ...], dtype: type[np.generic]) -> NDArray[Any]:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
        got = (out.shape, out.dtype) if isinstance(out, np.ndarray) else type(out).__name__
        raise FlowFormatError(
            f"out: expected an ndarray of shape {shape} and dtype {np.dtype(dtype)}, got {got}"
        )
    if not out.flags.writeable:
        raise FlowFormatError("out: array is read-only")
    return out


def flow_magnitude(flow: ArrayLike, out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    """Per-pixel flow magnitude ``hypot(u, v)``.

    Args:
        flow: shape ``(H, W, 2)``, real dtype.
        out: optional preallocated ``(H, W)`` float32 array to write into (no output allocation).

    Returns:
        Shape ``(H, W)``, float32 (``out`` itself when given); NaN where either component is NaN (and
        inf where one is infinite).

    Raises:
        FlowFormatError: ``flow`` or ``out`` has the wrong shape or dtype.
    """
    arr = check_flow_array(flow, "flow")
    result = _check_out(out, arr.shape[:2], np.float32)
    with np.errstate(over="ignore"):
        np.hypot(arr[..., 0], arr[..., 1], out=result)
    return result


def flow_to_color(
    flow: ArrayLike, max_flow: float | None = None, out: NDArray[np.uint8] | None = None
) -> NDArray[np.uint8]:
    """Colour-code optical flow with the Middlebury colour wheel.

    The conventions follow the Middlebury ``flowToColor`` code: the angle ``a = atan2(-v, -u) / pi`` in
    ``[-1, 1]`` maps linearly onto wheel position ``(a + 1) / 2 * 54``, interpolating linearly between
    neighbouring entries (so rightward flow, with ``v = +0.0``, is red = entry 0, leftward flow is entry 27,
    downward flow lies between entries 13 and 14). With ``r = |flow| / max_flow`` each channel ``c`` of that
    colour (0..255) becomes ``255 - r * (255 - c)`` for ``r <= 1`` (white at zero motion, the pure wheel
    colour at ``r = 1``) and ``0.75 * c`` for ``r > 1``; the result is truncated to uint8.

    Args:
        flow: shape ``(H, W, 2)``, real dtype, u rightward and v downward in pixels. Pixels whose flow (or
            magnitude) is not finite in float32 are drawn black ``(0, 0, 0)``.
        max_flow: the magnitude that maps to full saturation. Pass a fixed value for a fixed
            normalisation, so that colours mean the same across frames (needed for video / a ROS topic).
            ``None`` or ``<= 0`` normalises automatically by this flow's largest finite magnitude
            (1 if that is 0), so the fastest pixel of each frame is always fully saturated.
        out: optional preallocated ``(H, W, 3)`` uint8 array to write the image into, e.g. a buffer reused
            for every frame in a node. This saves the output allocation only; float32 temporaries of a few
            times the image size are still allocated per call.

    Returns:
        Shape ``(H, W, 3)``, uint8, RGB (``out`` itself when given).

    Raises:
        FlowFormatError: ``flow`` or ``out`` has the wrong shape or dtype.
        ValueError: ``max_flow`` is NaN or infinite.
    """
    arr = check_flow_array(flow, "flow")
    height, width = arr.shape[:2]
    result = _check_out(out, (height, width, 3), np.uint8)
    if max_flow is not None and not math.isfinite(max_flow):
        raise ValueError(f"max_flow must be finite, None or <= 0 (automatic), got {max_flow}")
    if height == 0 or width == 0:
        return result

    with np.errstate(over="ignore"):
        u = arr[..., 0].astype(np.float32)
        v = arr[..., 1].astype(np.float32)
        rad = np.hypot(u, v)
    bad = ~np.isfinite(rad)
    any_bad = bool(bad.any())
    if any_bad:
        u[bad] = 0.0
        v[bad] = 0.0
        rad[bad] = 0.0

    if max_flow is None or max_flow <= 0:
        norm = float(rad.max())
        if not norm > 0:
            norm = 1.0
    else:
        norm = float(max_flow)
    rad /= norm

    wheel = _wheel_float()
    ncols = wheel.shape[0]
    np.negative(u, out=u)
    np.negative(v, out=v)
    fk = np.arctan2(v, u)  # atan2(-v, -u) in [-pi, pi]
    fk /= np.float32(math.pi)
    fk += 1.0
    fk *= (ncols - 1) / 2.0  # position on the wheel, [0, ncols - 1]
    k0f = np.floor(fk)
    np.minimum(k0f, ncols - 1, out=k0f)
    frac = fk
    frac -= k0f
    k0 = k0f.astype(np.intp)
    k1 = k0 + 1
    k1[k1 == ncols] = 0

    f3 = frac[..., None]
    col = wheel[k0]
    col *= 1.0 - f3
    col1 = wheel[k1]
    col1 *= f3
    col += col1  # interpolated wheel colour, 0..255

    outside = rad > 1.0
    any_outside = bool(outside.any())
    if any_outside:
        dimmed = col[outside] * np.float32(0.75)
    # 255 - r * (255 - col), in place
    np.subtract(255.0, col, out=col)
    col *= rad[..., None]
    np.subtract(255.0, col, out=col)
    if any_outside:
        col[outside] = dimmed
    if any_bad:
        col[bad] = 0.0
    np.copyto(result, col, casting="unsafe")  # values are in [0, 255]: truncation == floor
    return result
