"""The PyTorch backend: any FlowNet 2.0 stack on CPU or CUDA, fp32 or (CUDA) fp16."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.inference import network_size_for, resize_flow
from .base import BackendError, BackendInfo, FlowEstimator


def resolve_torch_device(requested: str) -> torch.device:
    """``auto`` → CUDA when usable, else CPU; an explicit ``cuda`` without a GPU is a BackendError."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise BackendError(f"unknown device {requested!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {requested!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise BackendError(f"unsupported device {requested!r}; expected cpu or cuda")
    return device


class TorchFlowEstimator(FlowEstimator):
    """Runs a stack with PyTorch.

    Per frame: one host→device copy of the uint8 image (the smallest form of it), conversion and bilinear
    resize to the network size on the device, the network, the flow resized to the output grid with its
    vectors scaled, and one device→host copy into a reused (pinned, on CUDA) buffer.
    """

    def __init__(
        self,
        model: nn.Module,
        device: str = "auto",
        fp16: bool = False,
        network_size: tuple[int, int] | None = None,
        label: str = "",
    ) -> None:
        self._device = resolve_torch_device(device)
        if fp16 and self._device.type != "cuda":
            raise BackendError("fp16 needs a CUDA device (float16 convolutions on CPU are slow and inexact)")
        if network_size is not None and (
            network_size[0] % 64 or network_size[1] % 64 or min(network_size) <= 0
        ):
            raise BackendError(f"network size must be positive multiples of 64, got {network_size}")
        self._dtype = torch.float16 if fp16 else torch.float32
        self._model: nn.Module | None = model.to(self._device, self._dtype).eval()
        self._fixed_size = network_size
        self._network_size = network_size
        self._label = label or type(model).__name__
        self._cached_key: int | None = None
        self._cached: torch.Tensor | None = None
        self._host_flow: torch.Tensor | None = None  # reused output buffer

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            name="torch",
            device=str(self._device)
            if self._device.type == "cpu"
            else torch.cuda.get_device_name(self._device),
            precision="fp16" if self._dtype == torch.float16 else "fp32",
            model=self._label,
            network_size=self._network_size,
        )

    def _to_network(self, rgb: np.ndarray, key: int | None) -> torch.Tensor:
        """(H, W, 3) uint8 → (1, 3, h, w) at the network size on the device; reuses the cached frame."""
        if key is not None and key == self._cached_key and self._cached is not None:
            return self._cached
        image = torch.from_numpy(rgb).to(self._device, non_blocking=True)  # the one host→device copy
        image = image.permute(2, 0, 1).unsqueeze(0).to(self._dtype)
        assert self._network_size is not None
        if tuple(image.shape[-2:]) != self._network_size:
            image = torch.nn.functional.interpolate(
                image, size=self._network_size, mode="bilinear", align_corners=False
            )
        return image

    @torch.inference_mode()
    def estimate(
        self,
        rgb1: np.ndarray,
        rgb2: np.ndarray,
        *,
        key1: int | None = None,
        key2: int | None = None,
        output_size: tuple[int, int] | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """See ``FlowEstimator.estimate``. On CUDA without ``out`` the result is a view of a reused
        page-locked buffer, valid until the next call."""
        if self._model is None:
            raise BackendError("estimator was closed")
        if rgb1.shape != rgb2.shape or rgb1.ndim != 3 or rgb1.shape[2] != 3 or rgb1.dtype != np.uint8:
            raise ValueError(
                f"expected two (H, W, 3) uint8 images of one size, got {rgb1.shape} and {rgb2.shape}"
            )
        height, width = rgb1.shape[:2]
        if self._fixed_size is None:
            wanted = network_size_for(height, width)
            if wanted != self._network_size:
                self._network_size, self._cached_key, self._cached = wanted, None, None
        out_h, out_w = output_size or (height, width)
        first = self._to_network(rgb1, key1)
        second = self._to_network(rgb2, key2)
        self._cached_key, self._cached = key2, second
        flow = self._model(first, second).float()
        flow = resize_flow(flow, out_h, out_w)[0].permute(1, 2, 0)  # (H_out, W_out, 2), strided view
        if out is not None:
            if out.shape != (out_h, out_w, 2) or out.dtype != np.float32 or not out.flags.c_contiguous:
                raise ValueError(f"out must be a C-contiguous ({out_h}, {out_w}, 2) float32 array")
            torch.from_numpy(out).copy_(flow)  # the one device→host copy
            return out
        if self._device.type == "cuda":
            host = self._pinned(out_h, out_w)
            host.copy_(flow)  # the one device→host copy, into page-locked memory; valid until the next call
            return host.numpy()
        return flow.contiguous().numpy()

    def _pinned(self, height: int, width: int) -> torch.Tensor:
        if self._host_flow is None or tuple(self._host_flow.shape) != (height, width, 2):
            self._host_flow = torch.empty((height, width, 2), dtype=torch.float32, pin_memory=True)
        return self._host_flow

    def close(self) -> None:
        self._model, self._cached, self._cached_key, self._host_flow = None, None, None, None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
