"""Timing of the stacks through the inference core (random weights: speed does not depend on the values).

For one stack, network size, precision, batch and execution mode (``eager``, ``graph``: CUDA graphs,
``compile``: torch.compile), :func:`benchmark_stack` measures

* ``forward_ms``: the network alone on device tensors already at the network size (the core's
  ``run_network``: graph replay in graph mode);
* ``estimate_ms``: uint8 frames in, flow out in host memory (upload, normalisation, resize, network, resize
  back, one copy back): what a node or a CLI pays per call;

both per call and per pair, and on CUDA also the kernels launched per forward and their GPU time (torch
profiler) and the peak memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..models import build
from ..models.inference import FlowInference
from .timing import median_ms

__all__ = ["MODES", "benchmark_stack"]

MODES = ("eager", "graph", "compile")


class _Pair:
    def __init__(self, rgb1: np.ndarray, rgb2: np.ndarray, out: np.ndarray) -> None:
        self.rgb1, self.rgb2 = rgb1, rgb2
        self.out: np.ndarray | None = out
        self.key1: int | None = None
        self.key2: int | None = None
        self.output_size: tuple[int, int] | None = None


def _profile_forward(core: FlowInference, first: torch.Tensor, second: torch.Tensor) -> dict[str, float]:
    """Kernels launched and GPU milliseconds of one forward (CUDA only), from the torch profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        core.run_network(first, second)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_us = sum(e.device_time if hasattr(e, "device_time") else e.cuda_time for e in kernels)
    return {"kernels_per_forward": float(len(kernels)), "gpu_ms_per_forward": gpu_us / 1000.0}


def benchmark_stack(
    name: str,
    height: int = 384,
    width: int = 512,
    device: str = "cpu",
    precision: str = "auto",
    repeats: int = 3,
    thin: bool = False,
    batch: int = 1,
    mode: str = "eager",
) -> dict[str, Any]:
    """Median times of stack ``name`` at ``height``×``width`` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    model = build(name, thin=thin)
    core = FlowInference(
        model,
        (height, width),
        device=device,
        precision=precision,
        cuda_graph=mode == "graph",
        compile=mode == "compile",
    )
    if core.notes:
        raise ValueError(f"mode {mode} cannot run here: {'; '.join(core.notes)}")
    cuda = core.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    gen = torch.Generator(device="cpu").manual_seed(0)
    shape = (batch, 3, height, width)
    first = (torch.rand(shape, generator=gen) * 255).to(core.device, core.dtype)
    second = (torch.rand(shape, generator=gen) * 255).to(core.device, core.dtype)
    first = first.contiguous(memory_format=core.memory_format)
    second = second.contiguous(memory_format=core.memory_format)
    rng = np.random.default_rng(0)
    pairs = [
        _Pair(
            rng.integers(0, 255, (height, width, 3), dtype=np.uint8),
            rng.integers(0, 255, (height, width, 3), dtype=np.uint8),
            np.empty((height, width, 2), np.float32),
        )
        for _ in range(batch)
    ]
    warmup = 1 if mode == "eager" else 3
    if cuda:
        torch.cuda.reset_peak_memory_stats(core.device)
    with torch.inference_mode():
        forward_ms = median_ms(lambda: core.run_network(first, second), repeats, warmup=warmup, sync=sync)
    estimate_ms = median_ms(lambda: core.estimate_batch(pairs), repeats, warmup=warmup, sync=sync)
    row: dict[str, Any] = {
        "stack": name + ("-thin" if thin else ""),
        "size": f"{width}x{height}",
        "device": str(core.device),
        "precision": core.precision,
        "memory_format": "channels_last" if core.memory_format == torch.channels_last else "contiguous",
        "mode": mode,
        "batch": batch,
        "forward_ms": forward_ms,
        "forward_ms_per_pair": forward_ms / batch,
        "estimate_ms": estimate_ms,
        "estimate_ms_per_pair": estimate_ms / batch,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    if cuda:
        row["peak_memory_MB"] = torch.cuda.max_memory_allocated(core.device) / 2**20
        with torch.inference_mode():
            row.update(_profile_forward(core, first, second))
    core.close()
    return row
