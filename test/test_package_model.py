"""scripts/package_default_model.py: float16 weights, the model's own network-size cap, the size limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from flownet2_ros.models import build, load_checkpoint, save_checkpoint
from flownet2_ros.models.inference import FlowInference

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "package_default_model.py"


def test_packaging_stores_half_weights_and_the_cap(tmp_path: Path) -> None:
    source = tmp_path / "trained.pth.tar"
    model = build("FlowNet2S", width=0.125)
    save_checkpoint(source, model, iteration=7)
    output = tmp_path / "default.pth.tar"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(source), "--output", str(output), "--max-network-pixels", "81920"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    stored = torch.load(output, weights_only=True)
    assert stored["max_network_pixels"] == 81920
    assert all(t.dtype == torch.float16 for t in stored["state_dict"].values() if t.is_floating_point())
    loaded = load_checkpoint(output)
    assert FlowInference(loaded, device="cpu").network_size_of(480, 640) == (256, 320)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value.half().float())


def test_packaging_refuses_a_tiny_cap(tmp_path: Path) -> None:
    source = tmp_path / "trained.pth.tar"
    save_checkpoint(source, build("FlowNet2S", width=0.125))
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(source),
            "--output",
            str(tmp_path / "x.pth"),
            "--max-network-pixels",
            "100",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2 and "at least 4096" in done.stderr and not (tmp_path / "x.pth").exists()
