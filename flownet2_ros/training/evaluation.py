"""Evaluate a model or a backend on a data set: EPE, Fl-all, outlier rates, per-sequence tables, plots.

``evaluate(estimator, dataset)`` runs a torch stack (through ``FlowInference``, any image size) or any
``FlowEstimator`` backend (``.estimate(rgb1_uint8_hwc, rgb2_uint8_hwc) -> (H, W, 2)``) on every sample and
returns an ``EvaluationResult``; ``write_results`` stores ``results.json``, ``samples.csv``,
``sequences.csv`` and ``epe_per_sequence.png``; ``visualize`` > 0 also writes colour-coded flow panels.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .metrics import OUTLIER_THRESHOLDS, FlowMetrics


@dataclass
class EvaluationResult:
    """``summary``: metrics over the whole set (``metrics.FlowMetrics.summary``) + ``mean_time_ms``;
    ``sequences``: sequence → the same metrics; ``samples``: one dict per sample (name, sequence, metrics,
    time_ms)."""

    summary: dict[str, float]
    sequences: dict[str, dict[str, float]]
    samples: list[dict[str, Any]]
    label: str = ""
    dataset: str = ""
    files: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """Per-sequence EPE / Fl-all table, then the total, as aligned text."""
        width = max([8, *(len(s) for s in self.sequences)])
        lines = [f"{'sequence':<{width}}  {'images':>6}  {'EPE':>8}  {'Fl-all %':>8}  {'>3px %':>7}"]
        rows = [*self.sequences.items(), ("all", self.summary)]
        for name, m in rows:
            lines.append(
                f"{name:<{width}}  {int(m['images']):>6}  {m['epe']:>8.3f}  {m['fl_all']:>8.2f}  "
                f"{m['outliers_3px']:>7.2f}"
            )
        return "\n".join(lines)


FlowFunction = Callable[[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor], np.ndarray]


def _flow_function(
    estimator: Any, device: str | torch.device | None, mode: str
) -> tuple[FlowFunction, str, bool]:
    """A callable (rgb1_u8, rgb2_u8, image1_t, image2_t) → (H, W, 2), its label, whether it is CUDA."""
    if isinstance(estimator, nn.Module):
        from ..models import FlowInference

        # The model's own device and dtype, and no memory-format change: the trainer validates the very
        # module it trains, which the core would otherwise convert in place.
        param = next(estimator.parameters())
        runner = FlowInference(
            estimator,
            device=device or param.device,
            mode=mode,  # type: ignore[arg-type]
            dtype=param.dtype,
            channels_last=False,
        )

        def run_model(
            _a: np.ndarray, _b: np.ndarray, image1: torch.Tensor, image2: torch.Tensor
        ) -> np.ndarray:
            flow = runner(image1[None], image2[None])
            return flow[0].permute(1, 2, 0).cpu().numpy()

        return run_model, type(estimator).__name__, runner.device.type == "cuda"
    if hasattr(estimator, "estimate"):
        info = getattr(estimator, "info", None)
        label = f"{info.name}: {info.model}" if info is not None else type(estimator).__name__

        def run_backend(rgb1: np.ndarray, rgb2: np.ndarray, _a: torch.Tensor, _b: torch.Tensor) -> np.ndarray:
            return np.asarray(estimator.estimate(rgb1, rgb2), np.float32)

        return run_backend, label, False
    raise TypeError(
        f"cannot evaluate a {type(estimator).__name__}: expected a torch stack or a FlowEstimator"
    )


def _to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(image.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def _as_tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
    return tensor.to(dtype)


def evaluate(
    estimator: Any,
    dataset: Any,
    *,
    device: str | torch.device | None = None,
    mode: str = "resize",
    max_samples: int = 0,
    output_dir: str | Path | None = None,
    visualize: int = 0,
    progress: bool = True,
    label: str = "",
    dataset_label: str = "",
) -> EvaluationResult:
    """Run ``estimator`` on the first ``max_samples`` (0 = all) samples of ``dataset`` and score the flow.

    Args:
        estimator: a FlowNet 2.0 stack (``nn.Module``; run in eval mode through ``FlowInference`` on
            ``device``, frames fitted to multiples of 64 by ``mode``) or a ``FlowEstimator`` backend (frames
            passed as uint8 RGB).
        output_dir: when given, ``write_results`` writes JSON, CSV and the plot there, plus ``visualize``
            colour panels (frame 1 | ground truth | estimate | error) in ``output_dir/visualizations``.
    """
    was_training = isinstance(estimator, nn.Module) and estimator.training
    flow_of, auto_label, is_cuda = _flow_function(estimator, device, mode)
    count = len(dataset) if not max_samples else min(max_samples, len(dataset))
    if count == 0:
        raise ValueError("the evaluation data set is empty")
    total = FlowMetrics()
    per_sequence: dict[str, FlowMetrics] = {}
    samples: list[dict[str, Any]] = []
    panels: list[tuple[str, np.ndarray]] = []
    from tqdm import tqdm

    bar = tqdm(
        range(count),
        desc="evaluate",
        unit="pair",
        disable=not progress,
        file=sys.stderr,
        leave=False,
        delay=1.0,
    )
    try:
        for index in bar:
            sample = dataset[index]
            if "flow" not in sample:
                raise ValueError(
                    f"sample {sample.get('name', index)} has no ground-truth flow (a test split?)"
                )
            image1 = _as_tensor(sample["image1"], torch.float32)
            image2 = _as_tensor(sample["image2"], torch.float32)
            gt = _as_tensor(sample["flow"], torch.float32).permute(1, 2, 0).numpy()
            valid = sample.get("valid")
            valid_np = None if valid is None else _as_tensor(valid, torch.bool).numpy()
            rgb1, rgb2 = _to_uint8_hwc(image1), _to_uint8_hwc(image2)
            start = time.perf_counter()
            estimate = flow_of(rgb1, rgb2, image1, image2)
            if is_cuda:
                torch.cuda.synchronize()
            elapsed_ms = (time.perf_counter() - start) * 1000
            if estimate.shape != gt.shape:
                raise ValueError(f"estimate {estimate.shape} does not match the ground truth {gt.shape}")
            name = str(sample.get("name", index))
            sequence = str(sample.get("sequence", "") or "all")
            row = total.update(estimate, gt, valid_np)
            per_sequence.setdefault(sequence, FlowMetrics()).update(estimate, gt, valid_np)
            samples.append({"index": index, "name": name, "sequence": sequence, **row, "time_ms": elapsed_ms})
            if index < visualize:
                panels.append((name, _panel(rgb1, gt, estimate, valid_np)))
            if progress:
                bar.set_postfix(epe=f"{total.summary()['epe']:.3f}", refresh=False)
    finally:
        bar.close()
        if was_training:
            estimator.train()
    summary = total.summary()
    summary["mean_time_ms"] = float(np.mean([s["time_ms"] for s in samples]))
    result = EvaluationResult(
        summary=summary,
        sequences={name: m.summary() for name, m in sorted(per_sequence.items())},
        samples=samples,
        label=label or auto_label,
        dataset=dataset_label or type(dataset).__name__,
    )
    if output_dir is not None:
        write_results(result, output_dir, panels)
    return result


def _panel(rgb1: np.ndarray, gt: np.ndarray, estimate: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Frame 1 | ground truth | estimate (one colour scale: the largest valid GT magnitude) | EPE map."""
    from ..flowio import flow_to_color
    from .metrics import epe_map

    mask = np.isfinite(gt).all(axis=2) if valid is None else valid & np.isfinite(gt).all(axis=2)
    gt_clean = np.where(mask[..., None], gt, 0).astype(np.float32)
    magnitude = np.hypot(gt_clean[..., 0], gt_clean[..., 1])
    max_flow = float(magnitude.max()) if magnitude.size and magnitude.max() > 0 else 1.0
    gt_colour = flow_to_color(gt_clean, max_flow=max_flow)
    gt_colour[~mask] = 0
    est_colour = flow_to_color(np.nan_to_num(estimate).astype(np.float32), max_flow=max_flow)
    error = np.where(mask, epe_map(np.nan_to_num(estimate), gt_clean), 0.0)
    scale = max(3.0, float(np.percentile(error[mask], 99)) if mask.any() else 3.0)
    error_u8 = (np.clip(error / scale, 0, 1) * 255).astype(np.uint8)
    error_rgb = np.stack([error_u8, error_u8 // 2, 255 - error_u8], axis=2)
    error_rgb[~mask] = 0
    return np.concatenate([rgb1, gt_colour, est_colour, error_rgb], axis=1)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "sample"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(
    result: EvaluationResult, output_dir: str | Path, panels: list[tuple[str, np.ndarray]] | None = None
) -> dict[str, str]:
    """Write results.json, samples.csv, sequences.csv, epe_per_sequence.png (+ visualisations)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out / "results.json",
        "samples_csv": out / "samples.csv",
        "sequences_csv": out / "sequences.csv",
        "plot": out / "epe_per_sequence.png",
    }
    payload = {
        "model": result.label,
        "dataset": result.dataset,
        "summary": {k: _json_value(v) for k, v in result.summary.items()},
        "sequences": {s: {k: _json_value(v) for k, v in m.items()} for s, m in result.sequences.items()},
        "definitions": {
            "epe": "mean end-point error over all valid pixels (px)",
            "epe_per_image": "mean of the per-image mean EPEs (px)",
            "fl_all": "KITTI outliers (EPE > 3 px and > 5% of |GT|) among valid pixels (%)",
            **{f"outliers_{t:g}px": f"valid pixels with EPE > {t:g} px (%)" for t in OUTLIER_THRESHOLDS},
        },
    }
    files["json"].write_text(json.dumps(payload, indent=2) + "\n")
    sample_fields = list(result.samples[0]) if result.samples else ["index", "name", "sequence"]
    with files["samples_csv"].open("w", newline="") as handle:
        sample_writer = csv.DictWriter(handle, fieldnames=sample_fields)
        sample_writer.writeheader()
        sample_writer.writerows(result.samples)
    metric_fields = [k for k in result.summary if k != "mean_time_ms"]
    with files["sequences_csv"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sequence", *metric_fields])
        for name, m in [*result.sequences.items(), ("all", result.summary)]:
            writer.writerow([name, *(m.get(k, "") for k in metric_fields)])
    plot_epe_per_sequence(result, files["plot"])
    if panels:
        import cv2

        folder = out / "visualizations"
        folder.mkdir(exist_ok=True)
        for index, (name, panel) in enumerate(panels):
            path = folder / f"{index:04d}_{_safe_name(name)}.png"
            if not cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {path}")
        files["visualizations"] = folder
    result.files = {k: str(v) for k, v in files.items()}
    return result.files


def plot_epe_per_sequence(result: EvaluationResult, path: str | Path) -> None:
    """Bar chart of the mean EPE per sequence (matplotlib, Agg backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result.sequences)
    values = [result.sequences[n]["epe"] for n in names]
    fig_width = max(6.0, 0.45 * len(names) + 2)
    fig = Figure(figsize=(fig_width, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(range(len(names)), values, color="#3b75af")
    ax.axhline(
        result.summary["epe"], color="#c03b26", linestyle="--", label=f"all: {result.summary['epe']:.3f}"
    )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(
        names, rotation=60 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center"
    )
    ax.set_ylabel("EPE (px)")
    title = textwrap.fill(f"{result.label} on {result.dataset}", width=int(fig_width * 13))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
