"""The TensorRT backend: a serialised engine (from ``flownet2-build-engine``) run with name-based I/O.

Per frame pair: each new uint8 frame is copied once to a device buffer and converted/resized on the GPU
by torch straight into one of two preallocated engine input buffers; the frame that was the second image
of the previous pair (same ``key``) is not uploaded again — the two input buffers swap roles instead
(``set_tensor_address``), so nothing is copied for it at all. The engine runs with ``execute_async_v3``
on a private CUDA stream, optionally replayed from a captured CUDA graph (one per buffer arrangement);
the flow is resized to the output grid on the GPU and copied back once into a reused page-locked buffer.
All device buffers are torch tensors shared with TensorRT by address (no extra copies).

Before deserialising, the engine's sidecar (``<engine>.json``) is checked against this machine's
TensorRT version and GPU (:func:`~flownet2_ros.export.engine_metadata.check_engine`), and the correlation
plugin is registered in this process. :func:`unusable_reason` says in one sentence why the backend
cannot run (the factory then falls back to torch in ``auto`` mode).

Runs only with the full TensorRT (``tensorrt``; the lean runtime ``tensorrt_lean`` is refused) and a CUDA
GPU: everything after the checks — deserialisation, execution, graph capture — cannot run on a machine
without them; the checks and the I/O planning (:func:`plan_io`) are plain code tested anywhere.
Set ``BackendConfig.cuda_graph`` to capture the engine's execution in CUDA graphs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendError, BackendInfo, FlowEstimator

__all__ = ["IoPlan", "TensorRTFlowEstimator", "create_tensorrt", "plan_io", "unusable_reason"]

log = logging.getLogger(__name__)
_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16"}


@dataclass(frozen=True)
class IoPlan:
    """How the engine's tensors are used: two image inputs (B, 3, H, W) and a flow output (B, 2, H, W)."""

    inputs: tuple[str, str]
    output: str
    height: int
    width: int
    input_dtype: str  # "float32" | "float16"
    output_dtype: str
    dynamic_batch: bool


def plan_io(tensors: Sequence[tuple[str, bool, Sequence[int], str]]) -> IoPlan:
    """Plan the I/O from ``(name, is_input, shape, DataType name)`` of each engine tensor.

    Inputs named ``image1``/``image2`` (the exporter's names) are used in that role, else the inputs in
    engine order; the single output is the flow. A batch dimension of -1 (dynamic) is run as 1.

    Raises:
        BackendError: not two inputs and one output, wrong ranks/channels, dynamic spatial size, or
            unsupported data types.
    """
    inputs = [t for t in tensors if t[1]]
    outputs = [t for t in tensors if not t[1]]
    if len(inputs) != 2 or len(outputs) != 1:
        raise BackendError(
            f"engine has {len(inputs)} input(s) and {len(outputs)} output(s); a FlowNet engine has 2 and 1"
        )
    by_name = {t[0]: t for t in inputs}
    if "image1" in by_name and "image2" in by_name:
        inputs = [by_name["image1"], by_name["image2"]]
    shapes = [tuple(int(v) for v in t[2]) for t in (*inputs, outputs[0])]
    if any(len(shape) != 4 for shape in shapes):
        raise BackendError(f"engine tensors must be 4-D (B, C, H, W), got {shapes}")
    (_, c1, h1, w1), (_, c2, h2, w2), (_, co, ho, wo) = shapes
    if (c1, c2, co) != (3, 3, 2):
        raise BackendError(f"engine must map two 3-channel images to 2-channel flow, got shapes {shapes}")
    if min(h1, w1) <= 0 or (h1, w1) != (h2, w2) or (h1, w1) != (ho, wo):
        raise BackendError(f"engine needs one static input/output size, got shapes {shapes}")
    dtypes = [t[3] for t in (*inputs, outputs[0])]
    if any(d not in _TORCH_DTYPES for d in dtypes) or dtypes[0] != dtypes[1]:
        raise BackendError(f"unsupported engine tensor types {dtypes}; expected FLOAT or HALF")
    return IoPlan(
        inputs=(inputs[0][0], inputs[1][0]),
        output=outputs[0][0],
        height=h1,
        width=w1,
        input_dtype=_TORCH_DTYPES[dtypes[0]],
        output_dtype=_TORCH_DTYPES[dtypes[2]],
        dynamic_batch=any(shape[0] < 0 for shape in shapes),
    )


def _full_tensorrt() -> tuple[Any | None, str | None]:
    from ..export.trt_plugin import TensorRTUnavailableError, import_tensorrt, require_tensorrt

    trt = import_tensorrt()
    if trt is None:
        return None, "TensorRT is not installed (JetPack provides it; on a desktop: pip install tensorrt)"
    try:
        require_tensorrt(trt)
    except TensorRTUnavailableError as exc:
        return None, str(exc)
    if getattr(trt, "__name__", "") != "tensorrt":
        return None, (
            f"only TensorRT's lean runtime ({getattr(trt, '__name__', '?')} {getattr(trt, '__version__', '?')}) "
            "is installed; the engines need the full TensorRT runtime (pip install tensorrt, or JetPack)"
        )
    return trt, None


def _cuda_index(device: str) -> tuple[int | None, str | None]:
    import torch

    if device in ("auto", "cuda"):
        return (torch.cuda.current_device() if torch.cuda.is_available() else 0), None
    if device.startswith("cuda:") and device[5:].isdigit():
        index = int(device[5:])
        if torch.cuda.is_available() and index >= torch.cuda.device_count():
            return None, f"device {device} does not exist ({torch.cuda.device_count()} CUDA device(s))"
        return index, None
    return None, f"TensorRT needs a CUDA device, but device {device!r} is configured"


def unusable_reason(config: Any) -> str | None:
    """Why the TensorRT backend cannot run ``config`` here (one sentence), or None when it can.

    Checked in order: engine file configured and present, full TensorRT ≥ 10.3, a CUDA device, then the
    engine's sidecar against this TensorRT version and GPU (and ``config.model`` / ``config.network_size``
    when given).
    """
    from ..export.engine_metadata import EngineMismatchError, check_engine

    if not config.engine:
        return "no engine file configured"
    engine = Path(config.engine)
    if not engine.is_file():
        return f"engine file {engine} not found"
    trt, reason = _full_tensorrt()
    if reason is not None or trt is None:
        return reason or "TensorRT unavailable"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is available (torch.cuda.is_available() is False)"
    index, reason = _cuda_index(config.device)
    if reason is not None or index is None:
        return reason or "no CUDA device"
    expected = _expectation(trt, index, config)
    try:
        check_engine(engine, expected, verify_hash=False)
    except EngineMismatchError as exc:
        if config.allow_rebuild and config.onnx:
            return None  # create_tensorrt rebuilds it from the ONNX into the cache
        return str(exc)
    return None


def _expectation(trt: Any, index: int, config: Any) -> Any:
    """What the engine's sidecar must say for this TensorRT, this GPU and this config."""
    from ..export.engine_builder import describe_gpu
    from ..export.engine_metadata import EngineExpectation

    name, capability = describe_gpu(index)
    return EngineExpectation(
        tensorrt_version=str(trt.__version__),
        gpu_name=name,
        compute_capability=capability,
        stack=config.model or None,
        input_size=tuple(config.network_size) if config.network_size else None,
    )


def create_tensorrt(config: Any) -> TensorRTFlowEstimator:
    """A :class:`TensorRTFlowEstimator` for ``config.engine`` (BackendError with the reason if unusable).

    With ``config.allow_rebuild`` and ``config.onnx``, an engine that does not match this machine is
    rebuilt from the ONNX into ``config.engine_cache_dir`` (default: next to the engine) and that is used.
    """
    reason = unusable_reason(config)
    if reason is not None:
        raise BackendError(reason)
    engine_path = Path(config.engine)
    if config.allow_rebuild and config.onnx:
        from ..export.engine_builder import EngineBuildError, load_or_rebuild_engine
        from ..export.engine_metadata import EngineMismatchError

        trt, _ = _full_tensorrt()
        index, _ = _cuda_index(config.device)
        assert index is not None
        try:
            engine_path, _why = load_or_rebuild_engine(
                engine_path,
                _expectation(trt, index, config),
                onnx_path=config.onnx,
                cache_dir=config.engine_cache_dir or None,
                rebuild=True,
            )
        except (EngineMismatchError, EngineBuildError) as exc:
            raise BackendError(str(exc)) from None
    return TensorRTFlowEstimator(
        str(engine_path), config.device, cuda_graph=config.cuda_graph, expected_stack=config.model or None
    )


class TensorRTFlowEstimator(FlowEstimator):
    """Runs a FlowNet TensorRT engine; see the module docstring."""

    def __init__(
        self,
        engine_path: str | Path,
        device: str = "auto",
        *,
        cuda_graph: bool = False,
        expected_stack: str | None = None,
    ) -> None:
        import torch

        from ..export.engine_builder import current_expectation, describe_gpu
        from ..export.engine_metadata import EngineMismatchError, check_engine
        from ..export.trt_plugin import register_plugin

        trt, reason = _full_tensorrt()
        if reason is not None or trt is None:
            raise BackendError(reason or "TensorRT unavailable")
        if not torch.cuda.is_available():
            raise BackendError("no CUDA GPU is available")
        index, reason = _cuda_index(device)
        if reason is not None or index is None:
            raise BackendError(reason or "no CUDA device")
        self._trt = trt
        self._device = torch.device("cuda", index)
        self._engine_path = Path(engine_path)
        gpu = describe_gpu(index)
        expected = current_expectation(trt, gpu)
        if expected_stack:
            from dataclasses import replace

            expected = replace(expected, stack=expected_stack)
        try:
            self._meta = check_engine(self._engine_path, expected)
        except EngineMismatchError as exc:
            raise BackendError(str(exc)) from None
        self._gpu_name = gpu[0]
        register_plugin(trt)  # before deserialising: the engine holds the Python plugin

        with torch.cuda.device(self._device):
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            engine = self._runtime.deserialize_cuda_engine(self._engine_path.read_bytes())
            if engine is None:
                raise BackendError(f"TensorRT could not deserialise {self._engine_path} (see its log)")
            self._engine = engine
            self._context = engine.create_execution_context()
            if self._context is None:
                raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
            tensors = []
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                tensors.append(
                    (
                        name,
                        engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                        tuple(engine.get_tensor_shape(name)),
                        engine.get_tensor_dtype(name).name,
                    )
                )
            self._plan = plan_io(tensors)
            plan = self._plan
            shape = (1, 3, plan.height, plan.width)
            if plan.dynamic_batch:
                for name in plan.inputs:
                    self._context.set_input_shape(name, shape)
            in_dtype = getattr(torch, plan.input_dtype)
            self._slots = [torch.empty(shape, dtype=in_dtype, device=self._device) for _ in range(2)]
            self._flow = torch.empty(
                (1, 2, plan.height, plan.width), dtype=getattr(torch, plan.output_dtype), device=self._device
            )
            self._context.set_tensor_address(plan.output, self._flow.data_ptr())
            self._stream = torch.cuda.Stream(self._device)
        self._frames: list[torch.Tensor | None] = [None, None]  # uint8 (H, W, 3) upload buffers per slot
        self._cached_key: int | None = None
        self._cached_slot = 0
        self._host_flow: torch.Tensor | None = None
        self._use_graphs = cuda_graph
        self._graphs: dict[int, Any] = {}
        self._executed: set[int] = set()
        self._closed = False

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            name="tensorrt",
            device=self._gpu_name,
            precision=self._meta.precision,
            model=f"{self._meta.stack} (TensorRT {self._meta.tensorrt_version} engine {self._engine_path.name})",
            network_size=(self._plan.height, self._plan.width),
        )

    def _upload(self, rgb: np.ndarray, slot: int) -> None:
        """Copy the uint8 frame to the device once, convert and resize it into input buffer ``slot``."""
        import torch
        import torch.nn.functional as F

        frame = self._frames[slot]
        if frame is None or tuple(frame.shape) != rgb.shape:
            frame = self._frames[slot] = torch.empty(rgb.shape, dtype=torch.uint8, device=self._device)
        frame.copy_(torch.from_numpy(np.ascontiguousarray(rgb)))  # the one host→device copy
        image = frame.permute(2, 0, 1).unsqueeze(0).float()
        size = (self._plan.height, self._plan.width)
        if tuple(image.shape[-2:]) != size:
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        self._slots[slot].copy_(image)

    def _execute(self, first: int) -> None:
        import torch

        graph = self._graphs.get(first)
        if graph is not None:
            graph.replay()
            return
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise BackendError("TensorRT execution failed (see its log)")
        if self._use_graphs and first not in self._executed:
            self._executed.add(first)  # captured after one eager run with these addresses
        elif self._use_graphs:
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self._stream):
                    self._context.execute_async_v3(self._stream.cuda_stream)
                self._graphs[first] = graph
            except Exception as exc:  # capture unsupported for this engine: stay eager
                log.warning("CUDA graph capture failed, running TensorRT eagerly: %s", exc)
                self._use_graphs = False

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
        """See ``FlowEstimator.estimate``. Without ``out`` the result is a view of a reused page-locked
        buffer, valid until the next call."""
        import torch

        from ..models.inference import resize_flow

        if self._closed:
            raise BackendError("estimator was closed")
        if rgb1.shape != rgb2.shape or rgb1.ndim != 3 or rgb1.shape[2] != 3 or rgb1.dtype != np.uint8:
            raise ValueError(
                f"expected two (H, W, 3) uint8 images of one size, got {rgb1.shape} and {rgb2.shape}"
            )
        height, width = rgb1.shape[:2]
        out_h, out_w = output_size or (height, width)
        if out is not None and (
            out.shape != (out_h, out_w, 2) or out.dtype != np.float32 or not out.flags.c_contiguous
        ):
            raise ValueError(f"out must be a C-contiguous ({out_h}, {out_w}, 2) float32 array")
        with torch.cuda.device(self._device), torch.cuda.stream(self._stream), torch.inference_mode():
            if key1 is not None and key1 == self._cached_key:
                first = self._cached_slot  # already on the device at network size
            else:
                first = 0
                self._upload(rgb1, first)
            second = 1 - first
            self._upload(rgb2, second)
            self._cached_key, self._cached_slot = key2, second
            self._context.set_tensor_address(self._plan.inputs[0], self._slots[first].data_ptr())
            self._context.set_tensor_address(self._plan.inputs[1], self._slots[second].data_ptr())
            self._execute(first)
            flow = resize_flow(self._flow.float(), out_h, out_w)[0].permute(1, 2, 0)
            if out is not None:
                torch.from_numpy(out).copy_(flow)  # the one device→host copy (synchronous)
                return out
            host = self._pinned(out_h, out_w)
            host.copy_(flow, non_blocking=True)  # the one device→host copy, into page-locked memory
            self._stream.synchronize()
            return host.numpy()

    def _pinned(self, height: int, width: int) -> Any:
        import torch

        if self._host_flow is None or tuple(self._host_flow.shape) != (height, width, 2):
            self._host_flow = torch.empty((height, width, 2), dtype=torch.float32, pin_memory=True)
        return self._host_flow

    def close(self) -> None:
        if self._closed:
            return
        import torch

        self._closed = True
        self._stream.synchronize()
        self._graphs.clear()
        del self._context, self._engine, self._runtime
        self._slots, self._frames, self._host_flow = [], [None, None], None
        torch.cuda.empty_cache()
