"""The TensorRT backend: a serialised engine (from ``flownet2-build-engine``) run with name-based I/O.

Pairs are run in batches: ``estimate_batch`` puts up to the engine's profile maximum of pairs into one
``execute_async_v3`` (an engine built with ``--batch MIN:OPT:MAX``; a static engine runs one pair at a
time), splits a larger call into consecutive batches (6 pairs over a maximum of 4: 4, then 2; results in
the order given) and pads a batch below the profile minimum. Pairs of any input size share a batch: each
uint8 frame is copied once to the device and converted/resized on the GPU by torch straight into a row of
one of two preallocated input buffers (batch position *k* of the call has its own pair of buffers). A
frame that was the second image of the previous run at the same batch position (same ``key``) is not
uploaded again: when every pair of the batch continues its predecessor, the two input buffers swap roles
(``set_tensor_address``) and nothing is copied; otherwise such a frame is copied on the device. The
engine runs on a private CUDA stream, optionally replayed from captured CUDA graphs (one per batch size
and buffer arrangement, captured in thread-local mode so that CUDA calls of other threads — ROS callbacks
— cannot void the capture); each pair's flow is resized to its output grid on the GPU and copied back once
into ``out`` or a reused page-locked buffer. All device buffers are torch tensors shared with TensorRT by
address (no extra copies). Every boolean TensorRT returns (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``, also while capturing) is checked and a ``False`` is a :class:`BackendError`.

Before deserialising, the engine's sidecar (``<engine>.json``) is checked against this machine's
TensorRT version and GPU (:func:`~flownet2_ros.export.engine_metadata.check_engine`), the correlation
kernel is compiled and loaded for this GPU (:func:`~flownet2_ros.ops.cuda_correlation.prepare_kernel`:
a missing NVRTC or a wrong cuda-bindings is one line naming the fix, not a failure inside the plugin's
``enqueue``), and the correlation plugin is registered in this process. :func:`unusable_reason` says in
one sentence why the backend cannot run (the factory then falls back to torch in ``auto`` mode).

Runs only with the full TensorRT (``tensorrt``; the lean runtime ``tensorrt_lean`` is refused) and a CUDA
GPU. The checks, the I/O planning (:func:`plan_io`), the batch split (:func:`split_batches`) and the
estimator's batching, buffer reuse and boolean checks are tested on a CPU against a stand-in engine
(``trt_module=``, ``gpu=`` and ``device="cpu"``: host memory, no streams); deserialising a real engine,
its execution and graph capture need TensorRT and a GPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..export.engine_metadata import STATIC_BATCH, BatchProfile
from .base import BackendError, BackendInfo, FlowEstimator, FlowRequest

__all__ = [
    "IoPlan",
    "TensorRTFlowEstimator",
    "create_tensorrt",
    "engine_batch_profile",
    "plan_io",
    "split_batches",
    "unusable_reason",
]

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
    engine order; the single output is the flow. A batch dimension of -1 (dynamic) runs within the
    engine's optimization profile; a static batch must be 1.

    Raises:
        BackendError: not two inputs and one output, wrong ranks/channels, dynamic spatial size, a static
            batch other than 1, or unsupported data types.
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
    batches = {shape[0] for shape in shapes}
    if batches != {-1} and batches != {1}:
        raise BackendError(
            f"engine needs a batch of 1 or a dynamic batch on every tensor, got shapes {shapes}; "
            "re-export with --dynamic-batch and build with --batch MIN:OPT:MAX"
        )
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
        dynamic_batch=-1 in batches,
    )


def split_batches(count: int, max_batch: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive batches of at most ``max_batch`` pairs covering ``count`` pairs.

    ``split_batches(6, 4) == [(0, 4), (4, 6)]``; ``split_batches(0, 4) == []``.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return [(start, min(start + max_batch, count)) for start in range(0, count, max_batch)]


def engine_batch_profile(engine: Any, plan: IoPlan) -> BatchProfile:
    """The batch profile of a deserialised engine: profile 0 of its image inputs (1:1:1 when static).

    Raises:
        BackendError: the profile cannot be read or differs between the two inputs.
    """
    if not plan.dynamic_batch:
        return STATIC_BATCH
    profiles = []
    for name in plan.inputs:
        try:
            low, opt, high = (
                tuple(int(v) for v in dims) for dims in engine.get_tensor_profile_shape(name, 0)
            )
            profiles.append(BatchProfile(low[0], opt[0], high[0]))
        except (ValueError, TypeError, IndexError, RuntimeError) as exc:
            raise BackendError(f"cannot read the batch profile of engine input {name!r}: {exc}") from None
    if profiles[0] != profiles[1]:
        raise BackendError(
            f"the engine's inputs have different batch profiles: {profiles[0]} and {profiles[1]}"
        )
    return profiles[0]


def _engine_tensors(engine: Any, trt: Any) -> list[tuple[str, bool, tuple[int, ...], str]]:
    """``(name, is_input, shape, DataType name)`` of every I/O tensor of ``engine``."""
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        tensors.append(
            (
                name,
                engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                tuple(int(v) for v in engine.get_tensor_shape(name)),
                engine.get_tensor_dtype(name).name,
            )
        )
    return tensors


def _prepare_kernel(device: int) -> None:
    """Compile and load the correlation kernel for CUDA device ``device`` (BackendError, one line)."""
    from ..ops import cuda_correlation

    try:
        cuda_correlation.prepare_kernel(device)
    except cuda_correlation.CudaCorrelationError as exc:
        raise BackendError(str(exc)) from None


def _graph_capture(stream: Any) -> tuple[Any, Any]:
    """A new CUDA graph and the context manager that captures into it on ``stream``.

    Thread-local capture mode (``cudaStreamCaptureModeThreadLocal``): a CUDA call from another thread
    during the capture (a ROS callback uploading a frame) neither voids the capture nor fails.
    """
    import torch

    graph = torch.cuda.CUDAGraph()
    return graph, torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local")


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
    when given), then — for an engine with the correlation plugin — the kernel compiled and loaded for
    this GPU.
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
        meta = check_engine(engine, expected, verify_hash=False)
    except EngineMismatchError as exc:
        if config.allow_rebuild and config.onnx:
            return None  # create_tensorrt rebuilds it from the ONNX into the cache
        return str(exc)
    if meta.plugin:
        try:
            _prepare_kernel(index)
        except BackendError as exc:
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


@dataclass
class _BatchSet:
    """Device buffers of one batch position of a call: two image buffers (max_batch, 3, H, W), the flow
    (max_batch, 2, H, W), and which image buffer holds the last run's second frames, with their keys."""

    images: list[Any]
    flow: Any
    second: int = 1
    keys: list[int | None] = field(default_factory=list)


class TensorRTFlowEstimator(FlowEstimator):
    """Runs a FlowNet TensorRT engine; see the module docstring.

    ``trt_module`` / ``gpu``: a stand-in TensorRT module and (name, compute capability) for tests; with
    ``gpu`` given, ``device="cpu"`` runs the stand-in engine on host memory (no streams, no page-locked
    buffers).
    """

    def __init__(
        self,
        engine_path: str | Path,
        device: str = "auto",
        *,
        cuda_graph: bool = False,
        expected_stack: str | None = None,
        trt_module: Any | None = None,
        gpu: tuple[str, str] | None = None,
    ) -> None:
        import torch

        from ..export import trt_plugin
        from ..export.engine_builder import current_expectation, describe_gpu
        from ..export.engine_metadata import EngineMismatchError, check_engine

        if trt_module is not None:
            trt = trt_module
        else:
            trt, reason = _full_tensorrt()
            if reason is not None or trt is None:
                raise BackendError(reason or "TensorRT unavailable")
        if device == "cpu" and gpu is not None:
            index = 0
            self._device = torch.device("cpu")
        else:
            if not torch.cuda.is_available():
                raise BackendError("no CUDA GPU is available")
            found, reason = _cuda_index(device)
            if reason is not None or found is None:
                raise BackendError(reason or "no CUDA device")
            index = found
            self._device = torch.device("cuda", index)
            gpu = gpu or describe_gpu(index)
        self._cuda = self._device.type == "cuda"
        self._trt = trt
        self._engine_path = Path(engine_path)
        expected = current_expectation(trt, gpu)
        if expected_stack:
            expected = replace(expected, stack=expected_stack)
        try:
            self._meta = check_engine(self._engine_path, expected)
        except EngineMismatchError as exc:
            raise BackendError(str(exc)) from None
        self._gpu_name = gpu[0]
        if self._meta.plugin:
            _prepare_kernel(index)  # a kernel problem is one line here, not a failure inside enqueue
        trt_plugin.register_plugin(trt)  # before deserialising: the engine holds the Python plugin

        with self._device_scope():
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            engine = self._runtime.deserialize_cuda_engine(self._engine_path.read_bytes())
            if engine is None:
                raise BackendError(f"TensorRT could not deserialise {self._engine_path} (see its log)")
            self._engine = engine
            self._context = engine.create_execution_context()
            if self._context is None:
                raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
            self._plan = plan_io(_engine_tensors(engine, trt))
            self._profile = engine_batch_profile(engine, self._plan)
            self._stream = torch.cuda.Stream(self._device) if self._cuda else None
        self._sets: list[_BatchSet] = []
        self._staging: dict[tuple[int, ...], Any] = {}  # uint8 (H, W, 3) upload buffers by frame shape
        self._host: dict[tuple[int, int, int], Any] = {}  # page-locked results by (position, H, W)
        self._bound: tuple[int, ...] | None = None  # (batch, image1, image2, flow addresses) set in TensorRT
        self._use_graphs = cuda_graph
        self._graphs: dict[tuple[int, int, int], Any] = {}  # (batch position, batch size, first buffer)
        self._executed: set[tuple[int, int, int]] = set()
        self._closed = False

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            name="tensorrt",
            device=self._gpu_name,
            precision=self._meta.precision,
            model=f"{self._meta.stack} (TensorRT {self._meta.tensorrt_version} engine "
            f"{self._engine_path.name}, batch {self._profile})",
            network_size=(self._plan.height, self._plan.width),
        )

    @property
    def batch_profile(self) -> BatchProfile:
        """The batch sizes the engine runs (1:1:1 for a static engine)."""
        return self._profile

    @property
    def graph_count(self) -> int:
        """CUDA graphs captured so far (one per batch position, batch size and buffer arrangement)."""
        return len(self._graphs)

    # ------------------------------------------------------------------------------------ helpers

    def _device_scope(self) -> Any:
        import torch

        return torch.cuda.device(self._device) if self._cuda else contextlib.nullcontext()

    @contextlib.contextmanager
    def _run_scope(self) -> Iterator[None]:
        import torch

        with contextlib.ExitStack() as stack:
            if self._cuda:
                stack.enter_context(torch.cuda.device(self._device))
                stack.enter_context(torch.cuda.stream(self._stream))
            stack.enter_context(torch.inference_mode())
            yield

    def _stream_handle(self) -> int:
        return int(self._stream.cuda_stream) if self._stream is not None else 0

    def _batch_set(self, position: int) -> _BatchSet:
        import torch

        plan, size = self._plan, self._profile.max_batch
        while len(self._sets) <= position:
            images = [
                torch.zeros(
                    (size, 3, plan.height, plan.width),
                    dtype=getattr(torch, plan.input_dtype),
                    device=self._device,
                )
                for _ in range(2)
            ]
            flow = torch.zeros(
                (size, 2, plan.height, plan.width),
                dtype=getattr(torch, plan.output_dtype),
                device=self._device,
            )
            self._sets.append(_BatchSet(images, flow))
        return self._sets[position]

    def _upload(self, rgb: np.ndarray, target: Any) -> None:
        """Copy a uint8 frame to the device once, convert and resize it into ``target`` (3, H, W)."""
        import torch

        from ..models.inference import frame_to_network

        staging = self._staging.get(rgb.shape)
        if staging is None:
            if len(self._staging) >= 8:
                self._staging.clear()
            staging = self._staging[rgb.shape] = torch.empty(
                rgb.shape, dtype=torch.uint8, device=self._device
            )
        staging.copy_(torch.from_numpy(np.ascontiguousarray(rgb)))  # the one host→device copy
        target.copy_(frame_to_network(staging, (self._plan.height, self._plan.width), torch.float32)[0])

    def _stage(self, batch: _BatchSet, requests: Sequence[FlowRequest]) -> int:
        """Put the pairs' frames into ``batch``'s image buffers; returns the buffer holding the first frames.

        Every pair continuing the pair previously run at its row (``key1`` = that pair's ``key2``): the
        buffers swap roles, only the second frames are uploaded. Otherwise a first frame still on the
        device (any row of the last run) is copied there, the others are uploaded.
        """
        resident = batch.keys
        follows = len(requests) <= len(resident) and all(
            r.key1 is not None and r.key1 == resident[row] for row, r in enumerate(requests)
        )
        if follows:
            first = batch.second
        else:
            first = 1 - batch.second
            rows = {key: row for row, key in enumerate(resident) if key is not None}
            for row, r in enumerate(requests):
                source = rows.get(r.key1) if r.key1 is not None else None
                if source is not None:
                    batch.images[first][row].copy_(batch.images[batch.second][source])  # on the device
                else:
                    self._upload(r.rgb1, batch.images[first][row])
        second = 1 - first
        for row, r in enumerate(requests):
            self._upload(r.rgb2, batch.images[second][row])
        batch.second, batch.keys = second, [r.key2 for r in requests]
        return first

    def _bind(self, batch: _BatchSet, size: int, first: int) -> None:
        """Tell TensorRT the batch size and the buffers (only what changed since the last run)."""
        plan = self._plan
        tensors = [batch.images[first], batch.images[1 - first], batch.flow]
        binding = (size, *(t.data_ptr() for t in tensors))
        if binding == self._bound:
            return
        self._bound = None
        if plan.dynamic_batch:
            shape = (size, 3, plan.height, plan.width)
            for name in plan.inputs:
                if not self._context.set_input_shape(name, shape):
                    raise BackendError(
                        f"TensorRT refused input shape {shape} for {name!r} (set_input_shape returned "
                        f"False); the engine's batch profile is {self._profile}"
                    )
        for name, tensor in zip((*plan.inputs, plan.output), tensors, strict=True):
            if not self._context.set_tensor_address(name, tensor.data_ptr()):
                raise BackendError(
                    f"TensorRT refused the device address of tensor {name!r} "
                    "(set_tensor_address returned False)"
                )
        self._bound = binding

    def _execute(self, position: int, batch: _BatchSet, size: int, first: int) -> None:
        key = (position, size, first)
        graph = self._graphs.get(key)
        if graph is not None:
            graph.replay()
            return
        self._bind(batch, size, first)
        if not self._context.execute_async_v3(self._stream_handle()):
            raise BackendError(
                f"TensorRT execution failed for a batch of {size} "
                "(execute_async_v3 returned False; see its log)"
            )
        if self._use_graphs:
            if key in self._executed:
                self._capture(key)
            else:
                self._executed.add(key)  # captured on the next run, after one eager run with these addresses

    def _capture(self, key: tuple[int, int, int]) -> None:
        try:
            graph, capture = _graph_capture(self._stream)
            with capture:
                ok = self._context.execute_async_v3(self._stream_handle())
        except Exception as exc:  # capture unsupported for this engine: stay eager
            log.warning("CUDA graph capture failed, running TensorRT eagerly: %s", exc)
            self._use_graphs = False
            return
        if not ok:
            self._use_graphs = False
            raise BackendError(
                "TensorRT could not run the engine inside a CUDA graph capture (execute_async_v3 returned "
                "False); later calls run without CUDA graphs (cuda_graph: false skips the attempt)"
            )
        self._graphs[key] = graph

    def _deliver(self, flow: Any, request: FlowRequest, size: tuple[int, int], position: int) -> np.ndarray:
        """The one device→host copy of one pair's (1, 2, H, W) flow, resized to ``size``."""
        import torch

        from ..models.inference import resize_flow

        out_h, out_w = size
        result = resize_flow(flow.float(), out_h, out_w)[0].permute(1, 2, 0)
        if request.out is not None:
            torch.from_numpy(request.out).copy_(result)  # synchronous
            return request.out
        if self._cuda:
            host = self._host.get((position, out_h, out_w))
            if host is None:
                host = torch.empty((out_h, out_w, 2), dtype=torch.float32, pin_memory=True)
                self._host[(position, out_h, out_w)] = host
            host.copy_(result, non_blocking=True)  # into page-locked memory; synchronised before returning
            return host.numpy()
        return result.clone(memory_format=torch.contiguous_format).numpy()

    # --------------------------------------------------------------------------------------- API

    def estimate_batch(self, requests: Sequence[FlowRequest]) -> list[np.ndarray]:
        """See ``FlowEstimator.estimate_batch``: up to the profile maximum of pairs per engine run, larger
        calls split into consecutive runs; results in request order. Without ``out`` each result is a view
        of a reused page-locked buffer (one per position in the call), valid until the next call."""
        if self._closed:
            raise BackendError("estimator was closed")
        from ..models.inference import check_pair_request

        sizes = [check_pair_request(r) for r in requests]  # all checked before anything runs
        results: list[np.ndarray] = []
        with self._run_scope():
            for position, (start, stop) in enumerate(split_batches(len(requests), self._profile.max_batch)):
                chunk = requests[start:stop]
                batch = self._batch_set(position)
                first = self._stage(batch, chunk)
                run = max(len(chunk), self._profile.min_batch)  # rows beyond the chunk: ignored padding
                self._execute(position, batch, run, first)
                for row, request in enumerate(chunk):
                    flow = batch.flow[row : row + 1]
                    results.append(self._deliver(flow, request, sizes[start + row], start + row))
            if self._stream is not None:
                self._stream.synchronize()
        return results

    def close(self) -> None:
        if self._closed:
            return
        import torch

        self._closed = True
        if self._stream is not None:
            self._stream.synchronize()
        self._graphs.clear()
        self._sets, self._staging, self._host = [], {}, {}
        del self._context, self._engine, self._runtime
        if self._cuda:
            torch.cuda.empty_cache()
