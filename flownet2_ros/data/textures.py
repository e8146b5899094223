"""Procedural colour textures for the synthetic generator (numpy + OpenCV, no per-pixel Python).

Every function takes a :class:`numpy.random.Generator` and returns an ``(h, w, 3)`` float32 RGB array in
0..255. :func:`random_texture` draws one of the patterns at half resolution and upsamples it, so textures
are band-limited (the finest detail has a period of a few pixels) and bilinear resampling, which the
renderer and the warping checks both use, stays accurate; and they are never flat: it always adds a fine
noise layer so that every region carries some structure to match.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "TEXTURE_KINDS",
    "blobs",
    "checkers",
    "clip255",
    "colorize",
    "gradient",
    "noise_field",
    "random_palette",
    "random_texture",
    "stripes",
    "value_noise",
]

FloatImage = NDArray[np.float32]


def _coords(h: int, w: int) -> tuple[FloatImage, FloatImage]:
    """Pixel coordinates (x as a (1, w) row, y as an (h, 1) column), float32, for broadcasting."""
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    return xs, ys


def noise_field(rng: np.random.Generator, h: int, w: int, cell: float) -> FloatImage:
    """One octave of smooth value noise: random values on a grid of ``cell``-pixel spacing, cubic-upsampled.

    Returns an ``(h, w)`` float32 field with values roughly in 0..1.
    """
    cell = max(float(cell), 2.0)
    gh = max(2, math.ceil(h / cell) + 1)
    gw = max(2, math.ceil(w / cell) + 1)
    grid = rng.random((gh, gw), dtype=np.float32)
    # Upsample the grid to (gw - 1) * cell x (gh - 1) * cell and crop a random offset: keeps the spacing.
    big_w = max(w, round((gw - 1) * cell))
    big_h = max(h, round((gh - 1) * cell))
    field = cv2.resize(grid, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, big_h - h + 1))
    ox = int(rng.integers(0, big_w - w + 1))
    return np.ascontiguousarray(field[oy : oy + h, ox : ox + w])


def value_noise(
    rng: np.random.Generator,
    h: int,
    w: int,
    scale: float,
    octaves: int = 4,
    persistence: float = 0.5,
    min_cell: float = 3.0,
) -> FloatImage:
    """Multi-octave value noise (fractal sum), normalised to 0..1.

    Args:
        scale: cell size of the coarsest octave in pixels; each further octave halves it, down to
            ``min_cell``.
        octaves: number of octaves.
        persistence: amplitude factor from one octave to the next.
    """
    total = np.zeros((h, w), dtype=np.float32)
    amplitude = 1.0
    cell = float(scale)
    for _ in range(max(1, octaves)):
        total += np.float32(amplitude) * noise_field(rng, h, w, max(cell, min_cell))
        amplitude *= persistence
        cell /= 2.0
        if cell < min_cell:
            break
    lo, hi = float(total.min()), float(total.max())
    total -= np.float32(lo)
    total *= np.float32(1.0 / max(hi - lo, 1e-6))
    return total


def random_palette(rng: np.random.Generator, count: int) -> NDArray[np.float32]:
    """``count`` random RGB colours (``(count, 3)`` float32, 0..255), kept apart in brightness."""
    colours = rng.uniform(0.0, 255.0, size=(count, 3)).astype(np.float32)
    # Spread the colours' brightness so the texture keeps contrast after colourisation.
    ramp = np.linspace(-60.0, 60.0, count, dtype=np.float32)[rng.permutation(count)]
    return np.clip(colours + ramp[:, None], 0.0, 255.0).astype(np.float32)


def colorize(field: FloatImage, palette: NDArray[np.float32]) -> FloatImage:
    """Map a 0..1 scalar field through a palette (piecewise-linear), giving ``(h, w, 3)`` float32.

    The field is quantised to 256 levels and looked up in a table (OpenCV's LUT: fast).
    """
    count = palette.shape[0]
    stops = np.linspace(0.0, 1.0, count)
    levels = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(levels, stops, palette[:, c]) for c in range(3)], axis=1)
    index = cv2.convertScaleAbs(np.ascontiguousarray(field, dtype=np.float32), alpha=255.0)
    out = cv2.LUT(cv2.merge([index, index, index]), lut.astype(np.float32).reshape(256, 1, 3))
    return np.asarray(out, dtype=np.float32)


def _soft(values: FloatImage, gain: float) -> FloatImage:
    """Squash ``values`` (around 0) to 0..1 with a tanh of the given gain (soft edges, no aliasing)."""
    return (0.5 + 0.5 * np.tanh(np.float32(gain) * values)).astype(np.float32)


def stripes(rng: np.random.Generator, h: int, w: int) -> FloatImage:
    """Soft stripes at a random angle and period, bent by low-frequency noise."""
    xs, ys = _coords(h, w)
    angle = rng.uniform(0.0, math.pi)
    period = rng.uniform(8.0, 32.0)
    bend = rng.uniform(0.0, 3.0)
    phase = (xs * math.cos(angle) + ys * math.sin(angle)) * np.float32(2.0 * math.pi / period)
    phase = phase + np.float32(bend * 2.0 * math.pi) * noise_field(rng, h, w, rng.uniform(20.0, 60.0))
    field = _soft(np.sin(phase).astype(np.float32), rng.uniform(0.8, 2.0))
    return colorize(field, random_palette(rng, 2))


def checkers(rng: np.random.Generator, h: int, w: int) -> FloatImage:
    """A rotated soft-edged checkerboard."""
    xs, ys = _coords(h, w)
    angle = rng.uniform(0.0, math.pi / 2)
    period = rng.uniform(10.0, 32.0)
    k = np.float32(math.pi / period)
    u = (xs * math.cos(angle) + ys * math.sin(angle)) * k
    v = (ys * math.cos(angle) - xs * math.sin(angle)) * k
    field = _soft((np.sin(u) * np.sin(v)).astype(np.float32), rng.uniform(1.5, 3.0))
    return colorize(field, random_palette(rng, 2))


def gradient(rng: np.random.Generator, h: int, w: int) -> FloatImage:
    """A linear or radial multi-colour gradient."""
    xs, ys = _coords(h, w)
    if rng.random() < 0.5:
        angle = rng.uniform(0.0, 2.0 * math.pi)
        field = (xs * math.cos(angle) + ys * math.sin(angle)).astype(np.float32)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        field = np.sqrt((xs - np.float32(cx)) ** 2 + (ys - np.float32(cy)) ** 2).astype(np.float32)
    field = field - field.min()
    field = field * np.float32(1.0 / max(float(field.max()), 1e-6))
    return colorize(field, random_palette(rng, int(rng.integers(2, 5))))


def blobs(rng: np.random.Generator, h: int, w: int) -> FloatImage:
    """Randomly coloured ellipses on a noise background, slightly blurred."""
    base = colorize(value_noise(rng, h, w, rng.uniform(15.0, 60.0), octaves=3), random_palette(rng, 3))
    canvas = np.ascontiguousarray(base)
    area = h * w
    count = int(rng.integers(4, 12)) + min(40, area // 1500)
    for _ in range(count):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(2, max(3, w // 5))), int(rng.integers(2, max(3, h // 5))))
        colour = tuple(float(c) for c in rng.uniform(0.0, 255.0, size=3))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0.0, 360.0, colour, -1, cv2.LINE_AA)
    return np.asarray(cv2.GaussianBlur(canvas, (0, 0), 0.6), dtype=np.float32)


def _noise_texture(rng: np.random.Generator, h: int, w: int) -> FloatImage:
    """Colourised fractal noise."""
    field = value_noise(rng, h, w, rng.uniform(8.0, 64.0), octaves=int(rng.integers(3, 6)), min_cell=2.0)
    return colorize(field, random_palette(rng, int(rng.integers(2, 5))))


#: The base patterns :func:`random_texture` picks from.
TEXTURE_KINDS: dict[str, Callable[[np.random.Generator, int, int], FloatImage]] = {
    "noise": _noise_texture,
    "stripes": stripes,
    "checkers": checkers,
    "gradient": gradient,
    "blobs": blobs,
}


def random_texture(rng: np.random.Generator, h: int, w: int, detail: float = 18.0) -> FloatImage:
    """A random procedural texture: one of :data:`TEXTURE_KINDS`, sometimes two blended through a noise
    mask, plus a fine noise layer of amplitude ``detail`` grey levels so that no region is flat.

    The texture is drawn at half resolution and upsampled ×2 bilinearly: four times cheaper, and
    band-limited (finest structure ≈ 4-8 px), so bilinear resampling in the renderer and in warping
    checks loses little of it.

    Returns:
        ``(h, w, 3)`` float32 RGB in 0..255.
    """
    hs, ws = h // 2 + 2, w // 2 + 2
    kinds = list(TEXTURE_KINDS)
    tex = TEXTURE_KINDS[kinds[int(rng.integers(len(kinds)))]](rng, hs, ws)
    if rng.random() < 0.3:
        other = TEXTURE_KINDS[kinds[int(rng.integers(len(kinds)))]](rng, hs, ws)
        mask = _soft(value_noise(rng, hs, ws, rng.uniform(16.0, 64.0), octaves=2) - np.float32(0.5), 6.0)
        blend = cv2.multiply(cv2.merge([mask, mask, mask]), cv2.subtract(other, tex))
        tex = np.asarray(cv2.add(tex, blend), dtype=np.float32)
    if detail > 0:
        fine = noise_field(rng, hs, ws, rng.uniform(2.0, 4.0)) - np.float32(0.5)
        tint = rng.uniform(0.6, 1.0, size=3) * (2.0 * detail)
        tex = np.asarray(cv2.add(tex, cv2.merge([fine * np.float32(t) for t in tint])), dtype=np.float32)
    tex = clip255(tex)
    # Pixel centres: output x samples the half-resolution grid at (x + 0.5) / 2 - 0.5 (OpenCV's convention).
    big = cv2.resize(tex, (2 * ws, 2 * hs), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(big[1 : h + 1, 1 : w + 1], dtype=np.float32)


def clip255(image: FloatImage) -> FloatImage:
    """Clip a float32 image of any channel count to 0..255 (OpenCV thresholds: every channel, fast)."""
    _, upper = cv2.threshold(image, 255.0, 255.0, cv2.THRESH_TRUNC)
    _, both = cv2.threshold(upper, 0.0, 0.0, cv2.THRESH_TOZERO)
    return np.asarray(both, dtype=np.float32)
