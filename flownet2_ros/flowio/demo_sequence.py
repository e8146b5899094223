"""The bundled demo sequence: where it lies, its camera and object models, and its exact flow.

``scripts/make_demo_sequence.py`` renders each frame by moving a virtual camera over a flat canvas twice the
frame size (at ``SUPERSAMPLE`` times the output resolution, then downsampled with ``INTER_AREA``) and records
each frame's pose (pan x, pan y, zoom, rotation in degrees) in ``motion.txt``. Over the canvas a few opaque,
textured objects move on their own (translation, rotation, scale: one similarity per object and frame, in
canvas pixels) and are drawn back to front; their outlines and per-frame poses are in ``objects.txt``.

Everything is flat, so the flow is exact and follows from the two text files alone: a pixel of frame *i*
covered by an object moves with that object's motion composed with the camera's, any other pixel with the
camera's (one affine map per frame pair for the background). :func:`demo_flow` gives that flow, which
pixels are visible in both frames, and which object covers each pixel. Numpy only (the node imports this;
OpenCV is imported lazily by :func:`camera_affine`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

SUPERSAMPLE = 2  # frames are rendered at 2x and downsampled with INTER_AREA
OBJECT_KINDS = ("ellipse", "polygon")
BACKGROUND = -1  # label of pixels that no object covers


def demo_sequence_dir() -> Path:
    """The bundled demo sequence (package data ``flownet2_ros/resources/demo_sequence``)."""
    return Path(str(resources.files("flownet2_ros") / "resources" / "demo_sequence"))


def camera_affine(pose: np.ndarray, height: int, width: int, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """2×3 map from a canvas point to a supersampled frame pixel for one pose (pan x, pan y, zoom, rotation).

    The canvas is ``(2·height·supersample, 2·width·supersample)``; the camera rotates and zooms about the
    panned canvas centre and puts it at the frame centre.
    """
    import cv2

    pan_x, pan_y, zoom, rotation = (float(v) for v in pose)
    ss = supersample
    centre = (width * ss + pan_x * ss, height * ss + pan_y * ss)  # canvas centre (2·size·ss / 2) + pan
    affine = np.asarray(cv2.getRotationMatrix2D(centre, rotation, zoom), dtype=np.float64)
    affine[:, 2] += np.array([width * ss / 2 - centre[0], height * ss / 2 - centre[1]])
    return affine


def _canvas_to_output(pose: np.ndarray, height: int, width: int, supersample: int) -> np.ndarray:
    """3×3 map canvas point -> output pixel: supersampled pixel q lands on (q + 0.5) / ss - 0.5."""
    ss = supersample
    downsample = np.array([[1 / ss, 0, 0.5 / ss - 0.5], [0, 1 / ss, 0.5 / ss - 0.5], [0, 0, 1]])
    return downsample @ np.vstack([camera_affine(pose, height, width, ss), [0, 0, 1]])


def read_poses(folder: str | Path | None = None) -> np.ndarray:
    """``motion.txt`` of the sequence in ``folder`` (default: the bundled one) as (frames, 4) poses."""
    return np.loadtxt(Path(folder or demo_sequence_dir()) / "motion.txt", ndmin=2)[:, 1:]


@dataclass(frozen=True, eq=False)
class DemoObject:
    """One opaque object moving over the canvas: its outline in its own frame and its pose in each frame.

    ``kind`` ``"ellipse"``: ``outline`` is the two semi-axes ``(a, b)``, ``(u/a)² + (v/b)² <= 1``.
    ``kind`` ``"polygon"``: ``outline`` is the vertices ``(x1, y1, x2, y2, …)`` of a simple polygon (even-odd
    rule). Both in object-local canvas pixels about the object's origin. ``poses`` (frames, 4): the origin's
    canvas position x, y (canvas pixels), the rotation in degrees (positive turns +x towards +y, i.e.
    clockwise on screen) and the scale: canvas point = (x, y) + scale · R(rotation) · local point.
    """

    name: str
    kind: str
    outline: tuple[float, ...]
    poses: np.ndarray

    def __post_init__(self) -> None:
        if self.kind not in OBJECT_KINDS:
            raise ValueError(f"object {self.name!r}: unknown kind {self.kind!r} (one of {OBJECT_KINDS})")
        if (self.kind == "ellipse" and len(self.outline) != 2) or (
            self.kind == "polygon" and (len(self.outline) < 6 or len(self.outline) % 2)
        ):
            raise ValueError(f"object {self.name!r}: bad {self.kind} outline {self.outline}")
        if self.poses.ndim != 2 or self.poses.shape[1] != 4:
            raise ValueError(f"object {self.name!r}: poses must be (frames, 4), got {self.poses.shape}")

    def local_to_canvas(self, frame: int) -> np.ndarray:
        """3×3 map object-local point -> canvas point in ``frame``."""
        x, y, rotation, scale = (float(v) for v in self.poses[frame])
        c, s = math.cos(math.radians(rotation)) * scale, math.sin(math.radians(rotation)) * scale
        return np.array([[c, -s, x], [s, c, y], [0.0, 0.0, 1.0]])

    def contains(self, local: np.ndarray) -> np.ndarray:
        """Which object-local points (..., 2) lie inside the outline."""
        u, v = local[..., 0], local[..., 1]
        if self.kind == "ellipse":
            a, b = self.outline
            return np.asarray((u / a) ** 2 + (v / b) ** 2 <= 1.0)
        vx, vy = np.asarray(self.outline[0::2]), np.asarray(self.outline[1::2])
        inside = np.zeros(u.shape, dtype=bool)
        for k in range(len(vx)):  # even-odd rule: count edge crossings of a ray towards +x
            x1, y1, x2, y2 = vx[k], vy[k], vx[k - 1], vy[k - 1]
            if y1 == y2:
                continue
            crosses = (y1 > v) != (y2 > v)
            inside ^= crosses & (u < x1 + (v - y1) * (x2 - x1) / (y2 - y1))
        return inside

    def covers(self, canvas: np.ndarray, frame: int) -> np.ndarray:
        """Which canvas points (..., 2) the object covers in ``frame``."""
        return self.contains(_apply(np.linalg.inv(self.local_to_canvas(frame)), canvas))


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A 3×3 affine map applied to points (..., 2)."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def read_objects(folder: str | Path | None = None) -> list[DemoObject]:
    """``objects.txt`` of the sequence in ``folder`` (default: the bundled one), back to front.

    Lines ``object NAME KIND OUTLINE…`` declare the objects in drawing order; lines
    ``pose NAME FRAME X Y ROTATION_DEG SCALE`` give every frame's pose; ``#`` starts a comment. A sequence
    without the file has no objects.
    """
    path = Path(folder or demo_sequence_dir()) / "objects.txt"
    if not path.is_file():
        return []
    outlines: dict[str, tuple[str, tuple[float, ...]]] = {}
    poses: dict[str, dict[int, list[float]]] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            if fields[0] == "object" and len(fields) >= 3:
                outlines[fields[1]] = (fields[2], tuple(float(v) for v in fields[3:]))
                poses[fields[1]] = {}
            elif fields[0] == "pose" and len(fields) == 7 and fields[1] in poses:
                poses[fields[1]][int(fields[2])] = [float(v) for v in fields[3:]]
            else:
                raise ValueError("expected 'object NAME KIND …' or 'pose NAME FRAME X Y ROTATION SCALE'")
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}: {raw!r}") from None
    objects = []
    for name, (kind, outline) in outlines.items():
        frames = sorted(poses[name])
        if frames != list(range(len(frames))):
            raise ValueError(f"{path}: object {name!r} needs one pose per frame 0, 1, …, got frames {frames}")
        objects.append(DemoObject(name, kind, outline, np.array([poses[name][k] for k in frames])))
    return objects


def object_labels(
    canvas: np.ndarray, objects: Sequence[DemoObject], frame: int, *, exclude: int | None = None
) -> np.ndarray:
    """Index of the front-most object covering each canvas point (..., 2) in ``frame``, else BACKGROUND.

    ``exclude``: ignore that object (e.g. to see what lies behind it).
    """
    labels = np.full(canvas.shape[:-1], BACKGROUND, dtype=np.int64)
    for index, item in enumerate(objects):
        if index != exclude:
            labels[item.covers(canvas, frame)] = index
    return labels


class DemoFlow(NamedTuple):
    """The exact forward flow between two frames of the demo sequence.

    ``flow`` (H, W, 2) float32; ``valid`` (H, W) bool: the pixel's point is still visible in the second frame
    (not hidden by an object in front of it) and lands inside it; ``labels`` (H, W) int: the object covering
    each pixel of the first frame (index into the object list) or ``BACKGROUND``.
    """

    flow: np.ndarray
    valid: np.ndarray
    labels: np.ndarray


def scene_flow(
    pose1: np.ndarray,
    pose2: np.ndarray,
    height: int,
    width: int,
    supersample: int = SUPERSAMPLE,
    objects: Sequence[DemoObject] = (),
    frames: tuple[int, int] = (0, 1),
) -> DemoFlow:
    """Exact flow, visibility and object labels from the frame at camera ``pose1`` to the one at ``pose2``.

    ``objects`` (back to front) are taken at their poses of frames ``frames[0]`` and ``frames[1]``; at each
    output pixel's centre the front-most object decides how it moves.
    """
    first, second = frames
    m1 = _canvas_to_output(np.asarray(pose1), height, width, supersample)
    m2 = _canvas_to_output(np.asarray(pose2), height, width, supersample)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack([xs, ys], axis=-1)
    canvas1 = _apply(np.linalg.inv(m1), points)
    labels = object_labels(canvas1, objects, first)
    moved = _apply(m2 @ np.linalg.inv(m1), points)
    for index, item in enumerate(objects):
        motion = m2 @ item.local_to_canvas(second) @ np.linalg.inv(item.local_to_canvas(first))
        mask = labels == index
        moved[mask] = _apply(motion, canvas1[mask])
    inside = (moved[..., 0] >= 0) & (moved[..., 0] <= width - 1) & (moved[..., 1] >= 0)
    inside &= moved[..., 1] <= height - 1
    labels2 = object_labels(_apply(np.linalg.inv(m2), moved), objects, second)
    flow = (moved - points).astype(np.float32)
    return DemoFlow(flow, inside & (labels2 == labels), labels)


def exact_flow(
    pose1: np.ndarray,
    pose2: np.ndarray,
    height: int,
    width: int,
    supersample: int = SUPERSAMPLE,
    objects: Sequence[DemoObject] = (),
    frames: tuple[int, int] = (0, 1),
) -> np.ndarray:
    """Flow (H, W, 2) float32 from the frame at ``pose1`` to the frame at ``pose2``.

    Without ``objects`` this is the camera's (background) flow; with them see :func:`scene_flow`.
    """
    return scene_flow(pose1, pose2, height, width, supersample, objects, frames).flow


def demo_flow(
    first: int, second: int, folder: str | Path | None = None, size: tuple[int, int] | None = None
) -> DemoFlow:
    """Exact flow from frame ``first`` to frame ``second`` of the sequence in ``folder`` (default: bundled),
    from ``motion.txt`` and ``objects.txt`` alone. ``size`` (height, width): the frame size, read from
    ``frame_<first>.png``'s header if omitted."""
    folder = Path(folder or demo_sequence_dir())
    height, width = size if size is not None else _png_size(folder / f"frame_{first:02d}.png")
    poses = read_poses(folder)
    return scene_flow(
        poses[first], poses[second], height, width, objects=read_objects(folder), frames=(first, second)
    )


def _png_size(path: Path) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk."""
    with open(path, "rb") as stream:
        header = stream.read(24)
    if header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        raise ValueError(f"{path}: not a PNG file")
    return int.from_bytes(header[20:24], "big"), int.from_bytes(header[16:20], "big")
