"""``flownet2-evaluate``: EPE, Fl-all and outlier rates of a checkpoint or TensorRT engine on a data set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROG = "flownet2-evaluate"


def build_parser() -> argparse.ArgumentParser:
    from .common import parse_size

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate optical flow against ground truth: average end-point error (EPE), KITTI Fl-all "
        "(EPE > 3 px and > 5% of |GT|) and outlier rates, overall and per sequence. Writes results.json, "
        "samples.csv, sequences.csv and epe_per_sequence.png to the output folder.",
        epilog="Examples: flownet2-evaluate --checkpoint runs/synthetic_flownet2s_thin/checkpoint_best.pth.tar "
        "--synthetic 64 --size 256x192 -o eval/ ; flownet2-evaluate --checkpoint FlowNet2_checkpoint.pth.tar "
        "--dataset Sintel --root /data/MPI-Sintel --split training --pass clean -o eval/ --visualize 8 ; "
        "flownet2-evaluate --engine flownet2.engine --backend tensorrt --dataset KITTI --root /data/kitti "
        "--year 2015 -o eval/",
    )
    weights = parser.add_argument_group("what to evaluate (one of)")
    weights.add_argument(
        "--checkpoint",
        "-c",
        type=Path,
        help="a FlowNet 2.0 checkpoint: official .pth.tar of flownet2-pytorch or one written by flownet2-train",
    )
    weights.add_argument(
        "--engine", type=Path, help="a TensorRT engine file (built by flownet2-build-engine)"
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "tensorrt"),
        default="auto",
        help="torch runs --checkpoint; tensorrt runs --engine; auto picks by what is given (default)",
    )
    parser.add_argument("--model", "-m", help="stack name the checkpoint must hold (optional check)")
    data = parser.add_argument_group("data (one of --dataset or --synthetic)")
    data.add_argument(
        "--dataset",
        help="FlyingChairs, ChairsSDHom, FlyingThings3D, Sintel, KITTI or FlowFolder (needs --root)",
    )
    data.add_argument("--root", type=Path, help="data set folder")
    data.add_argument("--split", help="data set split (e.g. val for FlyingChairs, training for Sintel)")
    data.add_argument("--pass", dest="pass_", metavar="PASS", help="Sintel rendering pass: clean or final")
    data.add_argument("--year", type=int, help="KITTI benchmark year: 2012 or 2015")
    data.add_argument(
        "--synthetic", type=int, metavar="N", help="evaluate on N pairs of the procedural synthetic generator"
    )
    data.add_argument(
        "--size",
        type=parse_size,
        default=(192, 256),
        metavar="WxH",
        help="synthetic pair size (default 256x192)",
    )
    data.add_argument(
        "--seed",
        type=int,
        default=1_000_003,
        help="synthetic generator seed (default 1000003: the held-out set flownet2-train validates on "
        "when training on synthetic seed 0)",
    )
    data.add_argument(
        "--max-displacement", type=float, help="synthetic: largest flow magnitude in px (generator default)"
    )
    data.add_argument("--max-samples", type=int, default=0, help="evaluate only the first N pairs (0 = all)")
    parser.add_argument("--output", "-o", type=Path, required=True, help="folder for the results (created)")
    parser.add_argument(
        "--visualize", type=int, default=0, metavar="N", help="also write colour panels of the first N pairs"
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N for the torch backend (default auto)"
    )
    parser.add_argument(
        "--mode",
        choices=("resize", "pad"),
        default="resize",
        help="fit frames to multiples of 64 by resizing (default) or edge padding (torch backend)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16"),
        default="auto",
        help="torch backend: auto is float16 on CUDA and float32 on a CPU (default); fp32 is true float32 "
        "(TF32 off); fp16 needs CUDA and --mode resize",
    )
    parser.add_argument("--fp16", action="store_true", help="the same as --precision fp16")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no table")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..backends import BackendError
    from ..data.errors import DatasetError
    from ..models import CheckpointError
    from .common import run_main

    args = build_parser().parse_args(argv)
    return run_main(
        PROG, lambda: _run(args), (BackendError, CheckpointError, DatasetError, OSError, ValueError)
    )


def _dataset(args: argparse.Namespace) -> tuple[object, str]:
    from ..training import build_dataset
    from .common import CliError

    if (args.dataset is None) == (args.synthetic is None):
        raise CliError("give exactly one of --dataset NAME (with --root) or --synthetic N")
    if args.synthetic is not None:
        if args.synthetic < 1:
            raise CliError("--synthetic needs a positive number of pairs")
        height, width = args.size
        options: dict = {"num_samples": args.synthetic, "height": height, "width": width, "seed": args.seed}
        if args.max_displacement is not None:
            options["max_displacement"] = args.max_displacement
        return build_dataset("synthetic", **options), f"synthetic ({args.synthetic} pairs, {width}x{height})"
    if args.root is None:
        raise CliError(f"--dataset {args.dataset} needs --root DIR")
    if not args.root.exists():
        raise CliError(f"data set root not found: {args.root}")
    options = {}
    if args.pass_ is not None:
        options["pass_"] = args.pass_
    if args.year is not None:
        options["year"] = args.year
    label = f"{args.dataset} {args.split or ''} {args.pass_ or ''}".strip()
    return build_dataset(args.dataset, str(args.root), args.split, **options), label


def _estimator(args: argparse.Namespace) -> object:
    from .common import CliError, resolve_device

    if args.checkpoint is None and args.engine is None:
        raise CliError("give --checkpoint PATH or --engine PATH: evaluation needs trained weights")
    backend = args.backend
    if backend == "auto":
        backend = "tensorrt" if args.engine is not None else "torch"
    if backend == "torch":
        if args.checkpoint is None:
            raise CliError("--backend torch needs --checkpoint")
        device = resolve_device(args.device)
        precision = "fp16" if args.fp16 else args.precision
        if precision == "auto":
            precision = "fp16" if device.startswith("cuda") else "fp32"
        if precision == "fp16":
            if not device.startswith("cuda"):
                raise CliError("--fp16 needs a CUDA device")
            if args.mode != "resize":
                raise CliError("fp16 runs through the torch backend, which resizes: use --mode resize")
            from ..backends import BackendConfig, create_estimator

            config = BackendConfig(
                checkpoint=str(args.checkpoint), model=args.model or "", device=device, precision="fp16"
            )
            return create_estimator("torch", config)[0]
        from ..models import load_checkpoint

        return load_checkpoint(args.checkpoint, name=args.model).to(
            device
        )  # fp32: the core runs it without TF32
    if args.engine is None:
        raise CliError("--backend tensorrt needs --engine")
    from ..backends import BackendConfig, create_estimator

    config = BackendConfig(
        engine=str(args.engine),
        checkpoint=str(args.checkpoint or ""),
        model=args.model or "",
        device=args.device,
    )
    estimator, _ = create_estimator("tensorrt", config)
    return estimator


def _run(args: argparse.Namespace) -> int:
    from ..training import evaluate
    from .common import CliError

    if args.visualize < 0 or args.max_samples < 0:
        raise CliError("--visualize and --max-samples must be >= 0")
    dataset, label = _dataset(args)
    estimator = _estimator(args)
    source = args.checkpoint if args.engine is None or args.backend == "torch" else args.engine
    result = evaluate(
        estimator,
        dataset,
        mode=args.mode,
        max_samples=args.max_samples,
        output_dir=args.output,
        visualize=args.visualize,
        progress=not args.quiet,
        label=f"{type(estimator).__name__} ({Path(str(source)).name})",
        dataset_label=label,
    )
    if not args.quiet:
        print(result.table())
    summary = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.summary.items()}
    print(json.dumps({"epe": summary["epe"], "fl_all": summary["fl_all"], "images": summary["images"]}))
    print(f"results in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
