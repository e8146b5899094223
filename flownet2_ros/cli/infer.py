"""``flownet2-infer``: optical flow for image pairs, a folder of frames, or a video."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

PROG = "flownet2-infer"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Estimate optical flow with a FlowNet 2.0 checkpoint for consecutive frame pairs and write "
        "Middlebury .flo files and colour-coded PNGs.",
        epilog="Examples: flownet2-infer a.png b.png --checkpoint FlowNet2_checkpoint.pth.tar -o out/ ; "
        "flownet2-infer frames/ --checkpoint FlowNet2-CSS_checkpoint.pth.tar -o out/ ; "
        "flownet2-infer clip.mp4 --checkpoint ... -o out/",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="two or more image files (flow between each consecutive pair), one folder of images (name "
        "order), or one video file",
    )
    parser.add_argument(
        "--checkpoint",
        "-c",
        type=Path,
        help="trained weights: an official FlowNet2*_checkpoint.pth.tar of NVIDIA's flownet2-pytorch, or a "
        "checkpoint written by flownet2-train; the stack is recognised from its keys (default: the embedded "
        "model shipped with the package, a thin FlowNet2S trained on synthetic data)",
    )
    parser.add_argument(
        "--model",
        "-m",
        help="stack name the checkpoint must hold (FlowNet2, FlowNet2C, FlowNet2S, FlowNet2SD, FlowNet2CS, "
        "FlowNet2CSS); a checkpoint of another stack is refused",
    )
    parser.add_argument(
        "--output", "-o", type=Path, required=True, help="folder for the .flo and .png files (created)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default: auto)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16"),
        default="auto",
        help="auto: float16 on CUDA, float32 on a CPU (default); fp32: true float32 (TF32 off on CUDA); "
        "fp16: CUDA only",
    )
    parser.add_argument("--fp16", action="store_true", help="the same as --precision fp16")
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="N",
        help="pairs per network call (frames of one size run as one batch); the flow is the same as with "
        "--batch 1 (default 1)",
    )
    parser.add_argument(
        "--mode",
        choices=("resize", "pad"),
        default="resize",
        help="fit frames to multiples of 64 by resizing (flow rescaled back; default) or by edge padding",
    )
    parser.add_argument(
        "--max-flow",
        type=float,
        default=0.0,
        help="flow magnitude (px) shown at full colour saturation in the PNGs; 0 = per pair automatic (default)",
    )
    parser.add_argument("--no-png", action="store_true", help="write only the .flo files")
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no per-pair timing lines and no progress bar"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..flowio.frames import FrameSourceError
    from ..models import CheckpointError
    from .common import run_main

    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: _run(args), (CheckpointError, FrameSourceError, OSError, ValueError))


def _run(args: argparse.Namespace) -> int:
    import cv2
    import torch
    from tqdm import tqdm

    from ..flowio import flow_to_color, write_flo
    from ..flowio.frames import count_frames, iter_pairs
    from ..models import FlowInference, default_checkpoint, load_checkpoint
    from ..models.inference import InferenceError
    from .common import CliError, resolve_device

    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is None:
        raise CliError(
            "no --checkpoint given and the embedded default model is not installed: flow needs trained weights "
            "(e.g. an official FlowNet2_checkpoint.pth.tar); random weights are never presented as a result"
        )
    if args.batch < 1:
        raise CliError("--batch must be >= 1")
    if args.batch > 1 and args.mode == "pad":
        raise CliError("--batch needs --mode resize")
    device = resolve_device(args.device)
    precision = "fp16" if args.fp16 else args.precision
    if precision == "fp16" and not device.startswith("cuda"):
        raise CliError("--fp16 needs a CUDA device (float16 convolutions on CPU are slow and inexact)")
    model = load_checkpoint(checkpoint, name=args.model)
    stack = type(model).__name__
    try:
        runner = FlowInference(model, mode=args.mode, device=device, precision=precision)
    except InferenceError as exc:
        raise CliError(str(exc)) from None
    args.output.mkdir(parents=True, exist_ok=True)

    frames = count_frames(args.inputs)
    pairs_total = None if frames is None else max(frames - 1, 0)
    progress = tqdm(
        total=pairs_total,
        unit="pair",
        disable=args.quiet or (pairs_total is not None and pairs_total <= 2),
        file=sys.stderr,
        leave=False,
        delay=1.0,  # shown only for runs long enough to need it; keeps error output to one line
    )
    log = progress.write if not progress.disable else print
    count, total_time = 0, 0.0
    pending: list[_Pair] = []

    def flush() -> None:
        nonlocal count, total_time
        start = time.perf_counter()
        if args.mode == "pad":
            flows = [runner.estimate(p.rgb1, p.rgb2) for p in pending]
        else:
            flows = runner.estimate_batch(pending)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = (time.perf_counter() - start) / len(pending)
        for pair, flow in zip(pending, flows, strict=True):
            count, total_time = count + 1, total_time + elapsed
            write_flo(args.output / f"{pair.name1}.flo", flow)
            if not args.no_png:
                colour = flow_to_color(flow, max_flow=args.max_flow or None)
                png = args.output / f"{pair.name1}.png"
                if not cv2.imwrite(str(png), cv2.cvtColor(colour, cv2.COLOR_RGB2BGR)):
                    raise CliError(f"cannot write {png}")
            if not args.quiet:
                size = f"{pair.rgb1.shape[1]}x{pair.rgb1.shape[0]}"
                per = f"{elapsed * 1000:.1f} ms" + (f" (batch of {len(pending)})" if len(pending) > 1 else "")
                log(f"{pair.name1} -> {pair.name2}: {per} ({stack} on {device} {runner.precision}, {size})")
            progress.update(1)
        pending.clear()

    try:
        for index, (name1, rgb1, name2, rgb2) in enumerate(iter_pairs(args.inputs)):
            # consecutive pairs share a frame: keys let the core upload each frame once
            pending.append(_Pair(name1, rgb1, name2, rgb2, key1=index, key2=index + 1))
            if len(pending) >= args.batch:
                flush()
        if pending:
            flush()
    finally:
        progress.close()
    if count == 0:
        raise CliError("no frame pairs found in the input")
    if not args.quiet:
        print(f"{count} pair(s), mean {total_time / count * 1000:.1f} ms per pair; output in {args.output}")
    return 0


class _Pair:
    """One frame pair for the core's ``estimate_batch``, with the frames' names."""

    def __init__(
        self, name1: str, rgb1: np.ndarray, name2: str, rgb2: np.ndarray, key1: int, key2: int
    ) -> None:
        self.name1, self.name2 = name1, name2
        self.rgb1, self.rgb2 = rgb1, rgb2
        self.key1: int | None = key1
        self.key2: int | None = key2
        self.output_size: tuple[int, int] | None = None
        self.out: np.ndarray | None = None


if __name__ == "__main__":
    raise SystemExit(main())
