"""The bundled demo sequence: its files, its object model, its exact flow and its generator."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from flownet2_ros.flowio.demo_sequence import (
    BACKGROUND,
    DemoObject,
    demo_flow,
    demo_sequence_dir,
    exact_flow,
    read_objects,
    read_poses,
    scene_flow,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_folder_holds_frames_camera_poses_and_objects() -> None:
    folder = demo_sequence_dir()
    frames = sorted(folder.glob("frame_*.png"))
    assert len(frames) == len(read_poses()) == 12
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1.5e6
    objects = read_objects()
    assert [o.name for o in objects] == ["disc", "box", "pentagon", "pill"]
    assert all(o.poses.shape == (12, 4) for o in objects)
    assert {o.kind for o in objects} == {"ellipse", "polygon"}


def test_objects_move_on_their_own_by_a_few_pixels_in_different_directions() -> None:
    truth = demo_flow(5, 6)
    background = exact_flow(read_poses()[5], read_poses()[6], 240, 320)
    directions = []
    for index in range(4):
        mask = truth.labels == index
        assert mask.sum() > 500
        relative = (truth.flow[mask] - background[mask]).mean(axis=0)
        assert 3.0 < np.linalg.norm(relative) < 6.0
        directions.append(np.arctan2(relative[1], relative[0]))
    gaps = np.diff(np.sort(directions))
    assert min(*gaps, 2 * np.pi - np.ptp(directions)) > np.radians(30)


def test_background_moves_with_the_camera_and_objects_with_their_own_pose() -> None:
    poses, objects = read_poses(), read_objects()
    truth = scene_flow(poses[3], poses[4], 240, 320, objects=objects, frames=(3, 4))
    camera = exact_flow(poses[3], poses[4], 240, 320)
    np.testing.assert_array_equal(
        exact_flow(poses[3], poses[4], 240, 320, objects=objects, frames=(3, 4)), truth.flow
    )
    background = truth.labels == BACKGROUND
    np.testing.assert_allclose(truth.flow[background], camera[background], atol=1e-5)
    # The pixel nearest the disc's centre moves where the disc's centre goes, up to the sub-pixel offset.
    disc = objects[0]
    ys, xs = np.nonzero(truth.labels == 0)
    cy, cx = ys.mean(), xs.mean()
    nearest = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    y, x = ys[nearest], xs[nearest]
    motion = np.linalg.norm(truth.flow[y, x] - camera[y, x])
    step = np.linalg.norm(disc.poses[4, :2] - disc.poses[3, :2]) / 2  # canvas pixels -> frame pixels
    assert abs(motion - step) < 0.4 * step
    # Without objects the flow is the camera's everywhere and every pixel that stays in view is valid.
    plain = scene_flow(poses[3], poses[4], 240, 320)
    np.testing.assert_array_equal(plain.flow, camera)
    assert (plain.labels == BACKGROUND).all() and plain.valid[20:-20, 20:-20].all()


def test_front_objects_hide_the_ones_behind() -> None:
    pose = np.array([[0.0, 0.0, 1.0, 0.0]] * 2)
    back = DemoObject(
        "back", "ellipse", (40.0, 40.0), np.array([[640.0, 480.0, 0.0, 1.0], [640.0, 480.0, 0.0, 1.0]])
    )
    square = (-20.0, -20.0, 20.0, -20.0, 20.0, 20.0, -20.0, 20.0)
    front = DemoObject(
        "front", "polygon", square, np.array([[600.0, 480.0, 0.0, 1.0], [680.0, 480.0, 0.0, 1.0]])
    )
    truth = scene_flow(pose[0], pose[1], 240, 320, objects=[back, front], frames=(0, 1))
    # output pixel (x, y) <-> canvas ((2x + 0.5) + 320, (2y + 0.5) + 240) at this pose
    assert (
        truth.labels[120, 140] == 1 and truth.labels[120, 160] == 0 and truth.labels[120, 100] == BACKGROUND
    )
    np.testing.assert_allclose(truth.flow[120, 140], [40.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(truth.flow[120, 160], [0.0, 0.0], atol=1e-6)
    # The square moves from x 130..150 to 170..190 in front of the disc (x 140..180): it hides the disc's
    # right end and the background just right of it, and nothing of what it passed.
    assert truth.valid[120, 140] and truth.valid[120, 152] and not truth.valid[120, 172]
    assert not truth.valid[120, 185] and truth.valid[120, 195] and truth.valid[120, 125]


def test_malformed_objects_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        DemoObject("x", "star", (1.0, 2.0), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="bad polygon"):
        DemoObject("x", "polygon", (1.0, 2.0, 3.0, 4.0), np.zeros((2, 4)))
    (tmp_path / "objects.txt").write_text("object a ellipse 3 2\npose a 0 1 2 0 1\npose a 2 1 2 0 1\n")
    with pytest.raises(ValueError, match="one pose per frame"):
        read_objects(tmp_path)
    (tmp_path / "objects.txt").write_text("pose a 0 1 2 0 1\n")
    with pytest.raises(ValueError, match=r"objects\.txt:1"):
        read_objects(tmp_path)
    assert read_objects(tmp_path / "missing") == []


def test_the_generator_reproduces_the_bundled_sequence(tmp_path: Path) -> None:
    script = REPO_ROOT / "scripts" / "make_demo_sequence.py"
    result = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    bundled = demo_sequence_dir()
    assert (tmp_path / "motion.txt").read_text() == (bundled / "motion.txt").read_text()

    def without_versions(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if not line.startswith("# rendered with"))

    objects = (bundled / "objects.txt").read_text()
    assert without_versions((tmp_path / "objects.txt").read_text()) == without_versions(objects)
    versions = re.search(r"# rendered with numpy (\S+), OpenCV (\S+)", objects)
    same_libraries = versions is not None and versions.groups() == (np.__version__, cv2.__version__)
    frames = sorted(p.name for p in bundled.glob("frame_*.png"))
    assert sorted(p.name for p in tmp_path.glob("frame_*.png")) == frames
    for name in frames:
        made = np.asarray(cv2.imread(str(tmp_path / name)), dtype=np.int16)
        shipped = np.asarray(cv2.imread(str(bundled / name)), dtype=np.int16)
        if same_libraries:
            np.testing.assert_array_equal(made, shipped, err_msg=name)
        else:  # another OpenCV may round a few interpolated pixels the other way
            difference = np.abs(made - shipped)
            assert difference.max() <= 1 and (difference > 0).mean() < 1e-3, name
