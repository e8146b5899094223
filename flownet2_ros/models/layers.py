"""Building blocks shared by the FlowNet networks.

Each builder returns the exact module structure of NVIDIA's flownet2-pytorch (``nn.Sequential`` whose
``0`` is the convolution), so that state_dict keys such as ``conv1.0.weight`` match the published
checkpoints. The paper's thin variants scale every feature width by ``width`` (3/8 for FlowNet2-s);
image, flow (2) and correlation channels are never scaled.
"""

from __future__ import annotations

from torch import nn

LEAKY_SLOPE = 0.1
THIN_WIDTH = 3 / 8
"""Width multiplier of the paper's thin networks ("FlowNet2-s", "-ss", "-css")."""


def scaled(channels: int, width: float) -> int:
    """Feature width of a layer with ``channels`` channels in the full network, at multiplier ``width``."""
    if width <= 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    return max(1, round(channels * width))


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv2d (same padding, bias) → LeakyReLU(0.1). (B, in, H, W) → (B, out, H/stride, W/stride)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=True),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


def iconv(in_channels: int, out_channels: int) -> nn.Sequential:
    """3×3 Conv2d without activation (FlowNetSD and fusion "inter" convolutions)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, padding=1, bias=True))


def deconv(in_channels: int, out_channels: int) -> nn.Sequential:
    """ConvTranspose2d(4, stride 2, pad 1) → LeakyReLU(0.1). (B, in, H, W) → (B, out, 2H, 2W)."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, 2, padding=1, bias=True),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


def predict_flow(in_channels: int) -> nn.Conv2d:
    """3×3 Conv2d to a 2-channel flow (u, v). (B, in, H, W) → (B, 2, H, W)."""
    return nn.Conv2d(in_channels, 2, 3, 1, padding=1, bias=True)


def upsample_flow(bias: bool) -> nn.ConvTranspose2d:
    """Learned ×2 upsampling of a flow field. (B, 2, H, W) → (B, 2, 2H, 2W)."""
    return nn.ConvTranspose2d(2, 2, 4, 2, padding=1, bias=bias)
