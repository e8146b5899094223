"""Backward warping with a flow field (FlowNet 2.0's Resample2d) in plain PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .correlation import prefers_channels_last

__all__ = ["Warp", "warp"]

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Warp ``image`` backwards with ``flow`` (Resample2d semantics).

    ``out[b, :, y, x]`` is the bilinear sample of ``image[b]`` at (x + u, y + v), ``u = flow[b, 0, y, x]``
    (rightwards), ``v = flow[b, 1, y, x]`` (downwards); each of the four neighbours' coordinates is clamped
    into the image (border replication). Implemented as ``grid_sample(mode="bilinear",
    padding_mode="border", align_corners=True)``; differentiable with respect to both inputs.
    float16/bfloat16 inputs are computed in float32 and cast back. The image is read in place whatever its
    strides; for a channels_last image (:func:`~.correlation.prefers_channels_last`) the result is
    channels_last too (CUDA's grid_sample makes it so in recent PyTorch; elsewhere its NCHW result is
    converted), so a concatenation with other channels_last tensors stays channels_last.

    Args:
        image (Tensor): (B, C, H, W).
        flow (Tensor): (B, 2, H, W) in pixels, floating point.

    Returns:
        Tensor: (B, C, H, W), dtype of ``image``.

    Raises:
        ValueError: if the shapes do not fit together or the inputs are not floating point.
    """
    if image.dim() != 4:
        raise ValueError(f"image must be 4-D (B, C, H, W), got shape {tuple(image.shape)}")
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, H, W), got shape {tuple(flow.shape)}")
    batch, _, height, width = image.shape
    if flow.shape[0] != batch or flow.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"flow {tuple(flow.shape)} does not match image {tuple(image.shape)} in batch or spatial size"
        )
    if not image.is_floating_point() or not flow.is_floating_point():
        raise ValueError(f"image and flow must be floating point, got {image.dtype} and {flow.dtype}")
    if image.device != flow.device:
        raise ValueError(f"image and flow must be on the same device, got {image.device} and {flow.device}")
    compute = torch.float32 if image.dtype in _HALF_DTYPES else image.dtype
    img = image.to(compute)
    flw = flow.to(compute)
    xs = torch.arange(width, dtype=compute, device=image.device).view(1, 1, width)
    ys = torch.arange(height, dtype=compute, device=image.device).view(1, height, 1)
    # Normalise to [-1, 1] (align_corners=True); a size-1 axis maps every coordinate onto its single pixel.
    gx = (xs + flw[:, 0]) * (2.0 / max(width - 1, 1)) - 1.0
    gy = (ys + flw[:, 1]) * (2.0 / max(height - 1, 1)) - 1.0
    if width == 1:
        gx = torch.zeros_like(gx)
    if height == 1:
        gy = torch.zeros_like(gy)
    grid = torch.stack((gx, gy), dim=-1)  # (B, H, W, 2)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)
    if prefers_channels_last(image):
        out = out.contiguous(memory_format=torch.channels_last)  # no-op where grid_sample kept it
    return out.to(image.dtype)


class Warp(nn.Module):
    """Module wrapper of :func:`warp` (Resample2d); no parameters.

    Shape:
        - image: (B, C, H, W)
        - flow: (B, 2, H, W)
        - output: (B, C, H, W)
    """

    def forward(self, image: Tensor, flow: Tensor) -> Tensor:
        return warp(image, flow)
