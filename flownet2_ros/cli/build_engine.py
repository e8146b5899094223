"""``flownet2-build-engine``: a TensorRT engine (plus its ``.json`` sidecar) from a checkpoint or an ONNX model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import CliError, parse_size

PROG = "flownet2-build-engine"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build a TensorRT engine for one FlowNet 2.0 stack at one input size, like trtexec "
        "--onnx=... --saveEngine=..., with the correlation as a Python plugin. A checkpoint (or a stack "
        "name, random weights) is first exported to ONNX next to the engine. Writes ENGINE and ENGINE.json "
        "(TensorRT version, GPU, precision, size, batch profile, weights hash), checked before the engine is "
        "used. The correlation kernel is compiled and loaded for this GPU first, so a missing NVRTC or a wrong "
        "cuda-bindings fails in one line. Needs the full TensorRT (JetPack, or pip install tensorrt), a CUDA "
        "GPU and the [cuda] extra; the engine runs only with that TensorRT version and GPU model.",
        epilog="Examples: flownet2-build-engine --checkpoint FlowNet2_checkpoint.pth.tar --input-size 512x384 "
        "--precision fp16 --output flownet2_512x384_fp16.engine ; flownet2-build-engine --onnx model.onnx "
        "--output model.engine --timing-cache trt.cache ; several cameras in one run: flownet2-build-engine "
        "--checkpoint FlowNet2_checkpoint.pth.tar --input-size 512x384 --batch 1:2:4",
    )
    source = parser.add_argument_group("model (give --onnx, or --checkpoint and/or --model)")
    source.add_argument(
        "--onnx", type=Path, help="an ONNX model exported by flownet2-export-onnx (or export_onnx)"
    )
    source.add_argument(
        "--checkpoint",
        "-c",
        type=Path,
        help="FlowNet 2.0 weights (official .pth.tar or a flownet2-train checkpoint); exported to ONNX first",
    )
    source.add_argument(
        "--model",
        "-m",
        help="stack name (FlowNet2, FlowNet2C, FlowNet2S, FlowNet2SD, FlowNet2CS, FlowNet2CSS): the stack the "
        "checkpoint must hold, or without --checkpoint a stack with random weights (for timing only)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        default="fp32",
        help="fp32 or fp16 network (fp16 is put into the exported ONNX graph; with --onnx it must match the "
        "export) (default: fp32)",
    )
    parser.add_argument(
        "--input-size",
        type=parse_size,
        metavar="WxH",
        help="network input size, multiples of 64, e.g. 512x384; required when exporting; with --onnx taken "
        "from the model when omitted",
    )
    parser.add_argument(
        "--correlation",
        choices=("plugin", "decomposed"),
        default="plugin",
        help="correlation in the exported graph: the TensorRT plugin (fast) or standard ONNX ops (default: plugin)",
    )
    parser.add_argument(
        "--opset", type=int, default=17, help="ONNX opset for the export, 17..19 (default: 17)"
    )
    parser.add_argument(
        "--batch",
        type=_batch_profile,
        metavar="MIN:OPT:MAX",
        help="batch sizes the engine accepts (TensorRT optimization profile; OPT is the size it is tuned "
        "for), e.g. 1:2:4 for up to 4 camera pairs per run; required for an ONNX exported with "
        "--dynamic-batch; with --checkpoint/--model anything but 1:1:1 exports a dynamic batch "
        "(default: 1:1:1, a static engine)",
    )
    parser.add_argument(
        "--workspace",
        type=int,
        default=4096,
        metavar="MB",
        help="builder workspace limit in MiB (default: 4096)",
    )
    parser.add_argument(
        "--timing-cache",
        type=Path,
        metavar="PATH",
        help="TensorRT timing cache file: read if it exists, written after the build (faster rebuilds)",
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        help="engine file to write (default: <stack>_<W>x<H>_<precision>.engine, or <onnx name>.engine); its "
        "sidecar is <output>.json and an exported ONNX goes to the same name with .onnx",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="TensorRT's verbose build log")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _batch_profile(text: str) -> Any:
    from ..export.engine_metadata import BatchProfile

    try:
        return BatchProfile.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_size(size: tuple[int, int] | None) -> None:
    if size is not None and (size[0] % 64 or size[1] % 64):
        raise CliError(f"--input-size must be multiples of 64, got {size[1]}x{size[0]}")


def main(argv: list[str] | None = None) -> int:
    from ..export.engine_builder import EngineBuildError
    from ..export.engine_metadata import EngineMismatchError
    from ..export.trt_plugin import TensorRTUnavailableError
    from ..ops.cuda_correlation import CudaCorrelationError
    from .common import run_main

    args = build_parser().parse_args(argv)
    known: tuple[type[BaseException], ...] = (
        EngineBuildError,
        EngineMismatchError,
        TensorRTUnavailableError,
        CudaCorrelationError,
        OSError,
        ValueError,
    )
    try:
        from ..export.onnx_export import ExportError

        known += (ExportError,)
    except ImportError:  # the exporter's optional dependencies (onnx) are missing
        pass
    return run_main(PROG, lambda: _run(args), known)


def _run(args: argparse.Namespace) -> int:
    from ..export import engine_builder

    if args.onnx is not None and (args.checkpoint is not None or args.model):
        raise CliError("give either --onnx or --checkpoint/--model, not both")
    if args.onnx is None and args.checkpoint is None and not args.model:
        raise CliError("nothing to build: give --onnx, --checkpoint or --model")
    _check_size(args.input_size)
    if args.onnx is not None and not args.onnx.is_file():
        raise CliError(f"ONNX model {args.onnx} not found")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise CliError(f"checkpoint {args.checkpoint} not found")
    if args.workspace < 16:
        raise CliError(f"--workspace must be at least 16 MiB, got {args.workspace}")
    if args.onnx is None and args.input_size is None:
        raise CliError("--input-size WxH is required when exporting from a checkpoint or model name")
    # Fail before a long export when nothing could be built here anyway.
    reason = engine_builder.builder_unavailable_reason() or engine_builder.gpu_unavailable_reason()
    if reason is not None:
        raise CliError(reason)

    progress = not args.no_progress
    overrides: dict[str, object] = {}
    if args.onnx is not None:
        onnx_path = args.onnx
        output = args.output or Path(onnx_path.stem + ".engine")
        if args.input_size is not None:
            overrides["input_height"], overrides["input_width"] = args.input_size
    else:
        height, width = args.input_size
        model, label = _load_model(args)
        stack = type(model).__name__
        if args.correlation == "plugin" and _has_correlation(model):
            from ..ops import cuda_correlation

            cuda_correlation.prepare_kernel(0)  # the kernel for this GPU, before a long export (one line)
        output = args.output or Path(f"{stack}_{width}x{height}_{args.precision}.engine")
        onnx_path = output.with_suffix(".onnx")
        from ..export.onnx_export import export_onnx

        print(f"{PROG}: exporting {label} to {onnx_path} ...", file=sys.stderr)
        export_onnx(
            model,
            onnx_path,
            height,
            width,
            precision=args.precision,
            opset=args.opset,
            correlation=args.correlation,
            dynamic_batch=args.batch is not None and not args.batch.is_static,
        )
    print(f"{PROG}: building {output} from {onnx_path} ({args.precision}) ...", file=sys.stderr)
    engine = engine_builder.build_engine(
        onnx_path,
        output,
        precision=args.precision,
        workspace_mb=args.workspace,
        timing_cache=args.timing_cache,
        verbose=args.verbose,
        progress=progress,
        metadata=overrides,
        batch=args.batch,
    )
    from ..export.engine_metadata import read_metadata, sidecar_path

    meta = read_metadata(engine)
    print(
        f"{engine} ({meta.engine_size / 2**20:.1f} MiB): {meta.stack} {meta.input_width}x{meta.input_height} "
        f"{meta.precision}, batch {meta.batch_profile}, TensorRT {meta.tensorrt_version} on {meta.gpu_name} "
        f"(sm {meta.compute_capability}); metadata {sidecar_path(engine)}"
    )
    return 0


def _has_correlation(model: Any) -> bool:
    from ..ops.correlation import Correlation

    return any(isinstance(module, Correlation) for module in model.modules())


def _load_model(args: argparse.Namespace) -> tuple[Any, str]:
    from ..models import build, load_checkpoint

    if args.checkpoint is not None:
        model = load_checkpoint(args.checkpoint, name=args.model or None)
        return model, f"{type(model).__name__} from {args.checkpoint.name}"
    try:
        model = build(args.model)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(
        f"{PROG}: warning: {args.model} with random weights (no --checkpoint): for timing only",
        file=sys.stderr,
    )
    return model, f"{args.model} (random weights)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
