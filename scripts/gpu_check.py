"""GPU checks of the correlation kernel that are not pytest tests (called by scripts/gpu_check.sh).

``bench``: the fast kernel (auto variant) on NCHW and on channels-last (NHWC) inputs — in place, and the
old way with copies to NCHW and back — the tiled kernel, the naive kernel and the torch op at FlowNetC's
correlation shapes for 384×512 (1, 256, 48, 64) and 448×1024 (1, 256, 56, 128) inputs, fp32 and fp16;
prints a table and writes JSON. ``sanitize``: a few small launches of every entry point, with NCHW and
with NHWC strides (for compute-sanitizer's memcheck/racecheck), through CuPy buffers when CuPy is there,
else torch.

Usage: python3 scripts/gpu_check.py bench --out results.json ; python3 scripts/gpu_check.py sanitize
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {"384x512": (1, 256, 48, 64), "448x1024": (1, 256, 56, 128)}


def bench(out: Path | None, repeats: int) -> int:
    import torch

    from flownet2_ros.bench.correlation import benchmark_cuda_correlation

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU", file=sys.stderr)
        return 2
    results = []
    for label, shape in SHAPES.items():
        for dtype in ("float32", "float16"):
            start = time.perf_counter()
            row = benchmark_cuda_correlation(shape, dtype, repeats=repeats, warmup=5)
            row["input"] = label
            row["wall_s"] = round(time.perf_counter() - start, 2)
            results.append(row)
    header = f"{'input':>9} {'dtype':>8} {'variant':>7} {'fast ms':>8} {'nhwc ms':>8} {'copies ms':>9}"
    header += (
        f" {'tiled ms':>9} {'naive ms':>9} {'torch ms':>9} {'x naive':>8} {'x torch':>8} {'max|diff|':>10}"
    )
    print(f"\ncorrelation kernel on {results[0]['device']} (FlowNetC params, medians of {repeats})")
    print(header)
    for r in results:
        print(
            f"{r['input']:>9} {r['dtype']:>8} {r['variant']:>7} {r['fast_ms']:>8.4f} {r['nhwc_ms']:>8.4f} "
            f"{r['nhwc_copies_ms']:>9.4f} {r['tiled_ms']:>9.4f} {r['naive_ms']:>9.4f} {r['torch_ms']:>9.4f} "
            f"{r['speedup_vs_naive']:>8.2f} {r['speedup_vs_torch']:>8.2f} "
            f"{max(r['fast_max_abs_diff'], r['nhwc_max_abs_diff']):>10.2e}"
        )
    print("nhwc: channels-last inputs read in place, channels-last output; copies: to NCHW and back")
    failed = [r for r in results if r["speedup_vs_naive"] < 2.0]
    if failed:
        print(
            f"gpu_check: fast kernel less than 2x faster than naive in {len(failed)} case(s)", file=sys.stderr
        )
    slow = [r for r in results if r["nhwc_ms"] > 1.25 * r["fast_ms"] or not r["nhwc_output_channels_last"]]
    if slow:
        print(
            f"gpu_check: NHWC inputs more than 25% slower than NCHW, or an NCHW output, in {len(slow)} "
            "case(s)",
            file=sys.stderr,
        )
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def _nhwc_strides(b: int, c: int, h: int, w: int) -> tuple[int, int, int, int]:
    """Element strides (batch, channel, row, column) of a channels-last (B, C, H, W) buffer."""
    return h * w * c, 1, w * c, c


def sanitize() -> int:
    """Launch every entry point on small problems (FlowNetC and a kernel_size 3 config), NCHW and NHWC."""
    from flownet2_ros.ops import cuda_correlation as cc

    try:
        import cupy as cp

        def alloc(shape: tuple[int, ...], dtype: str, fill: bool) -> tuple[object, int]:
            array = cp.random.standard_normal(shape).astype(dtype) if fill else cp.empty(shape, dtype=dtype)
            return array, int(array.data.ptr)

        def sync() -> None:
            cp.cuda.runtime.deviceSynchronize()

        stream = 0
    except ImportError:
        import torch

        def alloc(shape: tuple[int, ...], dtype: str, fill: bool) -> tuple[object, int]:
            t = getattr(torch, dtype)
            array = (
                torch.randn(shape, device="cuda").to(t)
                if fill
                else torch.empty(shape, device="cuda", dtype=t)
            )
            return array, int(array.data_ptr())

        def sync() -> None:
            torch.cuda.synchronize()

        stream = 0
    cases = [(cc.CorrelationParams(), (2, 20, 9, 70)), (cc.CorrelationParams(4, 3, 6, 2, 2), (1, 19, 13, 41))]
    for params, (b, c, h, w) in cases:
        for dtype in cc.DTYPES:
            for variant in ("auto", "tiled", "naive"):
                for layout in ("nchw", "nhwc"):
                    # dense buffers of the same size; only the strides passed say how they are laid out
                    x1, p1 = alloc((b, c, h, w), dtype, True)
                    x2, p2 = alloc((b, c, h, w), dtype, True)
                    out_shape = cc.launch_config(params, b, c, h, w, dtype, variant).output_shape
                    y, py = alloc(out_shape, dtype, False)
                    strides = {}
                    if layout == "nhwc":
                        strides = {
                            "input_strides": _nhwc_strides(b, c, h, w),
                            "output_strides": _nhwc_strides(*out_shape),
                        }
                    cfg = cc.launch_correlation(
                        p1, p2, py, b, c, h, w, params, dtype, stream, device=0, variant=variant, **strides
                    )
                    sync()
                    print(f"sanitize: {cfg.entry} {layout} {params} {(b, c, h, w)} ok")
                    del x1, x2, y
    return 0


def core(out: Path | None, repeats: int) -> int:
    """The inference core: FlowNet2 and thin FlowNet2S at 448x1024, eager vs CUDA graph, batch 1 and 4."""
    import torch

    from flownet2_ros.bench.stacks import benchmark_stack

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU", file=sys.stderr)
        return 2
    runs = [("FlowNet2", False, "fp16", mode, batch) for mode in ("eager", "graph") for batch in (1, 4)] + [
        ("FlowNet2", False, "fp32", "eager", 1),
        ("FlowNet2", False, "fp32", "graph", 1),
    ]
    runs += [("FlowNet2S", True, "fp16", mode, 1) for mode in ("eager", "graph")]
    rows = []
    print(f"\ninference core on {torch.cuda.get_device_name()} (448x1024, medians of {repeats})")
    for name, thin, precision, mode, batch in runs:
        row = benchmark_stack(name, 448, 1024, "cuda", precision, repeats, thin, batch, mode)
        rows.append(row)
        print(
            f"{row['stack']:<15} {precision} {mode:<5} batch {batch}: forward {row['forward_ms_per_pair']:7.3f} "
            f"ms/pair, estimate {row['estimate_ms_per_pair']:7.3f} ms/pair, {row['kernels_per_forward']:.0f} "
            f"kernels, GPU {row['gpu_ms_per_forward']:.3f} ms/forward, peak {row['peak_memory_MB']:.0f} MB",
            flush=True,
        )
    if out is not None:
        out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time the kernels at FlowNetC shapes")
    b.add_argument("--out", type=Path, help="JSON file for the results")
    b.add_argument("--repeats", type=int, default=50, help="timed runs per measurement (median)")
    sub.add_parser("sanitize", help="small launches of every entry point, for compute-sanitizer")
    c = sub.add_parser("core", help="time the inference core (forward, estimate, graphs, batches)")
    c.add_argument("--out", type=Path, help="JSON file for the results")
    c.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (median)")
    args = parser.parse_args()
    if args.command == "bench":
        return bench(args.out, args.repeats)
    if args.command == "core":
        return core(args.out, args.repeats)
    return sanitize()


if __name__ == "__main__":
    sys.exit(main())
