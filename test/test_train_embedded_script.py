"""scripts/train_embedded_gpu.sh on the CPU (DEVICE=cpu, tiny frames): the curriculum's three stages in
their budget shares, each from the previous one, resumed exactly by a second run, then packaged."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_embedded_gpu.sh"
STAGES = ("train_embedded_default", "train_embedded_default_stage2", "train_embedded_default_stage3")


def _run(output: Path, minutes: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), minutes, str(output)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=300,
    )


@pytest.mark.slow
def test_three_stages_resume_and_package_on_the_cpu(tmp_path: Path) -> None:
    pytest.importorskip("skimage", reason="the stage configs use the packaged photographs")
    env = {
        "DEVICE": "cpu",
        "WORKERS": "0",
        "TRAIN_ARGS": "--set data.train.height=64 --set data.train.width=64 --set run.validate_at_start=false "
        "--threads 1",
    }
    out = tmp_path / "gpu_run"
    first = _run(out, "0.03", **env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    steps = {}
    for stage in STAGES:
        payload = torch.load(out / stage / "checkpoint_latest.pth.tar", weights_only=True)
        steps[stage] = payload["resume"]["step"]
        assert 0 < steps[stage] < payload["resume"].get("iterations", 10**9)
    assert "initialised" in first.stdout or "initialised" in first.stderr
    packaged = torch.load(out / "default.pth.tar", weights_only=True)
    assert "resume" not in packaged and packaged["state_dict"]

    second = _run(out, "0.03", **env)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert second.stdout.count("resuming") == 3
    for stage in STAGES:
        payload = torch.load(out / stage / "checkpoint_latest.pth.tar", weights_only=True)
        assert payload["resume"]["step"] > steps[stage]


def test_refuses_bad_minutes_and_a_missing_gpu(tmp_path: Path) -> None:
    bad = _run(tmp_path / "x", "zero")
    assert bad.returncode == 2 and "MINUTES must be a positive number" in bad.stderr
    if not torch.cuda.is_available():
        no_gpu = _run(tmp_path / "x", "1")
        assert no_gpu.returncode == 2 and "no usable CUDA device" in no_gpu.stderr
        assert not (tmp_path / "x").exists()
