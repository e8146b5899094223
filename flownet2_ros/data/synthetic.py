"""Procedural optical-flow pairs in the spirit of FlyingChairs, with exact ground truth.

A scene is a background layer plus several textured objects (ellipses, star-shaped polygons, unions of
boxes and ellipses, some with holes), stacked in painter's order. Each layer moves by its own 2-D affine
motion (translation, rotation, scale, shear); as in FlyingChairs, an object's motion is its own motion
composed with the background's ("camera and objects both move"). Both frames are rendered by inverse
warping each layer's texture (OpenCV ``remap``, bilinear), so:

* the forward flow of a frame-1 pixel is exactly the affine motion of the layer visible there,
  ``flow(p) = M_k(p) - p``;
* a frame-1 pixel is *occluded* when its surface point, moved to ``M_k(p)``, is hidden in frame 2 by a
  layer above it, or leaves the image (``x' ∉ [0, W-1]`` or ``y' ∉ [0, H-1]``).

Every pixel has ground truth (``valid`` is all True). The largest flow magnitude of a sample is at most
``max_displacement`` (motions are shrunk towards the identity when a draw exceeds it). Sample ``i`` depends
only on ``(seed, i)``.

Motion sizes (``motion_distribution``):

* ``"uniform"`` (the default, the generator's original law): the background's translation is
  ``U(0, 0.6·max_displacement)`` px, an object's own translation ``U(0, 0.75·max_displacement)``, rotation,
  scale and shear fractions of the same budgets; flows spread over the whole range (measured over 200
  samples, pixels pooled: median flow magnitude 17.2 px for max 48 at 192×256, ≈ 0.35·max).
* ``"small"`` (FlyingChairs-like: small motions much more frequent, a long tail up to the maximum): each
  layer's displacement budget ``b`` is **log-uniform** on ``[top/100, top]``, ``b = top · 100^-U`` with
  ``U ~ U(0, 1)`` (median ``top/10``; ``P(b > x) = log(top/x) / log(100)``), ``top = 0.75·max_displacement``
  for the background and ``max_displacement`` for an object's own motion; the layer translates by exactly
  ``b`` in a uniform direction and rotates/scales/shears by fractions of ``b`` as above, then the result is
  limited to ``max_displacement``. Measured over 200 samples (pixels pooled), max 48 at 192×256: median
  5.1 px (≈ 0.11·max), 10/25/75/90/99th percentiles 0.6/1.4/13.2/23.6/38.7 px, mean 8.8 px, and 41 % of the
  samples have flow beyond 0.75·max; max 96 at 96×128: median 10.4 px, 90th percentile 48.7, 99th 77.4.

Camera effects (``camera_effects``, off by default): motion blur along each pixel's motion, sensor noise,
exposure and gamma changes between the frames, drawn from the sample's generator after the scene (so the
scene, flow and occlusion of sample ``i`` are the same with and without them); see
:mod:`flownet2_ros.data.camera_effects`. The flow stays exact under the exposure-midpoint convention.

Coordinates: x rightwards, y downwards, in pixels, pixel centres at integers (the convention of
:func:`flownet2_ros.ops.warp`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from ..flowio.frames import IMAGE_SUFFIXES, read_rgb
from .camera_effects import CameraEffects, CameraSample, apply_camera_effects, layer_velocity
from .errors import DatasetError
from .textures import random_texture

__all__ = ["MOTION_DISTRIBUTIONS", "SyntheticFlowDataset", "SyntheticScene", "render_scene"]

Matrix = NDArray[np.float64]
_MASK_MARGIN = 3  # texels between an object's shape and the edge of its texture
_REMAP_COLS = 1024  # point lists are sampled as (rows, 1024) maps: remap wants sides < 32767


@dataclass(frozen=True)
class SyntheticScene:
    """One rendered pair with everything the generator knows about it (numpy, ``(H, W, ...)`` layout).

    Attributes:
        image1, image2: ``(H, W, 3)`` float32 RGB, 0..255.
        flow: ``(H, W, 2)`` float32 forward flow (u, v) of every frame-1 pixel.
        occlusion: ``(H, W)`` bool, True where the frame-1 pixel is not visible in frame 2.
        labels1, labels2: ``(H, W)`` int16, the layer visible at each pixel of frame 1 / frame 2
            (0 is the background, k = 1..n the objects in painter's order, higher on top).
        motions: ``(n + 1, 2, 3)`` float64, each layer's affine motion from frame-1 to frame-2 image
            coordinates: ``p' = A @ [x, y, 1]``.
        camera: the camera-effect values drawn for this pair (None when the images are the sharp,
            noise-free rendering).
    """

    image1: NDArray[np.float32]
    image2: NDArray[np.float32]
    flow: NDArray[np.float32]
    occlusion: NDArray[np.bool_]
    labels1: NDArray[np.int16]
    labels2: NDArray[np.int16]
    motions: NDArray[np.float64]
    camera: CameraSample | None = None


@dataclass
class _Layer:
    texture: NDArray[np.float32]  # (th, tw, 3) background, (th, tw, 4) RGBA object
    pose1: Matrix  # 3x3: texture coordinates -> frame-1 image coordinates
    motion: Matrix  # 3x3: frame-1 image coordinates -> frame-2 image coordinates


# ----------------------------------------------------------------------------------------------- affine


def _translation(tx: float, ty: float) -> Matrix:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _linear(a: float, b: float, c: float, d: float) -> Matrix:
    return np.array([[a, b, 0.0], [c, d, 0.0], [0.0, 0.0, 1.0]])


def _rotation(theta: float) -> Matrix:
    co, si = math.cos(theta), math.sin(theta)
    return _linear(co, -si, si, co)


def _inverse(matrix: Matrix) -> Matrix:
    return np.asarray(np.linalg.inv(matrix), dtype=np.float64)


def _apply(matrix: Matrix, points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Apply a 3x3 affine to ``(N, 2)`` points."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _rect_corners(w: float, h: float) -> NDArray[np.float64]:
    return np.array([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]])


def _max_flow(motion: Matrix, points: NDArray[np.float64]) -> float:
    """Largest displacement of ``motion`` over the convex hull of ``points`` (an affine flow is largest
    in magnitude at a vertex)."""
    return float(np.linalg.norm(_apply(motion, points) - points, axis=1).max())


def _limit(motion: Matrix, points: NDArray[np.float64], limit: float) -> Matrix:
    """Shrink ``motion`` towards the identity (scaling its displacement field) until the displacement
    over ``points`` is at most ``limit``."""
    biggest = _max_flow(motion, points)
    if biggest <= limit or biggest == 0.0:
        return motion
    factor = limit / biggest * (1.0 - 1e-9)
    eye = np.eye(3)
    return eye + factor * (motion - eye)


def _sample_motion(
    rng: np.random.Generator,
    centre: NDArray[np.float64],
    radius: float,
    budget: float,
    *,
    full_shift: bool = False,
) -> Matrix:
    """A random affine motion about ``centre``; each component moves a point at distance ``radius`` by
    (a random fraction of) ``budget`` pixels: translation, rotation, isotropic scale, shear. With
    ``full_shift`` the translation is ``budget`` itself (the ``"small"`` law draws the budget)."""
    radius = max(radius, 1.0)
    direction = rng.uniform(0.0, 2.0 * math.pi)
    shift = budget if full_shift else budget * rng.random()
    theta = float(np.clip(budget * rng.uniform(-0.4, 0.4) / radius, -0.6, 0.6))
    scale = float(np.clip(1.0 + budget * rng.uniform(-0.3, 0.3) / radius, 0.6, 1.6))
    shear = float(np.clip(budget * rng.uniform(-0.15, 0.15) / radius, -0.3, 0.3))
    linear = _rotation(theta) @ _linear(scale, shear * scale, 0.0, scale)
    cx, cy = float(centre[0]), float(centre[1])
    return (
        _translation(cx + shift * math.cos(direction), cy + shift * math.sin(direction))
        @ linear
        @ _translation(-cx, -cy)
    )


MOTION_DISTRIBUTIONS = ("uniform", "small")
_SMALL_MOTION_RANGE = 100.0  # the "small" law: log-uniform budget on [top / 100, top], median top / 10
_SMALL_BACKGROUND_TOP = 0.75  # top of the background's budget, a fraction of max_displacement
_SMALL_OBJECT_TOP = 1.0  # top of an object's own (relative) budget, a fraction of max_displacement


def _small_motion_budget(rng: np.random.Generator, top: float) -> float:
    """The ``"small"`` law: a layer's displacement budget, log-uniform on ``[top / R, top]``
    (``R = _SMALL_MOTION_RANGE``), i.e. ``top · R^-U`` with ``U ~ U(0, 1)``: median ``top / sqrt(R)``."""
    return float(top * _SMALL_MOTION_RANGE ** (-rng.random()))


# ------------------------------------------------------------------------------------------------ shapes


def _draw_shape(rng: np.random.Generator, mask: NDArray[np.uint8]) -> None:
    """Draw a random filled shape (255 on 0) inside ``mask``, keeping ``_MASK_MARGIN`` texels free."""
    th, tw = mask.shape
    cx, cy = tw / 2.0, th / 2.0
    ax, ay = tw / 2.0 - _MASK_MARGIN, th / 2.0 - _MASK_MARGIN
    shift = 4  # sub-pixel precision of cv2 drawing: coordinates in 1/16 texel
    one = 1 << shift

    def fixed(points: NDArray[np.float64]) -> NDArray[np.int32]:
        return np.round(points * one).astype(np.int32)

    def ellipse(ex: float, ey: float, rx: float, ry: float, angle: float, colour: int) -> None:
        cv2.ellipse(
            mask,
            (round(ex * one), round(ey * one)),
            (max(1, round(rx * one)), max(1, round(ry * one))),
            angle,
            0.0,
            360.0,
            colour,
            -1,
            cv2.LINE_AA,
            shift,
        )

    kind = rng.random()
    if kind < 0.3:
        ellipse(cx, cy, ax, ay, 0.0, 255)
    elif kind < 0.65:
        count = int(rng.integers(3, 11))
        angles = np.sort(rng.uniform(0.0, 2.0 * math.pi, size=count))
        radii = rng.uniform(0.55, 1.0, size=count)
        points = np.stack([cx + ax * radii * np.cos(angles), cy + ay * radii * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [fixed(points)], 255, cv2.LINE_AA, shift)
    else:  # a union of boxes and ellipses: a crude "chair"
        for _ in range(int(rng.integers(2, 5))):
            px, py = cx + ax * rng.uniform(-0.5, 0.5), cy + ay * rng.uniform(-0.5, 0.5)
            rx = ax * rng.uniform(0.15, 0.5)
            ry = ay * rng.uniform(0.15, 0.5)
            angle = rng.uniform(0.0, 180.0)
            if rng.random() < 0.5:
                box = cv2.boxPoints(((px, py), (2 * rx, 2 * ry), angle)).astype(np.float64)
                cv2.fillPoly(mask, [fixed(box)], 255, cv2.LINE_AA, shift)
            else:
                ellipse(px, py, rx, ry, angle, 255)
        mask[:_MASK_MARGIN] = 0
        mask[-_MASK_MARGIN:] = 0
        mask[:, :_MASK_MARGIN] = 0
        mask[:, -_MASK_MARGIN:] = 0
    if rng.random() < 0.2:  # a hole the background shows through
        ellipse(
            cx + ax * rng.uniform(-0.3, 0.3),
            cy + ay * rng.uniform(-0.3, 0.3),
            ax * rng.uniform(0.1, 0.3),
            ay * rng.uniform(0.1, 0.3),
            rng.uniform(0.0, 180.0),
            0,
        )


# ------------------------------------------------------------------------------------------------ photos


@functools.lru_cache(maxsize=32)
def _load_photo(path: str) -> NDArray[np.uint8]:
    image = read_rgb(path)
    image.setflags(write=False)
    return image


PACKAGED_BACKGROUNDS = "packaged"  # ``backgrounds`` keyword: the training pictures of installed packages


class _PhotoLibrary:
    """Random crops of the photographs in a folder (searched recursively, name order), or of the
    training pictures that installed packages carry (``"packaged"``, see ``packaged_training_photographs``)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        if str(folder) == PACKAGED_BACKGROUNDS:
            from .photo_motion import PACKAGED_TRAINING_PHOTOS, packaged_training_photographs

            self.files = [str(p) for p in packaged_training_photographs()]
            if len(self.files) < len(PACKAGED_TRAINING_PHOTOS):
                raise DatasetError(
                    f"synthetic backgrounds: {PACKAGED_BACKGROUNDS!r} needs scikit-image and matplotlib "
                    f"installed (found {len(self.files)} of {len(PACKAGED_TRAINING_PHOTOS)} pictures; "
                    "pip install flownet2_ros[train])"
                )
            return
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(f"synthetic backgrounds: {folder} is not a folder of images")
        self.files = sorted(
            str(p) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.files:
            raise DatasetError(
                f"synthetic backgrounds: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}"
            )

    def crop(self, rng: np.random.Generator, h: int, w: int) -> NDArray[np.float32]:
        """A random crop of a random photo, resized to ``(h, w, 3)`` float32 (upsampled when needed)."""
        photo = _load_photo(self.files[int(rng.integers(len(self.files)))])
        ph, pw = photo.shape[:2]
        # Size of the region to cut: at most the photo, at least enough for a ~1:1 texel/pixel scale.
        fit = min(ph / h, pw / w)
        zoom = min(fit, rng.uniform(0.7, 1.5)) if fit > 0.7 else fit
        ch, cw = max(1, min(ph, round(h * zoom))), max(1, min(pw, round(w * zoom)))
        y0 = int(rng.integers(0, ph - ch + 1))
        x0 = int(rng.integers(0, pw - cw + 1))
        region: NDArray[Any] = photo[y0 : y0 + ch, x0 : x0 + cw]
        if (ch, cw) != (h, w):
            region = cv2.resize(
                region, (w, h), interpolation=cv2.INTER_LINEAR if zoom < 1 else cv2.INTER_AREA
            )
        return np.asarray(region, dtype=np.float32)


# --------------------------------------------------------------------------------------------- rendering


def _bbox(pose: Matrix, tw: int, th: int, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer pixel box ``(x0, y0, x1, y1)`` (exclusive ends) covering the texture rectangle under
    ``pose``, clipped to the image; None when it misses the image."""
    corners = _apply(pose, _rect_corners(tw, th))
    x0 = max(0, math.floor(corners[:, 0].min()) - 1)
    y0 = max(0, math.floor(corners[:, 1].min()) - 1)
    x1 = min(width, math.ceil(corners[:, 0].max()) + 2)
    y1 = min(height, math.ceil(corners[:, 1].max()) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def _maps(
    inverse: Matrix, x0: int, y0: int, x1: int, y1: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Texture coordinates of the pixels of a box under ``inverse`` (image -> texture), as remap maps."""
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    a = inverse.astype(np.float32)
    mapx = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
    mapy = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    return mapx, mapy


def _render(
    layers: list[_Layer], poses: list[Matrix], height: int, width: int, with_flow: bool
) -> tuple[NDArray[np.float32], NDArray[np.int16], NDArray[np.float32] | None]:
    """Render one frame: each layer's texture sampled through the inverse of its pose, painter's order.

    Returns the image, the visible-layer labels and (``with_flow``) each pixel's flow under its visible
    layer's motion.
    """
    image = np.empty((height, width, 3), dtype=np.float32)
    labels = np.zeros((height, width), dtype=np.int16)
    flow = np.empty((height, width, 2), dtype=np.float32) if with_flow else None
    for k, (layer, pose) in enumerate(zip(layers, poses, strict=True)):
        th, tw = layer.texture.shape[:2]
        box = (0, 0, width, height) if k == 0 else _bbox(pose, tw, th, width, height)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        mapx, mapy = _maps(_inverse(pose), x0, y0, x1, y1)
        border = cv2.BORDER_REFLECT101 if k == 0 else cv2.BORDER_CONSTANT
        sampled = cv2.remap(layer.texture, mapx, mapy, cv2.INTER_LINEAR, borderMode=border, borderValue=0)
        if flow is not None:
            d = (layer.motion - np.eye(3)).astype(np.float32)
            xs = np.arange(x0, x1, dtype=np.float32)[None, :]
            ys = np.arange(y0, y1, dtype=np.float32)[:, None]
            fu = d[0, 0] * xs + d[0, 1] * ys + d[0, 2]
            fv = d[1, 0] * xs + d[1, 1] * ys + d[1, 2]
        if k == 0:
            image[:] = sampled
            if flow is not None:
                flow[..., 0] = fu
                flow[..., 1] = fv
            continue
        inside = sampled[..., 3] > 0.5
        np.copyto(image[y0:y1, x0:x1], sampled[..., :3], where=inside[..., None])
        np.copyto(labels[y0:y1, x0:x1], np.int16(k), where=inside)
        if flow is not None:
            np.copyto(flow[y0:y1, x0:x1, 0], fu, where=inside)
            np.copyto(flow[y0:y1, x0:x1, 1], fv, where=inside)
    return image, labels, flow


def _sample_alpha(
    texture: NDArray[np.float32], qx: NDArray[np.float32], qy: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Bilinear samples of an RGBA texture's alpha at scattered points (same remap as the renderer)."""
    n = qx.size
    rows = -(-n // _REMAP_COLS)
    pad = rows * _REMAP_COLS - n
    mx = np.pad(qx, (0, pad), constant_values=-10.0).reshape(rows, _REMAP_COLS)
    my = np.pad(qy, (0, pad), constant_values=-10.0).reshape(rows, _REMAP_COLS)
    alpha = np.ascontiguousarray(texture[..., 3])
    out = cv2.remap(alpha, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.asarray(out, dtype=np.float32).reshape(-1)[:n]


def _occlusion(
    layers: list[_Layer], poses2: list[Matrix], labels1: NDArray[np.int16], flow: NDArray[np.float32]
) -> NDArray[np.bool_]:
    """Frame-1 pixels whose surface point is outside frame 2 or under a higher layer there."""
    height, width = labels1.shape
    xs = np.arange(width, dtype=np.float32)[None, :] + flow[..., 0]
    ys = np.arange(height, dtype=np.float32)[:, None] + flow[..., 1]
    occluded = (xs < 0) | (xs > width - 1) | (ys < 0) | (ys > height - 1)
    # A frame-1 pixel moves by at most (reach_x, reach_y): only a window around each object can reach it.
    reach_x = float(np.abs(flow[..., 0]).max()) + 1.0
    reach_y = float(np.abs(flow[..., 1]).max()) + 1.0
    for j in range(1, len(layers)):
        texture = layers[j].texture
        th, tw = texture.shape[:2]
        corners = _apply(poses2[j], _rect_corners(tw, th))
        lo, hi = corners.min(axis=0) - 1.0, corners.max(axis=0) + 1.0
        x0, y0 = max(0, math.floor(lo[0] - reach_x)), max(0, math.floor(lo[1] - reach_y))
        x1, y1 = min(width, math.ceil(hi[0] + reach_x) + 1), min(height, math.ceil(hi[1] + reach_y) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        wx, wy = xs[y0:y1, x0:x1], ys[y0:y1, x0:x1]
        candidates = (
            (labels1[y0:y1, x0:x1] < j)
            & ~occluded[y0:y1, x0:x1]
            & (wx >= lo[0])
            & (wx <= hi[0])
            & (wy >= lo[1])
            & (wy <= hi[1])
        )
        iy, ix = np.nonzero(candidates)
        if iy.size == 0:
            continue
        a = _inverse(poses2[j]).astype(np.float32)
        px, py = wx[iy, ix], wy[iy, ix]
        qx = a[0, 0] * px + a[0, 1] * py + a[0, 2]
        qy = a[1, 0] * px + a[1, 1] * py + a[1, 2]
        hit = _sample_alpha(texture, qx, qy) > 0.5
        occluded[y0 + iy[hit], x0 + ix[hit]] = True
    return occluded


def render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    max_displacement: float = 48.0,
    num_objects: tuple[int, int] = (2, 8),
    object_size: tuple[float, float] = (0.2, 0.6),
    photos: _PhotoLibrary | None = None,
    object_photo_prob: float = 0.3,
    background_photo_prob: float = 1.0,
    motion_distribution: str = "uniform",
) -> SyntheticScene:
    """Draw and render one random scene; see :class:`SyntheticFlowDataset` for the parameters."""
    if motion_distribution not in MOTION_DISTRIBUTIONS:
        raise ValueError(
            f"motion_distribution must be one of {', '.join(MOTION_DISTRIBUTIONS)}, got {motion_distribution!r}"
        )
    small = motion_distribution == "small"
    diag = math.hypot(width, height)
    image_corners = _rect_corners(width - 1.0, height - 1.0)
    # Background motion about a random centre, limited over the whole image.
    centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    if small:
        budget = _small_motion_budget(rng, _SMALL_BACKGROUND_TOP * max_displacement)
        bg_motion = _sample_motion(rng, centre, diag / 2, budget, full_shift=True)
    else:
        bg_motion = _sample_motion(rng, centre, diag / 2, 0.6 * max_displacement)
    bg_motion = _limit(bg_motion, image_corners, max_displacement)
    # The background texture covers frame 1 and everything frame 2 samples from it.
    source = _apply(_inverse(bg_motion), image_corners)
    lo = np.minimum(source.min(axis=0), 0.0) - 2.0
    hi = np.maximum(source.max(axis=0), [width - 1.0, height - 1.0]) + 2.0
    x_min, y_min = math.floor(lo[0]), math.floor(lo[1])
    bw, bh = math.ceil(hi[0]) - x_min + 1, math.ceil(hi[1]) - y_min + 1
    # A draw only when mixing, so that all-photo scenes keep the random stream they always had.
    if photos is not None and (background_photo_prob >= 1.0 or rng.random() < background_photo_prob):
        bg_texture = photos.crop(rng, bh, bw)
    else:
        bg_texture = random_texture(rng, bh, bw)
    layers = [_Layer(bg_texture, _translation(x_min, y_min), bg_motion)]

    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    short = min(width, height)
    for _ in range(count):
        extent = rng.uniform(object_size[0], object_size[1]) * short
        aspect = math.exp(rng.uniform(-0.4, 0.4))
        tw = max(8, math.ceil(extent * math.sqrt(aspect)) + 2 * _MASK_MARGIN)
        th = max(8, math.ceil(extent / math.sqrt(aspect)) + 2 * _MASK_MARGIN)
        mask = np.zeros((th, tw), dtype=np.uint8)
        _draw_shape(rng, mask)
        if photos is not None and rng.random() < object_photo_prob:
            rgb = photos.crop(rng, th, tw)
        else:
            rgb = random_texture(rng, th, tw)
        alpha = mask.astype(np.float32) * np.float32(1.0 / 255.0)
        texture = np.ascontiguousarray(np.dstack([rgb, alpha]), dtype=np.float32)
        cx = rng.uniform(0.0, 1.0) * width
        cy = rng.uniform(0.0, 1.0) * height
        pose1 = (
            _translation(cx, cy) @ _rotation(rng.uniform(0.0, 2.0 * math.pi)) @ _translation(-tw / 2, -th / 2)
        )
        # The object's own motion about its (background-moved) centre, after the background's.
        moved_centre = _apply(bg_motion, np.array([[cx, cy]]))[0]
        if small:
            budget = _small_motion_budget(rng, _SMALL_OBJECT_TOP * max_displacement)
            relative = _sample_motion(rng, moved_centre, max(tw, th) / 2, budget, full_shift=True)
        else:
            relative = _sample_motion(rng, moved_centre, max(tw, th) / 2, 0.75 * max_displacement)
        motion = _limit(relative @ bg_motion, _apply(pose1, _rect_corners(tw, th)), max_displacement)
        layers.append(_Layer(texture, pose1, motion))

    poses1 = [layer.pose1 for layer in layers]
    poses2 = [layer.motion @ layer.pose1 for layer in layers]
    image1, labels1, flow = _render(layers, poses1, height, width, with_flow=True)
    image2, labels2, _ = _render(layers, poses2, height, width, with_flow=False)
    assert flow is not None
    occlusion = _occlusion(layers, poses2, labels1, flow)
    motions = np.stack([layer.motion[:2] for layer in layers])
    # Every layer is within 0..255 and bilinear sampling stays within its inputs' range: no clipping needed.
    return SyntheticScene(image1, image2, flow, occlusion, labels1, labels2, motions)


# ----------------------------------------------------------------------------------------------- dataset


class SyntheticFlowDataset(Dataset[dict[str, Any]]):
    """An endless-looking but fixed set of procedural flow pairs (FlyingChairs-like), exact ground truth.

    Args:
        num_samples: length of the dataset.
        height, width: image size (e.g. 384×512 like FlyingChairs; small for tests).
        seed: sample ``i`` depends only on ``(seed, i)`` (``numpy.random.SeedSequence([seed, i])``), not on
            worker, order or platform.
        max_displacement: upper bound (pixels) of every flow vector's length; the motions' translation,
            rotation, scale and shear are drawn as fractions of it, so it sets the motion scale (small
            values give a small-displacement set in the spirit of ChairsSDHom).
        num_objects: inclusive range of the number of objects per scene.
        object_size: range of an object's extent as a fraction of ``min(height, width)``.
        backgrounds: optional folder of photographs (searched recursively), or ``"packaged"`` for the
            training pictures of installed packages (disjoint from ``flownet2-compare``'s photographs);
            when given, backgrounds are random crops of them with probability ``background_photo_prob``
            (else procedural), and objects too with probability ``object_photo_prob``.
        object_photo_prob: see ``backgrounds``.
        background_photo_prob: see ``backgrounds``.
        motion_distribution: ``"uniform"`` (the default: the original law, same samples as before the
            option existed) or ``"small"`` (log-uniform motion budgets: small motions much more frequent, a
            tail up to ``max_displacement``, like FlyingChairs); see the module docstring for both laws.
        camera_effects: False (default) for sharp noise-free images; True for the default
            :class:`~flownet2_ros.data.camera_effects.CameraEffects` (motion blur with exposure 0..0.5 of
            the frame interval, read + shot noise, gain and gamma changes between the frames); a mapping
            of its fields to change ranges; or a ``CameraEffects``. Images only: the flow stays exact.
        transform: optional callable applied to each sample dict (e.g. :class:`FlowAugmentation`).

    Items follow the package's sample contract: ``image1``/``image2`` float32 ``(3, H, W)`` RGB 0..255,
    ``flow`` float32 ``(2, H, W)``, ``valid`` bool ``(H, W)`` (all True), ``occlusion`` bool ``(H, W)``,
    ``name`` (``"synthetic-<seed>/<index:06d>"``) and ``sequence`` (``"synthetic-<seed>"``).
    :meth:`scene` gives the numpy rendering with the layer labels and motions.
    """

    def __init__(
        self,
        num_samples: int,
        height: int = 384,
        width: int = 512,
        seed: int = 0,
        max_displacement: float = 48.0,
        num_objects: tuple[int, int] = (2, 8),
        object_size: tuple[float, float] = (0.2, 0.6),
        backgrounds: str | os.PathLike[str] | None = None,
        object_photo_prob: float = 0.3,
        background_photo_prob: float = 1.0,
        motion_distribution: str = "uniform",
        camera_effects: bool | dict[str, Any] | CameraEffects | None = False,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if height < 8 or width < 8:
            raise ValueError(f"image size must be at least 8x8, got {height}x{width}")
        if not max_displacement >= 0:
            raise ValueError(f"max_displacement must be >= 0, got {max_displacement}")
        lo, hi = num_objects
        if not 0 <= lo <= hi:
            raise ValueError(f"num_objects must be (lo, hi) with 0 <= lo <= hi, got {num_objects}")
        if not 0 < object_size[0] <= object_size[1]:
            raise ValueError(f"object_size must be (lo, hi) with 0 < lo <= hi, got {object_size}")
        self.num_samples = int(num_samples)
        self.height = int(height)
        self.width = int(width)
        self.seed = int(seed)
        self.max_displacement = float(max_displacement)
        self.num_objects = (int(lo), int(hi))
        self.object_size = (float(object_size[0]), float(object_size[1]))
        self.backgrounds = Path(backgrounds) if backgrounds is not None else None
        self.object_photo_prob = float(object_photo_prob)
        if not 0.0 <= background_photo_prob <= 1.0:
            raise ValueError(f"background_photo_prob must be in [0, 1], got {background_photo_prob}")
        self.background_photo_prob = float(background_photo_prob)
        if not isinstance(motion_distribution, str) or motion_distribution not in MOTION_DISTRIBUTIONS:
            raise ValueError(
                f"motion_distribution must be one of {', '.join(MOTION_DISTRIBUTIONS)}, got {motion_distribution!r}"
            )
        self.motion_distribution = motion_distribution
        self.camera_effects = CameraEffects.from_option(camera_effects)
        self.transform = transform
        self._photos = _PhotoLibrary(self.backgrounds) if self.backgrounds is not None else None

    def __len__(self) -> int:
        return self.num_samples

    def describe(self) -> str:
        source = (
            f"backgrounds: photos from {self.backgrounds} (p={self.background_photo_prob:g}), else procedural"
            if self.backgrounds is not None
            else "procedural textures"
        )
        camera = "camera effects" if self.camera_effects is not None else "sharp noise-free frames"
        return (
            f"SyntheticFlowDataset: {self.num_samples} samples, {self.height}x{self.width}, seed {self.seed}, "
            f"|flow| <= {self.max_displacement:g} px ({self.motion_distribution} motion sizes), "
            f"{self.num_objects[0]}-{self.num_objects[1]} objects, {source}, {camera}"
        )

    def scene(self, index: int) -> SyntheticScene:
        """Render sample ``index`` (numpy arrays, labels and motions included; camera effects applied
        when on, ``camera`` then holds what was drawn)."""
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        index %= max(self.num_samples, 1)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index]))
        scene = render_scene(
            rng,
            self.height,
            self.width,
            max_displacement=self.max_displacement,
            num_objects=self.num_objects,
            object_size=self.object_size,
            photos=self._photos,
            object_photo_prob=self.object_photo_prob,
            background_photo_prob=self.background_photo_prob,
            motion_distribution=self.motion_distribution,
        )
        if self.camera_effects is None:
            return scene
        # Drawn after the scene from the same generator: the scene is that of the effect-free sample.
        image1, image2, drawn = apply_camera_effects(
            rng,
            scene.image1,
            scene.image2,
            scene.flow,
            layer_velocity(scene.labels2, scene.motions),
            self.camera_effects,
        )
        return dataclasses.replace(scene, image1=image1, image2=image2, camera=drawn)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scene(index)
        index %= max(self.num_samples, 1)
        sample: dict[str, Any] = {
            "image1": torch.from_numpy(np.ascontiguousarray(scene.image1.transpose(2, 0, 1))),
            "image2": torch.from_numpy(np.ascontiguousarray(scene.image2.transpose(2, 0, 1))),
            "flow": torch.from_numpy(np.ascontiguousarray(scene.flow.transpose(2, 0, 1))),
            "valid": torch.from_numpy(np.ones((self.height, self.width), dtype=bool)),
            "occlusion": torch.from_numpy(scene.occlusion),
            "name": f"synthetic-{self.seed}/{index:06d}",
            "sequence": f"synthetic-{self.seed}",
        }
        return self.transform(sample) if self.transform is not None else sample
