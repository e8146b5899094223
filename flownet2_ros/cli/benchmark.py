"""``flownet2-benchmark``: time the stacks and the correlation op, print what was measured and where."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROG = "flownet2-benchmark"


def build_parser() -> argparse.ArgumentParser:
    from ..models import STACK_NAMES
    from .common import parse_size

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Measure FlowNet 2.0 stacks through the inference core (eval, random weights: speed does "
        "not depend on their values): the network alone (forward) and uint8 frames in, flow out (estimate), "
        "per call and per pair, for each batch size and execution mode; on CUDA also kernels per forward, "
        "their GPU time and peak memory. Also the correlation op against a naive per-displacement loop. "
        "Prints medians in milliseconds and the machine they were measured on.",
    )
    parser.add_argument(
        "--stacks",
        nargs="*",
        default=list(STACK_NAMES),
        metavar="NAME",
        help=f"stacks to time (default: all of {', '.join(STACK_NAMES)}); none = skip stack timing",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=(384, 512),
        help="input size WxH, multiples of 64 (default 512x384)",
    )
    parser.add_argument(
        "--thin", action="store_true", help="also time the paper's thin (width 3/8) variant of each stack"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16"),
        default="auto",
        help="auto: fp16 on CUDA, fp32 on a CPU (default); fp32: true fp32 (TF32 off); fp16: CUDA only",
    )
    parser.add_argument("--fp16", action="store_true", help="the same as --precision fp16")
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=[1],
        metavar="N",
        help="batch sizes (pairs per call) to time, e.g. --batch 1 4; reported per call and per pair (default 1)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=("eager", "graph", "compile"),
        default=None,
        help="execution modes: eager, graph (CUDA graphs), compile (torch.compile, minutes per size); "
        "default: eager on a CPU, eager and graph on CUDA",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per measurement; the median is reported (default 3)",
    )
    parser.add_argument("--no-correlation", action="store_true", help="skip the correlation op comparison")
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also time ONNX Runtime on the CPU for each stack, correlation exported as the custom op and "
        "decomposed into standard ops, next to torch (exports to a temporary folder; slow for big stacks)",
    )
    parser.add_argument(
        "--engine",
        nargs="*",
        default=[],
        metavar="PATH",
        help="TensorRT engine file(s) to time through the TensorRT backend (needs TensorRT and a GPU)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..backends import BackendError
    from ..models import CheckpointError
    from .common import run_main

    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: _run(args), (CheckpointError, BackendError, ValueError, OSError))


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..bench.correlation import benchmark_correlation
    from ..bench.stacks import benchmark_stack
    from ..models import STACK_NAMES
    from .common import CliError, describe_machine, resolve_device

    height, width = args.size
    if height % 64 or width % 64:
        raise CliError(f"--size must be multiples of 64, got {width}x{height}")
    if args.repeats < 1:
        raise CliError("--repeats must be >= 1")
    if min(args.batch) < 1:
        raise CliError("--batch sizes must be >= 1")
    unknown = [s for s in args.stacks if s not in STACK_NAMES]
    if unknown:
        raise CliError(f"unknown stack(s) {', '.join(unknown)}; expected {', '.join(STACK_NAMES)}")
    device = str(resolve_device(args.device))
    precision = "fp16" if args.fp16 else args.precision
    cuda = device.startswith("cuda")
    modes = args.modes or (["eager", "graph"] if cuda else ["eager"])
    if not cuda and set(modes) - {"eager"}:
        raise CliError(f"--modes {' '.join(m for m in modes if m != 'eager')} need a CUDA device")
    machine = describe_machine(device)
    print(f"machine: {machine}")
    results: dict[str, object] = {"machine": machine, "stacks": [], "correlation": None}

    thins = (False, True) if args.thin else (False,)
    jobs = [(n, t, b, m) for n in args.stacks for t in thins for m in modes for b in args.batch]
    rows = results["stacks"]
    assert isinstance(rows, list)
    for name, thin, batch, mode in tqdm(
        jobs, desc="stacks", unit="run", file=sys.stderr, disable=len(jobs) < 2
    ):
        row = benchmark_stack(name, height, width, device, precision, args.repeats, thin, batch, mode)
        rows.append(row)
        gpu = (
            f"   {row['kernels_per_forward']:.0f} kernels, GPU {row['gpu_ms_per_forward']:.2f} ms, "
            f"peak {row['peak_memory_MB']:.0f} MB"
            if "kernels_per_forward" in row
            else ""
        )
        tqdm.write(
            f"{row['stack']:<16} {row['size']} {row['precision']} {row['mode']:<7} batch {batch}: forward "
            f"{row['forward_ms']:8.2f} ms ({row['forward_ms_per_pair']:7.2f}/pair), estimate "
            f"{row['estimate_ms']:8.2f} ms ({row['estimate_ms_per_pair']:7.2f}/pair)   "
            f"{row['params_M']:6.1f} M params{gpu}"
        )
    by_stack: dict[tuple[str, str], dict[int, float]] = {}
    for row in rows:
        by_stack.setdefault((row["stack"], row["mode"]), {})[row["batch"]] = row["forward_ms_per_pair"]
    for (stack, mode), per_pair in by_stack.items():
        if 1 in per_pair and len(per_pair) > 1:
            gains = ", ".join(
                f"batch {b}: {per_pair[1] / ms:.2f}x" for b, ms in sorted(per_pair.items()) if b > 1
            )
            print(f"{stack} {mode}: pairs/s against batch 1 (forward): {gains}")

    if not args.no_correlation:
        corr = benchmark_correlation(repeats=args.repeats, device=device)
        results["correlation"] = corr
        print(
            "correlation op, torch (FlowNetC config, features 1x256x48x64, i.e. a 384x512 input): "
            + _fmt(corr)
        )
        if device.startswith("cuda"):
            from ..bench.correlation import benchmark_cuda_correlation

            kernels = [
                benchmark_cuda_correlation(shape, kernel_dtype, device=device)
                for shape in ((1, 256, 48, 64), (1, 256, 56, 128))
                for kernel_dtype in ("float32", "float16")
            ]
            results["cuda_kernel"] = kernels
            for row_k in kernels:
                print("correlation CUDA kernel: " + _fmt(row_k))
    if args.onnx:
        from ..bench.deployment import benchmark_onnx_runtime

        rows_onnx = [
            benchmark_onnx_runtime(name, height, width, args.repeats, thin)
            for name in args.stacks
            for thin in thins
        ]
        results["onnx_runtime"] = rows_onnx
        for row_o in rows_onnx:
            print("ONNX Runtime (CPU): " + _fmt(row_o))
    if args.engine:
        from ..bench.deployment import benchmark_engine

        engines = [benchmark_engine(path, max(args.repeats, 20), device) for path in args.engine]
        results["tensorrt"] = engines
        for row_e in engines:
            print("TensorRT engine: " + _fmt(row_e))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _fmt(row: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


if __name__ == "__main__":
    raise SystemExit(main())
