"""Metrics on hand-computed cases, evaluate() with a backend and a torch model, and flownet2-evaluate."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from flownet2_ros.cli import evaluate as evaluate_cli
from flownet2_ros.models import build, save_checkpoint
from flownet2_ros.training import (
    FlowMetrics,
    average_epe,
    epe_map,
    evaluate,
    fl_all,
    fl_outliers,
    sample_metrics,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def flows(*vectors: tuple[float, float]) -> np.ndarray:
    """A 1×N flow field from (u, v) vectors."""
    return np.array([list(vectors)], dtype=np.float32)


# --------------------------------------------------------------------------------------------- metrics


def test_epe_hand_computed() -> None:
    gt = flows((0, 0), (3, 4), (1, 1))
    est = flows((3, 4), (3, 4), (1, 1))
    assert epe_map(est, gt).tolist() == [[5.0, 0.0, 0.0]]
    assert average_epe(est, gt) == pytest.approx(5 / 3)
    assert average_epe(est, gt, np.array([[False, True, True]])) == 0.0
    assert math.isnan(average_epe(est, gt, np.zeros((1, 3), bool)))
    gt_nan = gt.copy()
    gt_nan[0, 0] = np.nan  # non-finite ground truth counts as invalid
    assert average_epe(est, gt_nan) == 0.0


def test_fl_all_needs_3px_and_5_percent() -> None:
    gt = flows((100, 0), (10, 0), (0, 0), (100, 0), (50, 0))
    est = flows((104, 0), (14, 0), (2, 0), (106, 0), (53.5, 0))
    # EPE 4 but 4% of 100 → inlier; EPE 4 and 40% → outlier; EPE 2 → inlier; EPE 6 and 6% → outlier;
    # EPE 3.5 and 7% → outlier
    assert fl_outliers(est, gt).tolist() == [[False, True, False, True, True]]
    assert fl_all(est, gt) == pytest.approx(60.0)
    valid = np.array([[True, True, True, False, False]])
    assert fl_all(est, gt, valid) == pytest.approx(100 / 3)
    row = sample_metrics(est, gt, valid)
    assert row["pixels"] == 3 and row["outliers_3px"] == pytest.approx(200 / 3)
    assert row["outliers_1px"] == pytest.approx(100.0) and row["outliers_5px"] == 0.0


def test_flow_metrics_pixel_weighted_and_per_image() -> None:
    metrics = FlowMetrics()
    metrics.update(flows((1, 0), (1, 0), (1, 0)), flows((0, 0), (0, 0), (0, 0)))  # 3 px, EPE 1
    metrics.update(flows((4, 0)), flows((0, 0)))  # 1 px, EPE 4
    metrics.update(flows((9, 0)), flows((0, 0)), np.zeros((1, 1), bool))  # nothing valid: ignored
    summary = metrics.summary()
    assert summary["images"] == 2 and summary["pixels"] == 4
    assert summary["epe"] == pytest.approx((3 + 4) / 4)
    assert summary["epe_per_image"] == pytest.approx((1 + 4) / 2)
    assert summary["fl_all"] == pytest.approx(25.0)
    assert math.isnan(FlowMetrics().summary()["epe"])
    with pytest.raises(ValueError, match="H, W, 2"):
        sample_metrics(np.zeros((2, 2)), np.zeros((2, 2)))


# ------------------------------------------------------------------------------------------ evaluate()


class Translations(Dataset):
    """Random textures shifted by a known integer translation; KITTI-like sparse valid masks."""

    def __init__(self, count: int, height: int = 48, width: int = 80) -> None:
        self.count, self.height, self.width = count, height, width

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng(index)
        dx, dy = (int(v) for v in rng.integers(-3, 4, size=2))
        texture = rng.uniform(0, 255, (3, self.height + 8, self.width + 8)).astype(np.float32)
        image1 = texture[:, 4 : 4 + self.height, 4 : 4 + self.width]
        image2 = texture[:, 4 - dy : 4 - dy + self.height, 4 - dx : 4 - dx + self.width]
        flow = np.empty((2, self.height, self.width), np.float32)
        flow[0], flow[1] = dx, dy
        return {
            "image1": torch.from_numpy(np.ascontiguousarray(image1)),
            "image2": torch.from_numpy(np.ascontiguousarray(image2)),
            "flow": torch.from_numpy(flow),
            "valid": torch.from_numpy(rng.random((self.height, self.width)) > 0.3),
            "name": f"pair/{index}",
            "sequence": f"seq{index % 2}",
        }


class Oracle:
    """A FlowEstimator stand-in returning the ground truth plus a constant error."""

    def __init__(self, dataset: Translations, error: tuple[float, float]) -> None:
        self.dataset, self.error, self.calls = dataset, error, 0

    def estimate(self, rgb1: np.ndarray, rgb2: np.ndarray) -> np.ndarray:
        assert rgb1.dtype == np.uint8 and rgb1.shape == (self.dataset.height, self.dataset.width, 3)
        flow = self.dataset[self.calls]["flow"].permute(1, 2, 0).numpy().copy()
        self.calls += 1
        return flow + np.array(self.error, np.float32)


def test_evaluate_backend_writes_results(tmp_path: Path) -> None:
    data = Translations(4)
    result = evaluate(Oracle(data, (3.0, 4.0)), data, output_dir=tmp_path, visualize=2, progress=False)
    assert result.summary["epe"] == pytest.approx(5.0)
    assert result.summary["images"] == 4 and result.summary["outliers_3px"] == pytest.approx(100.0)
    assert list(result.sequences) == ["seq0", "seq1"] and result.sequences["seq0"]["images"] == 2
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"]["epe"] == pytest.approx(5.0) and set(saved["sequences"]) == {"seq0", "seq1"}
    with (tmp_path / "samples.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["pair/0", "pair/1", "pair/2", "pair/3"]
    with (tmp_path / "sequences.csv").open() as handle:
        assert [r["sequence"] for r in csv.DictReader(handle)] == ["seq0", "seq1", "all"]
    assert (tmp_path / "epe_per_sequence.png").stat().st_size > 1000
    panels = sorted((tmp_path / "visualizations").iterdir())
    assert len(panels) == 2
    import cv2

    assert cv2.imread(str(panels[0])).shape == (48, 4 * 80, 3)
    assert "seq0" in result.table() and "all" in result.table()


def test_evaluate_torch_model_any_size() -> None:
    model = build("FlowNet2S", width=0.125)
    model.train()
    result = evaluate(model, Translations(2), max_samples=1, progress=False)
    assert result.summary["images"] == 1 and math.isfinite(result.summary["epe"])
    assert model.training  # restored
    with pytest.raises(TypeError, match="cannot evaluate"):
        evaluate(object(), Translations(1), progress=False)


# ------------------------------------------------------------------------------------------------ CLI


def test_evaluate_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--checkpoint",
        "--engine",
        "--backend",
        "--dataset",
        "--root",
        "--synthetic",
        "--visualize",
    ):
        assert flag in out
    assert all(action.help for action in evaluate_cli.build_parser()._actions)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--synthetic", "2"], "--checkpoint PATH or --engine PATH"),
        (["--checkpoint", "{ckpt}"], "exactly one of --dataset"),
        (["--checkpoint", "{ckpt}", "--dataset", "Sintel"], "needs --root"),
        (["--checkpoint", "{ckpt}", "--dataset", "Sintel", "--root", "/nonexistent"], "root not found"),
        (["--checkpoint", "{ckpt}", "--dataset", "Middlebury", "--root", "{tmp}"], "unknown data set"),
        (["--checkpoint", "/nonexistent.pth", "--synthetic", "2"], "checkpoint not found"),
        (["--engine", "/nonexistent.engine", "--synthetic", "2"], "tensorrt"),
    ],
)
def test_evaluate_cli_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    ckpt = tmp_path / "s.pth.tar"
    save_checkpoint(ckpt, build("FlowNet2S", width=0.125))
    argv = [a.replace("{ckpt}", str(ckpt)).replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.main([*argv, "--output", str(tmp_path / "out"), "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flownet2-evaluate: error:") and message in err[0], err


def test_evaluate_cli_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "s.pth.tar"
    save_checkpoint(ckpt, build("FlowNet2S", width=0.125))
    argv = ["--checkpoint", str(ckpt), "--synthetic", "2", "--size", "80x48", "--device", "cpu"]
    assert evaluate_cli.main([*argv, "--output", str(tmp_path / "out"), "--visualize", "1", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["images"] == 2 and summary["epe"] > 0
    assert (tmp_path / "out" / "results.json").is_file()
    assert len(list((tmp_path / "out" / "visualizations").iterdir())) == 1


# ---------------------------------------------------------------------- flownet2-compare's table (#15)


def test_comparison_table_has_three_columns_per_set() -> None:
    from flownet2_ros.training.comparison import ComparisonRow, markdown_table

    sets = ("synthetic", "photos", "photos_large")
    rows = [
        ComparisonRow(method, name, epe=1.0 + i + 10 * j, fl_all=5.0, time_ms=7.25, pairs=12)
        for i, method in enumerate(("FlowNet2S", "OpenCV dis_fast"))
        for j, name in enumerate(sets)
    ]
    lines = markdown_table(rows, "a test machine").splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["method"] + [f"{s} {c}" for s in sets for c in ("EPE px", "Fl-all %", "ms/pair")]
    assert lines[1].count("|") == len(header) + 1
    assert lines[3] == "| OpenCV dis_fast | 2.00 | 5.0 | 7.2 | 12.00 | 5.0 | 7.2 | 22.00 | 5.0 | 7.2 |"
    assert "photos_large: 12 pairs" in lines[-1] and "a test machine" in lines[-1]
