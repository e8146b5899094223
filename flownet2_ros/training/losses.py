"""The multi-scale training loss of FlowNet / FlowNet 2.0.

Each prediction of the trained network (finest first) is compared with the ground-truth flow brought to
that prediction's scale: the target is multiplied by ``1 / flow_scale`` (the networks predict flow /
div_flow, i.e. ``flow_scale`` = ``model.train_flow_scale`` = 20 for the C/S/SD heads, 1 for the fusion
network) and downsampled by average pooling with a window equal to the resolution ratio. Sparse ground
truth (KITTI) is pooled with a mask: sum of the valid vectors / number of valid pixels in the window, a
coarse pixel being valid when at least one fine pixel under it is, so invalid pixels never leak in.

Weightings (spec, "Training facts"), finest first:

- ``"caffe"`` (default, the paper's): flow2 0.005, flow3 0.01, flow4 0.02, flow5 0.08, flow6 0.32.
- ``"pytorch"`` (NVIDIA's port): 0.32 / 2^k: 0.32, 0.16, 0.08, 0.04, 0.02.

The fusion network's three outputs (flow0 full, flow1 1/2, flow2 1/4 resolution, in pixels) have no
published weights. Its job is the final full-resolution flow and it is shallow, so the coarse-first
rationale of the Caffe weights does not apply: both named weightings use the 0.32 / 2^k rule finest first,
(0.32, 0.16, 0.08). A single prediction (a tensor) gets weight 1. Any explicit sequence of weights (one per
prediction, finest first) may be given instead.

Norms: ``"EPE"`` (alias ``"L2"``) = mean over valid pixels of the Euclidean norm of the error vector (the
Caffe nets' per-scale loss); ``"L1"`` = mean absolute error over valid pixels and both components (NVIDIA's
default ``L1Loss``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CAFFE_WEIGHTS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.08, 0.32)
"""flow2 … flow6 (finest first): the original Caffe training nets, coarse scales highest."""
PYTORCH_WEIGHTS: tuple[float, ...] = (0.32, 0.16, 0.08, 0.04, 0.02)
"""flow2 … flow6 (finest first): NVIDIA's flownet2-pytorch ``MultiScale`` loss, 0.32 / 2^k."""
FUSION_WEIGHTS: tuple[float, ...] = (0.32, 0.16, 0.08)
"""flow0, flow1, flow2 of the fusion network under either named weighting (see the module docstring)."""

WEIGHTINGS = ("caffe", "pytorch")
NORMS = ("EPE", "L2", "L1")


def weights_for(weighting: str | Sequence[float], count: int) -> tuple[float, ...]:
    """Loss weights for ``count`` predictions (finest first) under a named weighting or an explicit list."""
    if count < 1:
        raise ValueError("no predictions to weight")
    if isinstance(weighting, str):
        key = weighting.lower()
        if key not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {weighting!r}; expected caffe, pytorch or a list")
        if count == 1:
            return (1.0,)
        if count == 3:
            return FUSION_WEIGHTS
        if count == 5:
            return CAFFE_WEIGHTS if key == "caffe" else PYTORCH_WEIGHTS
        raise ValueError(
            f"{count} predictions: named weightings cover 5 (C/S/SD heads), 3 (fusion) or 1; give a list"
        )
    weights = tuple(float(w) for w in weighting)
    if len(weights) != count:
        raise ValueError(f"{len(weights)} loss weights for {count} predictions")
    if any(not w >= 0 for w in weights):
        raise ValueError(f"loss weights must be >= 0, got {weights}")
    return weights


def downsample_flow(flow: Tensor, ratio: int, valid: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Average-pool a flow (B, 2, H, W) by ``ratio`` (window = stride = ratio); values are not rescaled.

    With ``valid`` (B, H, W) bool: masked average (sum of valid vectors / count of valid pixels), and the
    returned mask marks coarse pixels with at least one valid pixel. Invalid input values (even NaN) never
    reach the output.
    """
    if ratio == 1:
        if valid is None:
            return flow, None
        return torch.where(valid[:, None], flow, torch.zeros((), dtype=flow.dtype, device=flow.device)), valid
    if valid is None:
        return F.avg_pool2d(flow, ratio, ratio), None
    mask = valid[:, None].to(flow.dtype)
    zero = torch.zeros((), dtype=flow.dtype, device=flow.device)
    total = F.avg_pool2d(torch.where(valid[:, None], flow, zero), ratio, ratio)
    count = F.avg_pool2d(mask, ratio, ratio)
    coarse_valid = count > 0
    pooled = torch.where(coarse_valid, total / count.clamp_min(torch.finfo(flow.dtype).tiny), zero)
    return pooled, coarse_valid[:, 0]


def _scale_ratio(target_hw: tuple[int, int], pred_hw: tuple[int, int]) -> int:
    (th, tw), (ph, pw) = target_hw, pred_hw
    if ph == 0 or pw == 0 or th % ph or tw % pw or th // ph != tw // pw:
        raise ValueError(
            f"prediction {ph}x{pw} is not the target {th}x{tw} reduced by one integer factor "
            "(crop sizes must be multiples of 64)"
        )
    return th // ph


def _masked_mean(values: Tensor, valid: Tensor | None) -> Tensor:
    """Mean of (B, H, W) values over valid pixels (0 when none is valid)."""
    if valid is None:
        return values.mean()
    return torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum() / (
        valid.sum().clamp_min(1)
    )


class MultiScaleLoss(nn.Module):
    """Weighted sum over scales of the per-scale loss; see the module docstring.

    ``forward(predictions, target, valid=None) -> (loss, epe)``: ``predictions`` a tuple finest first (the
    training output of a stack) or one tensor, in units of pixels / ``div_flow``; ``target`` (B, 2, H, W)
    in pixels at input resolution; ``valid`` optional (B, H, W) bool. ``epe`` maps ``flow<k>`` (k = 2..6 for
    five predictions, 0..2 for three, ``flow`` for one) to that scale's detached mean EPE in input-resolution
    pixels against the pooled target.

    Args:
        weights: ``"caffe"`` (default), ``"pytorch"`` or one weight per prediction, finest first.
        norm: ``"EPE"`` / ``"L2"`` (Euclidean error, default) or ``"L1"``.
        div_flow: the unit of the predictions (``model.train_flow_scale``: 20 for C/S/SD, 1 for fusion).
    """

    def __init__(
        self, weights: str | Sequence[float] = "caffe", norm: str = "EPE", div_flow: float = 20.0
    ) -> None:
        super().__init__()
        if isinstance(weights, str):
            weights_for(weights, 5)  # validates the name
        if norm.upper() not in NORMS:
            raise ValueError(f"unknown loss norm {norm!r}; expected EPE, L2 or L1")
        if not div_flow > 0:
            raise ValueError(f"div_flow must be > 0, got {div_flow}")
        self.weights: str | tuple[float, ...] = (
            weights if isinstance(weights, str) else tuple(float(w) for w in weights)
        )
        self.norm = "L1" if norm.upper() == "L1" else "EPE"
        self.div_flow = float(div_flow)

    @staticmethod
    def scale_names(count: int) -> list[str]:
        """Names of ``count`` predictions, finest first: flow2..flow6, flow0..flow2, or flow."""
        if count == 1:
            return ["flow"]
        first = 0 if count == 3 else 2
        return [f"flow{first + k}" for k in range(count)]

    def forward(
        self, predictions: Tensor | Sequence[Tensor], target: Tensor, valid: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        preds = [predictions] if isinstance(predictions, Tensor) else list(predictions)
        if target.dim() != 4 or target.shape[1] != 2:
            raise ValueError(f"target must be (B, 2, H, W), got {tuple(target.shape)}")
        if valid is not None and (valid.shape != (target.shape[0], *target.shape[2:])):
            raise ValueError(f"valid must be (B, H, W) = {(target.shape[0], *target.shape[2:])}")
        if valid is not None:
            valid = valid.bool()
        weights = weights_for(self.weights, len(preds))
        names = self.scale_names(len(preds))
        total = target.new_zeros(())
        epe: dict[str, Tensor] = {}
        for name, weight, pred in zip(names, weights, preds, strict=True):
            pred = pred.float()
            ratio = _scale_ratio(tuple(target.shape[2:]), tuple(pred.shape[2:]))  # type: ignore[arg-type]
            pooled, pooled_valid = downsample_flow(target.float(), ratio, valid)
            scaled_target = pooled / self.div_flow
            diff = pred - scaled_target
            if self.norm == "L1":
                per_pixel = diff.abs().mean(dim=1)
            else:
                per_pixel = torch.linalg.vector_norm(diff, dim=1)
            if weight:
                total = total + weight * _masked_mean(per_pixel, pooled_valid)
            with torch.no_grad():
                error_px = torch.linalg.vector_norm(diff.detach() * self.div_flow, dim=1)
                epe[name] = _masked_mean(error_px, pooled_valid)
        return total, epe
