"""Timing of the correlation: the torch op against the straightforward reference, and the CUDA kernel
(fast, tiled and naive variants, NCHW against channels-last inputs) against the torch op."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ..ops.correlation import correlation, correlation_naive
from ..ops.cuda_correlation import FLOWNETC_PARAMS, CorrelationParams, correlation_cuda, launch_config
from .timing import median_ms

__all__ = ["FLOWNETC_CORRELATION", "benchmark_correlation", "benchmark_cuda_correlation"]

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


def _cuda_median_ms(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median GPU time of ``fn()`` in milliseconds (CUDA events on the current stream)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def benchmark_cuda_correlation(
    shape: tuple[int, int, int, int] = (1, 256, 48, 64),
    dtype: str = "float32",
    params: CorrelationParams = FLOWNETC_PARAMS,
    repeats: int = 50,
    warmup: int = 5,
    device: str = "cuda",
    include_torch: bool = True,
) -> dict[str, Any]:
    """Time the CUDA correlation kernel on one GPU: fast, tiled and naive variants, the torch op, and the
    fast kernel on channels-last (NHWC) inputs.

    The default shape is FlowNetC's conv3 output at 384×512 input (use (1, 256, 56, 128) for 448×1024).
    ``nhwc`` runs the fast kernel on channels_last inputs as the channels_last model does (read in place,
    channels_last output); ``nhwc_copies`` is what that cost before the kernel took strides: the inputs
    copied to NCHW, the kernel, the output copied back to channels_last.

    Returns:
        dict: shape, dtype, params, device name, variant, first-call seconds (compilation and loading),
        ``*_ms`` medians for ``fast`` (auto variant, NCHW), ``nhwc``, ``nhwc_copies``, ``tiled``, ``naive``
        and ``torch``, speedups of ``fast`` over tiled/naive/torch (``speedup_vs_*``), ``nhwc_vs_nchw``
        (fast_ms / nhwc_ms: above 1 when NHWC is faster) and ``nhwc_vs_copies`` (nhwc_copies_ms /
        nhwc_ms), and the largest absolute difference of each run from the torch op (fp32).
    """
    torch_dtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
    gen = torch.Generator(device=device).manual_seed(0)
    x1 = torch.randn(shape, device=device, dtype=torch_dtype, generator=gen)
    x2 = torch.randn(shape, device=device, dtype=torch_dtype, generator=gen)
    y1, y2 = (x.contiguous(memory_format=torch.channels_last) for x in (x1, x2))
    kwargs = params.as_dict()
    t0 = time.perf_counter()
    correlation_cuda(x1, x2, **kwargs)  # compiles and loads the module
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    reference = correlation(x1.float(), x2.float(), **kwargs)
    result: dict[str, Any] = {
        "shape": list(shape),
        "dtype": dtype,
        "params": kwargs,
        "device": torch.cuda.get_device_name(torch.device(device)),
        "variant": launch_config(params, *shape, dtype=dtype).variant,
        "first_call_s": round(compile_s, 3),
    }

    def nhwc_copies() -> torch.Tensor:
        out = correlation_cuda(y1.contiguous(), y2.contiguous(), **kwargs)
        return out.contiguous(memory_format=torch.channels_last)

    runs: dict[str, Callable[[], torch.Tensor]] = {
        "fast": lambda: correlation_cuda(x1, x2, **kwargs),
        "nhwc": lambda: correlation_cuda(y1, y2, **kwargs),
        "nhwc_copies": nhwc_copies,
        "tiled": lambda: correlation_cuda(x1, x2, **kwargs, variant="tiled"),
        "naive": lambda: correlation_cuda(x1, x2, **kwargs, variant="naive"),
    }
    if include_torch:
        runs["torch"] = lambda: correlation(x1, x2, **kwargs)
    for name, fn in runs.items():
        out = fn()
        result[f"{name}_max_abs_diff"] = float((out.float() - reference).abs().max())
        result[f"{name}_ms"] = round(_cuda_median_ms(fn, repeats, warmup), 4)
    result["nhwc_output_channels_last"] = bool(
        runs["nhwc"]().is_contiguous(memory_format=torch.channels_last)
    )
    for other in ("tiled", "naive", "torch"):
        if f"{other}_ms" in result and result["fast_ms"] > 0:
            result[f"speedup_vs_{other}"] = round(result[f"{other}_ms"] / result["fast_ms"], 2)
    if result["nhwc_ms"] > 0:
        result["nhwc_vs_nchw"] = round(result["fast_ms"] / result["nhwc_ms"], 2)
        result["nhwc_vs_copies"] = round(result["nhwc_copies_ms"] / result["nhwc_ms"], 2)
    return result
