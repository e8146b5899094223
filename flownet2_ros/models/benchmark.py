"""Timing of the stacks (random weights: speed does not depend on the values)."""

from __future__ import annotations

import torch

from ..timing import median_ms
from .registry import build


def benchmark_stack(
    name: str,
    height: int = 384,
    width: int = 512,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    repeats: int = 3,
    thin: bool = False,
) -> dict[str, float | str]:
    """Median forward time (eval, batch 1) of stack ``name`` at ``height``×``width``."""
    model = build(name, thin=thin).to(device=device, dtype=dtype)
    image1 = torch.rand(1, 3, height, width, device=device, dtype=dtype) * 255
    image2 = torch.rand(1, 3, height, width, device=device, dtype=dtype) * 255
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    with torch.inference_mode():
        ms = median_ms(lambda: model(image1, image2), repeats, warmup=1, sync=sync)
    params = sum(p.numel() for p in model.parameters())
    return {
        "stack": name + ("-thin" if thin else ""),
        "ms": ms,
        "params_M": params / 1e6,
        "size": f"{width}x{height}",
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
    }
