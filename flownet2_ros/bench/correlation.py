"""Timing of the fast correlation against the straightforward reference."""

from __future__ import annotations

from typing import Any

import torch

from ..ops.correlation import correlation, correlation_naive
from .timing import median_ms

__all__ = ["FLOWNETC_CORRELATION", "benchmark_correlation"]

#: FlowNetC's correlation configuration (keyword arguments of :func:`correlation`).
FLOWNETC_CORRELATION: dict[str, int] = {
    "pad_size": 20,
    "kernel_size": 1,
    "max_displacement": 20,
    "stride1": 1,
    "stride2": 2,
}


def benchmark_correlation(
    repeats: int = 5,
    device: str | torch.device = "cpu",
    shape: tuple[int, int, int, int] = (1, 256, 48, 64),
    dtype: torch.dtype = torch.float32,
    naive_repeats: int | None = None,
    warmup: int = 1,
) -> dict[str, Any]:
    """Time :func:`correlation` against :func:`correlation_naive` (forward, no autograd).

    The default shape is FlowNetC's conv3 feature map at 384×512 input, with FlowNetC's configuration.

    Args:
        repeats (int): timed runs of the fast op (the median is reported).
        device (str | torch.device): where to run.
        shape (tuple[int, int, int, int]): feature map shape (B, C, H, W) of both inputs.
        dtype (torch.dtype): input dtype.
        naive_repeats (int | None): timed runs of the naive op; default ``repeats``.
        warmup (int): untimed runs of each op before timing.

    Returns:
        dict[str, Any]: ``fast_ms`` and ``naive_ms`` (medians), ``speedup`` (naive / fast),
        ``max_abs_diff`` between the two outputs, ``shape``, ``output_shape``, ``config``, ``device``,
        ``dtype``, ``threads`` (torch intra-op threads), ``repeats``, ``naive_repeats``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n_naive = repeats if naive_repeats is None else naive_repeats
    if n_naive < 1:
        raise ValueError(f"naive_repeats must be >= 1, got {n_naive}")
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(shape, generator=gen).to(device=dev, dtype=dtype)
    x2 = torch.randn(shape, generator=gen).to(device=dev, dtype=dtype)
    cfg = FLOWNETC_CORRELATION
    with torch.no_grad():
        for _ in range(warmup):
            correlation(x1, x2, **cfg)
            correlation_naive(x1, x2, **cfg)
        sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
        fast_ms = median_ms(lambda: correlation(x1, x2, **cfg), repeats, sync=sync)
        naive_ms = median_ms(lambda: correlation_naive(x1, x2, **cfg), n_naive, sync=sync)
        fast_out = correlation(x1, x2, **cfg)
        naive_out = correlation_naive(x1, x2, **cfg)
        max_diff = (fast_out.float() - naive_out.float()).abs().max().item()
    return {
        "fast_ms": fast_ms,
        "naive_ms": naive_ms,
        "speedup": naive_ms / fast_ms if fast_ms > 0 else float("inf"),
        "max_abs_diff": max_diff,
        "shape": list(shape),
        "output_shape": list(fast_out.shape),
        "config": dict(cfg),
        "device": str(dev),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "naive_repeats": n_naive,
    }
