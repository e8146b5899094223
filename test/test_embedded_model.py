"""The shipped model gives meaningful flow on the bundled demo sequence (exact ground truth from the
camera poses that scripts/make_demo_sequence.py wrote to motion.txt)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flownet2_ros.flowio.demo_sequence import demo_sequence_dir, exact_flow, read_poses


def demo_ground_truth(first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames ``first``, ``first + 1`` (uint8 RGB) and the exact flow between them (H, W, 2)."""
    from flownet2_ros.flowio.frames import read_rgb

    poses = read_poses()
    frame1 = read_rgb(demo_sequence_dir() / f"frame_{first:02d}.png")
    frame2 = read_rgb(demo_sequence_dir() / f"frame_{first + 1:02d}.png")
    height, width = frame1.shape[:2]
    return frame1, frame2, exact_flow(poses[first], poses[first + 1], height, width)


def test_ground_truth_reproduces_the_next_frame() -> None:
    # Guards the ground truth itself: warping frame 2 back by it gives frame 1 (inside the view).
    frame1, frame2, flow = demo_ground_truth(0)
    height, width = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    back = cv2.remap(frame2, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR)
    inner = (slice(20, -20), slice(20, -20))
    residual = np.abs(back[inner].astype(np.float32) - frame1[inner]).mean()
    still = np.abs(frame2[inner].astype(np.float32) - frame1[inner]).mean()
    assert residual < 0.25 * still


@pytest.mark.parametrize("first", [0, 5, 10])
def test_embedded_model_flow_on_the_demo_sequence_is_accurate(first: int, one_torch_thread) -> None:
    from flownet2_ros.backends import BackendConfig, create_torch

    frame1, frame2, truth = demo_ground_truth(first)
    estimator = create_torch(BackendConfig(checkpoint="", device="cpu"))
    estimate = estimator.estimate(frame1, frame2)
    assert estimate.shape == truth.shape
    epe = np.linalg.norm(estimate - truth, axis=-1)
    motion = np.linalg.norm(truth, axis=-1)
    # Meaningful: far better than "no motion", sub-pixel on most of the image.
    assert float(epe.mean()) < 0.25 * float(motion.mean())
    assert float(np.median(epe)) < 0.75


def test_variant_sweep_script_trains_measures_and_ranks(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "choose_embedded_variant.py"
    arguments = ["--steps", "2", "--pairs", "2", "--variants", "FlowNet2S", "--output", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(script), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = (tmp_path / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| FlowNet2S |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 6 and all(float(c) > 0 for c in cells[1:])
    assert "Best EPE × ms: FlowNet2S" in table
    assert (tmp_path / "FlowNet2S" / "checkpoint_latest.pth.tar").is_file()
