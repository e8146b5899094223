"""``flownet2-export-onnx``: write a FlowNet 2.0 stack as ONNX for TensorRT (or any ONNX runtime)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

PROG = "flownet2-export-onnx"
_STACKS = "FlowNet2, FlowNet2C, FlowNet2S, FlowNet2SD, FlowNet2CS, FlowNet2CSS"


def build_parser() -> argparse.ArgumentParser:
    from .common import parse_size

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export a FlowNet 2.0 stack to ONNX with a static input size: inputs image1, image2 "
        "(B, 3, H, W) float32 RGB 0..255, output flow (B, 2, H, W) float32 in pixels. The correlation "
        "becomes one FlowNet2Correlation custom node (for the TensorRT plugin) or standard ONNX ops.",
        epilog="Examples: flownet2-export-onnx --checkpoint FlowNet2_checkpoint.pth.tar --input-size 512x384 "
        "--output flownet2_512x384.onnx ; flownet2-export-onnx --model FlowNet2C --random-weights "
        "--input-size 512x384 --precision fp16 --correlation decomposed --output c.onnx --validate",
    )
    parser.add_argument(
        "--checkpoint",
        "-c",
        type=Path,
        help="trained weights: an official FlowNet2*_checkpoint.pth.tar or a flownet2-train checkpoint; the "
        "stack and its width are recognised from the keys",
    )
    parser.add_argument(
        "--model",
        "-m",
        help=f"stack name ({_STACKS}); with --checkpoint the checkpoint must hold this stack, without it "
        "the stack to build with --random-weights",
    )
    parser.add_argument(
        "--thin",
        action="store_true",
        help="with --random-weights: the paper's thin variant (every feature width × 3/8)",
    )
    parser.add_argument(
        "--width",
        type=float,
        default=None,
        metavar="W",
        help="with --random-weights: channel-width multiplier (1.0 = the published networks)",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="export randomly initialised weights (seed 0) when no checkpoint is given; only for testing "
        "the toolchain and benchmarking engines, the flow is meaningless",
    )
    parser.add_argument(
        "--input-size",
        type=parse_size,
        required=True,
        metavar="WxH",
        help="network input size, width x height, both multiples of 64 (e.g. 512x384); the engine is "
        "static in this size, frames are resized to it",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        default="fp32",
        help="fp32, or fp16: float16 weights and compute with float32 inputs/output and explicit casts in "
        "the graph, for strongly typed TensorRT engines (default: fp32)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=17,
        help="ONNX opset, 17 to 19 (TensorRT mis-parses GridSample at opset 20; default: 17)",
    )
    parser.add_argument(
        "--correlation",
        choices=("plugin", "decomposed"),
        default="plugin",
        help="plugin: one FlowNet2Correlation custom node per FlowNetC, for the TensorRT plugin or the "
        "ONNX Runtime Python op; decomposed: standard ONNX ops only, for runtimes without plugins "
        "(default: plugin)",
    )
    parser.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="make the batch dimension symbolic (default: batch 1)",
    )
    parser.add_argument("--output", "-o", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="run the exported graph on ONNX Runtime (CPU) and torch on one random image pair; print the "
        "max abs flow difference and both run times",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="print each step and the export details")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..models import CheckpointError
    from .common import run_main

    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: _run(args), (CheckpointError, OSError, ValueError, ImportError))


def _log(args: argparse.Namespace, message: str) -> None:
    if args.verbose:
        print(message, file=sys.stderr, flush=True)


def _load_model(args: argparse.Namespace) -> nn.Module:
    import torch

    from ..models import build, load_checkpoint
    from .common import CliError

    if args.checkpoint is not None:
        if args.random_weights:
            raise CliError("--random-weights and --checkpoint exclude each other")
        if args.thin or args.width is not None:
            raise CliError(
                "--thin/--width apply to --random-weights; a checkpoint's width comes from its keys"
            )
        if not args.checkpoint.is_file():
            raise CliError(f"checkpoint not found: {args.checkpoint}")
        _log(args, f"loading {args.checkpoint}")
        return load_checkpoint(args.checkpoint, name=args.model)
    if not args.random_weights:
        raise CliError(
            "no --checkpoint given: export trained weights (e.g. FlowNet2_checkpoint.pth.tar), or pass "
            "--random-weights with --model for toolchain tests and engine benchmarks"
        )
    if not args.model:
        raise CliError(f"--random-weights needs --model NAME ({_STACKS})")
    if args.width is not None and args.width <= 0:
        raise CliError(f"--width must be > 0, got {args.width}")
    torch.manual_seed(0)
    _log(args, f"building {args.model} with random weights (seed 0)")
    return build(args.model, thin=args.thin, width=1.0 if args.width is None else args.width)


def _run(args: argparse.Namespace) -> int:
    from .common import CliError

    try:
        import onnx  # noqa: F401

        from ..export.onnx_export import ExportError, check_export_options, export_onnx
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise CliError(
            f"ONNX export needs the 'export' extra (onnx, onnxruntime, onnxruntime-extensions): {exc}"
        ) from None
    height, width = args.input_size
    # Refuse bad options before loading a possibly large checkpoint.
    check_export_options(
        height, width, precision=args.precision, opset=args.opset, correlation=args.correlation
    )
    model = _load_model(args)
    if args.output.is_dir():
        raise CliError(f"--output is a folder, expected a .onnx file path: {args.output}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    _log(args, f"exporting {type(model).__name__} at {width}x{height} ({args.precision}, {args.correlation})")
    try:
        info = export_onnx(
            model,
            args.output,
            height,
            width,
            precision=args.precision,
            opset=args.opset,
            correlation=args.correlation,
            dynamic_batch=args.dynamic_batch,
        )
    except ExportError as exc:
        raise CliError(f"export failed its checks: {exc}") from None
    print(info.summary())
    if args.verbose:
        for key, value in info.as_dict().items():
            print(f"  {key}: {value}", file=sys.stderr)
    if args.validate:
        from ..export.ort_correlation import validate_against_torch

        _log(args, "validating on ONNX Runtime (CPU)")
        try:
            result = validate_against_torch(model, info.path, height, width)
        except Exception as exc:  # ONNX Runtime's own exception types
            raise CliError(f"validation on ONNX Runtime failed: {exc}") from None
        print(result.summary())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
