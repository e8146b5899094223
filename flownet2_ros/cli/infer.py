"""``flownet2-infer``: optical flow for image pairs, a folder of frames, or a video."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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
    parser.add_argument("--fp16", action="store_true", help="run the network in float16 (CUDA only)")
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
    from .common import CliError, resolve_device

    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is None:
        raise CliError(
            "no --checkpoint given and the embedded default model is not installed: flow needs trained weights "
            "(e.g. an official FlowNet2_checkpoint.pth.tar); random weights are never presented as a result"
        )
    device = resolve_device(args.device)
    if args.fp16 and not device.startswith("cuda"):
        raise CliError("--fp16 needs a CUDA device (float16 convolutions on CPU are slow and inexact)")
    model = load_checkpoint(checkpoint, name=args.model)
    stack = type(model).__name__
    dtype = torch.float16 if args.fp16 else torch.float32
    runner = FlowInference(model, mode=args.mode, device=device, dtype=dtype)
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
    try:
        for name1, rgb1, name2, rgb2 in iter_pairs(args.inputs):
            start = time.perf_counter()
            flow = runner.estimate(rgb1, rgb2)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            count, total_time = count + 1, total_time + elapsed
            write_flo(args.output / f"{name1}.flo", flow)
            if not args.no_png:
                colour = flow_to_color(flow, max_flow=args.max_flow or None)
                png = args.output / f"{name1}.png"
                if not cv2.imwrite(str(png), cv2.cvtColor(colour, cv2.COLOR_RGB2BGR)):
                    raise CliError(f"cannot write {png}")
            if not args.quiet:
                size = f"{rgb1.shape[1]}x{rgb1.shape[0]}"
                log(f"{name1} -> {name2}: {elapsed * 1000:.1f} ms ({stack} on {device}, {size})")
            progress.update(1)
    finally:
        progress.close()
    if count == 0:
        raise CliError("no frame pairs found in the input")
    if not args.quiet:
        print(f"{count} pair(s), mean {total_time / count * 1000:.1f} ms per pair; output in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
