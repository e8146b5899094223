"""ONNX → TensorRT engine, with its sidecar metadata; and the runtime's "load, or rebuild into a cache".

:func:`build_engine` is a thin layer over TensorRT's documented builder API (10.3 … 11.x): compile and load
the correlation kernel for this GPU first (:func:`~..ops.cuda_correlation.prepare_kernel`: a toolchain
problem is one line naming the fix, not an exception swallowed inside the plugin's ``enqueue`` during
timing), register the correlation plugin, ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (fp16 comes
from the ONNX graph's own casts — TensorRT 11 has no FP16 builder flag; explicit batch is the default
since 10.0), ``OnnxParser`` (unknown nodes fall back to registered plugins by op_type), one optimization
profile covering every input with a dynamic (-1) batch dimension (``batch=MIN:OPT:MAX``; TensorRT refuses
to build such a network without one), workspace through ``set_memory_pool_limit(WORKSPACE, …)``, an
optional timing cache loaded and saved, an ``IProgressMonitor`` feeding tqdm bars,
``build_serialized_network``, then the engine and ``<engine>.json`` (with the batch profile) written
atomically.

Every decision around the builder is a plain function, tested without TensorRT: argument validation
(:func:`validate_build_args`), why no engine can be built here (:func:`builder_unavailable_reason`,
:func:`gpu_unavailable_reason`), parse-error wording (:func:`describe_parse_errors`), the batch profile
(:func:`plan_batch_profile`), the metadata (:func:`make_metadata`, :func:`read_onnx_metadata`). The
TensorRT module and the GPU description are injectable (``trt_module=``, ``gpu=``), so the whole flow also
runs in tests against a stand-in. Only the real parse and build need the full TensorRT with a GPU.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import __version__
from .engine_metadata import (
    STATIC_BATCH,
    BatchProfile,
    EngineExpectation,
    EngineMetadata,
    EngineMismatchError,
    check_engine,
    engine_cache_path,
    file_sha256,
    now_iso,
    read_metadata,
    write_metadata,
)
from .plugin_spec import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION
from .trt_plugin import MIN_TENSORRT_VERSION, import_tensorrt, register_plugin, tensorrt_version

__all__ = [
    "PRECISIONS",
    "EngineBuildError",
    "GpuDescription",
    "build_engine",
    "builder_unavailable_reason",
    "current_expectation",
    "describe_gpu",
    "describe_parse_errors",
    "gpu_unavailable_reason",
    "load_or_rebuild_engine",
    "make_metadata",
    "plan_batch_profile",
    "read_onnx_metadata",
    "validate_build_args",
]

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16")
PLUGIN_ID = f"{PLUGIN_NAME}/{PLUGIN_VERSION}/{PLUGIN_NAMESPACE}"
_ONNX_META_PREFIX = "flownet2_ros."
GpuDescription = tuple[str, str]  # (name, compute capability "8.7")


class EngineBuildError(RuntimeError):
    """An engine cannot be built (no TensorRT builder, no GPU, the correlation kernel unusable, parse
    failure, no batch profile for a dynamic batch, build failure)."""


# ------------------------------------------------------------------------------------------ environment


def builder_unavailable_reason(trt_module: Any | None = None) -> str | None:
    """One line saying why TensorRT cannot build engines here, or None when its builder is usable."""
    trt = trt_module if trt_module is not None else import_tensorrt()
    if trt is None:
        return "TensorRT is not installed (JetPack provides it; on a desktop: pip install tensorrt)"
    version = tensorrt_version(trt)
    if version[:2] < MIN_TENSORRT_VERSION:
        need = ".".join(map(str, MIN_TENSORRT_VERSION))
        return f"TensorRT {getattr(trt, '__version__', '?')} is too old; need >= {need}"
    name = getattr(trt, "__name__", "tensorrt")
    if not hasattr(trt, "Builder"):
        return (
            f"only TensorRT's lean runtime ({name} {getattr(trt, '__version__', '?')}) is installed: it has no "
            "builder; install the full TensorRT (pip install tensorrt, or JetPack)"
        )
    if not hasattr(trt, "OnnxParser"):
        return f"this TensorRT installation ({name}) has no ONNX parser"
    return None


def gpu_unavailable_reason() -> str | None:
    """One line saying why no CUDA GPU is usable here, or None."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "torch is not installed, so the GPU cannot be queried"
    if not torch.cuda.is_available():
        return "no CUDA GPU is available (torch.cuda.is_available() is False)"
    return None


def describe_gpu(device: int = 0) -> GpuDescription:
    """(name, compute capability) of CUDA device ``device``, as recorded in the sidecar."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def current_expectation(trt: Any, gpu: GpuDescription) -> EngineExpectation:
    """What an engine must match to run here: this TensorRT and this GPU."""
    return EngineExpectation(
        tensorrt_version=str(getattr(trt, "__version__", "")), gpu_name=gpu[0], compute_capability=gpu[1]
    )


# ------------------------------------------------------------------------------------------- arguments


def validate_build_args(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: str,
    workspace_mb: int,
    timing_cache: str | Path | None = None,
) -> None:
    """Reject what would fail late: missing ONNX, bad precision/workspace, output over the input.

    Raises:
        ValueError: with one readable sentence.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise ValueError(f"ONNX model {onnx_path} not found")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
    if isinstance(workspace_mb, bool) or not isinstance(workspace_mb, int) or workspace_mb < 16:
        raise ValueError(f"workspace must be an integer number of MiB >= 16, got {workspace_mb!r}")
    if engine_path.resolve() == onnx_path.resolve():
        raise ValueError("the engine path must differ from the ONNX path")
    if engine_path.exists() and engine_path.is_dir():
        raise ValueError(f"engine path {engine_path} is a directory")
    if not engine_path.parent.exists():
        raise ValueError(f"output folder {engine_path.parent} does not exist")
    if timing_cache is not None and Path(timing_cache).is_dir():
        raise ValueError(f"timing cache {timing_cache} is a directory")


def read_onnx_metadata(onnx_path: str | Path) -> dict[str, str]:
    """The ``flownet2_ros.*`` metadata the exporter stores in the ONNX file (prefix removed); {} if none."""
    try:
        import onnx
    except ImportError:
        return {}
    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises various errors for a corrupt file
        raise ValueError(f"{onnx_path} is not a readable ONNX model ({exc})") from None
    return {
        entry.key[len(_ONNX_META_PREFIX) :]: entry.value
        for entry in proto.metadata_props
        if entry.key.startswith(_ONNX_META_PREFIX)
    }


def make_metadata(
    onnx_path: str | Path,
    precision: str,
    *,
    trt_version: str,
    gpu: GpuDescription,
    onnx_meta: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    batch: BatchProfile | None = None,
) -> EngineMetadata:
    """Sidecar content for an engine built from ``onnx_path`` (engine hash/size filled in after writing).

    Size, stack, weights hash and plugin come from the exporter's ONNX metadata; ``batch`` is the
    engine's batch profile (default 1:1:1); ``overrides`` (field → value) take precedence. Without ONNX
    metadata the source is the ONNX file's SHA-256 and the size must be given in ``overrides``
    (``input_height``/``input_width``).

    Raises:
        ValueError: the ONNX's precision contradicts ``precision``, or no input size is known.
    """
    meta = dict(onnx_meta if onnx_meta is not None else read_onnx_metadata(onnx_path))
    onnx_sha = file_sha256(onnx_path)
    exported = meta.get("precision")
    if exported and exported != precision:
        raise ValueError(
            f"{Path(onnx_path).name} was exported as {exported} but {precision} was requested; networks are "
            "strongly typed, so re-export the ONNX with that precision"
        )
    weights = meta.get("weights_sha256", "")
    values: dict[str, Any] = {
        "tensorrt_version": trt_version,
        "gpu_name": gpu[0],
        "compute_capability": gpu[1],
        "precision": precision,
        "input_height": int(meta["height"]) if meta.get("height", "").isdigit() else None,
        "input_width": int(meta["width"]) if meta.get("width", "").isdigit() else None,
        "stack": meta.get("stack", "") or "unknown",
        "source_sha256": weights or onnx_sha,
        "source_kind": "weights" if weights else "onnx",
        "plugin": meta.get("plugin", PLUGIN_ID),  # the exporter writes "" for a decomposed correlation
        "package_version": __version__,
        "created": now_iso(),
        "onnx_sha256": onnx_sha,
    }
    profile = batch or STATIC_BATCH
    values.update(batch_min=profile.min_batch, batch_opt=profile.opt_batch, batch_max=profile.max_batch)
    overrides = dict(overrides or {})
    for key in ("input_height", "input_width"):
        if values[key] is not None and key in overrides and int(overrides[key]) != values[key]:
            raise ValueError(
                f"{Path(onnx_path).name} was exported for {values['input_width']}x{values['input_height']} "
                f"(WxH); it cannot be built for another size — re-export it"
            )
    values.update(overrides)
    if values["input_height"] is None or values["input_width"] is None:
        raise ValueError(f"{Path(onnx_path).name} carries no input size metadata; give the input size")
    return EngineMetadata(**values)


def describe_parse_errors(errors: Sequence[Any]) -> str:
    """One line from TensorRT ``ParserError`` objects: the first error's node, operator and description."""
    if not errors:
        return "the ONNX parser failed without reporting an error"
    first = errors[0]

    def call(name: str) -> str:
        method = getattr(first, name, None)
        try:
            return str(method()) if callable(method) else ""
        except Exception:  # an older binding without this accessor
            return ""

    desc = " ".join(call("desc").split()) or "unknown error"
    node, op, index = call("node_name"), call("node_operator"), call("node")
    where = []
    if node:
        where.append(f"node {node!r}")
    elif index not in ("", "-1"):
        where.append(f"node #{index}")
    if op:
        where.append(f"op {op}")
    text = f"ONNX parse failed at {', '.join(where)}: {desc}" if where else f"ONNX parse failed: {desc}"
    if op == PLUGIN_NAME:
        text += f" (the {PLUGIN_NAME} plugin must be registered in this process; it is by build_engine)"
    elif "plugin" in desc.lower() or "unsupported" in desc.lower() or "no importer" in desc.lower():
        text += " (unsupported operator: re-export with a supported opset or correlation mode)"
    if len(errors) > 1:
        text += f" (+{len(errors) - 1} more error(s))"
    return text


def plan_batch_profile(
    inputs: Sequence[tuple[str, Sequence[int]]], batch: BatchProfile | None, source: str = "the ONNX model"
) -> tuple[BatchProfile, list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]]]]:
    """The batch profile of a network with these ``(name, shape)`` inputs, and the profile's shapes.

    An input with a -1 first dimension gets ``(name, min, opt, max)`` shapes with ``batch``'s sizes in
    that dimension; no input dynamic: the static batch (first dimension) is the profile and no shapes are
    needed.

    Returns:
        (profile recorded in the sidecar, shapes for ``IOptimizationProfile.set_shape``).

    Raises:
        EngineBuildError: a dynamic batch without ``batch`` (the message names ``--batch``), a dynamic
            dimension other than the batch, a ``batch`` other than the static batch of a static network.
    """
    dynamic = [
        (name, tuple(int(d) for d in shape)) for name, shape in inputs if any(int(d) < 0 for d in shape)
    ]
    for name, shape in dynamic:
        if len(shape) == 0 or any(d < 0 for d in shape[1:]):
            raise EngineBuildError(
                f"input {name!r} of {source} has dynamic dimensions other than the batch {shape}; export it "
                "with a static input size"
            )
    if not dynamic:
        firsts = {int(shape[0]) for _, shape in inputs if len(shape) > 0}
        static = BatchProfile(*(3 * [firsts.pop()])) if len(firsts) == 1 else STATIC_BATCH
        if batch is not None and batch != static:
            raise EngineBuildError(
                f"{source} has a static batch of {static.max_batch}, so it cannot be built with batch "
                f"profile {batch}; export it with --dynamic-batch (flownet2-export-onnx) or drop --batch"
            )
        return static, []
    if batch is None:
        name, shape = dynamic[0]
        raise EngineBuildError(
            f"{source} has a dynamic batch dimension (input {name!r} {list(shape)}): give the batch sizes "
            "to build for with --batch MIN:OPT:MAX, e.g. --batch 1:2:4 (build_engine(batch=...))"
        )
    shapes = [
        (name, (batch.min_batch, *shape[1:]), (batch.opt_batch, *shape[1:]), (batch.max_batch, *shape[1:]))
        for name, shape in dynamic
    ]
    return batch, shapes


# ------------------------------------------------------------------------------------------- building


def _progress_monitor(trt: Any) -> Any:
    """An IProgressMonitor that shows TensorRT's build phases as nested tqdm bars (thread-safe)."""
    from tqdm import tqdm

    class TqdmProgress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, Any] = {}
            self._parents: dict[str, str | None] = {}
            self._lock = threading.Lock()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                depth, parent = 0, parent_phase
                while parent and depth < 8:
                    depth, parent = depth + 1, self._parents.get(parent)
                self._parents[phase_name] = parent_phase
                self._bars[phase_name] = tqdm(
                    total=num_steps, desc=phase_name, position=depth, leave=depth == 0, dynamic_ncols=True
                )

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                self._parents.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return TqdmProgress()


def _prepare_kernel(device: int = 0) -> None:
    """The correlation kernel compiled and loaded for the build GPU, before TensorRT touches the network."""
    from ..ops import cuda_correlation

    try:
        cuda_correlation.prepare_kernel(device)
    except cuda_correlation.CudaCorrelationError as exc:
        raise EngineBuildError(str(exc)) from None


def _write_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(memoryview(data))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    precision: str = "fp32",
    workspace_mb: int = 4096,
    timing_cache: str | Path | None = None,
    verbose: bool = False,
    progress: bool = True,
    metadata: Mapping[str, Any] | None = None,
    batch: BatchProfile | str | None = None,
    trt_module: Any | None = None,
    gpu: GpuDescription | None = None,
) -> Path:
    """Build a TensorRT engine from an ONNX model and write it with its sidecar ``<engine>.json``.

    Args:
        onnx_path: the model (from ``flownet2_ros.export.export_onnx`` or any ONNX graph).
        engine_path: where to write the engine (its folder must exist).
        precision: ``fp32`` or ``fp16``; must agree with the ONNX (networks are strongly typed).
        workspace_mb: builder workspace limit in MiB.
        timing_cache: file to load timing data from (if present) and to save it to afterwards.
        verbose: TensorRT's verbose log (else warnings only). progress: tqdm bars per build phase.
        metadata: sidecar fields overriding what is read from the ONNX (e.g. ``stack``, ``input_height``).
        batch: batch profile (``BatchProfile`` or ``"MIN:OPT:MAX"``) for an ONNX exported with a dynamic
            batch (required there); a static export takes None (or its own static batch, ``1:1:1``).
        trt_module: the TensorRT module (default: ``import tensorrt``). gpu: (name, compute capability)
            of the build GPU (default: CUDA device 0).

    Returns:
        Path: ``engine_path``.

    Raises:
        ValueError: bad arguments. EngineBuildError: no TensorRT builder, no GPU, the correlation kernel
            unusable here, parse failure, no or a wrong batch profile, build failure.
    """
    validate_build_args(onnx_path, engine_path, precision, workspace_mb, timing_cache)
    profile = BatchProfile.parse(batch) if isinstance(batch, str) else batch
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    trt = trt_module if trt_module is not None else import_tensorrt()
    reason = builder_unavailable_reason(trt)
    if reason is None and gpu is None:
        reason = gpu_unavailable_reason()
    if reason is not None or trt is None:
        raise EngineBuildError(reason or "TensorRT is not installed")
    gpu = gpu or describe_gpu()
    sidecar = make_metadata(
        onnx_path, precision, trt_version=str(trt.__version__), gpu=gpu, overrides=metadata
    )

    if sidecar.plugin:  # the network holds the correlation plugin: its kernel must work on this GPU
        _prepare_kernel()
    register_plugin(trt)
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(describe_parse_errors([parser.get_error(i) for i in range(parser.num_errors)]))
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    profile, shapes = plan_batch_profile(
        [(tensor.name, tuple(tensor.shape)) for tensor in inputs], profile, onnx_path.name
    )
    sidecar = replace(
        sidecar, batch_min=profile.min_batch, batch_opt=profile.opt_batch, batch_max=profile.max_batch
    )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if shapes:
        optimization = builder.create_optimization_profile()
        for name, low, opt, high in shapes:
            optimization.set_shape(name, low, opt, high)
        if config.add_optimization_profile(optimization) < 0:
            raise EngineBuildError(f"TensorRT rejected the batch profile {profile} (see its log above)")
    cache_file = Path(timing_cache) if timing_cache is not None else None
    if cache_file is not None:
        cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
        if not config.set_timing_cache(cache, False):
            # Made by another TensorRT version or GPU: start afresh (it is rewritten after the build).
            log.warning("timing cache %s does not fit this TensorRT/GPU; starting an empty one", cache_file)
            if not config.set_timing_cache(config.create_timing_cache(b""), False):
                raise EngineBuildError(f"TensorRT refused an empty timing cache (for {cache_file})")
    monitor = _progress_monitor(trt) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError("TensorRT could not build the engine (see its log above)")
    if cache_file is not None:
        _write_atomic(cache_file, config.get_timing_cache().serialize())

    _write_atomic(engine_path, serialized)
    sidecar = replace(sidecar, engine_sha256=file_sha256(engine_path), engine_size=engine_path.stat().st_size)
    write_metadata(engine_path, sidecar)
    return engine_path


def load_or_rebuild_engine(
    engine_path: str | Path,
    expected: EngineExpectation,
    *,
    onnx_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    workspace_mb: int = 4096,
    progress: bool = False,
    batch: BatchProfile | None = None,
    trt_module: Any | None = None,
    gpu: GpuDescription | None = None,
    builder: Callable[..., Path] | None = None,
) -> tuple[Path, str]:
    """The engine to deserialise: ``engine_path`` if it matches ``expected``, else a rebuilt one.

    With ``rebuild`` and an ``onnx_path``, a mismatched or corrupt engine is rebuilt from the ONNX into
    ``cache_dir`` (default: the engine's folder) under :func:`~.engine_metadata.engine_cache_path`; an
    engine already cached for these conditions is reused. The rebuild keeps the batch profile of the
    engine it replaces (``batch`` overrides it; 1:1:1 when that sidecar is unreadable).

    Returns:
        (path, sentence saying what was chosen and why).

    Raises:
        EngineMismatchError: mismatch and no rebuild allowed/possible (the reason names the mismatch).
        EngineBuildError: the rebuild failed.
    """
    engine_path = Path(engine_path)
    try:
        check_engine(engine_path, expected)
        return engine_path, f"engine {engine_path.name} matches this machine"
    except EngineMismatchError as exc:
        if not rebuild:
            raise
        if onnx_path is None:
            raise EngineMismatchError(f"{exc}; no ONNX model given to rebuild it from") from None
        reason = str(exc)
    if expected.precision is None:
        raise EngineMismatchError(f"{reason}; the precision to rebuild with is unknown")
    trt = trt_module if trt_module is not None else import_tensorrt()
    if trt is None:
        raise EngineBuildError(builder_unavailable_reason(None) or "TensorRT unavailable")
    gpu = gpu or describe_gpu()
    if batch is None:
        try:
            batch = read_metadata(engine_path).batch_profile
        except EngineMismatchError:
            batch = None
    overrides: dict[str, Any] = {}
    if expected.input_size is not None:
        overrides["input_height"], overrides["input_width"] = expected.input_size
    wanted = make_metadata(
        onnx_path,
        expected.precision,
        trt_version=str(trt.__version__),
        gpu=gpu,
        overrides=overrides,
        batch=batch,
    )
    target = engine_cache_path(cache_dir if cache_dir is not None else engine_path.parent, wanted)
    try:
        check_engine(target, expected)
        return target, f"using cached rebuild {target.name} ({reason})"
    except EngineMismatchError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    build = builder or build_engine
    build(
        onnx_path,
        target,
        precision=expected.precision,
        workspace_mb=workspace_mb,
        progress=progress,
        metadata=overrides,
        batch=batch,
        trt_module=trt,
        gpu=gpu,
    )
    return target, f"rebuilt {target.name} from {Path(onnx_path).name} ({reason})"
