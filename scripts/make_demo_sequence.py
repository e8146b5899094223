#!/usr/bin/env python3
"""Generate the bundled demo sequence: flownet2_ros/resources/demo_sequence/frame_NN.png.

A procedural, textured scene (no third-party images, so nothing to license): a large canvas of
fractal value noise in earthy colours, strewn with a few hundred "pebbles" (ellipses filled with their
own noise texture, shaded and outlined), lit by a soft gradient.  A virtual camera moves smoothly over
it — a pan with a slow zoom-in and a small rotation — and each frame is rendered at twice the output
size and downsampled (anti-aliased).  Everything is seeded: running the script again gives the same
frames (for a given numpy/OpenCV).  The true camera motion per frame is written to ``motion.txt``.

Usage: python scripts/make_demo_sequence.py [--out DIR] [--frames 12] [--width 320] [--height 240]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

from flownet2_ros.flowio.demo_sequence import SUPERSAMPLE, camera_affine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "flownet2_ros" / "resources" / "demo_sequence"
SEED = 20170712  # FlowNet 2.0's CVPR year and month


def value_noise(rng: np.random.Generator, height: int, width: int, octaves: tuple[int, ...]) -> np.ndarray:
    """Fractal value noise in [0, 1]: random grids of cell size ``o`` upsampled bicubically, 1/f weights."""
    total = np.zeros((height, width), np.float32)
    weight_sum = 0.0
    for cell in octaves:
        grid = rng.random((height // cell + 3, width // cell + 3)).astype(np.float32)
        up = cv2.resize(grid, (grid.shape[1] * cell, grid.shape[0] * cell), interpolation=cv2.INTER_CUBIC)
        weight = cell**0.9
        total += weight * up[cell : cell + height, cell : cell + width]
        weight_sum += weight
    total /= weight_sum
    total -= total.min()
    total /= max(float(total.max()), 1e-6)
    return total


def make_canvas(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The scene, (H, W, 3) float32 RGB in [0, 1]."""
    base = value_noise(rng, height, width, (256, 128, 64, 32, 16, 8, 4))
    tint = value_noise(rng, height, width, (512, 256, 128))
    soil = np.array([0.45, 0.36, 0.26], np.float32)
    moss = np.array([0.30, 0.42, 0.22], np.float32)
    fine = value_noise(rng, height, width, (8, 4, 2))
    grain = 0.75 + 0.5 * fine[..., None]  # gravel-like fine texture on the ground
    canvas = (soil * (1 - tint[..., None]) + moss * tint[..., None]) * (0.55 + 0.9 * base[..., None]) * grain

    for _ in range(260):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        ax, ay = rng.uniform(8, 42), rng.uniform(6, 30)
        angle = rng.uniform(0, 180)
        colour = np.array(
            [rng.uniform(0.35, 0.85), rng.uniform(0.3, 0.75), rng.uniform(0.25, 0.7)], np.float32
        ) * rng.uniform(0.7, 1.1)
        mask = np.zeros((height, width), np.uint8)
        cv2.ellipse(mask, (round(cx), round(cy)), (round(ax), round(ay)), angle, 0, 360, 255, -1, cv2.LINE_AA)
        x0, x1 = max(0, int(cx - ax - 2)), min(width, int(cx + ax + 3))
        y0, y1 = max(0, int(cy - ay - 2)), min(height, int(cy + ay + 3))
        if x1 <= x0 or y1 <= y0:
            continue
        m = mask[y0:y1, x0:x1].astype(np.float32)[..., None] / 255.0
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        shade = 1.0 + 0.35 * ((xx - cx) * -0.6 + (yy - cy) * -0.8) / max(ax, ay)  # light from top-left
        pebble = colour * (0.7 + 0.6 * fine[y0:y1, x0:x1, None]) * np.clip(shade, 0.5, 1.4)[..., None]
        edge = cv2.morphologyEx(mask[y0:y1, x0:x1], cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        region = canvas[y0:y1, x0:x1]
        region[:] = region * (1 - m) + pebble * m
        region[:] *= 1.0 - 0.5 * (edge.astype(np.float32)[..., None] / 255.0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 0.85 + 0.3 * (1 - (xx / width + yy / height) / 2)
    return np.clip(canvas * light[..., None], 0, 1)


def camera(k: int, frames: int) -> tuple[float, float, float, float]:
    """Camera pose for frame ``k``: centre (x, y) on the canvas in output pixels, zoom, rotation (deg)."""
    t = k / max(frames - 1, 1)
    return 60.0 * t + 6.0 * math.sin(2.5 * t), 20.0 * t, 1.0 + 0.12 * t, 4.0 * t


def render(canvas: np.ndarray, k: int, frames: int, width: int, height: int) -> np.ndarray:
    """Frame ``k`` as uint8 RGB (rendered at SUPERSAMPLE x and downsampled)."""
    ss = SUPERSAMPLE
    assert canvas.shape[:2] == (2 * height * ss, 2 * width * ss), "camera_affine's canvas size"
    matrix = camera_affine(np.array(camera(k, frames)), height, width, ss)
    big = cv2.warpAffine(canvas, matrix, (width * ss, height * ss), flags=cv2.INTER_LINEAR)
    small = cv2.resize(big, (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(small * 255.0 + 0.5, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    canvas = make_canvas(rng, 2 * args.height * SUPERSAMPLE, 2 * args.width * SUPERSAMPLE)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("frame_*.png"):
        old.unlink()
    lines = ["# frame  pan_x_px  pan_y_px  zoom  rotation_deg   (camera pose, output pixels)"]
    total = 0
    for k in range(args.frames):
        rgb = render(canvas, k, args.frames, args.width, args.height)
        path = args.out / f"frame_{k:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        total += path.stat().st_size
        lines.append("{:5d}  {:8.3f}  {:8.3f}  {:.4f}  {:.3f}".format(k, *camera(k, args.frames)))
    (args.out / "motion.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.frames} frames ({args.width}x{args.height}, {total / 1e6:.2f} MB) to {args.out}")


if __name__ == "__main__":
    main()
