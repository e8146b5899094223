"""FlowNetC's correlation as a PyTorch custom op, ``torch.ops.flownet2.correlation``.

Registered with ``torch.library`` (PyTorch 2.4 and newer), so that CUDA graphs and ``torch.compile`` can
trace a network that calls our CUDA kernel: the op has a CUDA implementation (the NVRTC-compiled kernel of
:mod:`.cuda_correlation`, on torch's current stream), a CPU implementation (the pure-torch op of
:mod:`.correlation`, which stays the reference) and a fake (meta) implementation that only computes the
output's shape and strides.  The op is forward-only; training keeps the differentiable torch op.

Memory format: every implementation returns its output in the format
:func:`~.correlation.prefers_channels_last` picks for ``input1`` — channels_last for channels_last
inputs, else NCHW-contiguous — so the model's channels_last path stays channels_last through the op and
the fake tensors that graph capture and ``torch.compile`` trace with have the real strides.

:func:`correlation_for_inference` is what :class:`~.correlation.Correlation` calls: the op on CUDA when
gradients are off and the kernel loads on this GPU, else the torch op.  A kernel that cannot load (no
NVRTC, a driver or bindings mismatch) is reported once in the log and the torch op is used.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from .correlation import correlation, prefers_channels_last

__all__ = ["OP_NAME", "correlation_for_inference", "custom_op_available", "prepare_for_device"]

log = logging.getLogger(__name__)

OP_NAME = "flownet2::correlation"
_kernel_ok: dict[int, bool] = {}


def _register() -> Any | None:
    custom_op = getattr(torch.library, "custom_op", None)
    if custom_op is None:  # PyTorch < 2.4: no custom ops for Python kernels; the torch op is used
        return None

    @custom_op(OP_NAME, mutates_args=())
    def correlation_op(
        input1: Tensor,
        input2: Tensor,
        pad_size: int,
        kernel_size: int,
        max_displacement: int,
        stride1: int,
        stride2: int,
        corr_multiply: float,
    ) -> Tensor:
        if input1.is_cuda:
            from .cuda_correlation import correlation_cuda

            return correlation_cuda(
                input1, input2, pad_size, kernel_size, max_displacement, stride1, stride2, corr_multiply
            )
        result = correlation(
            input1, input2, pad_size, kernel_size, max_displacement, stride1, stride2, corr_multiply
        )
        # A fresh tensor (a custom op may not return a view of anything) in the CUDA kernel's format.
        out = _empty_output(input1, tuple(result.shape))
        return out.copy_(result)

    @correlation_op.register_fake
    def _(
        input1: Tensor,
        input2: Tensor,
        pad_size: int,
        kernel_size: int,
        max_displacement: int,
        stride1: int,
        stride2: int,
        corr_multiply: float,
    ) -> Tensor:
        batch, _, height, width = input1.shape
        # The arithmetic of correlation_output_size, on sizes that may be symbolic (dynamic shapes).
        border = max_displacement + (kernel_size - 1) // 2
        out_h = -(-(height + 2 * pad_size - 2 * border) // stride1)
        out_w = -(-(width + 2 * pad_size - 2 * border) // stride1)
        channels = (2 * (max_displacement // stride2) + 1) ** 2
        return _empty_output(input1, (batch, channels, out_h, out_w))

    return correlation_op


def _empty_output(input1: Tensor, shape: tuple[Any, ...]) -> Tensor:
    """The op's output buffer, allocated as :func:`..cuda_correlation.correlation_cuda` allocates it."""
    fmt = torch.channels_last if prefers_channels_last(input1) else torch.contiguous_format
    return torch.empty(shape, dtype=input1.dtype, device=input1.device, memory_format=fmt)


_OP = _register()


def custom_op_available() -> bool:
    """True when ``torch.ops.flownet2.correlation`` is registered (PyTorch 2.4 and newer)."""
    return _OP is not None


def prepare_for_device(device: torch.device) -> bool:
    """Compile and load the kernel for ``device`` now (the inference core calls this before any tracing,
    so that ``torch.compile`` and graph capture later see only a cached answer); True when it runs."""
    return _OP is not None and device.type == "cuda" and _kernel_usable(device)


def _kernel_usable(device: torch.device) -> bool:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _kernel_ok:
        try:
            from .cuda_correlation import prepare_kernel

            prepare_kernel(index)
            _kernel_ok[index] = True
        except Exception as exc:  # report once, then the torch op
            log.warning(f"the CUDA correlation kernel cannot run on cuda:{index} ({exc}); using the torch op")
            _kernel_ok[index] = False
    return _kernel_ok[index]


def correlation_for_inference(
    input1: Tensor,
    input2: Tensor,
    pad_size: int,
    kernel_size: int,
    max_displacement: int,
    stride1: int,
    stride2: int,
    corr_multiply: float,
) -> Tensor:
    """The custom op on CUDA without gradients (when the kernel loads), else the differentiable torch op."""
    if (
        _OP is not None
        and input1.is_cuda
        and not torch.is_grad_enabled()
        and input1.dtype in (torch.float32, torch.float16)
        and _kernel_usable(input1.device)
    ):
        return torch.ops.flownet2.correlation(
            input1, input2, pad_size, kernel_size, max_displacement, stride1, stride2, corr_multiply
        )
    return correlation(
        input1, input2, pad_size, kernel_size, max_displacement, stride1, stride2, corr_multiply
    )
