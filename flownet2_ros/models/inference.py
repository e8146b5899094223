"""Flow for images of any size: fit the frames to the network's multiples of 64, map the flow back."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

SizeMode = Literal["resize", "pad"]

#: Every network input side is a multiple of this (FlowNet's six stride-2 stages).
NETWORK_STRIDE = 64
#: Default cap on the automatic network size (height x width): about 1024 x 576.
DEFAULT_MAX_NETWORK_PIXELS = 1024 * 576


def network_size_for(
    height: int, width: int, mode: SizeMode = "resize", max_pixels: int | None = None
) -> tuple[int, int]:
    """Network input size for an image: nearest multiples of 64 (resize) or the next ones up (pad).

    ``max_pixels`` (resize mode only) caps the size: a larger frame is scaled down, keeping its aspect
    ratio, to the largest multiples of 64 whose product fits (at least 64 x 64), so a 4K frame does not run
    the network at 4K; the caller resizes the flow back and scales its vectors.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    s = NETWORK_STRIDE
    if mode == "pad":
        return -(-height // s) * s, -(-width // s) * s
    size = max(s, round(height / s) * s), max(s, round(width / s) * s)
    if max_pixels is None or size[0] * size[1] <= max_pixels:
        return size
    scale = (max_pixels / (height * width)) ** 0.5
    net_h, net_w = max(s, int(height * scale / s) * s), max(s, int(width * scale / s) * s)
    while net_h * net_w > max_pixels and max(net_h, net_w) > s:  # flooring both sides nearly always fits
        if net_h >= net_w:
            net_h -= s
        else:
            net_w -= s
    return net_h, net_w


def resize_flow(flow: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize of a flow (B, 2, h, w) to (B, 2, height, width), vectors rescaled: u·width/w, v·height/h."""
    h, w = flow.shape[-2:]
    if (h, w) == (height, width):
        return flow
    resized = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
    scale = torch.tensor([width / w, height / h], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
    return resized * scale


class FlowInference:
    """Runs a stack in eval mode on frames of any size.

    ``mode="resize"``: both frames are resized (bilinear) to the network size — by default the nearest
    multiples of 64 — and the flow is resized back with vectors scaled by the size ratio (the way the
    published networks are meant to be used on arbitrary images). ``mode="pad"``: frames are padded at the
    bottom/right by edge replication to the next multiples of 64 and the flow is cropped (no rescaling).
    """

    def __init__(
        self,
        model: nn.Module,
        network_size: tuple[int, int] | None = None,
        mode: SizeMode = "resize",
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if mode not in ("resize", "pad"):
            raise ValueError(f"mode must be 'resize' or 'pad', got {mode!r}")
        if network_size is not None and (
            network_size[0] % 64 or network_size[1] % 64 or min(network_size) <= 0
        ):
            raise ValueError(f"network size must be positive multiples of 64, got {network_size}")
        if device is None:
            device = next(model.parameters()).device
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.network_size = network_size
        self.mode: SizeMode = mode

    @torch.inference_mode()
    def __call__(self, image1: Tensor, image2: Tensor) -> Tensor:
        """image1, image2: (B, 3, H, W) RGB 0..255 on any device → flow (B, 2, H, W) float32 in pixels."""
        if image1.shape != image2.shape or image1.dim() != 4 or image1.shape[1] != 3:
            raise ValueError(
                f"expected two (B, 3, H, W) images of one shape, got {tuple(image1.shape)} and {tuple(image2.shape)}"
            )
        height, width = image1.shape[-2:]
        net_h, net_w = self.network_size or network_size_for(height, width, self.mode)
        pair = torch.cat((image1, image2), dim=0).to(self.device, self.dtype)
        if self.mode == "pad":
            if net_h < height or net_w < width:
                raise ValueError(f"network size {net_h}x{net_w} is smaller than the image {height}x{width}")
            pair = F.pad(pair, (0, net_w - width, 0, net_h - height), mode="replicate")
        elif (net_h, net_w) != (height, width):
            pair = F.interpolate(pair, size=(net_h, net_w), mode="bilinear", align_corners=False)
        first, second = pair.chunk(2, dim=0)
        flow = self.model(first, second).float()
        if self.mode == "pad":
            return flow[..., :height, :width]
        return resize_flow(flow, height, width)

    def estimate(self, rgb1: np.ndarray, rgb2: np.ndarray) -> np.ndarray:
        """Two (H, W, 3) uint8 RGB arrays → flow (H, W, 2) float32, pixels, u then v."""
        if rgb1.shape != rgb2.shape or rgb1.ndim != 3 or rgb1.shape[2] != 3:
            raise ValueError(
                f"expected two (H, W, 3) RGB images of one shape, got {rgb1.shape} and {rgb2.shape}"
            )
        tensors = [
            torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() for a in (rgb1, rgb2)
        ]
        flow = self(tensors[0], tensors[1])
        return flow[0].permute(1, 2, 0).contiguous().cpu().numpy()
