"""``flownet2-bag``: optical flow over the image topics of a recorded ROS 2 bag, written to a new bag.

Argument parsing, the progress bar and Ctrl-C only; the work is :func:`flownet2_ros.ros.bag.process_bag`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

PROG = "flownet2-bag"

#: ``--flag`` -> node parameter it sets (values are checked by the node's own rules).
_PARAM_FLAGS = {
    "backend": "backend",
    "checkpoint": "checkpoint",
    "engine": "engine",
    "model": "model",
    "device": "device",
    "precision": "precision",
    "max_network_pixels": "max_network_pixels",
    "threads": "torch_threads",
    "output_resolution": "output_resolution",
    "color_max_flow": "color_max_flow",
    "max_pair_gap": "max_pair_gap_s",
    "max_image_pixels": "max_image_pixels",
}
OUTPUT_NAMES = ("flow", "magnitude", "color", "camera_info", "previous_stamp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Compute FlowNet 2.0 optical flow over consecutive frames of image topics in a ROS 2 bag and write a new
bag with the flow node's outputs, as if the node had run on the recording: the same pairing and reset
rules, image conversion, camera_info matching and scaling, and the same backend choice as the node's
parameters (defaults: the node's defaults, i.e. the embedded model on CUDA if available, else CPU).

Bags: a directory with metadata.yaml, or a single .mcap or .db3 file; MCAP or SQLite3 storage, in and
out. The output plays with `ros2 bag play` and opens in Foxglove Studio and RViz (message definitions
are embedded).

Output topics, for each --topic T (T's image topic is T, or T without /compressed for a
CompressedImage topic T/compressed): the siblings of that image topic, as the node publishes them when
its `image` is remapped to it:
  /cam/image_raw -> /cam/flow (32FC2), /cam/flow/magnitude (32FC1), /cam/flow/color (rgb8),
                    /cam/flow/previous_stamp (TimeReference), and /cam/flow/camera_info when the bag
                    holds /cam/camera_info (matched by stamp: the same stamp, else the newest at most one
                    frame period older; scaled to the output grid).
Every output carries the current frame's header (stamp, frame_id) and is logged at that frame's bag time.
Unless --no-copy, every input message in the time range is copied too (input topics named like an
output are replaced).""",
        epilog="""\
Examples:
  flownet2-bag drive.mcap -o drive_flow.mcap --topic /cam/image_raw
  flownet2-bag run1/ -o run1_flow/ --topic /front/image_raw/compressed --topic /rear/image_raw --batch 4
  flownet2-bag run1/ -o out.db3 --topic /cam/image_raw --start 10 --end 25 --no-copy --export-dir frames/
  flownet2-bag run1/ -o out/ --topic /cam/image_raw --params-file config/flownet2.yaml --device cuda

Exit status: 0 done; 2 a problem to fix (message on one line; an existing output is never touched);
130 interrupted: Ctrl-C stops after the batch in progress (a second one without waiting for it), and the
output bag is closed, readable and holds everything processed until then.""",
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="the bag to read (folder, .mcap or .db3)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="the bag to write: a folder (storage from --storage), or a single file ending in .mcap or .db3",
    )
    parser.add_argument(
        "--topic",
        "-t",
        action="append",
        default=[],
        metavar="TOPIC",
        help="an image topic (sensor_msgs/Image or CompressedImage, jpeg/png) to compute flow on; repeat "
        "for several cameras. Without it, the error lists the bag's image topics",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=4,
        metavar="N",
        help="pairs per backend call: consecutive pairs of one topic and pairs of several topics run "
        "together (default 4; 1 = one pair at a time, as a lightly loaded node)",
    )
    parser.add_argument(
        "--start",
        type=float,
        metavar="SECONDS",
        help="begin this many seconds after the bag's first message (bag time; default: the beginning)",
    )
    parser.add_argument(
        "--end",
        type=float,
        metavar="SECONDS",
        help="stop this many seconds after the bag's first message (exclusive; default: the end)",
    )
    parser.add_argument(
        "--no-copy", action="store_true", help="write only the flow outputs, not the input messages"
    )
    parser.add_argument(
        "--outputs",
        default=",".join(OUTPUT_NAMES),
        metavar="LIST",
        help="comma-separated outputs to write per topic, from: flow, magnitude, color, camera_info, "
        "previous_stamp (default: all)",
    )
    parser.add_argument(
        "--storage",
        choices=("mcap", "sqlite3"),
        help="storage of a folder output (default mcap; a .mcap/.db3 output name decides by itself)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output (only once the new bag is complete and closed)",
    )
    parser.add_argument(
        "--export-dir",
        type=Path,
        metavar="DIR",
        help="also save each flow frame as flow_recorder does: DIR/<image topic with / as _>/flow_NNNN.png "
        "(colour) + flow_NNNN.flo, and stamps.txt (file, stamp, previous stamp)",
    )
    node = parser.add_argument_group(
        "the node's parameters",
        "Backend, pairing and colour settings, named and checked as the flow node's parameters "
        "(README, parameter table). A flag wins over --params-file.",
    )
    node.add_argument(
        "--params-file",
        type=Path,
        metavar="YAML",
        help="the node's parameter file (e.g. config/flownet2.yaml: <node>: ros__parameters: ...)",
    )
    node.add_argument("--backend", help="auto | torch | tensorrt (parameter backend; default auto)")
    node.add_argument(
        "--checkpoint",
        "-c",
        help="torch weights (official .pth.tar or a flownet2-train checkpoint); default: the embedded model",
    )
    node.add_argument("--engine", help="TensorRT engine file (backend tensorrt or auto)")
    node.add_argument("--model", help="stack the weights must hold (FlowNet2, FlowNet2S, ...); default: any")
    node.add_argument("--device", help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)")
    node.add_argument(
        "--precision",
        help="inference precision as the node's parameter (fp32, fp16 on CUDA; default: the node's)",
    )
    node.add_argument(
        "--network-size",
        metavar="WxH",
        help="network input size, multiples of 64, e.g. 640x384 (parameters network_width/height; "
        "default: nearest multiples of 64 of each frame, capped by --max-network-pixels)",
    )
    node.add_argument(
        "--max-network-pixels",
        type=int,
        metavar="N",
        help="cap on the automatic network size (width x height); 0 (default): the model's own cap "
        "(the embedded model's is on its model card, 1024x576 for other checkpoints)",
    )
    node.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU inference threads (parameter torch_threads; 0 = cores minus one, leaving a core to "
        "reading and writing the bag)",
    )
    node.add_argument(
        "--output-resolution",
        help="input (flow on the frame's grid, default) or network (on the network's grid, vectors scaled)",
    )
    node.add_argument(
        "--color-max-flow",
        type=float,
        metavar="PX",
        help="flow drawn fully saturated on flow/color (default 20)",
    )
    node.add_argument(
        "--max-pair-gap",
        type=float,
        metavar="SECONDS",
        help="largest stamp gap that still pairs (parameter max_pair_gap_s; 0 = no limit, the default)",
    )
    node.add_argument(
        "--max-image-pixels", type=int, metavar="N", help="larger frames are skipped and counted (too_large)"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar, only the summary")
    return parser


def _params_from_file(path: Path) -> dict[str, Any]:
    import yaml

    from .common import CliError

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"cannot read --params-file {path}: {exc}") from None
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, dict) and isinstance(value.get("ros__parameters"), dict):
                return dict(value["ros__parameters"])
    raise CliError(f"--params-file {path} holds no '<node>: ros__parameters:' section")


def settings_from_args(args: argparse.Namespace) -> Any:
    """The node's parameter values from --params-file and the flags, checked by the node's rules."""
    from ..ros.parameters import SPECS, FlowNodeSettings, check_value
    from .common import CliError

    values: dict[str, Any] = {}
    if args.params_file is not None:
        values.update({k: v for k, v in _params_from_file(args.params_file).items() if k in SPECS})
    for flag, name in _PARAM_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            values[name] = value
    if args.network_size is not None:
        try:
            width, height = (int(part) for part in args.network_size.lower().split("x"))
        except ValueError:
            raise CliError(
                f"--network-size: expected WxH such as 640x384, got {args.network_size!r}"
            ) from None
        values["network_width"], values["network_height"] = width, height
    for name, value in values.items():
        reason = check_value(name, value)
        if reason is not None:
            raise CliError(reason)
    settings = FlowNodeSettings()
    settings.update(values)
    if (settings.network_width == 0) != (settings.network_height == 0):
        raise CliError("network_width and network_height must both be 0 (automatic) or both be set")
    return settings


class _StopOnSigint:
    """First Ctrl-C: stop after the batch in progress; a second one: stop now. The bag is closed either way."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> _StopOnSigint:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        print(f"\n{PROG}: stopping after this batch, then closing the output bag", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .common import CliError, run_main

    def body() -> int:
        from tqdm import tqdm

        from ..ros.bag import BagError, BagFlowOptions, process_bag

        outputs = tuple(part.strip() for part in args.outputs.split(",") if part.strip())
        unknown = [name for name in outputs if name not in OUTPUT_NAMES]
        if unknown or not outputs:
            raise CliError(
                f"--outputs: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(OUTPUT_NAMES)}"
            )
        options = BagFlowOptions(
            topics=list(args.topic),
            settings=settings_from_args(args),
            batch=args.batch,
            start_s=args.start,
            end_s=args.end,
            copy=not args.no_copy,
            outputs=outputs,
            storage=args.storage,
            overwrite=args.overwrite,
            export_dir=args.export_dir,
        )
        bar: Any = None

        def on_start(total: int | None) -> None:
            nonlocal bar
            bar = tqdm(total=total, unit="frame", desc=PROG, disable=args.quiet, dynamic_ncols=True)

        def progress(frames: int) -> None:
            if bar is not None:
                bar.update(frames)

        try:
            with _StopOnSigint() as stop:
                summary = process_bag(
                    args.input,
                    args.output,
                    options,
                    progress=progress,
                    should_stop=stop.event.is_set,
                    on_start=on_start,
                )
        except BagError as exc:
            raise CliError(str(exc)) from None
        finally:
            if bar is not None:
                bar.close()
        for line in summary.lines():
            print(f"{PROG}: {line}" if not line.startswith(" ") else line)
        return 130 if summary.interrupted else 0

    return run_main(PROG, body, ())


if __name__ == "__main__":
    raise SystemExit(main())
