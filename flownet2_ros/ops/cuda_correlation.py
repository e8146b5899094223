"""The correlation CUDA kernel (``ops/cuda/correlation.cu``): run-time compilation with NVRTC and launches.

No C extension is built: the kernel source ships with the package and is compiled by NVRTC when first
needed, once per process and GPU architecture, with ``cuda-python`` (``cuda.bindings.nvrtc`` and
``cuda.bindings.driver``) or, when that is missing, CuPy. On a GPU the module is loaded as a cubin for the
device's exact ``sm_XY`` (runs on any driver of the same CUDA major version), falling back to PTX.

- :func:`compile_ptx` — PTX for an architecture (``compute_87`` Jetson Orin, ``compute_90`` Hopper);
  works on machines without a GPU (only NVRTC is needed).
- :func:`launch_config` — grid, block, shared memory and entry point for a problem (pure arithmetic).
- :func:`launch_correlation` — launch on raw device pointers and a CUDA stream handle (what the
  TensorRT plugin's ``enqueue`` calls, with its NCHW buffers), with the element strides of the inputs
  and of the output (default: contiguous NCHW; channels-last tensors are read and written in place).
- :func:`prepare_kernel` — compile and load the module for a GPU *now* and check the toolchain (driver,
  cuda-bindings and NVRTC versions), so that a problem is one line naming the fix before TensorRT parses,
  builds or deserialises anything (an exception inside the plugin's ``enqueue`` is swallowed by TensorRT).
- :func:`correlation_cuda` — the same for CUDA tensors, on torch's current stream; NCHW or channels_last
  inputs without a copy, the output in the inputs' memory format.

Timing (fast kernel against the naive kernel and the torch op, NCHW against NHWC inputs):
:func:`flownet2_ros.bench.correlation.benchmark_cuda_correlation`.

Checked without a GPU (test/test_cuda_kernel.py): NVRTC compilation for compute_87/compute_90, the
launch arguments against the compiled signatures, and the kernels themselves compiled as C++ and run by a
thread-per-CUDA-thread emulation against the torch op. Timing and real-GPU behaviour: scripts/gpu_check.sh.

The kernel source has no ``#include``: half precision values are converted with PTX ``cvt`` instructions,
so NVRTC needs no CUDA headers. :func:`find_cuda_include_dir` is still passed to NVRTC with ``-I`` when
found, for kernels that would include ``<cuda_fp16.h>``. Set ``FLOWNET2_CUDA_LAUNCHER=cupy`` (or
``cuda-python``) to force one launcher.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .correlation import correlation_output_size, prefers_channels_last

__all__ = [
    "DTYPES",
    "ENTRY_POINTS",
    "FLOWNETC_PARAMS",
    "KERNEL_PATH",
    "VARIANTS",
    "CorrelationParams",
    "CudaCorrelationError",
    "KernelStatus",
    "LaunchConfig",
    "compile_cubin",
    "compile_ptx",
    "correlation_cuda",
    "find_cuda_include_dir",
    "kernel_source",
    "launch_config",
    "launch_correlation",
    "nvrtc_available",
    "prepare_kernel",
    "ptx_entry_points",
]

KERNEL_PATH = Path(__file__).resolve().parent / "cuda" / "correlation.cu"
DTYPES = ("float32", "float16")
VARIANTS = ("auto", "tiled", "pair", "naive")
#: Every ``extern "C"`` entry point of the kernel source, by (variant, dtype).
ENTRY_POINTS: dict[tuple[str, str], str] = {
    ("tiled", "float32"): "correlation_tiled_f32",
    ("tiled", "float16"): "correlation_tiled_f16",
    ("pair", "float32"): "correlation_pair_f32",
    ("pair", "float16"): "correlation_pair_f16",
    ("naive", "float32"): "correlation_naive_kernel_f32",
    ("naive", "float16"): "correlation_naive_kernel_f16",
}

# Must match the #defines of correlation.cu.
_TILED_TX, _TILED_IR = 32, 8
_PAIR_TX, _PAIR_IR = 64, 7
_MAX_SHARED_BYTES = 48 * 1024  # dynamic shared memory available without opting in
_MAX_CHUNK = 16  # channels staged per step
_NAIVE_BLOCK = 256
_MAX_GRID_YZ = 65535
_MAX_WARPS = 16  # CORR_MAX_THREADS / 32 in correlation.cu
_PAIR_LD1 = 66  # PAIR_LD1: shared row stride of input 1 in the pair kernel
_INT_MAX = 2**31 - 1  # the kernel's offsets inside one image are ints


def _shared_ld(span: int) -> int:
    """shared_ld of correlation.cu: the shared row stride (floats) of a row of ``span`` floats."""
    return ((span + 1) & ~3) + 2


class CudaCorrelationError(RuntimeError):
    """NVRTC/driver missing, compilation or launch failed, or a problem the kernel cannot handle."""


@dataclass(frozen=True)
class CorrelationParams:
    """The six correlation attributes (defaults: FlowNetC), validated on construction.

    Raises:
        ValueError: wrong type, even ``kernel_size``, negative padding/displacement, strides < 1, or a
            non-finite ``corr_multiply``.
    """

    pad_size: int = 20
    kernel_size: int = 1
    max_displacement: int = 20
    stride1: int = 1
    stride2: int = 2
    corr_multiply: float = 1.0

    def __post_init__(self) -> None:
        minima = {"pad_size": 0, "kernel_size": 1, "max_displacement": 0, "stride1": 1, "stride2": 1}
        for name, minimum in minima.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        mult = self.corr_multiply
        if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not math.isfinite(mult):
            raise ValueError(f"corr_multiply must be a finite number, got {mult!r}")
        object.__setattr__(self, "corr_multiply", float(mult))

    @property
    def radius(self) -> int:
        """Displacement radius d = max_displacement // stride2 (displacements i, j ∈ [−d, d])."""
        return self.max_displacement // self.stride2

    @property
    def output_channels(self) -> int:
        """(2d+1)²."""
        return (2 * self.radius + 1) ** 2

    def output_size(self, height: int, width: int) -> tuple[int, int, int]:
        """``(channels, out_height, out_width)`` for an input of ``height × width`` (ValueError if empty)."""
        return correlation_output_size(
            height, width, self.pad_size, self.kernel_size, self.max_displacement, self.stride1, self.stride2
        )

    def as_dict(self) -> dict[str, Any]:
        """The six attributes by name (keyword arguments of :func:`..correlation.correlation`)."""
        return asdict(self)


FLOWNETC_PARAMS = CorrelationParams()


@dataclass(frozen=True)
class LaunchConfig:
    """How one correlation is launched: entry point, geometry and the scalar kernel arguments."""

    entry: str
    variant: str  # "tiled", "pair" or "naive"
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int
    chunk: int
    output_shape: tuple[int, int, int, int]  # (B, (2d+1)², H', W')
    scale: float  # corr_multiply / (kernel_size² · C)


def launch_config(
    params: CorrelationParams,
    batch: int,
    channels: int,
    height: int,
    width: int,
    dtype: str = "float32",
    variant: str = "auto",
    *,
    channels_last_output: bool = False,
) -> LaunchConfig:
    """Geometry of the launch for inputs (batch, channels, height, width) (pure arithmetic, no GPU).

    ``variant``: ``auto`` (``pair`` where it applies — kernel_size 1 and stride2 = 2·stride1, as in
    FlowNetC — else ``tiled``), ``tiled``, ``pair`` or ``naive`` (the straightforward kernel).
    ``channels_last_output``: the output's channel stride is below its column stride (an NHWC output,
    which the fast kernels write through shared memory: the shared memory then also holds one output tile).

    Raises:
        ValueError: unknown dtype/variant, bad sizes, ``pair`` where it does not apply.
        CudaCorrelationError: a problem beyond the kernel's limits (grid size, displacement radius).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    for name, value in (("batch", batch), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    out_c, out_h, out_w = params.output_size(height, width)
    nd = 2 * params.radius + 1
    scale = params.corr_multiply / (params.kernel_size**2 * channels)
    shape = (batch, out_c, out_h, out_w)
    pair_ok = params.kernel_size == 1 and params.stride2 == 2 * params.stride1
    if variant == "auto":
        variant = "pair" if pair_ok else "tiled"
    elif variant == "pair" and not pair_ok:
        raise ValueError("the pair kernel needs kernel_size 1 and stride2 == 2 * stride1")
    entry = ENTRY_POINTS[(variant, dtype)]
    if variant == "naive":
        blocks = -(-batch * out_c * out_h * out_w // _NAIVE_BLOCK)
        if blocks > 2**31 - 1:
            raise CudaCorrelationError(f"problem too large for one launch ({blocks} blocks)")
        return LaunchConfig(entry, variant, (blocks, 1, 1), (_NAIVE_BLOCK, 1, 1), 0, 0, shape, scale)
    tx, ir = (_PAIR_TX, _PAIR_IR) if variant == "pair" else (_TILED_TX, _TILED_IR)
    groups = -(-nd // ir)
    if groups > _MAX_WARPS:
        raise CudaCorrelationError(
            f"max_displacement // stride2 = {params.radius} is too large for the kernel "
            f"(at most {(_MAX_WARPS * ir - 1) // 2} for the {variant} kernel)"
        )
    if out_h > _MAX_GRID_YZ or batch * nd > _MAX_GRID_YZ:
        raise CudaCorrelationError(
            f"output height {out_h} or batch·(2d+1) = {batch * nd} exceeds the grid limit {_MAX_GRID_YZ}"
        )
    if variant == "pair":
        span2 = tx + 2 * (groups * ir - 1)
        half = ((span2 + 1) >> 1) | 1
        per_channel = _PAIR_LD1 + 2 * half
    else:
        span1 = (tx - 1) * params.stride1 + params.kernel_size
        span2 = span1 + (groups * ir - 1) * params.stride2
        per_channel = _shared_ld(span1) + _shared_ld(span2)
    chunk = min(_MAX_CHUNK, channels, _MAX_SHARED_BYTES // (4 * per_channel))
    if chunk < 1:
        raise CudaCorrelationError(
            f"the correlation window ({per_channel} floats per channel) does not fit in shared memory"
        )
    shared = 4 * chunk * per_channel
    if channels_last_output:
        shared = max(shared, 4 * tx * nd)  # the output tile [tx][nd]
    grid = (-(-out_w // tx), out_h, batch * nd)
    return LaunchConfig(entry, variant, grid, (32 * groups, 1, 1), shared, chunk, shape, scale)


# --------------------------------------------------------------------------------------------- compiling


def kernel_source() -> str:
    """The CUDA C source of the kernels (package data, also inside a zipped install)."""
    return (
        resources.files(__package__ or "flownet2_ros.ops")
        .joinpath("cuda/correlation.cu")
        .read_text(encoding="utf-8")
    )


def find_cuda_include_dir() -> Path | None:
    """A CUDA include directory (holding ``cuda_runtime.h``), or None.

    Looks at ``$CUDA_HOME``/``$CUDA_PATH`` (their ``include``), ``/usr/local/cuda/include``, then the
    ``nvidia-cuda-runtime-cu12`` wheel's ``nvidia/cuda_runtime/include``.
    """
    candidates: list[Path] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    try:
        import nvidia.cuda_runtime as wheel

        for root in getattr(wheel, "__path__", []):
            candidates.append(Path(root) / "include")
    except ImportError:
        pass
    for path in candidates:
        if (path / "cuda_runtime.h").is_file():
            return path
    return None


def _nvrtc_module() -> Any | None:
    try:
        from cuda.bindings import nvrtc

        return nvrtc
    except ImportError:
        pass
    try:  # cuda-python < 12.6 layout
        from cuda import nvrtc

        return nvrtc
    except ImportError:
        return None


def nvrtc_available() -> str | None:
    """None when NVRTC can be used from Python here, else the reason why not."""
    nvrtc = _nvrtc_module()
    if nvrtc is None:
        return "cuda-python is not installed (pip install cuda-bindings nvidia-cuda-nvrtc-cu12)"
    try:
        err, _major, _minor = nvrtc.nvrtcVersion()
    except Exception as exc:  # the shared library could not be loaded
        return f"NVRTC library not loadable: {exc}"
    if int(err) != 0:
        return f"NVRTC not usable: {err}"
    return None


def _check_arch(arch: str, prefix: str) -> None:
    if not arch.startswith(prefix) or not arch[len(prefix) :].isdigit():
        raise ValueError(f"architecture must look like {prefix}90, got {arch!r}")


@functools.cache
def _nvrtc_compile(arch: str) -> bytes:
    nvrtc = _nvrtc_module()
    reason = nvrtc_available()
    if nvrtc is None or reason is not None:
        raise CudaCorrelationError(reason or "NVRTC unavailable")

    def check(result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise CudaCorrelationError(f"NVRTC {what} failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    prog = check(nvrtc.nvrtcCreateProgram(kernel_source().encode(), b"correlation.cu", 0, [], []), "create")
    try:
        options = [f"--gpu-architecture={arch}".encode()]
        include = find_cuda_include_dir()
        if include is not None:
            options.append(f"-I{include}".encode())
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        if int(err) != 0:
            size = check(nvrtc.nvrtcGetProgramLogSize(prog), "log size")
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise CudaCorrelationError(
                f"NVRTC could not compile correlation.cu for {arch}: {log.decode(errors='replace').strip()}"
            )
        if arch.startswith("sm_"):
            size = check(nvrtc.nvrtcGetCUBINSize(prog), "cubin size")
            image = b" " * size
            check(nvrtc.nvrtcGetCUBIN(prog, image), "get cubin")
        else:
            size = check(nvrtc.nvrtcGetPTXSize(prog), "PTX size")
            image = b" " * size
            check(nvrtc.nvrtcGetPTX(prog, image), "get PTX")
        return image
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def compile_ptx(arch: str = "compute_90") -> str:
    """PTX of all entry points for a virtual architecture (``compute_87``, ``compute_90``...).

    Runs without a GPU; cached per process and architecture.

    Raises:
        CudaCorrelationError: NVRTC missing or the compilation failed (with NVRTC's log).
    """
    _check_arch(arch, "compute_")
    return _nvrtc_compile(arch).rstrip(b"\0").decode()


def compile_cubin(arch: str) -> bytes:
    """Machine code (cubin) for a real architecture (``sm_87``, ``sm_90``...); cached per process."""
    _check_arch(arch, "sm_")
    return _nvrtc_compile(arch)


# --------------------------------------------------------------------------------------------- launching


class _DriverLauncher:
    """cuda-python driver API: module loaded into the device's primary context."""

    def __init__(self, device: int) -> None:
        from cuda.bindings import driver

        self._driver = driver
        self._check(driver.cuInit(0), "cuInit")
        dev = self._check(driver.cuDeviceGet(device), "cuDeviceGet")
        current = self._check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
        if current is None or int(current) == 0:
            ctx = self._check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
            self._check(driver.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        attr = driver.CUdevice_attribute
        major = self._check(
            driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "attribute"
        )
        minor = self._check(
            driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "attribute"
        )
        try:
            module = self._check(driver.cuModuleLoadData(compile_cubin(f"sm_{major}{minor}")), "load cubin")
        except CudaCorrelationError:  # NVRTC too old for this GPU's sm: let the driver JIT the PTX
            ptx = _nvrtc_compile(f"compute_{major}{minor}")
            module = self._check(driver.cuModuleLoadData(ptx), "load PTX")
        self._module = module
        self._functions: dict[str, Any] = {}

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, name = self._driver.cuGetErrorName(err)
            raise CudaCorrelationError(f"CUDA driver call {what} failed: {name.decode() if name else err}")
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else rest

    def _function(self, entry: str) -> Any:
        fn = self._functions.get(entry)
        if fn is None:
            fn = self._functions[entry] = self._check(
                self._driver.cuModuleGetFunction(self._module, entry.encode()), f"get function {entry}"
            )
        return fn

    def load_all(self) -> None:
        """Resolve every entry point now (what :func:`prepare_kernel` checks)."""
        for entry in ENTRY_POINTS.values():
            self._function(entry)

    def launch(self, cfg: LaunchConfig, args: list[tuple[Any, str]], stream: int) -> None:
        fn = self._function(cfg.entry)
        ctype = {"ptr": ctypes.c_void_p, "int": ctypes.c_int, "float": ctypes.c_float}
        values = tuple(value for value, _ in args)
        types = tuple(ctype[kind] for _, kind in args)
        self._check(
            self._driver.cuLaunchKernel(
                fn, *cfg.grid, *cfg.block, cfg.shared_bytes, self._driver.CUstream(stream), (values, types), 0
            ),
            f"cuLaunchKernel({cfg.entry})",
        )


class _CupyLauncher:
    """CuPy's RawModule (NVRTC inside CuPy) on an external stream."""

    def __init__(self, device: int) -> None:
        import cupy

        self._cupy = cupy
        self._device = device
        with cupy.cuda.Device(device):
            self._module = cupy.RawModule(code=kernel_source())
        self._functions: dict[str, Any] = {}

    def load_all(self) -> None:
        """Compile (CuPy compiles lazily) and resolve every entry point now."""
        with self._cupy.cuda.Device(self._device):
            for entry in ENTRY_POINTS.values():
                if entry not in self._functions:
                    self._functions[entry] = self._module.get_function(entry)

    def launch(self, cfg: LaunchConfig, args: list[tuple[Any, str]], stream: int) -> None:
        import numpy as np

        cp = self._cupy
        with cp.cuda.Device(self._device):
            fn = self._functions.get(cfg.entry)
            if fn is None:
                fn = self._functions[cfg.entry] = self._module.get_function(cfg.entry)
            convert = {"ptr": np.uint64, "int": np.int32, "float": np.float32}
            values = tuple(convert[kind](value) for value, kind in args)
            with cp.cuda.ExternalStream(stream):
                fn(cfg.grid, cfg.block, values, shared_mem=cfg.shared_bytes)


_launchers: dict[tuple[str, int, int], Any] = {}
_launch_lock = threading.Lock()


def _current_device() -> int:
    """Device of the calling thread's current CUDA context (TensorRT's, in enqueue), else 0."""
    try:
        from cuda.bindings import driver

        err, dev = driver.cuCtxGetDevice()
        if int(err) == 0:
            return int(dev)
    except Exception:  # no cuda-python, or no driver library: the launcher reports it
        pass
    return 0


def _current_context() -> int:
    """Handle of the calling thread's current CUDA context (modules belong to one context), else 0."""
    try:
        from cuda.bindings import driver

        err, ctx = driver.cuCtxGetCurrent()
        if int(err) == 0 and ctx is not None:
            return int(ctx)
    except Exception:
        pass
    return 0


def _launcher(device: int) -> Any:
    forced = os.environ.get("FLOWNET2_CUDA_LAUNCHER", "")
    kinds = [forced] if forced else ["cuda-python", "cupy"]
    errors = []
    for kind in kinds:
        key = (kind, device, _current_context() if kind == "cuda-python" else 0)
        with _launch_lock:
            if key in _launchers:
                return _launchers[key]
            try:
                if kind == "cuda-python":
                    launcher: Any = _DriverLauncher(device)
                elif kind == "cupy":
                    launcher = _CupyLauncher(device)
                else:
                    raise CudaCorrelationError(
                        f"FLOWNET2_CUDA_LAUNCHER must be cuda-python or cupy, not {kind!r}"
                    )
            except ImportError as exc:
                errors.append(f"{kind}: {exc}")
                continue
            except CudaCorrelationError:
                raise
            except Exception as exc:  # driver library missing, no device...
                raise CudaCorrelationError(f"CUDA is not usable through {kind}: {exc}") from None
            _launchers[key] = launcher
            return launcher
    raise CudaCorrelationError(
        "no CUDA launcher available (install cuda-python or CuPy): " + "; ".join(errors)
    )


def launch_correlation(
    input1_ptr: int,
    input2_ptr: int,
    output_ptr: int,
    batch: int,
    channels: int,
    height: int,
    width: int,
    params: CorrelationParams = FLOWNETC_PARAMS,
    dtype: str = "float32",
    stream: int = 0,
    *,
    device: int | None = None,
    variant: str = "auto",
    input_strides: Sequence[int] | None = None,
    output_strides: Sequence[int] | None = None,
) -> LaunchConfig:
    """Launch the correlation on device memory (asynchronous, on ``stream``).

    Inputs are (batch, channels, height, width) of ``dtype``; the output, (batch, (2d+1)², H', W') of the
    same dtype, is fully overwritten. ``input_strides`` (shared by both inputs) and ``output_strides`` are
    element strides (batch, channel, row, column); None means contiguous NCHW (what the TensorRT plugin's
    LINEAR buffers are). Channels-last tensors (channel stride 1) are read and written in place, with
    coalesced accesses; any strides give the same result. ``stream`` is a ``cudaStream_t`` as an int
    (0: legacy default stream). ``device``: CUDA ordinal; None → the device of the current context.

    Returns:
        LaunchConfig: what was launched.

    Raises:
        CudaCorrelationError: no launcher, compilation/launch failure or limits (also: an image whose
        element offsets do not fit in 32 bits); ValueError: bad arguments.
    """
    out_c, out_h, out_w = params.output_size(height, width)
    in_strides = _check_strides("input", input_strides, (batch, channels, height, width))
    out_strides = _check_strides("output", output_strides, (batch, out_c, out_h, out_w))
    channels_last_output = out_strides[1] < out_strides[3]  # the kernel's own test (osc < osw)
    cfg = launch_config(
        params,
        batch,
        channels,
        height,
        width,
        dtype,
        variant,
        channels_last_output=channels_last_output,
    )
    args: list[tuple[Any, str]] = [
        (int(input1_ptr), "ptr"),
        (int(input2_ptr), "ptr"),
        (int(output_ptr), "ptr"),
        (channels, "int"),
        (height, "int"),
        (width, "int"),
        (out_h, "int"),
        (out_w, "int"),
        (params.pad_size, "int"),
        (params.kernel_size, "int"),
        (params.max_displacement, "int"),
        (params.stride1, "int"),
        (params.stride2, "int"),
        (cfg.scale, "float"),
        (cfg.chunk, "int"),
    ]
    args += [(stride, "int") for stride in (*in_strides, *out_strides)]
    if cfg.variant == "naive":
        args.insert(0, (batch, "int"))
    _launcher(_current_device() if device is None else device).launch(cfg, args, int(stream))
    return cfg


def _check_strides(
    name: str, strides: Sequence[int] | None, sizes: tuple[int, int, int, int]
) -> tuple[int, int, int, int]:
    """Element strides (batch, channel, row, column) of a tensor of ``sizes``; None → contiguous NCHW.

    Raises:
        ValueError: not four non-negative ints. CudaCorrelationError: offsets beyond the kernel's ints.
    """
    _, channels, height, width = sizes
    if strides is None:
        strides = (channels * height * width, height * width, width, 1)
    values = tuple(strides)
    if len(values) != 4 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(f"{name} strides must be four non-negative ints, got {strides!r}")
    # The stride of a size-1 dimension never moves an offset (torch leaves it arbitrary): clamp it to an int.
    values = tuple(v if size > 1 else min(v, _INT_MAX) for size, v in zip(sizes, values, strict=True))
    image = sum((size - 1) * stride for size, stride in zip(sizes[1:], values[1:], strict=True))
    if max(image, values[0]) > _INT_MAX:
        raise CudaCorrelationError(
            f"the {name} is too large for the kernel: offsets inside one image up to {image} and batch "
            f"stride {values[0]} must stay below 2^31"
        )
    return values[0], values[1], values[2], values[3]


# ------------------------------------------------------------------------------------------- fail early

#: What installs a CUDA-12 toolchain for the kernel (the package's ``cuda`` / ``tensorrt-cu12`` extras).
CUDA12_FIX = "pip install 'cuda-bindings>=12,<13' nvidia-cuda-nvrtc-cu12 (the [cuda] extra)"


@dataclass(frozen=True)
class KernelStatus:
    """What :func:`prepare_kernel` compiled and loaded, and with which toolchain."""

    device: int
    compute_capability: str  # "8.7"
    launcher: str  # "cuda-python" | "cupy"
    toolchain: str  # e.g. "driver CUDA 12.6, cuda-bindings 12.9.0, NVRTC 12.9"
    seconds: float

    def summary(self) -> str:
        return (
            f"correlation kernel ready on device {self.device} (sm_{self.compute_capability.replace('.', '')}) "
            f"via {self.launcher}: {self.toolchain} ({self.seconds:.1f} s)"
        )


def _one_line(text: str) -> str:
    """The first non-empty line of ``text``, whitespace collapsed."""
    for line in str(text).splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


def _version_tuple(text: str) -> tuple[int, ...]:
    """Leading numeric components of a version string: "12.9.0rc1" → (12, 9, 0)."""
    parts = []
    for piece in text.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def _bindings_version() -> str:
    """The installed cuda-bindings (or old cuda-python) version, "" when unknown."""
    from importlib import metadata

    for distribution in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return ""


def _driver_cuda_version() -> tuple[int, int] | None:
    """The CUDA version the installed driver supports, read from libcuda with ctypes (independent of
    cuda-bindings, whose own calls may fail when its major version is too new); None without a driver."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
            return None
        return version.value // 1000, (version.value % 1000) // 10
    return None


def _device_capability(device: int) -> tuple[int, int]:
    """(major, minor) of CUDA device ``device``, and its primary context made current on this thread (the
    context TensorRT and torch use, so the module loaded now is the one ``enqueue`` finds)."""
    from cuda.bindings import driver

    def check(result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise CudaCorrelationError(f"CUDA driver call {what} failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    check(driver.cuInit(0), "cuInit")
    count = check(driver.cuDeviceGetCount(), "cuDeviceGetCount")
    if not 0 <= device < int(count):
        raise CudaCorrelationError(f"CUDA device {device} does not exist ({count} device(s))")
    dev = check(driver.cuDeviceGet(device), "cuDeviceGet")
    current = check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if current is None or int(current) == 0:
        ctx = check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        check(driver.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    attr = driver.CUdevice_attribute
    major = check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "attr")
    minor = check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "attr")
    return int(major), int(minor)


def _check_cuda_python_toolchain() -> tuple[str, tuple[int, int]]:
    """Driver, cuda-bindings and NVRTC present and of compatible major versions.

    Returns:
        (description, driver CUDA version). Raises CudaCorrelationError: one line naming the fix.
    """
    try:
        from cuda.bindings import driver  # noqa: F401
    except ImportError:
        found = _bindings_version()
        if found:
            raise CudaCorrelationError(
                f"cuda-python {found} is too old (no cuda.bindings module): {CUDA12_FIX}"
            ) from None
        raise CudaCorrelationError(f"cuda-bindings is not installed: {CUDA12_FIX}") from None
    bindings = _bindings_version()
    driver_version = _driver_cuda_version()
    if driver_version is None:
        raise CudaCorrelationError(
            "no NVIDIA driver could be loaded (libcuda.so.1): install the NVIDIA driver (JetPack on a Jetson)"
        )
    drv_major, drv_minor = driver_version
    fix = f"pip install 'cuda-bindings>={drv_major},<{drv_major + 1}'"
    bind_major = (_version_tuple(bindings) or (0,))[0]
    if bind_major > drv_major:
        raise CudaCorrelationError(
            f"cuda-bindings {bindings} needs a driver for CUDA {bind_major}, but this driver supports CUDA "
            f"{drv_major}.{drv_minor}: {fix}{' (the [cuda] extra pins it)' if drv_major == 12 else ''}"
        )
    reason = nvrtc_available()
    nvrtc = _nvrtc_module()
    if reason is not None or nvrtc is None:
        raise CudaCorrelationError(
            f"NVRTC is not usable ({_one_line(reason or 'not found')}): "
            f"pip install nvidia-cuda-nvrtc-cu{drv_major}"
        )
    _, nv_major, nv_minor = nvrtc.nvrtcVersion()
    if int(nv_major) > drv_major:
        raise CudaCorrelationError(
            f"NVRTC {nv_major}.{nv_minor} makes code that this driver (CUDA {drv_major}.{drv_minor}) cannot "
            f"load: pip install nvidia-cuda-nvrtc-cu{drv_major} and {fix}"
        )
    text = (
        f"driver CUDA {drv_major}.{drv_minor}, cuda-bindings {bindings or '?'}, NVRTC {nv_major}.{nv_minor}"
    )
    return text, driver_version


def _compile_for(major: int, minor: int, toolchain: str) -> None:
    """Compile the kernel for sm_XY (falling back to PTX, as the launcher does); one-line failure."""
    try:
        compile_cubin(f"sm_{major}{minor}")
        return
    except CudaCorrelationError as exc:
        cubin_error = _one_line(str(exc))
    try:
        _nvrtc_compile(f"compute_{major}{minor}")
    except CudaCorrelationError:
        raise CudaCorrelationError(
            f"the correlation kernel does not compile for sm_{major}{minor} (compute capability "
            f"{major}.{minor}) with {toolchain}: {cubin_error}; install an NVRTC that knows this GPU and is "
            f"not newer than the driver (pip install -U nvidia-cuda-nvrtc-cu12, or JetPack's CUDA)"
        ) from None


def prepare_kernel(device: int = 0) -> KernelStatus:
    """Compile and load the correlation kernel for CUDA device ``device`` now, in this process.

    The engine builder and the TensorRT backend call this before TensorRT parses, builds or deserialises
    anything: inside the plugin's ``enqueue`` an exception is caught by TensorRT (10.3 prints "Exception
    thrown from enqueue()" and the build fails with an unrelated-looking error). The module loaded here
    (for the device's primary context) is the one :func:`launch_correlation` reuses; calling this again is
    cheap.

    Checks, in order (cuda-python launcher): cuda-bindings importable, an NVIDIA driver, cuda-bindings'
    major version not newer than the driver's CUDA (cuda-bindings 13 needs a CUDA 13 driver; JetPack 6 has
    CUDA 12), NVRTC loadable and not newer than the driver, the kernel compiling for this compute capability,
    the module loading with every entry point. With ``FLOWNET2_CUDA_LAUNCHER=cupy`` (or no cuda-python but
    CuPy) CuPy compiles and loads it instead.

    Returns:
        KernelStatus: device, compute capability, launcher, toolchain versions, seconds taken.

    Raises:
        CudaCorrelationError: one line that names the fix.
    """
    start = time.perf_counter()
    forced = os.environ.get("FLOWNET2_CUDA_LAUNCHER", "")
    if forced not in ("", "cuda-python", "cupy"):
        raise CudaCorrelationError(f"FLOWNET2_CUDA_LAUNCHER must be cuda-python or cupy, not {forced!r}")
    kind = forced
    if not kind:
        kind = "cuda-python"
        if _nvrtc_module() is None:
            try:
                import cupy

                kind = "cupy"
            except ImportError:
                pass
    if kind == "cuda-python":
        toolchain, _driver = _check_cuda_python_toolchain()
        major, minor = _device_capability(device)
        _compile_for(major, minor, toolchain)
    else:
        try:
            import cupy
        except ImportError:
            raise CudaCorrelationError(
                f"FLOWNET2_CUDA_LAUNCHER=cupy but CuPy is not installed: {CUDA12_FIX}"
            ) from None
        major, minor = (int(v) for v in cupy.cuda.Device(device).compute_capability)
        toolchain = f"CuPy {cupy.__version__}"
    try:
        launcher = _launcher(device)
        launcher.load_all()
    except CudaCorrelationError as exc:
        raise CudaCorrelationError(
            f"the correlation kernel could not be loaded on CUDA device {device} (sm_{major}{minor}) with "
            f"{toolchain}: {_one_line(str(exc))}; {CUDA12_FIX}"
        ) from None
    except Exception as exc:  # CuPy's compile and driver errors
        raise CudaCorrelationError(
            f"the correlation kernel could not be compiled/loaded on CUDA device {device} (sm_{major}{minor}) "
            f"with {toolchain}: {_one_line(str(exc))}"
        ) from None
    return KernelStatus(device, f"{major}.{minor}", kind, toolchain, time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------- torch


def correlation_cuda(
    input1: Any,
    input2: Any,
    pad_size: int = 20,
    kernel_size: int = 1,
    max_displacement: int = 20,
    stride1: int = 1,
    stride2: int = 2,
    corr_multiply: float = 1.0,
    *,
    variant: str = "auto",
) -> Any:
    """The CUDA kernel on torch CUDA tensors (float32 or float16), on torch's current stream.

    Same arguments and result as :func:`..correlation.correlation` (forward only, no autograd). Memory
    format: NCHW-contiguous and channels_last-contiguous inputs are read in place (no copy); inputs with
    other strides are first made contiguous in the format :func:`..correlation.prefers_channels_last`
    picks for ``input1`` (``input2`` in ``input1``'s format). The output is allocated in that format:
    channels_last for channels_last inputs, so the next convolution reads it without a copy.
    """
    import torch

    params = CorrelationParams(pad_size, kernel_size, max_displacement, stride1, stride2, corr_multiply)
    if not isinstance(input1, torch.Tensor) or not isinstance(input2, torch.Tensor):
        raise ValueError("input1 and input2 must be torch tensors")
    if input1.shape != input2.shape or input1.dim() != 4:
        raise ValueError(
            f"expected two (B, C, H, W) tensors of one shape, got {input1.shape} and {input2.shape}"
        )
    if input1.dtype != input2.dtype or input1.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"inputs must both be float32 or float16, got {input1.dtype} and {input2.dtype}")
    if input1.device.type != "cuda" or input1.device != input2.device:
        raise ValueError(f"inputs must be on one CUDA device, got {input1.device} and {input2.device}")
    batch, channels, height, width = input1.shape
    out_c, out_h, out_w = params.output_size(height, width)
    fmt = torch.channels_last if prefers_channels_last(input1) else torch.contiguous_format
    # No copy when already so. Both are then contiguous in one format: their strides can differ only on
    # dimensions of size 1, which never move an offset, so the kernel reads both with a's strides.
    a, b = input1.contiguous(memory_format=fmt), input2.contiguous(memory_format=fmt)
    out = torch.empty(
        (batch, out_c, out_h, out_w), dtype=input1.dtype, device=input1.device, memory_format=fmt
    )
    dtype = "float32" if input1.dtype == torch.float32 else "float16"
    with torch.cuda.device(input1.device):
        stream = torch.cuda.current_stream(input1.device).cuda_stream
        launch_correlation(
            a.data_ptr(),
            b.data_ptr(),
            out.data_ptr(),
            batch,
            channels,
            height,
            width,
            params,
            dtype,
            stream,
            device=input1.device.index if input1.device.index is not None else torch.cuda.current_device(),
            variant=variant,
            input_strides=a.stride(),
            output_strides=out.stride(),
        )
    return out


def ptx_entry_points(ptx: str) -> list[str]:
    """Names of the kernels (``.entry``) defined in a PTX text."""
    return list(_iter_entry_points(ptx))


def _iter_entry_points(ptx: str) -> Iterator[str]:
    for line in ptx.splitlines():
        if ".entry" in line:
            yield line.split(".entry", 1)[1].strip().split("(", 1)[0].strip()
