"""The correlation CUDA kernel: NVRTC compilation (CPU), launch geometry, a CPU emulation of the kernel
source, and (GPU) the kernel against the torch op.

The emulation compiles ``correlation.cu`` itself as C++ with g++: CUDA's built-ins become a thread per
CUDA thread, ``__syncthreads`` a barrier and shared memory a NaN-poisoned array, and the grid runs block
by block. It checks the kernels' index arithmetic, shared-memory layouts and spans on a machine without a
GPU (a read of shared memory that was not staged yields NaN, a write beyond the launch's dynamic shared
memory is reported), for NCHW and channels-last (NHWC) inputs and outputs; timing and real-GPU behaviour
need the gpu tests (scripts/gpu_check.sh).
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from flownet2_ros.ops import cuda_correlation as cc
from flownet2_ros.ops.correlation import correlation as reference_correlation
from flownet2_ros.ops.correlation import correlation_output_size

# (pad, kernel, max_displacement, stride1, stride2), covering both fast kernels and every parameter.
CONFIGS = [
    (20, 1, 20, 1, 2),  # FlowNetC → pair
    (0, 1, 4, 1, 1),  # tiled, stride2 1
    (3, 3, 4, 1, 1),  # kernel 3
    (4, 3, 6, 2, 2),  # kernel 3, stride1 2
    (5, 1, 6, 2, 4),  # pair with stride1 2
    (1, 5, 3, 3, 1),  # kernel 5, stride1 3
    (0, 1, 0, 1, 1),  # a single displacement
    (4, 1, 8, 1, 2),  # pair, windows leave the image
    (28, 1, 30, 1, 2),  # pair with 5 warps (nd = 31)
]


def _kwargs(config: tuple[int, ...]) -> dict[str, int]:
    names = ("pad_size", "kernel_size", "max_displacement", "stride1", "stride2")
    return dict(zip(names, config, strict=True))


def _nvrtc_or_skip() -> None:
    reason = cc.nvrtc_available()
    if reason is not None:
        pytest.skip(f"hardware/toolchain: {reason}")


# ----------------------------------------------------------------------------------------- NVRTC (CPU)


@pytest.mark.parametrize("arch", ["compute_87", "compute_90"])
def test_ptx_compiles_with_every_entry_point(arch: str) -> None:
    _nvrtc_or_skip()
    start = time.perf_counter()
    ptx = cc.compile_ptx(arch)
    elapsed = time.perf_counter() - start
    entries = cc.ptx_entry_points(ptx)
    assert sorted(entries) == sorted(cc.ENTRY_POINTS.values())
    assert f".target sm_{arch.split('_')[1]}" in ptx
    assert cc.compile_ptx(arch) is not None  # cached: second call is free
    print(f"{arch}: PTX {len(ptx)} bytes, compiled in {elapsed:.2f} s")


@pytest.mark.parametrize("arch", ["compute_87", "compute_90"])
def test_nvcc_compiles_to_ptx_without_warnings(arch: str, tmp_path: Path) -> None:
    """nvcc (when installed) compiles the self-contained source to PTX, every warning an error."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("hardware/toolchain: nvcc is not installed")
    out = tmp_path / f"correlation_{arch}.ptx"
    cmd = [nvcc, "-ptx", f"--gpu-architecture={arch}", "-Werror", "all-warnings", str(cc.KERNEL_PATH)]
    done = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr  # not even a note
    ptx = out.read_text()
    assert sorted(cc.ptx_entry_points(ptx)) == sorted(cc.ENTRY_POINTS.values())
    assert f".target sm_{arch.split('_')[1]}" in ptx


def _ptx_params(ptx: str) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for entry in cc.ptx_entry_points(ptx):
        params[entry] = re.findall(rf"\.param \.(\w+) {entry}_param_\d+", ptx)
    return params


@pytest.mark.parametrize("variant", ["auto", "tiled", "naive"])
@pytest.mark.parametrize("dtype", cc.DTYPES)
def test_launch_arguments_match_kernel_signature(
    variant: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What launch_correlation passes (kinds and order) is what the compiled entry point declares."""
    _nvrtc_or_skip()
    launched: list[tuple[Any, list[tuple[Any, str]], int]] = []

    class Recorder:
        def launch(self, cfg: Any, args: list[tuple[Any, str]], stream: int) -> None:
            launched.append((cfg, args, stream))

    monkeypatch.setattr(cc, "_launcher", lambda device: Recorder())
    cfg = cc.launch_correlation(
        11, 22, 33, 2, 40, 48, 64, cc.CorrelationParams(), dtype, 77, device=0, variant=variant
    )
    ((got_cfg, args, stream),) = launched
    assert got_cfg == cfg and stream == 77
    ptx_types = {"ptr": "u64", "int": "u32", "float": "f32"}
    assert [ptx_types[kind] for _, kind in args] == _ptx_params(cc.compile_ptx("compute_90"))[cfg.entry]
    values = [value for value, _ in args]
    if cfg.variant == "naive":
        assert values[0] == 2
        values = values[1:]
    assert values[:8] == [11, 22, 33, 40, 48, 64, 48, 64]
    assert values[8:13] == [20, 1, 20, 1, 2] and values[13] == pytest.approx(1 / 40)
    # strides default to contiguous NCHW: inputs (batch, channel, row, column), then the output's
    assert values[15:] == [40 * 48 * 64, 48 * 64, 64, 1, 441 * 48 * 64, 48 * 64, 64, 1]


def test_launch_with_channels_last_strides(monkeypatch: pytest.MonkeyPatch) -> None:
    """NHWC strides go to the kernel as given; an NHWC output gets room for its output tile."""
    launched: list[tuple[Any, list[tuple[Any, str]]]] = []

    class Recorder:
        def launch(self, cfg: Any, args: list[tuple[Any, str]], stream: int) -> None:
            launched.append((cfg, args))

    monkeypatch.setattr(cc, "_launcher", lambda device: Recorder())
    params = cc.CorrelationParams()
    nhwc_in, nhwc_out = (48 * 64 * 3, 1, 64 * 3, 3), (48 * 64 * 441, 1, 64 * 441, 441)
    cfg = cc.launch_correlation(
        1, 2, 3, 1, 3, 48, 64, params, input_strides=nhwc_in, output_strides=nhwc_out, device=0
    )
    ((_, args),) = launched
    assert [value for value, _ in args][15:] == [*nhwc_in, *nhwc_out]
    # 3 channels: the staged inputs alone would be smaller than the 64 x 21 output tile
    assert cfg.chunk == 3 and cfg.shared_bytes == 4 * 64 * 21
    assert cc.launch_config(params, 1, 3, 48, 64).shared_bytes < 4 * 64 * 21
    assert cfg == cc.launch_config(params, 1, 3, 48, 64, channels_last_output=True)
    # NHWC input, NCHW output: no output tile
    cc.launch_correlation(1, 2, 3, 1, 3, 48, 64, params, input_strides=nhwc_in, device=0)
    assert launched[-1][0] == cc.launch_config(params, 1, 3, 48, 64)
    with pytest.raises(ValueError, match="four non-negative ints"):
        cc.launch_correlation(1, 2, 3, 1, 3, 48, 64, params, input_strides=(1, 2, 3), device=0)
    with pytest.raises(ValueError, match="four non-negative ints"):
        cc.launch_correlation(1, 2, 3, 1, 3, 48, 64, params, output_strides=(1, -1, 1, 1), device=0)
    with pytest.raises(cc.CudaCorrelationError, match="too large"):
        cc.launch_correlation(1, 2, 3, 1, 3, 48, 64, params, input_strides=(1, 2**30, 1, 1), device=0)
    with pytest.raises(cc.CudaCorrelationError, match="too large"):
        cc.launch_correlation(1, 2, 3, 2, 3, 48, 64, params, input_strides=(2**31, 1, 192, 3), device=0)
    # the stride of a size-1 dimension is never used: any value is accepted (and passed as an int)
    cc.launch_correlation(1, 2, 3, 1, 3, 48, 64, params, input_strides=(2**40, 1, 192, 3), device=0)
    assert [value for value, _ in launched[-1][1]][15:19] == [2**31 - 1, 1, 192, 3]


def test_compile_rejects_bad_arch() -> None:
    with pytest.raises(ValueError, match="compute_90"):
        cc.compile_ptx("sm_90")
    with pytest.raises(ValueError, match="sm_90"):
        cc.compile_cubin("compute_90")


def test_kernel_source_needs_no_headers() -> None:
    lines = cc.kernel_source().splitlines()
    assert not [line for line in lines if line.lstrip().startswith("#include")]


def test_find_cuda_include_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "cuda_runtime.h").write_text("")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert cc.find_cuda_include_dir() == tmp_path / "include"


# ------------------------------------------------------------------------------- fail early (CPU)


def _cuda_python_or_skip() -> None:
    pytest.importorskip("cuda.bindings.driver", reason="hardware/toolchain: cuda-bindings not installed")


@pytest.fixture
def toolchain(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA 12.6 driver and cuda-bindings 12.9 as far as prepare_kernel can tell (no driver here)."""
    _cuda_python_or_skip()
    monkeypatch.delenv("FLOWNET2_CUDA_LAUNCHER", raising=False)
    monkeypatch.setattr(cc, "_driver_cuda_version", lambda: (12, 6))
    monkeypatch.setattr(cc, "_bindings_version", lambda: "12.9.0")


def _one_line_error(match: str) -> str:
    with pytest.raises(cc.CudaCorrelationError, match=match) as info:
        cc.prepare_kernel(0)
    text = str(info.value)
    assert "\n" not in text and len(text) < 400
    return text


@pytest.mark.usefixtures("toolchain")
def test_prepare_kernel_refuses_cuda_bindings_newer_than_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cc, "_bindings_version", lambda: "13.0.1")
    text = _one_line_error(r"cuda-bindings 13\.0\.1 needs a driver for CUDA 13.*supports CUDA 12\.6")
    assert "pip install 'cuda-bindings>=12,<13'" in text


@pytest.mark.usefixtures("toolchain")
def test_prepare_kernel_without_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cc, "_driver_cuda_version", lambda: None)
    _one_line_error("no NVIDIA driver could be loaded")


@pytest.mark.usefixtures("toolchain")
def test_prepare_kernel_without_nvrtc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cc, "nvrtc_available", lambda: "NVRTC library not loadable: libnvrtc.so.12 not found")
    text = _one_line_error("NVRTC is not usable")
    assert "pip install nvidia-cuda-nvrtc-cu12" in text


@pytest.mark.usefixtures("toolchain")
def test_prepare_kernel_refuses_nvrtc_newer_than_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cc, "nvrtc_available", lambda: None)
    monkeypatch.setattr(cc, "_nvrtc_module", lambda: SimpleNamespace(nvrtcVersion=lambda: (0, 13, 0)))
    _one_line_error(
        r"NVRTC 13\.0 makes code that this driver \(CUDA 12\.6\) cannot load.*nvidia-cuda-nvrtc-cu12"
    )


def test_prepare_kernel_without_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_cuda(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith(("cuda", "cupy")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.delenv("FLOWNET2_CUDA_LAUNCHER", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_cuda)
    monkeypatch.setattr(cc, "_bindings_version", lambda: "")
    text = _one_line_error("cuda-bindings is not installed")
    assert "cuda-bindings>=12,<13" in text and "nvidia-cuda-nvrtc-cu12" in text


def test_prepare_kernel_bad_launcher_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWNET2_CUDA_LAUNCHER", "opencl")
    _one_line_error("must be cuda-python or cupy")


@pytest.fixture
def gpu_87(toolchain: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compute capability 8.7 device (Jetson Orin) behind prepare_kernel's device query."""
    monkeypatch.setattr(cc, "_device_capability", lambda device: (8, 7))


@pytest.mark.usefixtures("gpu_87")
def test_prepare_kernel_compile_failure_is_one_line_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_compile(arch: str) -> bytes:
        raise cc.CudaCorrelationError(
            f"NVRTC could not compile correlation.cu for {arch}: nvrtc: error: invalid value for "
            "--gpu-architecture (-arch)\n\n1 error detected"
        )

    monkeypatch.setattr(cc, "nvrtc_available", lambda: None)
    monkeypatch.setattr(cc, "_nvrtc_compile", fail_compile)
    monkeypatch.setattr(cc, "_launcher", lambda device: pytest.fail("loaded despite the compile failure"))
    text = _one_line_error(r"does not compile for sm_87 \(compute capability 8\.7\)")
    assert "invalid value for --gpu-architecture" in text and "pip install -U nvidia-cuda-nvrtc-cu12" in text


class _Launcher:
    def __init__(self, error: Exception | None = None) -> None:
        self.error, self.loaded = error, 0

    def load_all(self) -> None:
        self.loaded += 1
        if self.error is not None:
            raise self.error


@pytest.mark.usefixtures("gpu_87")
def test_prepare_kernel_compiles_for_the_device_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    _nvrtc_or_skip()
    launcher = _Launcher()
    monkeypatch.setattr(cc, "_launcher", lambda device: launcher)
    status = cc.prepare_kernel(0)
    assert launcher.loaded == 1 and cc.compile_cubin("sm_87")  # compiled for real (cached)
    assert (status.device, status.compute_capability, status.launcher) == (0, "8.7", "cuda-python")
    assert "driver CUDA 12.6" in status.toolchain and "sm_87" in status.summary()
    launcher.error = cc.CudaCorrelationError(
        "CUDA driver call load cubin failed: CUDA_ERROR_NO_BINARY_FOR_GPU"
    )
    text = _one_line_error(r"could not be loaded on CUDA device 0 \(sm_87\).*CUDA_ERROR_NO_BINARY_FOR_GPU")
    assert "pip install" in text


def test_prepare_kernel_here_is_one_line() -> None:
    """This machine: ready (a GPU with the toolchain) or one line saying what is missing."""
    try:
        status = cc.prepare_kernel(0)
    except cc.CudaCorrelationError as exc:
        assert "\n" not in str(exc)
        return
    assert status.compute_capability


# --------------------------------------------------------------------------------- launch geometry (CPU)


def test_launch_config_flownetc() -> None:
    cfg = cc.launch_config(cc.FLOWNETC_PARAMS, 1, 256, 48, 64)
    assert cfg.variant == "pair" and cfg.entry == "correlation_pair_f32"
    assert cfg.output_shape == (1, 441, 48, 64)
    assert cfg.grid == (1, 48, 21) and cfg.block == (96, 1, 1)
    assert cfg.shared_bytes <= 48 * 1024 and cfg.chunk == 16
    assert cfg.scale == pytest.approx(1 / 256)
    half = cc.launch_config(cc.FLOWNETC_PARAMS, 2, 256, 56, 128, "float16", "tiled")
    assert half.entry == "correlation_tiled_f16" and half.grid == (4, 56, 42)


@pytest.mark.parametrize("config", CONFIGS)
def test_launch_config_shapes_match_reference(config: tuple[int, ...]) -> None:
    params = cc.CorrelationParams(*config)
    for h, w in ((20, 31), (48, 64), (7, 130)):
        try:
            expected = correlation_output_size(h, w, *config)
        except ValueError:
            continue
        cfg = cc.launch_config(params, 3, 40, h, w)
        assert cfg.output_shape == (3, *expected)
        assert cfg.shared_bytes <= 48 * 1024
        assert cfg.variant == ("pair" if config[1] == 1 and config[4] == 2 * config[3] else "tiled")


def test_launch_config_errors() -> None:
    params = cc.CorrelationParams()
    with pytest.raises(ValueError, match="pair kernel"):
        cc.launch_config(cc.CorrelationParams(kernel_size=3), 1, 8, 48, 64, variant="pair")
    with pytest.raises(ValueError, match="dtype"):
        cc.launch_config(params, 1, 8, 48, 64, dtype="bfloat16")
    with pytest.raises(ValueError, match="variant"):
        cc.launch_config(params, 1, 8, 48, 64, variant="fastest")
    with pytest.raises(ValueError, match="too small"):
        cc.launch_config(cc.CorrelationParams(pad_size=0), 1, 8, 30, 30)
    with pytest.raises(cc.CudaCorrelationError, match="too large"):
        cc.launch_config(cc.CorrelationParams(0, 1, 300, 1, 1), 1, 8, 700, 700)
    with pytest.raises(ValueError, match="odd"):
        cc.CorrelationParams(kernel_size=2)
    with pytest.raises(ValueError, match="int"):
        cc.CorrelationParams(pad_size=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        cc.CorrelationParams(corr_multiply=float("nan"))


# ------------------------------------------------------------------------------ CPU emulation of the .cu

_HARNESS = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>
#include <math.h>

struct Dim3 { unsigned x = 0, y = 0, z = 0; };
thread_local Dim3 threadIdx;
Dim3 blockIdx, blockDim, gridDim;
static std::barrier<> *g_barrier = nullptr;
alignas(16) float smem[48 * 1024 / 4];
static const unsigned SMEM_POISON = 0x7fc0dead;  // a quiet NaN: a read of an unstaged value shows
static int g_overflow = 0;                        // a write beyond the launch's dynamic shared memory
static inline void __syncthreads() { g_barrier->arrive_and_wait(); }
using std::min;

static inline float load_f32(const unsigned short *p) { _Float16 h; std::memcpy(&h, p, 2); return (float)h; }
static inline void store_f32(unsigned short *p, float v) { _Float16 h = (_Float16)v; std::memcpy(p, &h, 2); }

#define CORRELATION_HOST_EMULATION
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(n)
#define __shared__
#include "correlation.cu"

template <class F> static void run_grid(Dim3 grid, Dim3 block, unsigned shared_bytes, F body) {
    blockDim = block; gridDim = grid;
    std::barrier<> bar((std::ptrdiff_t)block.x);
    g_barrier = &bar;
    float poison;
    std::memcpy(&poison, &SMEM_POISON, 4);
    const size_t used = shared_bytes / 4;
    auto worker = [&](unsigned t) {
        threadIdx = Dim3{t, 0, 0};
        for (unsigned z = 0; z < grid.z; ++z)
            for (unsigned y = 0; y < grid.y; ++y)
                for (unsigned x = 0; x < grid.x; ++x) {
                    if (t == 0) {
                        blockIdx = Dim3{x, y, z};
                        std::fill(std::begin(smem), std::end(smem), poison);
                    }
                    bar.arrive_and_wait();
                    body();
                    bar.arrive_and_wait();
                    if (t == 0)
                        for (size_t i = used; i < sizeof(smem) / 4; ++i)
                            if (std::memcmp(&smem[i], &SMEM_POISON, 4) != 0) { g_overflow = 1; break; }
                }
    };
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block.x; ++t) threads.emplace_back(worker, t);
    for (auto &th : threads) th.join();
}

#define ARGS C, H, W, oh, ow, pad, k, md, s1, s2, scale, chunk, st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
// st: element strides (batch, channel, row, column) of the inputs, then of the output.
// Returns 0, 1 for an unknown entry point, 2 when a block wrote beyond shared_bytes of shared memory.
extern "C" int emu_launch(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                          unsigned shared_bytes, const void *a, const void *b, void *o, int B, int C,
                          int H, int W, int oh, int ow, int pad, int k, int md, int s1, int s2,
                          float scale, int chunk, const int *st) {
    std::string n(name);
    Dim3 grid{gx, gy, gz}, block{bx, 1, 1};
    unsigned sb = shared_bytes;
    g_overflow = 0;
    typedef const float *F; typedef const unsigned short *Hf;
    if (n == "correlation_tiled_f32") run_grid(grid, block, sb, [&] { correlation_tiled_f32((F)a, (F)b, (float *)o, ARGS); });
    else if (n == "correlation_tiled_f16") run_grid(grid, block, sb, [&] { correlation_tiled_f16((Hf)a, (Hf)b, (unsigned short *)o, ARGS); });
    else if (n == "correlation_pair_f32") run_grid(grid, block, sb, [&] { correlation_pair_f32((F)a, (F)b, (float *)o, ARGS); });
    else if (n == "correlation_pair_f16") run_grid(grid, block, sb, [&] { correlation_pair_f16((Hf)a, (Hf)b, (unsigned short *)o, ARGS); });
    else if (n == "correlation_naive_kernel_f32") run_grid(grid, block, sb, [&] { correlation_naive_kernel_f32(B, (F)a, (F)b, (float *)o, ARGS); });
    else if (n == "correlation_naive_kernel_f16") run_grid(grid, block, sb, [&] { correlation_naive_kernel_f16(B, (Hf)a, (Hf)b, (unsigned short *)o, ARGS); });
    else return 1;
    return g_overflow ? 2 : 0;
}
"""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("hardware/toolchain: no g++ to build the CPU emulation of the kernel")
    build = tmp_path_factory.mktemp("emulator")
    (build / "harness.cpp").write_text(_HARNESS)
    lib = build / "libemu.so"
    cmd = [compiler, "-O2", "-std=c++20", "-shared", "-fPIC", "-pthread", f"-I{cc.KERNEL_PATH.parent}"]
    done = subprocess.run([*cmd, "harness.cpp", "-o", str(lib)], cwd=build, capture_output=True, text=True)
    if done.returncode != 0:
        if "barrier" in done.stderr or "_Float16" in done.stderr:
            pytest.skip(f"hardware/toolchain: g++ lacks C++20 <barrier> or _Float16: {done.stderr[:200]}")
        pytest.fail(f"correlation.cu does not compile as emulated C++:\n{done.stderr}")
    emu = ctypes.CDLL(str(lib))
    emu.emu_launch.restype = ctypes.c_int
    emu.emu_launch.argtypes = [ctypes.c_char_p] + [ctypes.c_uint] * 5 + [ctypes.c_void_p] * 3
    emu.emu_launch.argtypes += [ctypes.c_int] * 11 + [ctypes.c_float, ctypes.c_int, ctypes.c_void_p]
    return emu


LAYOUTS = ("nchw", "nhwc")


def _laid_out(x: np.ndarray, layout: str) -> np.ndarray:
    """``x`` (B, C, H, W) as a (B, C, H, W) view of memory in ``layout`` (NHWC: channels-last)."""
    if layout == "nchw":
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _element_strides(x: np.ndarray) -> list[int]:
    return [stride // x.itemsize for stride in x.strides]


def _emulate(
    emu: ctypes.CDLL,
    x1: np.ndarray,
    x2: np.ndarray,
    config: tuple[int, ...],
    variant: str = "auto",
    layout_in: str = "nchw",
    layout_out: str = "nchw",
) -> np.ndarray:
    """Run an entry point on the CPU as launch_correlation would launch it, with the inputs and the output
    in the given memory layouts; the result as a (B, C', H', W') array (a view of the output memory)."""
    params = cc.CorrelationParams(*config)
    dtype = "float16" if x1.dtype == np.float16 else "float32"
    b, c, h, w = x1.shape
    a1, a2 = _laid_out(x1, layout_in), _laid_out(x2, layout_in)
    assert _element_strides(a1) == _element_strides(a2)
    shape = cc.launch_config(params, b, c, h, w, dtype, variant).output_shape
    out = _laid_out(np.full(shape, np.nan, dtype=x1.dtype), layout_out)
    strides = [*_element_strides(a1), *_element_strides(out)]
    cfg = cc.launch_config(params, b, c, h, w, dtype, variant, channels_last_output=strides[5] < strides[7])
    _, _, oh, ow = cfg.output_shape
    rc = emu.emu_launch(
        cfg.entry.encode(),
        *cfg.grid,
        cfg.block[0],
        cfg.shared_bytes,
        a1.ctypes.data,
        a2.ctypes.data,
        out.ctypes.data,
        b,
        c,
        h,
        w,
        oh,
        ow,
        *config,
        cfg.scale,
        cfg.chunk,
        (ctypes.c_int * 8)(*strides),
    )
    assert rc != 2, f"{cfg.entry} wrote beyond its {cfg.shared_bytes} bytes of shared memory"
    assert rc == 0
    return out


def _inputs(shape: tuple[int, int, int, int], seed: int, dtype: type = np.float32) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(shape).astype(dtype) for _ in range(2))


def _reference(x1: np.ndarray, x2: np.ndarray, config: tuple[int, ...], mult: float = 1.0) -> np.ndarray:
    t1, t2 = torch.from_numpy(x1.astype(np.float32)), torch.from_numpy(x2.astype(np.float32))
    return reference_correlation(t1, t2, **_kwargs(config), corr_multiply=mult).numpy()


@pytest.mark.parametrize("config", CONFIGS)
def test_emulated_fast_kernel_matches_reference(emulator: ctypes.CDLL, config: tuple[int, ...]) -> None:
    # 20 channels: one full chunk of 16 plus a partial one; widths beyond one tile, odd sizes.
    x1, x2 = _inputs((2, 20, 9, 70), seed=sum(config))
    out = _emulate(emulator, x1, x2, config)
    np.testing.assert_allclose(out, _reference(x1, x2, config), rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["tiled", "naive"])
def test_emulated_other_kernels_flownetc(emulator: ctypes.CDLL, variant: str) -> None:
    config = CONFIGS[0]
    x1, x2 = _inputs((1, 17, 5, 67), seed=3)
    out = _emulate(emulator, x1, x2, config, variant)
    np.testing.assert_allclose(out, _reference(x1, x2, config), rtol=0, atol=1e-5)


def test_emulated_naive_kernel_general(emulator: ctypes.CDLL) -> None:
    config = (3, 3, 4, 2, 1)
    x1, x2 = _inputs((2, 6, 11, 13), seed=5)
    out = _emulate(emulator, x1, x2, config, "naive")
    np.testing.assert_allclose(out, _reference(x1, x2, config), rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["pair", "tiled"])
def test_emulated_fp16(emulator: ctypes.CDLL, variant: str) -> None:
    config = CONFIGS[0]
    x1, x2 = _inputs((1, 24, 6, 40), seed=11, dtype=np.float16)
    out = _emulate(emulator, x1, x2, config, variant)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), _reference(x1, x2, config), rtol=2e-3, atol=2e-4)


# NHWC: FlowNetC (pair kernel), a kernel_size 3 configuration (tiled) and one with stride1 2 (tiled).
NHWC_CONFIGS = [CONFIGS[0], CONFIGS[2], CONFIGS[3]]


@pytest.mark.parametrize(("layout_in", "layout_out"), [("nhwc", "nhwc"), ("nhwc", "nchw"), ("nchw", "nhwc")])
@pytest.mark.parametrize("config", NHWC_CONFIGS, ids=["flownetc", "kernel3", "kernel3_stride2"])
def test_emulated_fast_kernel_channels_last(
    emulator: ctypes.CDLL, config: tuple[int, ...], layout_in: str, layout_out: str
) -> None:
    """Channels-last inputs read in place and channels-last outputs written in place give the reference."""
    # 20 channels: a full chunk of 16 (the bank-spread staging) and a partial one of 4; two tiles wide
    x1, x2 = _inputs((2, 20, 9, 70), seed=17 + sum(config))
    out = _emulate(emulator, x1, x2, config, "auto", layout_in, layout_out)
    assert out.flags.c_contiguous == (layout_out == "nchw")
    np.testing.assert_allclose(out, _reference(x1, x2, config), rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["tiled", "naive"])
@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[2]], ids=["flownetc", "kernel3"])
def test_emulated_other_kernels_channels_last(
    emulator: ctypes.CDLL, variant: str, config: tuple[int, ...]
) -> None:
    x1, x2 = _inputs((1, 17, 7, 45), seed=23)
    out = _emulate(emulator, x1, x2, config, variant, "nhwc", "nhwc")
    np.testing.assert_allclose(out, _reference(x1, x2, config), rtol=0, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_emulated_channels_last_few_channels(emulator: ctypes.CDLL, channels: int) -> None:
    """Few channels: chunks smaller than the output tile (the launch reserves room for it) and, for one
    channel, NHWC strides that also read as NCHW."""
    config = CONFIGS[0]
    x1, x2 = _inputs((1, channels, 5, 67), seed=channels)
    for variant in ("pair", "tiled"):
        out = _emulate(emulator, x1, x2, config, variant, "nhwc", "nhwc")
        np.testing.assert_allclose(out, _reference(x1, x2, config), rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["pair", "tiled"])
def test_emulated_fp16_channels_last(emulator: ctypes.CDLL, variant: str) -> None:
    config = CONFIGS[0]
    x1, x2 = _inputs((1, 24, 6, 40), seed=11, dtype=np.float16)
    out = _emulate(emulator, x1, x2, config, variant, "nhwc", "nhwc")
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), _reference(x1, x2, config), rtol=2e-3, atol=2e-4)


def test_emulated_layouts_agree_exactly(emulator: ctypes.CDLL) -> None:
    """The layout changes the access order only: each output is the same fp32 sum, bit for bit."""
    for config in NHWC_CONFIGS:
        x1, x2 = _inputs((1, 20, 8, 40), seed=29)
        nchw = _emulate(emulator, x1, x2, config)
        np.testing.assert_array_equal(_emulate(emulator, x1, x2, config, "auto", "nhwc", "nhwc"), nchw)


# ------------------------------------------------------------------------------------------------- GPU


def _gpu_inputs(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return (
        torch.randn(shape, device="cuda", dtype=dtype, generator=gen),
        torch.randn(shape, device="cuda", dtype=dtype, generator=gen),
    )


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["auto", "tiled", "naive"])
@pytest.mark.parametrize("config", CONFIGS)
def test_gpu_kernel_matches_torch_fp32(config: tuple[int, ...], variant: str) -> None:
    x1, x2 = _gpu_inputs((2, 37, 21, 75), torch.float32, seed=sum(config))
    got = cc.correlation_cuda(x1, x2, **_kwargs(config), corr_multiply=0.5, variant=variant)
    want = reference_correlation(x1, x2, **_kwargs(config), corr_multiply=0.5)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("config", CONFIGS)
def test_gpu_kernel_matches_torch_fp16(config: tuple[int, ...]) -> None:
    x1, x2 = _gpu_inputs((1, 64, 19, 70), torch.float16, seed=7 + sum(config))
    got = cc.correlation_cuda(x1, x2, *config)
    assert got.dtype == torch.float16
    want = reference_correlation(x1.float(), x2.float(), *config)
    torch.testing.assert_close(got.float(), want, rtol=2e-3, atol=2e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(6))
def test_gpu_kernel_random_configs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.choice([1, 3, 5]))
    s1, s2 = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    md = int(rng.integers(0, 9))
    pad = int(rng.integers(0, md + k))
    h, w = int(rng.integers(2 * md + k, 40)), int(rng.integers(2 * md + k, 90))
    config = (pad, k, md, s1, s2)
    x1, x2 = _gpu_inputs((int(rng.integers(1, 3)), int(rng.integers(1, 70)), h, w), torch.float32, seed)
    want = reference_correlation(x1, x2, *config)
    torch.testing.assert_close(cc.correlation_cuda(x1, x2, *config), want, rtol=0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("size", [(48, 64), (56, 128)])
def test_gpu_kernel_flownetc_shapes(size: tuple[int, int]) -> None:
    x1, x2 = _gpu_inputs((1, 256, *size), torch.float32, seed=1)
    got = cc.correlation_cuda(x1, x2)
    assert got.shape == (1, 441, *size)
    torch.testing.assert_close(got, reference_correlation(x1, x2), rtol=0, atol=1e-5)


@pytest.mark.gpu
def test_gpu_launch_on_side_stream_and_raw_pointers() -> None:
    x1, x2 = _gpu_inputs((1, 32, 16, 40), torch.float32, seed=2)
    out = torch.full((1, 441, 16, 40), float("nan"), device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    cfg = cc.launch_correlation(
        x1.data_ptr(), x2.data_ptr(), out.data_ptr(), 1, 32, 16, 40, stream=stream.cuda_stream, device=0
    )
    stream.synchronize()
    assert cfg.variant == "pair"
    torch.testing.assert_close(out, reference_correlation(x1, x2), rtol=0, atol=1e-5)


@pytest.mark.gpu
def test_gpu_prepare_kernel_then_enqueue_reuses_the_module() -> None:
    """prepare_kernel on a real GPU: compiled and loaded once; the plugin's launch path then finds it."""
    torch.cuda.init()
    status = cc.prepare_kernel(0)
    major, minor = torch.cuda.get_device_capability(0)
    assert status.compute_capability == f"{major}.{minor}" and status.launcher in ("cuda-python", "cupy")
    start = time.perf_counter()
    again = cc.prepare_kernel(0)
    assert time.perf_counter() - start < 0.5 and again.compute_capability == status.compute_capability
    x1, x2 = _gpu_inputs((2, 32, 16, 40), torch.float32, seed=3)
    torch.testing.assert_close(cc.correlation_cuda(x1, x2), reference_correlation(x1, x2), rtol=0, atol=1e-5)
