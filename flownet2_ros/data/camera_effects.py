"""What a real camera does to a rendered pair: motion blur, sensor noise, exposure and tone-curve changes.

Applied to the *images* of a synthetic pair only; the ground-truth flow is not touched and stays exact under
the **exposure-midpoint convention**: frame 1 is exposed over ``[-e/2, +e/2]`` and frame 2 over
``[1 - e/2, 1 + e/2]`` (in frame intervals, ``e`` the exposure fraction), and the flow of a frame-1 pixel is
the displacement of its surface point from the middle of the first exposure (t = 0) to the middle of the
second (t = 1), i.e. exactly the flow the renderer computed for the sharp frames.

The pipeline, per pair (every random number from the sample's generator, so sample ``i`` still depends only
on ``(seed, i)``):

1. **Motion blur** (:func:`motion_blur`): with the local velocity ``v(p)`` (px per frame interval) of the
   surface seen at pixel ``p`` held constant during the exposure, the blurred frame is the mean of the sharp
   frame over the exposure, ``B(p) = mean_{s in [-e/2, e/2]} I(p + s v(p))``, a box blur of length
   ``e |v(p)|`` along the motion, centred on ``p`` (the midpoint convention above). It is evaluated with a
   few bilinear taps (OpenCV ``remap``, all taps in one call), spaced under 1 px apart along the fastest
   pixel's path as long as ``max_taps`` suffice (further apart for longer blurs). Frame 1 uses the forward flow, frame 2 the velocity of the layer visible in frame 2. At
   object boundaries the blur samples the sharp frame along the visible layer's motion (no layer mixing
   beyond that), an approximation.
2. **Exposure** (gain): both frames are scaled by a common gain ``exp(U(-gain, gain))``, frame 2 further by
   ``exp(U(-gain_change, gain_change))`` (auto-exposure / flicker between frames).
3. **Sensor noise**: Gaussian, variance ``read² + shot · I`` (levels of 0..255; ``I`` the exposed signal, so
   shot noise grows with brightness as photon noise does), ``read`` and ``shot`` drawn per pair, fresh noise
   per frame (:func:`gaussian_noise`: 16-bit uniform integers mapped through a table of normal quantiles,
   four times cheaper than ``standard_normal``). Then clipped to 0..255.
4. **Tone curve** (gamma): ``255 · (I / 255) ** γ`` with ``γ = exp(U(-gamma, gamma))`` common to the pair
   and frame 2's ``γ`` further multiplied by ``exp(U(-gamma_change, gamma_change))``.

Images stay float32 in 0..255 (no quantisation).
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CameraEffects",
    "CameraSample",
    "apply_camera_effects",
    "gaussian_noise",
    "layer_velocity",
    "motion_blur",
]

_MAX_REMAP_ROWS = 32000  # cv2.remap wants map sides < 32767: taps are stacked as rows of one map
_NOISE_LEVELS = 1 << 16


@functools.lru_cache(maxsize=1)
def _normal_table() -> NDArray[np.float32]:
    """Standard-normal quantiles at ``(k + 0.5) / 2^16``, rescaled to unit variance: a uniform 16-bit integer
    indexes a Gaussian draw (tails cut at ±4.3 σ), ~4x cheaper than ``standard_normal`` for an image."""
    half = _NOISE_LEVELS // 2
    dist = statistics.NormalDist()
    upper = np.array([dist.inv_cdf((half + k + 0.5) / _NOISE_LEVELS) for k in range(half)], dtype=np.float64)
    table = np.concatenate([-upper[::-1], upper])
    table /= math.sqrt(float(np.mean(table**2)))
    table = table.astype(np.float32)
    table.setflags(write=False)
    return table


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """Standard-normal float32 noise of ``shape`` from ``rng`` (through :func:`_normal_table`)."""
    index = rng.integers(0, _NOISE_LEVELS, size=shape, dtype=np.uint16)
    return np.take(_normal_table(), index)


@dataclass(frozen=True)
class CameraEffects:
    """Ranges of the per-pair camera draws (see the module docstring for the model).

    Attributes:
        exposure: ``(lo, hi)``: the exposure time as a fraction of the frame interval, uniform (0: no blur;
            1: the shutter is open the whole interval, blur as long as the motion).
        read_noise: ``(lo, hi)``: std of the signal-independent noise, levels of 0..255, uniform.
        shot_noise: ``(lo, hi)``: signal-dependent noise variance per level of signal, uniform (0.25: std 8
            at white, 5.7 at mid-grey).
        gain: half-width of the pair's common log-gain (uniform), e.g. 0.25: x0.78 .. x1.28.
        gain_change: half-width of frame 2's extra log-gain.
        gamma: half-width of the pair's common log-gamma.
        gamma_change: half-width of frame 2's extra log-gamma.
        max_taps: most bilinear taps of a blur (taps are spaced under 1 px apart up to this many; longer
            blurs space them further; 1 turns the blur off).
    """

    exposure: tuple[float, float] = (0.0, 0.5)
    read_noise: tuple[float, float] = (0.0, 2.0)
    shot_noise: tuple[float, float] = (0.0, 0.25)
    gain: float = 0.25
    gain_change: float = 0.1
    gamma: float = 0.2
    gamma_change: float = 0.05
    max_taps: int = 16

    def __post_init__(self) -> None:
        for name in ("exposure", "read_noise", "shot_noise"):
            value = getattr(self, name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(f"camera_effects.{name} must be a pair (lo, hi), got {value!r}") from None
            if not 0.0 <= lo <= hi or not math.isfinite(hi):
                raise ValueError(f"camera_effects.{name} must be (lo, hi) with 0 <= lo <= hi, got {value!r}")
            if name == "exposure" and hi > 1.0:
                raise ValueError(
                    f"camera_effects.exposure is a fraction of the frame interval (<= 1), got {value!r}"
                )
            object.__setattr__(self, name, (lo, hi))
        for name in ("gain", "gain_change", "gamma", "gamma_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"camera_effects.{name} must be a number in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.max_taps, bool) or not isinstance(self.max_taps, int) or self.max_taps < 1:
            raise ValueError(f"camera_effects.max_taps must be an integer >= 1, got {self.max_taps!r}")

    @classmethod
    def from_option(cls, option: Any) -> CameraEffects | None:
        """The dataset's ``camera_effects`` option: False/None (off), True (these defaults), a mapping of
        fields (the others default) or a ``CameraEffects``. Raises ValueError naming what is wrong."""
        if option is None or option is False:
            return None
        if option is True:
            return cls()
        if isinstance(option, CameraEffects):
            return option
        if isinstance(option, dict):
            names = {f.name for f in fields(cls)}
            unknown = sorted(set(option) - names)
            if unknown:
                raise ValueError(
                    f"camera_effects: unknown option(s) {', '.join(map(str, unknown))} "
                    f"(accepted: {', '.join(sorted(names))})"
                )
            return cls(**option)
        raise ValueError(f"camera_effects must be true, false or a mapping of options, got {option!r}")

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


@dataclass(frozen=True)
class CameraSample:
    """The values drawn for one pair (for inspection and tests)."""

    exposure: float
    read_noise: float
    shot_noise: float
    gains: tuple[float, float]
    gammas: tuple[float, float]


def layer_velocity(labels: NDArray[np.integer], motions: NDArray[np.float64]) -> NDArray[np.float32]:
    """Velocity ``(H, W, 2)`` (px per frame interval) of the surface seen in **frame 2**: for a pixel ``q``
    on layer ``k`` (affine motion ``M_k``, frame 1 -> frame 2), ``q - M_k^{-1}(q)``."""
    height, width = labels.shape
    square = np.zeros((len(motions), 3, 3))
    square[:, :2] = motions
    square[:, 2, 2] = 1.0
    back = (np.eye(3) - np.linalg.inv(square))[:, :2].astype(np.float32)  # q - M^-1 q = (I - M^-1) q
    coefficients = back[labels]  # (H, W, 2, 3): each pixel's layer
    xs = np.arange(width, dtype=np.float32)[None, :, None]
    ys = np.arange(height, dtype=np.float32)[:, None, None]
    velocity = coefficients[..., 0] * xs + coefficients[..., 1] * ys + coefficients[..., 2]
    return np.ascontiguousarray(velocity, dtype=np.float32)


def motion_blur(
    image: NDArray[np.float32], velocity: NDArray[np.float32], exposure: float, max_taps: int = 16
) -> NDArray[np.float32]:
    """Box blur of each pixel along its own velocity: ``mean_{s in [-e/2, e/2]} image(p + s·v(p))``.

    ``image`` ``(H, W, C)`` float32, ``velocity`` ``(H, W, 2)`` (u, v) px per frame interval, ``exposure``
    ``e`` the fraction of the interval. The mean is a midpoint rule over ``n`` bilinear taps, ``n`` the
    longest blur in pixels rounded up (taps ~1 px apart), at least 2 and at most ``max_taps``; samples
    outside the image reflect at the border. Returns a new array (a copy when there is nothing to blur).
    """
    u = np.ascontiguousarray(velocity[..., 0], dtype=np.float32)
    v = np.ascontiguousarray(velocity[..., 1], dtype=np.float32)
    speed = math.sqrt(float(np.max(u * u + v * v))) if u.size else 0.0
    length = exposure * speed
    taps = int(min(max_taps, max(2, math.ceil(length) + 1)))
    if length < 0.25 or taps < 2:  # under a quarter pixel (invisible), or max_taps 1 (blur off)
        return image.astype(np.float32, copy=True)
    height, width = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    offsets = (exposure * ((np.arange(taps, dtype=np.float32) + 0.5) / taps - 0.5)).astype(np.float32)
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    source = np.ascontiguousarray(image, dtype=np.float32).reshape(height, width, channels)
    if channels == 3:  # OpenCV's 4-channel float remap is about twice as fast as its 3-channel one
        source = np.concatenate([source, np.zeros((height, width, 1), np.float32)], axis=2)
    depth = source.shape[2]
    total = np.zeros(height * width * depth, dtype=np.float32)
    per_call = max(1, _MAX_REMAP_ROWS // height)
    for start in range(0, taps, per_call):
        chunk = offsets[start : start + per_call, None, None]
        n = len(chunk)
        mapx = np.multiply(chunk, u)
        mapx += xs
        mapy = np.multiply(chunk, v)
        mapy += ys
        sampled = cv2.remap(  # all taps of the chunk in one call: maps of (taps·H, W)
            source,
            mapx.reshape(n * height, width),
            mapy.reshape(n * height, width),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        )
        total += cv2.reduce(sampled.reshape(n, -1), 0, cv2.REDUCE_SUM).reshape(-1)
    total *= np.float32(1.0 / taps)
    out = total.reshape(height, width, depth)[..., :channels]
    return np.ascontiguousarray(out).reshape(image.shape)


def _expose(
    rng: np.random.Generator,
    image: NDArray[np.float32],
    gain: float,
    gamma: float,
    read: float,
    shot: float,
) -> NDArray[np.float32]:
    """Gain, Gaussian read + shot noise, clip, tone curve, clip (float32 0..255, in place on a copy)."""
    signal = image * np.float32(gain)
    np.clip(signal, 0.0, 255.0, out=signal)
    if read > 0.0 or shot > 0.0:
        std = np.sqrt(np.float32(read * read) + np.float32(shot) * signal)
        noise = gaussian_noise(rng, signal.shape)
        signal += std * noise
        np.clip(signal, 0.0, 255.0, out=signal)
    if gamma != 1.0:
        signal *= np.float32(1.0 / 255.0)
        np.power(signal, np.float32(gamma), out=signal)
        signal *= np.float32(255.0)
        np.clip(signal, 0.0, 255.0, out=signal)
    return signal


def apply_camera_effects(
    rng: np.random.Generator,
    image1: NDArray[np.float32],
    image2: NDArray[np.float32],
    velocity1: NDArray[np.float32],
    velocity2: NDArray[np.float32],
    effects: CameraEffects,
) -> tuple[NDArray[np.float32], NDArray[np.float32], CameraSample]:
    """Blur, expose, add noise and tone-map a sharp pair (see the module docstring).

    ``velocity1``: the forward flow of frame 1; ``velocity2``: the velocity of the surface seen in frame 2
    (:func:`layer_velocity`). Returns the two new images (float32 0..255) and what was drawn.
    """
    exposure = float(rng.uniform(*effects.exposure))
    read = float(rng.uniform(*effects.read_noise))
    shot = float(rng.uniform(*effects.shot_noise))
    log_gain = float(rng.uniform(-effects.gain, effects.gain))
    log_gain2 = log_gain + float(rng.uniform(-effects.gain_change, effects.gain_change))
    log_gamma = float(rng.uniform(-effects.gamma, effects.gamma))
    log_gamma2 = log_gamma + float(rng.uniform(-effects.gamma_change, effects.gamma_change))
    drawn = CameraSample(
        exposure=exposure,
        read_noise=read,
        shot_noise=shot,
        gains=(math.exp(log_gain), math.exp(log_gain2)),
        gammas=(math.exp(log_gamma), math.exp(log_gamma2)),
    )
    blurred1 = motion_blur(image1, velocity1, exposure, effects.max_taps)
    blurred2 = motion_blur(image2, velocity2, exposure, effects.max_taps)
    out1 = _expose(rng, blurred1, drawn.gains[0], drawn.gammas[0], read, shot)
    out2 = _expose(rng, blurred2, drawn.gains[1], drawn.gammas[1], read, shot)
    return out1, out2, drawn
