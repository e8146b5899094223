"""``flownet2-compare``: a FlowNet 2.0 checkpoint against OpenCV's DIS and Farneback, one table."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

PROG = "flownet2-compare"
# The evaluation sets (flownet2_ros.training.comparison.SET_NAMES; not imported so that --help stays fast).
SET_CHOICES = ("synthetic", "photos", "photos_large")


def build_parser() -> argparse.ArgumentParser:
    from .common import parse_size

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Measure a FlowNet 2.0 checkpoint (default: the embedded model) and OpenCV's classical "
        "flow (DIS ultrafast/fast/medium, Farneback) on the same pairs in one run: held-out synthetic pairs "
        "and real photographs under known homographies, small and large motions. Prints a Markdown table of "
        "EPE, Fl-all and median time per pair for each set, and the machine it ran on.",
    )
    parser.add_argument(
        "--checkpoint",
        "-c",
        default="",
        help="checkpoint to measure (default: the embedded default model)",
    )
    parser.add_argument(
        "--size", type=parse_size, default=(480, 640), help="frame size WxH (default 640x480)"
    )
    parser.add_argument("--pairs", type=int, default=24, help="pairs per evaluation set (default 24)")
    parser.add_argument(
        "--sets",
        nargs="+",
        choices=SET_CHOICES,
        default=None,
        metavar="SET",
        help="evaluation sets, one group of columns each (default: all three, the photograph sets only "
        "where scikit-image is installed). synthetic: held-out "
        "procedural pairs (seed --seed), FlyingChairs-like motion up to --max-displacement px. photos: the "
        "nine evaluation photographs shipped with scikit-image (none of them used for training) under "
        "near-identity homographies (seed --seed): translation up to 2/3 of --max-displacement per axis, "
        "rotation up to 4 degrees, scale +-6 %%. photos_large: the same photographs under large motions "
        "(seed --seed + 1): a 48-88 px translation in a random direction, rotation up to 1 degree, scale "
        "+-1 %%, every pixel moving 40-96 px at 640x480 (the translation scales with --size elsewhere). "
        "Pixels that leave the frame are not scored.",
    )
    parser.add_argument(
        "--seed", type=int, default=424242, help="seed of the evaluation sets (never a training seed)"
    )
    parser.add_argument(
        "--max-displacement",
        type=float,
        default=16.0,
        help="largest motion (px) in the synthetic set; the photos set's translation is up to 2/3 of it "
        "(default 16; photos_large does not depend on it)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="device of the learned model: cpu (default; the classical methods run on CPU), cuda",
    )
    parser.add_argument(
        "--network-sizes",
        nargs="+",
        type=_network_size,
        default=[None, (256, 320)],
        metavar="auto|WxH",
        help="sizes the learned model runs at, one row each: auto (the frame size rounded to multiples of "
        "64) or WxH in multiples of 64, frames resized to it and flow scaled back (default: auto 320x256)",
    )
    parser.add_argument(
        "--methods",
        nargs="*",
        default=["dis_ultrafast", "dis_fast", "dis_medium", "farneback"],
        help="classical methods to include (default: all four)",
    )
    parser.add_argument("--output", "-o", type=Path, help="also write table.md and results.json here")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return parser


def _network_size(text: str) -> tuple[int, int] | None:
    """``auto`` → None, ``WxH`` → (height, width) in multiples of 64, for argparse ``type=``."""
    from .common import parse_size

    if text.lower() == "auto":
        return None
    height, width = parse_size(text)
    if height % 64 or width % 64:
        raise argparse.ArgumentTypeError(f"network sizes are multiples of 64, got {text!r}")
    return height, width


def main(argv: list[str] | None = None) -> int:
    from ..backends import BackendError
    from .common import run_main

    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: _run(args), (BackendError, ValueError, OSError))


def _run(args: argparse.Namespace) -> int:
    from ..backends import BackendConfig, create_torch
    from ..backends.opencv_backend import OpenCVFlowEstimator
    from ..training.comparison import compare, comparison_sets, markdown_table
    from .common import CliError, describe_machine

    if args.pairs < 2:
        raise CliError("--pairs must be >= 2")
    height, width = args.size
    names = args.sets or SET_CHOICES
    sets = comparison_sets(height, width, args.pairs, args.seed, args.max_displacement, sets=names)
    missing = [name for name in names if name not in sets]
    if missing and args.sets:  # asked for by name: say why it cannot be measured
        raise CliError(
            f"set(s) {', '.join(missing)} need the photographs of scikit-image: pip install scikit-image"
        )
    estimators: dict[str, object] = {}
    for network_size in dict.fromkeys(args.network_sizes):
        learned = create_torch(
            BackendConfig(checkpoint=args.checkpoint, device=args.device, network_size=network_size)
        )
        info = learned.info
        at = f" at {network_size[1]}×{network_size[0]}" if network_size else ""
        estimators[f"{info.model} ({info.device}){at}"] = learned
    for method in args.methods:
        estimators[f"OpenCV {method}"] = OpenCVFlowEstimator(method)
    rows = compare(estimators, sets, progress=not args.quiet)
    import cv2
    import torch

    machine = describe_machine("cpu") + f", OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads"
    if args.device.startswith("cuda") and torch.cuda.is_available():
        machine += f"; learned model on {torch.cuda.get_device_name()}"
    table = markdown_table(rows, machine)
    print(table)
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "table.md").write_text(table + "\n")
        (args.output / "results.json").write_text(
            json.dumps(
                {"machine": machine, "size": [width, height], "rows": [asdict(r) for r in rows]}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
