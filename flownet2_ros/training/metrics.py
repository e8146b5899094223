"""Optical-flow error metrics: end-point error, outlier rates and KITTI's Fl-all.

All functions take flows as numpy arrays ``(H, W, 2)`` (channel last, u then v), in pixels, plus an
optional boolean ``valid`` mask (H, W). Pixels whose ground truth is not finite are treated as
invalid.

- EPE: ‖estimate − ground truth‖₂ per pixel.
- Outlier rates ``>1px``, ``>3px``, ``>5px``: share of valid pixels with EPE above the threshold.
- Fl (KITTI 2015): a pixel is an outlier when its EPE is > 3 px **and** > 5 % of the ground-truth
  magnitude; Fl-all is the share of outliers over all valid pixels.

``FlowMetrics`` accumulates over a data set: ``epe`` and ``fl_all`` are pixel-weighted (sum over all valid
pixels of all images / their count, as the KITTI devkit does); ``epe_per_image`` is the mean of the
per-image mean EPEs (they agree when every image has the same number of valid pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

OUTLIER_THRESHOLDS = (1.0, 3.0, 5.0)
FL_ABS_PX = 3.0
FL_REL = 0.05


def _check(estimate: NDArray, ground_truth: NDArray, valid: NDArray | None) -> NDArray[np.bool_]:
    if estimate.shape != ground_truth.shape or estimate.ndim != 3 or estimate.shape[2] != 2:
        raise ValueError(f"flows must both be (H, W, 2), got {estimate.shape} and {ground_truth.shape}")
    finite = np.isfinite(ground_truth).all(axis=2)
    if valid is None:
        return finite
    if valid.shape != estimate.shape[:2]:
        raise ValueError(f"valid mask {valid.shape} does not match the flow {estimate.shape[:2]}")
    return finite & valid.astype(bool)


def epe_map(estimate: NDArray, ground_truth: NDArray) -> NDArray[np.float64]:
    """Per-pixel end-point error (H, W)."""
    diff = np.asarray(estimate, np.float64) - np.asarray(ground_truth, np.float64)
    return np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2)


def average_epe(estimate: NDArray, ground_truth: NDArray, valid: NDArray | None = None) -> float:
    """Mean EPE over valid pixels (NaN when none is valid)."""
    mask = _check(estimate, ground_truth, valid)
    if not mask.any():
        return float("nan")
    return float(epe_map(estimate, ground_truth)[mask].mean())


def fl_outliers(estimate: NDArray, ground_truth: NDArray, valid: NDArray | None = None) -> NDArray[np.bool_]:
    """KITTI outlier map (H, W): EPE > 3 px and > 5 % of |ground truth|, False where invalid."""
    mask = _check(estimate, ground_truth, valid)
    epe = epe_map(estimate, ground_truth)
    gt = np.asarray(ground_truth, np.float64)
    magnitude = np.sqrt(gt[..., 0] ** 2 + gt[..., 1] ** 2)
    with np.errstate(invalid="ignore"):
        return mask & (epe > FL_ABS_PX) & (epe > FL_REL * magnitude)


def fl_all(estimate: NDArray, ground_truth: NDArray, valid: NDArray | None = None) -> float:
    """KITTI Fl-all in percent: share of valid pixels that are outliers (NaN when none is valid)."""
    mask = _check(estimate, ground_truth, valid)
    if not mask.any():
        return float("nan")
    return float(100.0 * fl_outliers(estimate, ground_truth, valid).sum() / mask.sum())


def sample_metrics(
    estimate: NDArray, ground_truth: NDArray, valid: NDArray | None = None
) -> dict[str, float]:
    """EPE, Fl-all and outlier rates (percent) of one image, plus its valid pixel count."""
    mask = _check(estimate, ground_truth, valid)
    count = int(mask.sum())
    if count == 0:
        nan = float("nan")
        return {"epe": nan, "fl_all": nan, **{_outlier_key(t): nan for t in OUTLIER_THRESHOLDS}, "pixels": 0}
    epe = epe_map(estimate, ground_truth)[mask]
    out = {"epe": float(epe.mean()), "fl_all": fl_all(estimate, ground_truth, valid)}
    for threshold in OUTLIER_THRESHOLDS:
        out[_outlier_key(threshold)] = float(100.0 * (epe > threshold).mean())
    out["pixels"] = count
    return out


def _outlier_key(threshold: float) -> str:
    return f"outliers_{threshold:g}px"


@dataclass
class FlowMetrics:
    """Accumulates per-pixel sums over many images (optionally grouped, e.g. by sequence)."""

    pixels: int = 0
    images: int = 0
    epe_sum: float = 0.0
    image_epe_sum: float = 0.0
    fl_count: int = 0
    outlier_counts: dict[float, int] = field(default_factory=lambda: dict.fromkeys(OUTLIER_THRESHOLDS, 0))

    def update(
        self, estimate: NDArray, ground_truth: NDArray, valid: NDArray | None = None
    ) -> dict[str, float]:
        """Add one image; returns its ``sample_metrics``."""
        mask = _check(estimate, ground_truth, valid)
        result = sample_metrics(estimate, ground_truth, valid)
        count = int(mask.sum())
        if count:
            epe = epe_map(estimate, ground_truth)[mask]
            self.pixels += count
            self.images += 1
            self.epe_sum += float(epe.sum())
            self.image_epe_sum += float(epe.mean())
            self.fl_count += int(fl_outliers(estimate, ground_truth, valid).sum())
            for threshold in OUTLIER_THRESHOLDS:
                self.outlier_counts[threshold] += int((epe > threshold).sum())
        return result

    def summary(self) -> dict[str, float]:
        """``epe`` (pixel-weighted), ``epe_per_image``, ``fl_all`` and outlier rates in percent, counts."""
        if not self.pixels:
            nan = float("nan")
            return {
                "epe": nan,
                "epe_per_image": nan,
                "fl_all": nan,
                **{_outlier_key(t): nan for t in OUTLIER_THRESHOLDS},
                "images": 0,
                "pixels": 0,
            }
        out = {
            "epe": self.epe_sum / self.pixels,
            "epe_per_image": self.image_epe_sum / self.images,
            "fl_all": 100.0 * self.fl_count / self.pixels,
        }
        for threshold in OUTLIER_THRESHOLDS:
            out[_outlier_key(threshold)] = 100.0 * self.outlier_counts[threshold] / self.pixels
        out["images"] = self.images
        out["pixels"] = self.pixels
        return out
