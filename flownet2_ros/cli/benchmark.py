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
        description="Measure the forward time of FlowNet 2.0 stacks (batch 1, eval, random weights: speed does "
        "not depend on their values) and of the correlation op against a naive per-displacement loop. Prints "
        "medians in milliseconds and the machine they were measured on.",
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
    parser.add_argument("--fp16", action="store_true", help="time the stacks in float16 (CUDA only)")
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
    import torch
    from tqdm import tqdm

    from ..models import STACK_NAMES
    from ..models.benchmark import benchmark_stack
    from ..ops.benchmark import benchmark_correlation
    from .common import CliError, describe_machine, resolve_device

    height, width = args.size
    if height % 64 or width % 64:
        raise CliError(f"--size must be multiples of 64, got {width}x{height}")
    if args.repeats < 1:
        raise CliError("--repeats must be >= 1")
    unknown = [s for s in args.stacks if s not in STACK_NAMES]
    if unknown:
        raise CliError(f"unknown stack(s) {', '.join(unknown)}; expected {', '.join(STACK_NAMES)}")
    device = resolve_device(args.device)
    if args.fp16 and not device.startswith("cuda"):
        raise CliError("--fp16 needs a CUDA device")
    dtype = torch.float16 if args.fp16 else torch.float32
    machine = describe_machine(device)
    print(f"machine: {machine}")
    results: dict[str, object] = {"machine": machine, "stacks": [], "correlation": None}

    jobs = [(name, thin) for name in args.stacks for thin in ((False, True) if args.thin else (False,))]
    rows = results["stacks"]
    assert isinstance(rows, list)
    for name, thin in tqdm(jobs, desc="stacks", unit="stack", file=sys.stderr, disable=len(jobs) < 2):
        row = benchmark_stack(name, height, width, device, dtype, args.repeats, thin)
        rows.append(row)
        tqdm.write(
            f"{row['stack']:<16} {row['size']} {row['dtype']:<8} {row['ms']:9.1f} ms   {row['params_M']:7.1f} M params"
        )

    if not args.no_correlation:
        corr = benchmark_correlation(repeats=args.repeats, device=device)
        results["correlation"] = corr
        print(
            "correlation op, torch (FlowNetC config, features 1x256x48x64, i.e. a 384x512 input): "
            + _fmt(corr)
        )
        if device.startswith("cuda"):
            from ..ops.cuda_correlation import benchmark_cuda_correlation

            kernels = [
                benchmark_cuda_correlation(shape, dtype, device=device)
                for shape in ((1, 256, 48, 64), (1, 256, 56, 128))
                for dtype in ("float32", "float16")
            ]
            results["cuda_kernel"] = kernels
            for row_k in kernels:
                print("correlation CUDA kernel: " + _fmt(row_k))
    if args.onnx:
        from ..export.benchmark import benchmark_onnx_runtime

        rows_onnx = [benchmark_onnx_runtime(name, height, width, args.repeats, thin) for name, thin in jobs]
        results["onnx_runtime"] = rows_onnx
        for row_o in rows_onnx:
            print("ONNX Runtime (CPU): " + _fmt(row_o))
    if args.engine:
        from ..export.benchmark import benchmark_engine

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
