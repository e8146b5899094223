#!/usr/bin/env python3
"""Generate the bundled demo sequence: flownet2_ros/resources/demo_sequence/frame_NN.png.

A procedural, textured scene (no third-party images, so nothing to license): a large canvas of
fractal value noise in earthy colours, strewn with a few hundred "pebbles" (ellipses filled with their
own noise texture, shaded and outlined), lit by a soft gradient.  A virtual camera moves smoothly over
it — a pan with a slow zoom-in and a small rotation — and four opaque objects in bright, patterned
textures (a blue ringed disc, a red tiled box, a yellow-and-black pentagon, a magenta dotted pill) move
over the canvas on their own, each in its own direction, turning or growing a little, drawn back to
front.  Each frame is rendered at twice the output size and downsampled (anti-aliased).  Everything is
seeded: running the script again gives the same frames (for a given numpy/OpenCV).

The true camera motion per frame is written to ``motion.txt``, the objects' outlines and per-frame poses
to ``objects.txt``; the frames are rendered from what those files say (written, then read back), so
``flownet2_ros.flowio.demo_sequence.demo_flow`` gives their exact flow from the two files alone.

Usage: python scripts/make_demo_sequence.py [--out DIR] [--frames 12] [--width 320] [--height 240]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

from flownet2_ros.flowio.demo_sequence import (
    SUPERSAMPLE,
    DemoObject,
    _canvas_to_output,
    camera_affine,
    read_objects,
    read_poses,
)

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


# The moving objects, back to front. Sizes and speeds in output pixels (at zoom 1): ``outline`` as in
# objects.txt (ellipse semi-axes or polygon vertices) but in output pixels, ``start`` is where the
# object's origin appears in frame 0 of a 320x240 sequence (scaled with the frame size), ``velocity`` its
# own motion over the canvas per frame (the camera's comes on top: the background drifts by about
# (-6, -2) px per frame), ``spin`` degrees and ``growth`` relative scale change per frame.
OBJECTS: tuple[dict, ...] = (
    {
        "name": "disc",
        "kind": "ellipse",
        "outline": (31.0, 22.0),
        "start": (72.0, 78.0),
        "angle": 15.0,
        "velocity": (4.0, 1.6),
        "spin": 1.5,
        "growth": 0.0,
        "pattern": "rings",
        "colours": ((0.10, 0.35, 0.95), (0.55, 0.90, 1.00)),
    },
    {
        "name": "box",
        "kind": "polygon",
        "outline": (-27.0, -18.0, 27.0, -18.0, 27.0, 18.0, -27.0, 18.0),
        "start": (236.0, 66.0),
        "angle": -10.0,
        "velocity": (-2.0, 3.2),
        "spin": -2.0,
        "growth": 0.0,
        "pattern": "tiles",
        "colours": ((0.90, 0.10, 0.12), (1.00, 0.92, 0.80)),
    },
    {
        "name": "pentagon",
        "kind": "polygon",
        "outline": tuple(
            v
            for k in range(5)
            for v in (
                24.0 * (1.0 + 0.12 * math.cos(3.0 * k)) * math.cos(math.radians(72.0 * k - 90.0)),
                24.0 * (1.0 + 0.12 * math.cos(3.0 * k)) * math.sin(math.radians(72.0 * k - 90.0)),
            )
        ),
        "start": (250.0, 188.0),
        "angle": 0.0,
        "velocity": (2.8, -3.2),
        "spin": 1.0,
        "growth": 0.015,
        "pattern": "blobs",
        "colours": ((1.00, 0.85, 0.05), (0.12, 0.10, 0.08)),
    },
    {
        "name": "pill",
        "kind": "ellipse",
        "outline": (20.0, 12.0),
        "start": (190.0, 208.0),
        "angle": -30.0,
        "velocity": (-3.0, -2.0),
        "spin": -1.0,
        "growth": -0.01,
        "pattern": "dots",
        "colours": ((0.85, 0.15, 0.80), (1.00, 0.95, 1.00)),
    },
)


def object_lines(frames: int, width: int, height: int, poses: np.ndarray) -> list[str]:
    """``objects.txt``: each object's outline (canvas pixels) and its pose in every frame."""
    ss = SUPERSAMPLE
    to_canvas = np.linalg.inv(_canvas_to_output(poses[0], height, width, ss))
    lines = [
        "# Independently moving opaque objects of the demo sequence, drawn back to front (later lines in front).",
        "# object NAME KIND OUTLINE...: KIND ellipse: semi-axes A B; KIND polygon: vertices X1 Y1 X2 Y2 ...",
        "#   (object-local canvas pixels; the canvas is rendered at the frames' supersampling, so at zoom 1",
        f"#   {ss} canvas pixels make one frame pixel).",
        "# pose NAME FRAME X Y ROTATION_DEG SCALE: canvas point = (X, Y) + SCALE * R(ROTATION_DEG) * local point,",
        "#   R turning +x towards +y (clockwise on screen); canvas pixels as in motion.txt's camera model.",
        f"# rendered with numpy {np.__version__}, OpenCV {cv2.__version__}",
    ]
    scale_xy = (width / 320.0, height / 240.0)
    for spec in OBJECTS:
        outline = " ".join(f"{ss * v:.3f}" for v in spec["outline"])
        lines.append(f"object {spec['name']} {spec['kind']} {outline}")
    for spec in OBJECTS:
        start = np.array([spec["start"][0] * scale_xy[0], spec["start"][1] * scale_xy[1], 1.0])
        origin = (to_canvas @ start)[:2]
        for k in range(frames):
            x, y = origin + ss * k * np.asarray(spec["velocity"])
            rotation = spec["angle"] + spec["spin"] * k
            scale = (1.0 + spec["growth"]) ** k
            lines.append(f"pose {spec['name']} {k:2d} {x:9.3f} {y:9.3f} {rotation:8.3f} {scale:.5f}")
    return lines


def object_texture(rng: np.random.Generator, item: DemoObject, spec: dict) -> tuple[np.ndarray, int]:
    """The object's texture in its own frame: (size, size, 3) float32 RGB and the texel of its origin.

    A bold two-colour pattern with fine noise, shaded from the top left, with a dark rim along the outline.
    """
    if item.kind == "ellipse":
        extent = max(item.outline)
    else:
        extent = float(np.hypot(item.outline[0::2], item.outline[1::2]).max())
    half = math.ceil(extent) + 4
    size = 2 * half + 1
    v, u = (np.mgrid[0:size, 0:size].astype(np.float32) - half)[:2]
    noise = value_noise(rng, size, size, (16, 8, 4, 2))
    pattern = spec["pattern"]
    if pattern == "rings":  # a spiral
        level = 0.5 + 0.5 * np.sin(np.hypot(u, v * 1.3) * 0.5 + 1.3 * np.arctan2(v, u))
    elif pattern == "tiles":  # irregular tiles: random cells of two colours, no period to lock onto
        cells = rng.random((size // 8 + 2, size // 8 + 2)) < 0.5
        level = np.kron(cells, np.ones((8, 8)))[:size, :size].astype(np.float32)
    elif pattern == "blobs":  # camouflage: thresholded noise
        level = np.clip((value_noise(rng, size, size, (12, 6)) - 0.5) * 6.0 + 0.5, 0, 1)
    else:  # dots at random places
        level = np.zeros((size, size), np.float32)
        for x, y in rng.uniform(0, size, (size * size // 60, 2)):
            cv2.circle(level, (round(x), round(y)), 3, 1.0, -1, cv2.LINE_AA)
    first, second = (np.asarray(c, np.float32) for c in spec["colours"])
    mix = np.clip(0.15 + 0.7 * level + 0.3 * (noise - 0.5), 0, 1)[..., None]
    texture = first * (1 - mix) + second * mix
    texture *= (0.75 + 0.5 * noise)[..., None]
    texture *= np.clip(1.0 + 0.3 * (-0.6 * u - 0.8 * v) / extent, 0.6, 1.3)[..., None]  # light from top-left
    rim_scale = 1.0 - 5.0 / extent  # a dark band about 2.5 frame pixels wide inside the outline
    rim = ~item.contains(np.stack([u, v], axis=-1) / rim_scale)
    texture[rim] *= 0.35
    return np.clip(texture, 0, 1).astype(np.float32), half


def render(
    canvas: np.ndarray,
    pose: np.ndarray,
    objects: list[DemoObject],
    textures: list[tuple[np.ndarray, int]],
    k: int,
    width: int,
    height: int,
) -> np.ndarray:
    """Frame ``k`` as uint8 RGB (rendered at SUPERSAMPLE x and downsampled)."""
    ss = SUPERSAMPLE
    assert canvas.shape[:2] == (2 * height * ss, 2 * width * ss), "camera_affine's canvas size"
    matrix = np.vstack([camera_affine(pose, height, width, ss), [0, 0, 1]])
    size = (width * ss, height * ss)
    big = cv2.warpAffine(canvas, matrix[:2], size, flags=cv2.INTER_LINEAR)
    ys, xs = np.mgrid[0 : height * ss, 0 : width * ss].astype(np.float64)
    to_canvas = np.linalg.inv(matrix)
    points = np.stack([xs, ys], axis=-1) @ to_canvas[:2, :2].T + to_canvas[:2, 2]
    for item, (texture, half) in zip(objects, textures, strict=True):
        inside = item.covers(points, k)  # exact coverage test at each supersampled pixel centre
        texel_to_local = np.array([[1.0, 0.0, -half], [0.0, 1.0, -half], [0.0, 0.0, 1.0]])
        to_frame = (matrix @ item.local_to_canvas(k) @ texel_to_local)[:2]
        layer = cv2.warpAffine(texture, to_frame, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        big[inside] = layer[inside]
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
    for k in range(args.frames):
        lines.append("{:5d}  {:8.3f}  {:8.3f}  {:.4f}  {:.3f}".format(k, *camera(k, args.frames)))
    (args.out / "motion.txt").write_text("\n".join(lines) + "\n")
    poses = read_poses(args.out)  # render what the files say, so they give the exact flow
    lines = object_lines(args.frames, args.width, args.height, poses)
    (args.out / "objects.txt").write_text("\n".join(lines) + "\n")
    objects = read_objects(args.out)
    textures = [object_texture(rng, item, spec) for item, spec in zip(objects, OBJECTS, strict=True)]

    total = 0
    for k in range(args.frames):
        rgb = render(canvas, poses[k], objects, textures, k, args.width, args.height)
        path = args.out / f"frame_{k:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        total += path.stat().st_size
    print(f"wrote {args.frames} frames ({args.width}x{args.height}, {total / 1e6:.2f} MB) to {args.out}")


if __name__ == "__main__":
    main()
