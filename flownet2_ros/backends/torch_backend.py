"""The PyTorch backend: any FlowNet 2.0 stack on CPU or CUDA, fp32 or (CUDA) fp16."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..models.inference import DEFAULT_MAX_NETWORK_PIXELS, NETWORK_STRIDE, network_size_for, resize_flow
from .base import BackendError, BackendInfo, FlowEstimator, FlowRequest


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
    vectors scaled, and one device→host copy into the caller's ``out`` (or a reused pinned buffer on CUDA).
    ``estimate_batch`` runs pairs of one input size through the network as one batch. Device copies of the
    second frames are kept by key (a few at a time), so a camera's next pair does not upload its first frame.
    """

    #: how many device frames (at network size) are kept for reuse by key
    CACHE_FRAMES = 16

    def __init__(
        self,
        model: nn.Module,
        device: str = "auto",
        fp16: bool = False,
        network_size: tuple[int, int] | None = None,
        label: str = "",
        max_network_pixels: int | None = DEFAULT_MAX_NETWORK_PIXELS,
        threads: int = 0,
    ) -> None:
        self._device = resolve_torch_device(device)
        if fp16 and self._device.type != "cuda":
            raise BackendError("fp16 needs a CUDA device (float16 convolutions on CPU are slow and inexact)")
        if network_size is not None and (
            network_size[0] % NETWORK_STRIDE or network_size[1] % NETWORK_STRIDE or min(network_size) <= 0
        ):
            raise BackendError(
                f"network size must be positive multiples of {NETWORK_STRIDE}, got {network_size}"
            )
        if threads < 0:
            raise BackendError(f"threads must be >= 0 (0: torch's default), got {threads}")
        if threads:
            torch.set_num_threads(threads)  # process-wide: leaves the other cores to the middleware
        self._dtype = torch.float16 if fp16 else torch.float32
        self._model: nn.Module | None = model.to(self._device, self._dtype).eval()
        self._fixed_size = network_size
        self._max_pixels = max_network_pixels
        self._network_size = network_size
        self._label = label or type(model).__name__
        self._frames: OrderedDict[int, torch.Tensor] = OrderedDict()  # key -> (1, 3, h, w) on the device
        self._host: dict[tuple[int, int, int], torch.Tensor] = {}  # reused pinned output buffers (CUDA)

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

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the network runs at for frames of this size."""
        return self._fixed_size or network_size_for(height, width, max_pixels=self._max_pixels)

    def _to_network(self, rgb: np.ndarray, key: int | None, size: tuple[int, int]) -> torch.Tensor:
        """(H, W, 3) uint8 → (1, 3, h, w) at the network size on the device; reuses a cached frame."""
        cached = None if key is None else self._frames.get(key)
        if cached is not None and tuple(cached.shape[-2:]) == size:
            return cached
        image = torch.from_numpy(rgb).to(self._device, non_blocking=True)  # the one host→device copy
        image = image.permute(2, 0, 1).unsqueeze(0).to(self._dtype)
        if tuple(image.shape[-2:]) != size:
            image = torch.nn.functional.interpolate(image, size=size, mode="bilinear", align_corners=False)
        return image

    def _remember(self, key: int | None, frame: torch.Tensor) -> None:
        if key is None:
            return
        self._frames[key] = frame
        self._frames.move_to_end(key)
        while len(self._frames) > self.CACHE_FRAMES:
            self._frames.popitem(last=False)

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
        request = FlowRequest(rgb1, rgb2, key1=key1, key2=key2, output_size=output_size, out=out)
        return self.estimate_batch([request])[0]

    @torch.inference_mode()
    def estimate_batch(self, requests: Sequence[FlowRequest]) -> list[np.ndarray]:
        """See ``FlowEstimator.estimate_batch``: pairs of one input and output size form one batch."""
        if self._model is None:
            raise BackendError("estimator was closed")
        groups: dict[tuple[tuple[int, int], tuple[int, int]], list[int]] = {}
        for index, r in enumerate(requests):
            if (
                r.rgb1.shape != r.rgb2.shape
                or r.rgb1.ndim != 3
                or r.rgb1.shape[2] != 3
                or r.rgb1.dtype != np.uint8
            ):
                raise ValueError(
                    f"expected two (H, W, 3) uint8 images of one size, got {r.rgb1.shape} and {r.rgb2.shape}"
                )
            size = (int(r.rgb1.shape[0]), int(r.rgb1.shape[1]))
            groups.setdefault((size, r.output_size or size), []).append(index)
        results: list[np.ndarray | None] = [None] * len(requests)
        for ((height, width), (out_h, out_w)), members in groups.items():
            net = self.network_size(height, width)
            self._network_size = net
            firsts = [self._to_network(requests[i].rgb1, requests[i].key1, net) for i in members]
            seconds = [self._to_network(requests[i].rgb2, requests[i].key2, net) for i in members]
            for i, frame in zip(members, seconds, strict=True):
                self._remember(requests[i].key2, frame)
            first = firsts[0] if len(firsts) == 1 else torch.cat(firsts)
            second = seconds[0] if len(seconds) == 1 else torch.cat(seconds)
            flow = resize_flow(self._model(first, second).float(), out_h, out_w)
            flow = flow.permute(0, 2, 3, 1)  # (B, H_out, W_out, 2), strided view
            for slot, i in enumerate(members):
                results[i] = self._deliver(flow[slot], requests[i].out, slot)
        return [r for r in results if r is not None]

    def _deliver(self, flow: torch.Tensor, out: np.ndarray | None, slot: int) -> np.ndarray:
        """The one device→host copy of one pair's (H, W, 2) flow: into ``out``, or a reused buffer."""
        shape = tuple(flow.shape)
        if out is not None:
            if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
                raise ValueError(f"out must be a C-contiguous {shape} float32 array")
            torch.from_numpy(out).copy_(flow)
            return out
        if self._device.type == "cuda":
            host = self._host.get((slot, shape[0], shape[1]))
            if host is None:
                host = torch.empty(shape, dtype=torch.float32, pin_memory=True)
                self._host[(slot, shape[0], shape[1])] = host
            host.copy_(flow)  # into page-locked memory; valid until the next call
            return host.numpy()
        return flow.contiguous().numpy()

    def close(self) -> None:
        self._model = None
        self._frames.clear()
        self._host.clear()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
