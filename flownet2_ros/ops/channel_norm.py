"""Per-pixel L2 norm over channels (FlowNet 2.0's ChannelNorm) in plain PyTorch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .correlation import prefers_channels_last

__all__ = ["ChannelNorm", "channel_norm"]

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def channel_norm(x: Tensor) -> Tensor:
    """L2 norm over the channel axis, keeping it as a single channel.

    ``out[b, 0, y, x] = sqrt(Σ_c x[b, c, y, x]²)``. The gradient at an all-zero pixel is 0 (not NaN).
    float16/bfloat16 inputs are accumulated in float32 and cast back. A channels_last input
    (:func:`~.correlation.prefers_channels_last`) is reduced in place over its contiguous channel axis and
    gives a channels_last result (strides (H·W, 1, W, 1)), so a concatenation with other channels_last
    tensors stays channels_last.

    Args:
        x (Tensor): (B, C, H, W) (any rank >= 2 works: the norm is taken over dim 1).

    Returns:
        Tensor: (B, 1, H, W), dtype of ``x``.

    Raises:
        ValueError: if ``x`` has fewer than 2 dimensions or is not floating point.
    """
    if x.dim() < 2:
        raise ValueError(f"x must have a channel dimension (B, C, ...), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got {x.dtype}")
    compute = torch.float32 if x.dtype in _HALF_DTYPES else x.dtype
    if prefers_channels_last(x):  # the NHWC view; its (B, H, W, 1) norm permuted back is channels_last
        nhwc = x.permute(0, 2, 3, 1).to(compute)
        return torch.linalg.vector_norm(nhwc, ord=2, dim=-1, keepdim=True).permute(0, 3, 1, 2).to(x.dtype)
    return torch.linalg.vector_norm(x.to(compute), ord=2, dim=1, keepdim=True).to(x.dtype)


class ChannelNorm(nn.Module):
    """Module wrapper of :func:`channel_norm`; no parameters.

    Shape:
        - input: (B, C, H, W)
        - output: (B, 1, H, W)
    """

    def forward(self, x: Tensor) -> Tensor:
        return channel_norm(x)
