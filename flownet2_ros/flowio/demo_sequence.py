"""The bundled demo sequence: where it lies, its camera model and its exact flow.

``scripts/make_demo_sequence.py`` renders each frame by moving a virtual camera over a flat canvas twice the
frame size (at ``SUPERSAMPLE`` times the output resolution, then downsampled) and records each frame's
pose (pan x, pan y, zoom, rotation in degrees) in ``motion.txt``. The scene is flat, so the flow between
two frames is exact: one affine map per frame pair. Numpy and OpenCV only (the node imports this).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

SUPERSAMPLE = 2  # frames are rendered at 2x and downsampled with INTER_AREA


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


def exact_flow(
    pose1: np.ndarray, pose2: np.ndarray, height: int, width: int, supersample: int = SUPERSAMPLE
) -> np.ndarray:
    """Flow (H, W, 2) float32 from the frame at ``pose1`` to the frame at ``pose2``."""
    m1 = _canvas_to_output(pose1, height, width, supersample)
    m2 = _canvas_to_output(pose2, height, width, supersample)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack([xs, ys, np.ones_like(xs)], axis=-1)
    moved = points @ (m2 @ np.linalg.inv(m1)).T
    return (moved[..., :2] - points[..., :2]).astype(np.float32)
