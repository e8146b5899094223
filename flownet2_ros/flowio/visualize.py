"""Optical-flow colour coding (the Middlebury / Baker et al. colour wheel) and flow magnitude.

Direction picks the hue from a 55-entry colour wheel, magnitude picks the saturation: zero motion is
white, motion of ``max_flow`` pixels is the fully saturated wheel colour, and anything faster is that
colour dimmed to 75 %. Pixels with NaN or infinite flow are black. Everything is vectorised numpy.

Speed
-----
:func:`flow_to_color` runs once per frame in the ROS node, so by default it does not evaluate the colour
formula per pixel. It quantises each pixel's wheel position to 1/64 of a wheel entry and its normalised
radius to 1/256, and reads the colour from a lookup table built once (``_color_lut``, 2.7 MB) from the
exact formula at those grid points: the per-pixel work is a few single-channel float32 passes
(``atan2`` included) and one nearest-neighbour ``cv2.remap`` of the table (OpenCV is imported on first
use, so importing :mod:`flownet2_ros.flowio` stays numpy-only). The result is within 2 levels (of 255)
of the exact formula everywhere, and equal to it at the grid points (every wheel entry, the half-way
positions, radii ``k/256``); ``exact=True`` evaluates the formula itself (the reference, ~6x slower).
``magnitude_out`` returns the magnitude computed on the way, for callers that publish both.
:func:`flow_magnitude` squares in float64 (exact for float32 inputs) in cache-sized blocks, which gives
the same values as ``np.hypot`` in about two thirds of its time.
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

#: Lookup-table resolution: entries per colour-wheel entry (angle) and per unit of normalised radius.
_ANGLE_STEPS = 64
_RADIUS_STEPS = 256
#: Pixels per block in flow_magnitude's loop (keeps the float64 temporaries in the CPU cache).
_BLOCK_PIXELS = 65536


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
        inf where one is infinite). For float32 flow the values equal ``np.hypot`` (the squares and their
        sum are formed in float64, where they are exact or correctly rounded, so nothing overflows).

    Raises:
        FlowFormatError: ``flow`` or ``out`` has the wrong shape or dtype.
    """
    arr = check_flow_array(flow, "flow")
    height, width = arr.shape[:2]
    result = _check_out(out, (height, width), np.float32)
    count = height * width
    if count == 0:
        return result
    pairs = arr.reshape(count, 2)  # a view for any (H, W, 2) layout numpy can flatten without copying
    direct = result.flags.c_contiguous
    flat = result.reshape(count) if direct else np.empty(count, np.float32)
    block = min(count, _BLOCK_PIXELS)
    squares = np.empty((block, 2), np.float64)
    total = np.empty(block, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, count, block):
            stop = min(count, start + block)
            sq, tot = squares[: stop - start], total[: stop - start]
            np.copyto(sq, pairs[start:stop], casting="unsafe")
            np.multiply(sq, sq, out=sq)
            np.add(sq[:, 0], sq[:, 1], out=tot)
            np.sqrt(tot, out=tot)
            np.copyto(flat[start:stop], tot, casting="unsafe")
    if not direct:
        np.copyto(result, flat.reshape(height, width))
    return result


def _saturate(col: NDArray[np.float32], rad: NDArray[np.float32]) -> NDArray[np.float32]:
    """``255 - r * (255 - c)`` on wheel colours ``col`` (..., 3), in place (float32)."""
    np.subtract(255.0, col, out=col)
    col *= rad[..., None]
    np.subtract(255.0, col, out=col)
    return col


def _wheel_colour(position: NDArray[np.float32]) -> NDArray[np.float32]:
    """Linearly interpolated wheel colour (float32, 0..255) at wheel positions in ``[0, ncols - 1]``."""
    wheel = _wheel_float()
    ncols = wheel.shape[0]
    k0f = np.floor(position)
    np.minimum(k0f, ncols - 1, out=k0f)
    frac = position - k0f
    k0 = k0f.astype(np.intp)
    k1 = k0 + 1
    k1[k1 == ncols] = 0
    f3 = frac[..., None]
    col = wheel[k0]
    col *= 1.0 - f3
    col1 = wheel[k1]
    col1 *= f3
    col += col1
    return col


@functools.lru_cache(maxsize=1)
def _color_lut() -> NDArray[np.uint8]:
    """The colour of every (radius, wheel position) grid point, from the exact formula.

    Shape ``(_RADIUS_STEPS + 2, 54 * _ANGLE_STEPS + 1, 3)``, uint8, read-only, laid out as an image so
    that a nearest-neighbour ``remap`` reads it: pixel ``(ir, ia)`` holds the colour at wheel position
    ``ia / _ANGLE_STEPS`` and normalised radius ``ir / _RADIUS_STEPS`` for ``ir <= _RADIUS_STEPS``; row
    ``_RADIUS_STEPS + 1`` holds the dimmed colours used beyond ``max_flow``.
    """
    ncols = make_colorwheel().shape[0]
    n_angle = (ncols - 1) * _ANGLE_STEPS + 1
    position = np.arange(n_angle, dtype=np.float32) / np.float32(_ANGLE_STEPS)  # exact (power of two)
    col = _wheel_colour(position)  # (n_angle, 3)
    radius = np.arange(_RADIUS_STEPS + 1, dtype=np.float32) / np.float32(_RADIUS_STEPS)
    table = np.empty((_RADIUS_STEPS + 2, n_angle, 3), np.float32)
    inside = table[: _RADIUS_STEPS + 1]
    inside[...] = col[None, :, :]
    np.subtract(255.0, inside, out=inside)
    inside *= radius[:, None, None]
    np.subtract(255.0, inside, out=inside)
    table[_RADIUS_STEPS + 1] = col * np.float32(0.75)
    lut = table.astype(np.uint8)  # values in [0, 255]: truncation, as in the formula
    lut.setflags(write=False)
    return lut


def _check_max_flow(max_flow: float | None) -> None:
    if max_flow is not None and not math.isfinite(max_flow):
        raise ValueError(f"max_flow must be finite, None or <= 0 (automatic), got {max_flow}")


def flow_to_color(
    flow: ArrayLike,
    max_flow: float | None = None,
    out: NDArray[np.uint8] | None = None,
    *,
    magnitude_out: NDArray[np.float32] | None = None,
    exact: bool = False,
) -> NDArray[np.uint8]:
    """Colour-code optical flow with the Middlebury colour wheel.

    The conventions follow the Middlebury ``flowToColor`` code: the angle ``a = atan2(-v, -u) / pi`` in
    ``[-1, 1]`` maps linearly onto wheel position ``(a + 1) / 2 * 54``, interpolating linearly between
    neighbouring entries (so rightward flow, with ``v = +0.0``, is red = entry 0, leftward flow is entry 27,
    downward flow lies between entries 13 and 14). With ``r = |flow| / max_flow`` each channel ``c`` of that
    colour (0..255) becomes ``255 - r * (255 - c)`` for ``r <= 1`` (white at zero motion, the pure wheel
    colour at ``r = 1``) and ``0.75 * c`` for ``r > 1``; the result is truncated to uint8.

    By default the colour is read from a lookup table over quantised (wheel position, radius): within
    2 levels of the formula, equal to it at the grid points (see the module docstring); ``exact=True``
    evaluates the formula per pixel instead.

    Args:
        flow: shape ``(H, W, 2)``, real dtype, u rightward and v downward in pixels. Pixels whose flow (or
            magnitude) is not finite in float32 are drawn black ``(0, 0, 0)``.
        max_flow: the magnitude that maps to full saturation. Pass a fixed value for a fixed
            normalisation, so that colours mean the same across frames (needed for video / a ROS topic).
            ``None`` or ``<= 0`` normalises automatically by this flow's largest finite magnitude
            (1 if that is 0), so the fastest pixel of each frame is always fully saturated.
        out: optional preallocated ``(H, W, 3)`` uint8 array to write the image into, e.g. a buffer reused
            for every frame in a node (saves the output allocation; a few single-channel temporaries are
            still allocated per call).
        magnitude_out: optional ``(H, W)`` float32 array that receives the flow magnitude computed on the
            way, ``sqrt(u*u + v*v)`` in float32 (within an ulp or two of :func:`flow_magnitude`; NaN/inf
            where the flow is), so that a caller needing both pays for it once.
        exact: evaluate the formula per pixel (slow reference) instead of the lookup table.

    Returns:
        Shape ``(H, W, 3)``, uint8, RGB (``out`` itself when given).

    Raises:
        FlowFormatError: ``flow``, ``out`` or ``magnitude_out`` has the wrong shape or dtype.
        ValueError: ``max_flow`` is NaN or infinite.
    """
    arr = check_flow_array(flow, "flow")
    height, width = arr.shape[:2]
    result = _check_out(out, (height, width, 3), np.uint8)
    _check_max_flow(max_flow)
    if magnitude_out is not None:
        _check_out(magnitude_out, (height, width), np.float32)
    if height == 0 or width == 0:
        return result
    if exact:
        if magnitude_out is not None:
            flow_magnitude(arr, out=magnitude_out)
        return _flow_to_color_exact(arr, max_flow, result)
    return _flow_to_color_lut(arr, max_flow, result, magnitude_out)


def _flow_to_color_lut(
    arr: NDArray[Any],
    max_flow: float | None,
    result: NDArray[np.uint8],
    magnitude_out: NDArray[np.float32] | None,
) -> NDArray[np.uint8]:
    import cv2  # lazily, like the PNG readers: importing flowio stays numpy-only

    height, width = arr.shape[:2]
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    # -u and -v as contiguous float32 (atan2 on contiguous input is about twice as fast).
    nu = np.negative(arr[..., 0])
    nv = np.negative(arr[..., 1])
    rad = magnitude_out if magnitude_out is not None and magnitude_out.flags.c_contiguous else None
    with np.errstate(over="ignore", invalid="ignore"):
        rad = np.multiply(nu, nu, out=rad)
        rad += np.square(nv)
        np.sqrt(rad, out=rad)
    if magnitude_out is not None and rad is not magnitude_out:
        np.copyto(magnitude_out, rad)
    peak = float(rad.max())
    bad: NDArray[np.bool_] | None = None
    if not math.isfinite(peak):
        # Rare path: non-finite flow (black), or finite flow whose float32 square overflowed.
        rad = np.hypot(nu, nv)
        if magnitude_out is not None:
            np.copyto(magnitude_out, rad)
        bad = ~np.isfinite(rad)
        for array in (nu, nv, rad):
            array[bad] = 0.0
        peak = float(rad.max())
    norm = float(max_flow) if max_flow is not None and max_flow > 0 else (peak if peak > 0 else 1.0)

    # Table coordinates: x = wheel position * steps = atan2(-v, -u) * (27 steps / pi) + 27 steps,
    # y = radius / norm * steps, plus one row for radii beyond norm (the dimmed colours); the
    # nearest-neighbour remap rounds both and clamps to the table's edges.
    half = (make_colorwheel().shape[0] - 1) / 2.0 * _ANGLE_STEPS
    x = np.arctan2(nv, nu, out=nu)  # nu is not needed any more
    x *= np.float32(half / math.pi)
    x += np.float32(half)
    y = np.multiply(rad, np.float32(_RADIUS_STEPS / norm), out=nv)
    beyond = y > _RADIUS_STEPS
    y += beyond  # (steps, steps + 0.5) would round back into the table: push it past the edge
    direct = result.flags.c_contiguous
    target = result if direct else np.empty((height, width, 3), np.uint8)
    mapped = cv2.remap(_color_lut(), x, y, cv2.INTER_NEAREST, dst=target, borderMode=cv2.BORDER_REPLICATE)
    if mapped is not target:  # OpenCV could not write in place
        np.copyto(target, mapped)
    if bad is not None:
        target[bad] = 0
    if not direct:
        np.copyto(result, target)
    return result


def _flow_to_color_exact(
    arr: NDArray[Any], max_flow: float | None, result: NDArray[np.uint8]
) -> NDArray[np.uint8]:
    """The colour formula evaluated per pixel (the reference for the lookup table)."""
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

    ncols = _wheel_float().shape[0]
    np.negative(u, out=u)
    np.negative(v, out=v)
    fk = np.arctan2(v, u)  # atan2(-v, -u) in [-pi, pi]
    fk /= np.float32(math.pi)
    fk += 1.0
    fk *= (ncols - 1) / 2.0  # position on the wheel, [0, ncols - 1]
    col = _wheel_colour(fk)  # interpolated wheel colour, 0..255

    outside = rad > 1.0
    any_outside = bool(outside.any())
    if any_outside:
        dimmed = col[outside] * np.float32(0.75)
    _saturate(col, rad)
    if any_outside:
        col[outside] = dimmed
    if any_bad:
        col[bad] = 0.0
    np.copyto(result, col, casting="unsafe")  # values are in [0, 255]: truncation == floor
    return result
