"""``flow_recorder``: saves what the flow node publishes (colour PNGs, .flo files) and prints rates.

Used by the demo to leave images a person can look at; useful on a robot to grab a few flow frames.
:func:`save_flow_frame` writes one frame the way this tool does; ``flownet2-bag --export-dir`` uses it too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

PROG = "flow_recorder"


def save_flow_frame(folder: Path, index: int, color_rgb: np.ndarray, flow: np.ndarray) -> tuple[Path, Path]:
    """Write ``<folder>/flow_NNNN.png`` (the ``flow/color`` image, RGB) and ``flow_NNNN.flo`` (the flow).

    Returns the two paths. Raises ``OSError`` when a file cannot be written.
    """
    import cv2

    from ..flowio import write_flo

    png = folder / f"flow_{index:04d}.png"
    flo = folder / f"flow_{index:04d}.flo"
    if not cv2.imwrite(str(png), cv2.cvtColor(color_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {png}")
    write_flo(flo, flow)
    return png, flo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Subscribe to the flow node's outputs and save N frames: <output>/flow_NNNN.png (the "
        "flow/color image) and flow_NNNN.flo (the 32FC2 flow). Exits after --count frames or --timeout s.",
    )
    parser.add_argument(
        "--output", "-o", type=Path, required=True, help="folder for the saved frames (created)"
    )
    parser.add_argument("--count", type=int, default=10, help="frames to save before exiting (default 10)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="give up after this many seconds (default 120)"
    )
    parser.add_argument("--namespace", default="", help="namespace of the flow node's topics (default: none)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from .image_convert import header_stamp_seconds, image_msg_to_array

    args.output.mkdir(parents=True, exist_ok=True)
    prefix = args.namespace.rstrip("/") + "/" if args.namespace else ""
    rclpy.init(args=None)
    node = rclpy.create_node("flow_recorder")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    colors: dict[float, np.ndarray] = {}
    saved: list[float] = []
    flows: dict[float, np.ndarray] = {}

    def save(stamp: float) -> None:
        if stamp in colors and stamp in flows and len(saved) < args.count:
            index = len(saved)
            save_flow_frame(args.output, index, colors.pop(stamp), flows.pop(stamp))
            saved.append(time.monotonic())

    def on_color(msg: Image) -> None:
        array, _ = image_msg_to_array(msg)
        stamp = header_stamp_seconds(msg.header)
        colors[stamp] = array.copy()
        save(stamp)

    def on_flow(msg: Image) -> None:
        array, _ = image_msg_to_array(msg)
        stamp = header_stamp_seconds(msg.header)
        flows[stamp] = array.copy()
        save(stamp)

    node.create_subscription(Image, prefix + "flow/color", on_color, qos)
    node.create_subscription(Image, prefix + "flow", on_flow, qos)
    deadline = time.monotonic() + args.timeout
    try:
        while len(saved) < args.count and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if len(saved) < args.count:
        print(
            f"{PROG}: error: got {len(saved)} of {args.count} flow frames in {args.timeout:.0f} s",
            file=sys.stderr,
        )
        return 1
    rate = (
        (len(saved) - 1) / (saved[-1] - saved[0]) if len(saved) > 1 and saved[-1] > saved[0] else float("nan")
    )
    print(f"{PROG}: saved {len(saved)} flow frames to {args.output} ({rate:.1f} frames/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
