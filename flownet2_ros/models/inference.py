"""The inference core: every way of running a FlowNet 2.0 stack goes through :class:`FlowInference`.

``FlowInference`` (the torch backend, ``flownet2-infer``, ``-evaluate``, ``-compare``, ``-benchmark`` and the
training validation all use it) owns, once:

* **device** — :func:`resolve_device`: ``auto`` is CUDA when usable, else the CPU;
* **precision** — :func:`resolve_precision`: ``auto`` is fp16 on CUDA and fp32 on the CPU; ``fp32`` is true
  fp32 (TF32 matrix products and convolutions switched off, process-wide), ``fp16`` needs CUDA;
* **network size** — multiples of :data:`NETWORK_STRIDE` nearest the frame (or the next ones up, ``pad``),
  capped at ``max_network_pixels`` (:data:`DEFAULT_MAX_NETWORK_PIXELS`, about 1024×576): a larger frame
  is downscaled for the network and its flow resized back with the vectors scaled;
* **resize in and out**, **memory format** (channels-last by default: on this project's CPU it is ~10 %
  faster, and on CUDA it spares cuDNN's NCHW↔NHWC transposes), **batching** (:meth:`FlowInference.
  estimate_batch`: pairs of one size run as one batch; device copies of frames are kept by key so a
  camera's previous frame is not uploaded twice), **CUDA graphs** (one per batch size and network size,
  static buffers, a logged fallback to eager when capture fails) and optional **torch.compile**.

Frames go to the device once, as uint8 (through a reused page-locked buffer on CUDA), and are converted
and resized there; the flow comes back once, into the caller's buffer.  Options that need CUDA (CUDA
graphs, compile) are ignored on a CPU with a note in :attr:`FlowInference.notes` and the log.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DEFAULT_MAX_NETWORK_PIXELS",
    "MODEL_CAP",
    "NETWORK_STRIDE",
    "PRECISIONS",
    "FlowInference",
    "InferenceError",
    "PairRequest",
    "check_pair_request",
    "frame_to_network",
    "model_max_network_pixels",
    "network_size_for",
    "resize_flow",
    "resolve_device",
    "resolve_precision",
]

log = logging.getLogger(__name__)

SizeMode = Literal["resize", "pad"]

#: Every network input side is a multiple of this (FlowNet's six stride-2 stages).
NETWORK_STRIDE = 64
#: Default cap on the automatic network size (height x width): about 1024 x 576.
DEFAULT_MAX_NETWORK_PIXELS = 1024 * 576
#: ``max_network_pixels`` value meaning "the model's own cap" (:func:`model_max_network_pixels`).
MODEL_CAP = 0
#: Precision names: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp32`` (true fp32, no TF32), ``fp16``.
PRECISIONS = ("auto", "fp32", "fp16")


class InferenceError(ValueError):
    """A device, precision or option that cannot be honoured on this machine (the message says why)."""


def resolve_device(requested: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None → CUDA when usable, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Raises :class:`InferenceError` for an unknown device or CUDA without a usable GPU.
    """
    if requested is None or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise InferenceError(f"unknown device {requested!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise InferenceError(f"unsupported device {requested!r}; expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InferenceError(f"device {requested!r} requested but CUDA is not available (no CUDA device)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InferenceError(f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_precision(requested: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` → float16 on CUDA, float32 on the CPU; ``fp16`` on a CPU is an :class:`InferenceError`."""
    if isinstance(requested, torch.dtype):
        dtype = requested
    elif requested == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    elif requested in ("fp32", "fp16"):
        dtype = torch.float16 if requested == "fp16" else torch.float32
    else:
        raise InferenceError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if dtype not in (torch.float32, torch.float16):
        raise InferenceError(f"unsupported dtype {dtype}; expected float32 or float16")
    if dtype == torch.float16 and device.type != "cuda":
        raise InferenceError("fp16 needs a CUDA device (float16 convolutions on CPU are slow and inexact)")
    return dtype


def precision_name(dtype: torch.dtype) -> str:
    return "fp16" if dtype == torch.float16 else "fp32"


def _true_fp32() -> None:
    """fp32 means fp32: no TF32 in CUDA matrix products and convolutions (a process-wide switch)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def network_size_for(
    height: int, width: int, mode: SizeMode = "resize", max_pixels: int | None = None
) -> tuple[int, int]:
    """Network input size for an image: nearest multiples of 64 (resize) or the next ones up (pad).

    ``max_pixels`` (resize mode only) caps the size: a larger frame is scaled down, keeping its aspect
    ratio, to the nearest multiples of 64 of the scaled size, the longer side shrunk by 64 until the
    product fits (at least 64 x 64), so a 4K frame does not run
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
    net_h, net_w = max(s, round(height * scale / s) * s), max(s, round(width * scale / s) * s)
    while net_h * net_w > max_pixels and max(net_h, net_w) > s:  # rounding may overshoot: shrink to fit
        if net_h >= net_w:
            net_h -= s
        else:
            net_w -= s
    return net_h, net_w


def model_max_network_pixels(model: nn.Module) -> int:
    """The cap on the automatic network size that a checkpoint carries (its ``max_network_pixels`` entry,
    e.g. the embedded model's, chosen for its CPU budget and written by ``package_checkpoint``), else
    :data:`DEFAULT_MAX_NETWORK_PIXELS`."""
    metadata = getattr(model, "checkpoint_metadata", None)
    value = metadata.get("max_network_pixels") if isinstance(metadata, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= NETWORK_STRIDE * NETWORK_STRIDE:
        return value
    return DEFAULT_MAX_NETWORK_PIXELS


def check_network_size(size: tuple[int, int] | None) -> tuple[int, int] | None:
    """``size`` when it is None or positive multiples of 64; else :class:`InferenceError`."""
    if size is not None and (size[0] % NETWORK_STRIDE or size[1] % NETWORK_STRIDE or min(size) <= 0):
        raise InferenceError(f"network size must be positive multiples of {NETWORK_STRIDE}, got {size}")
    return size


def resize_flow(flow: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize of a flow (B, 2, h, w) to (B, 2, height, width), vectors rescaled: u·width/w, v·height/h."""
    h, w = flow.shape[-2:]
    if (h, w) == (height, width):
        return flow
    resized = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
    scale = torch.tensor([width / w, height / h], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
    return resized * scale


class PairRequest(Protocol):
    """One pair for :meth:`FlowInference.estimate_batch` (``backends.FlowRequest`` has these fields)."""

    rgb1: np.ndarray
    rgb2: np.ndarray
    key1: int | None
    key2: int | None
    output_size: tuple[int, int] | None
    out: np.ndarray | None


def check_pair_request(r: PairRequest) -> tuple[int, int]:
    """The output size (H_out, W_out) of a valid request; :class:`ValueError` naming what is wrong otherwise.

    Valid: two (H, W, 3) uint8 frames of one size, and ``out`` (when given) a C-contiguous
    (H_out, W_out, 2) float32 array; ``output_size`` defaults to the frames' size.
    """
    a, b = r.rgb1, r.rgb2
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(
            f"expected two (H, W, 3) uint8 images of one size, got {a.shape} {a.dtype} and {b.shape} {b.dtype}"
        )
    out_h, out_w = r.output_size or (int(a.shape[0]), int(a.shape[1]))
    if r.out is not None and (
        r.out.shape != (out_h, out_w, 2) or r.out.dtype != np.float32 or not r.out.flags.c_contiguous
    ):
        raise ValueError(f"out must be a C-contiguous ({out_h}, {out_w}, 2) float32 array")
    return out_h, out_w


def frame_to_network(frame: Tensor, size: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """A (H, W, 3) uint8 frame already on its device → (1, 3, h, w) ``dtype`` RGB 0..255 at the network
    size ``size`` (bilinear, no corner alignment): the conversion is done on the device."""
    image = frame.permute(2, 0, 1).unsqueeze(0).to(dtype)
    if tuple(image.shape[-2:]) != size:
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    return image


class _CapturedForward:
    """The network's forward pass for one (batch, network size) captured in a CUDA graph.

    Inputs are copied into static buffers, the graph is replayed, and the static output is returned
    (valid until the next replay).  Capture uses the thread-local mode, so CUDA calls from other threads
    (ROS callbacks) cannot void it.
    """

    def __init__(self, forward: Callable[[Tensor, Tensor], Tensor], first: Tensor, second: Tensor) -> None:
        self.first, self.second = first.clone(), second.clone()
        side = torch.cuda.Stream(device=first.device)
        side.wait_stream(torch.cuda.current_stream(first.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the graph: cuDNN autotune, allocator
                forward(self.first, self.second)
        torch.cuda.current_stream(first.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.out = forward(self.first, self.second)

    def __call__(self, first: Tensor, second: Tensor) -> Tensor:
        self.first.copy_(first)
        self.second.copy_(second)
        self.graph.replay()
        return self.out


class FlowInference:
    """Runs a stack in eval mode on frames of any size; see the module docstring.

    ``mode="resize"``: both frames are resized (bilinear) to the network size — by default the nearest
    multiples of 64, capped at ``max_network_pixels`` (:data:`MODEL_CAP`, the default: the checkpoint's own
    cap, see :func:`model_max_network_pixels`; None: no cap) — and the flow is resized back with vectors scaled by
    the size ratio (the way the published networks are meant to be used on arbitrary images).
    ``mode="pad"``: frames are padded at the bottom/right by edge replication to the next multiples of 64
    and the flow is cropped (no rescaling, no cap).  ``dtype`` (a torch dtype) overrides ``precision``.
    ``threads`` > 0 sets torch's intra-op CPU threads (process-wide).
    """

    def __init__(
        self,
        model: nn.Module,
        network_size: tuple[int, int] | None = None,
        mode: SizeMode = "resize",
        device: str | torch.device | None = "auto",
        dtype: torch.dtype | None = None,
        *,
        precision: str = "auto",
        max_network_pixels: int | None = MODEL_CAP,
        channels_last: bool = True,
        cuda_graph: bool = False,
        compile: bool = False,
        threads: int = 0,
        cache_frames: int = 16,
    ) -> None:
        if mode not in ("resize", "pad"):
            raise ValueError(f"mode must be 'resize' or 'pad', got {mode!r}")
        if threads < 0:
            raise InferenceError(f"threads must be >= 0 (0: torch's default), got {threads}")
        self.network_size = check_network_size(network_size)
        self.mode: SizeMode = mode
        self.device = resolve_device(device)
        self.dtype = resolve_precision(dtype if dtype is not None else precision, self.device)
        if max_network_pixels == MODEL_CAP:
            max_network_pixels = model_max_network_pixels(model)
        self.max_network_pixels = max_network_pixels if mode == "resize" else None
        self.notes: list[str] = []  #: options ignored on this machine, and why
        if self.dtype == torch.float32 and self.device.type == "cuda":
            _true_fp32()
        if threads:
            torch.set_num_threads(threads)  # process-wide: leaves the other cores to the middleware
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.device.type == "cuda":
            from ..ops.correlation_op import prepare_for_device

            prepare_for_device(self.device)  # the kernel loads before any capture or compile
        self._forward: Callable[[Tensor, Tensor], Tensor] = self.model
        if compile:
            if self.device.type == "cuda":
                log.warning("torch.compile: the first frame of each size takes minutes while it compiles")
                self._forward = torch.compile(self.model)
            else:
                self._note("compile is ignored on the CPU (it is meant for the CUDA path)")
        self.cuda_graph = cuda_graph and self.device.type == "cuda"
        if cuda_graph and not self.cuda_graph:
            self._note("cuda_graph is ignored: CUDA graphs need a CUDA device")
        self._graphs: dict[tuple[int, int, int], _CapturedForward | None] = {}
        self._frames: OrderedDict[int, Tensor] = OrderedDict()  # key -> (1, 3, h, w) on the device
        self._cache_frames = cache_frames
        self._pinned_in: dict[tuple[int, tuple[int, ...]], Tensor] = {}  # page-locked upload buffers (CUDA)
        self._pinned_out: dict[tuple[int, int, int], Tensor] = {}  # page-locked result buffers (CUDA)
        self.last_network_size: tuple[int, int] | None = network_size  #: the size the last pair ran at

    def _note(self, text: str) -> None:
        self.notes.append(text)
        log.warning(text)

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    def network_size_of(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the network runs at for frames of this size."""
        return self.network_size or network_size_for(height, width, self.mode, self.max_network_pixels)

    # ----------------------------------------------------------------------------------- the network

    def run_network(self, first: Tensor, second: Tensor) -> Tensor:
        """(B, 3, h, w) × 2 at a network size, on the device, in the core's dtype → flow (B, 2, h, w) float32."""
        if self.cuda_graph:
            key = (int(first.shape[0]), int(first.shape[-2]), int(first.shape[-1]))
            if key not in self._graphs:
                try:
                    self._graphs[key] = _CapturedForward(self._forward, first, second)
                except Exception as exc:  # capture is an optimisation: fall back to eager, once, with a log
                    self._graphs[key] = None
                    self._note(f"CUDA graph capture failed for batch/size {key}, running eagerly: {exc}")
            captured = self._graphs[key]
            if captured is not None:
                return captured(first, second).float()
        return self._forward(first, second).float()

    # ------------------------------------------------------------------------------- tensors in/out

    @torch.inference_mode()
    def __call__(self, image1: Tensor, image2: Tensor) -> Tensor:
        """image1, image2: (B, 3, H, W) RGB 0..255 on any device → flow (B, 2, H, W) float32 in pixels."""
        if image1.shape != image2.shape or image1.dim() != 4 or image1.shape[1] != 3:
            raise ValueError(
                f"expected two (B, 3, H, W) images of one shape, got {tuple(image1.shape)} and {tuple(image2.shape)}"
            )
        height, width = image1.shape[-2:]
        net_h, net_w = self.network_size_of(height, width)
        pair = torch.cat((image1, image2), dim=0).to(self.device, self.dtype)
        if self.mode == "pad":
            if net_h < height or net_w < width:
                raise ValueError(f"network size {net_h}x{net_w} is smaller than the image {height}x{width}")
            pair = F.pad(pair, (0, net_w - width, 0, net_h - height), mode="replicate")
        elif (net_h, net_w) != (height, width):
            pair = F.interpolate(pair, size=(net_h, net_w), mode="bilinear", align_corners=False)
        pair = pair.contiguous(memory_format=self.memory_format)
        first, second = pair.chunk(2, dim=0)
        self.last_network_size = (net_h, net_w)
        flow = self.run_network(first, second)
        if self.mode == "pad":
            return flow[..., :height, :width]
        return resize_flow(flow, height, width)

    # -------------------------------------------------------------------------------- frames in/out

    def estimate(self, rgb1: np.ndarray, rgb2: np.ndarray) -> np.ndarray:
        """Two (H, W, 3) uint8 RGB arrays → flow (H, W, 2) float32, pixels, u then v (a new array)."""
        if rgb1.shape != rgb2.shape or rgb1.ndim != 3 or rgb1.shape[2] != 3:
            raise ValueError(
                f"expected two (H, W, 3) RGB images of one shape, got {rgb1.shape} and {rgb2.shape}"
            )
        if self.mode == "pad":
            tensors = [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None] for a in (rgb1, rgb2)]
            flow = self(tensors[0].float(), tensors[1].float())
            return flow[0].permute(1, 2, 0).contiguous().cpu().numpy()
        out = np.empty((*rgb1.shape[:2], 2), np.float32)
        return self.estimate_batch([_Pair(np.asarray(rgb1), np.asarray(rgb2), out=out)])[0]

    @torch.inference_mode()
    def estimate_batch(self, requests: Sequence[PairRequest]) -> list[np.ndarray]:
        """Flow for several pairs of (H, W, 3) uint8 RGB frames, in the order given.

        Pairs of one input and output size run as one batch.  A frame passed before under the same key is
        not uploaded again (the newest few are kept).  Each flow is written into the request's ``out``
        when given (C-contiguous (H_out, W_out, 2) float32; returned); otherwise on CUDA the result is a view
        of a reused page-locked buffer, valid until the next call, and on the CPU a new array.
        """
        if self.mode == "pad":
            raise ValueError(
                "estimate_batch runs in resize mode; use estimate or __call__ for padded inference"
            )
        groups: dict[tuple[tuple[int, int], tuple[int, int]], list[int]] = {}
        for index, r in enumerate(requests):
            output_size = check_pair_request(r)
            size = (int(r.rgb1.shape[0]), int(r.rgb1.shape[1]))
            groups.setdefault((size, output_size), []).append(index)
        results: list[np.ndarray | None] = [None] * len(requests)
        for ((height, width), (out_h, out_w)), members in groups.items():
            net = self.network_size_of(height, width)
            self.last_network_size = net
            firsts = [
                self._to_network(requests[i].rgb1, requests[i].key1, net, 2 * n)
                for n, i in enumerate(members)
            ]
            seconds = [
                self._to_network(requests[i].rgb2, requests[i].key2, net, 2 * n + 1)
                for n, i in enumerate(members)
            ]
            for i, frame in zip(members, seconds, strict=True):
                self._remember(requests[i].key2, frame)
            first = firsts[0] if len(firsts) == 1 else torch.cat(firsts)
            second = seconds[0] if len(seconds) == 1 else torch.cat(seconds)
            flow = resize_flow(self.run_network(first, second), out_h, out_w)
            flow = flow.permute(0, 2, 3, 1)  # (B, H_out, W_out, 2), a strided view
            for slot, i in enumerate(members):
                results[i] = self._deliver(flow[slot], requests[i].out, slot)
        return [r for r in results if r is not None]

    def _upload(self, rgb: np.ndarray, slot: int) -> Tensor:
        """The one host→device copy of a uint8 frame (through a reused page-locked buffer on CUDA)."""
        if self.device.type != "cuda":
            return torch.from_numpy(np.ascontiguousarray(rgb))
        key = (slot, rgb.shape)
        staging = self._pinned_in.get(key)
        if staging is None:
            staging = torch.empty(rgb.shape, dtype=torch.uint8, pin_memory=True)
            self._pinned_in[key] = staging
        np.copyto(staging.numpy(), rgb)
        return staging.to(self.device, non_blocking=True)

    def _to_network(self, rgb: np.ndarray, key: int | None, size: tuple[int, int], slot: int) -> Tensor:
        """(H, W, 3) uint8 → (1, 3, h, w) at the network size on the device; reuses a cached frame."""
        cached = None if key is None else self._frames.get(key)
        if cached is not None and tuple(cached.shape[-2:]) == size:
            return cached
        image = frame_to_network(self._upload(rgb, slot), size, self.dtype)  # converted on the device
        return image.contiguous(memory_format=self.memory_format)

    def _remember(self, key: int | None, frame: Tensor) -> None:
        if key is None:
            return
        self._frames[key] = frame
        self._frames.move_to_end(key)
        while len(self._frames) > self._cache_frames:
            self._frames.popitem(last=False)

    def _deliver(self, flow: Tensor, out: np.ndarray | None, slot: int) -> np.ndarray:
        """The one device→host copy of one pair's (H, W, 2) flow: into ``out``, or a reused buffer."""
        shape = tuple(flow.shape)
        if out is not None:
            if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
                raise ValueError(f"out must be a C-contiguous {shape} float32 array")
            torch.from_numpy(out).copy_(flow)
            return out
        if self.device.type == "cuda":
            host = self._pinned_out.get((slot, shape[0], shape[1]))
            if host is None:
                host = torch.empty(shape, dtype=torch.float32, pin_memory=True)
                self._pinned_out[(slot, shape[0], shape[1])] = host
            host.copy_(flow)
            return host.numpy()
        return flow.contiguous().numpy()

    def close(self) -> None:
        """Drop the device buffers and graphs (the model stays usable through a new core)."""
        self._frames.clear()
        self._graphs.clear()
        self._pinned_in.clear()
        self._pinned_out.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class _Pair:
    """A :class:`PairRequest` for :meth:`FlowInference.estimate`."""

    __slots__ = ("key1", "key2", "out", "output_size", "rgb1", "rgb2")

    def __init__(self, rgb1: np.ndarray, rgb2: np.ndarray, out: np.ndarray | None = None) -> None:
        self.rgb1, self.rgb2, self.out = rgb1, rgb2, out
        self.key1: int | None = None
        self.key2: int | None = None
        self.output_size: tuple[int, int] | None = None
