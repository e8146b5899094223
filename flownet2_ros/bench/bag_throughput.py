"""Bag I/O overhead of ``flownet2-bag``: bag-to-bag rate against the backend's own rate on the same frames.

``python -m flownet2_ros.bench.bag_throughput [--frames 60] [--size 640x480] [--batch 4] [--device cpu]``

1. Writes a bag (MCAP, raw rgb8) of ``--frames`` textured frames of ``--size`` moving a few pixels per
   frame, with a camera_info per frame.
2. Creates the backend the node's parameters choose (defaults: the embedded model; ``--device``;
   inference threads as the node: cores minus one) and warms it up.
3. Times the backend alone: the decoded frames in memory, consecutive pairs in ``estimate_batch`` calls of
   ``--batch`` pairs (with frame keys and output buffers, as flownet2-bag passes them).
4. Times ``flownet2-bag`` end to end on the bag with the same backend object and batch (reading,
   deserialising, converting, pairing, the backend, colour coding, serialising, writing the output bag
   with the inputs copied; backend creation excluded).

Steps 3 and 4 alternate ``--repeat`` times and the best rate of each counts, so that a burst of other work
on a shared machine does not decide the ratio.  Prints both rates in pairs per second and their ratio (the
target is at least 0.9).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from ..backends import FlowEstimator

PROG = "bag_throughput"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Measure flownet2-bag's bag-to-bag rate against the backend's own rate on the same frames "
        "(same backend object, same batch) and print their ratio.",
    )
    parser.add_argument("--frames", type=int, default=60, help="frames in the generated bag (default 60)")
    parser.add_argument("--size", default="640x480", metavar="WxH", help="frame size (default 640x480)")
    parser.add_argument("--batch", type=int, default=4, help="pairs per backend call, both runs (default 4)")
    parser.add_argument("--device", default="cpu", help="backend device: cpu, cuda, auto (default cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU inference threads (the node's torch_threads; 0: cores minus one, the default)",
    )
    parser.add_argument(
        "--storage", choices=("mcap", "sqlite3"), default="mcap", help="output storage (default mcap)"
    )
    parser.add_argument("--no-copy", action="store_true", help="do not copy the input messages to the output")
    parser.add_argument(
        "--repeat", type=int, default=2, help="alternating measurements of each; the best counts (default 2)"
    )
    return parser


class _KeepOpen:
    """The backend for flownet2-bag's run without its ``close`` (the next measurement uses it again)."""

    def __init__(self, estimator: Any) -> None:
        self._estimator = estimator

    def __getattr__(self, name: str) -> Any:
        return getattr(self._estimator, name)

    def close(self) -> None:
        pass


def make_bag(path: Path, frames: int, height: int, width: int) -> None:
    """A bag of ``frames`` rgb8 frames (a texture panning 3 px/frame right, 1 px down) + camera_info."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import CameraInfo

    from ..ros.image_convert import rgb_to_image_msg

    typestore = get_typestore(Stores.ROS2_JAZZY)
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 255, (height // 8 + frames, width // 8 + 3 * frames, 3), dtype=np.uint8)
    canvas = np.kron(canvas, np.ones((8, 8, 1), np.uint8))  # 8 px blocks: structure the network can follow
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image_conn = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=typestore)
        info_conn = writer.add_connection(
            "/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=typestore
        )
        for i in range(frames):
            rgb = np.ascontiguousarray(canvas[i : i + height, 3 * i : 3 * i + width])
            msg = rgb_to_image_msg(rgb)
            ns = 1_700_000_000 * 10**9 + i * 33_333_333
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 10**9)
            msg.header.frame_id = "cam"
            info = CameraInfo(header=msg.header, width=width, height=height)
            info.k = np.array([width, 0.0, width / 2, 0.0, width, height / 2, 0.0, 0.0, 1.0])
            writer.write(image_conn, ns, serialize_message(msg))
            writer.write(info_conn, ns, serialize_message(info))


def backend_rate(estimator: Any, frames: list[np.ndarray], batch: int) -> float:
    """Pairs per second of ``estimate_batch`` alone over consecutive pairs, ``batch`` pairs per call."""
    from ..backends import FlowRequest

    height, width = frames[0].shape[:2]
    pairs = list(range(len(frames) - 1))
    start = time.perf_counter()
    for first in range(0, len(pairs), batch):
        chunk = pairs[first : first + batch]
        requests = [
            FlowRequest(
                frames[i],
                frames[i + 1],
                key1=i + 1,
                key2=i + 2,
                output_size=(height, width),
                out=np.empty((height, width, 2), np.float32),
            )
            for i in chunk
        ]
        estimator.estimate_batch(requests)
    return len(pairs) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"{PROG}: error: --size must be WxH, got {args.size!r}", file=sys.stderr)
        return 2
    if args.frames < 2 or args.batch < 1:
        print(f"{PROG}: error: need --frames >= 2 and --batch >= 1", file=sys.stderr)
        return 2
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import Image

    from ..backends import create_estimator
    from ..cli.common import describe_machine
    from ..ros.bag import BagError, BagFlowOptions, backend_config, process_bag
    from ..ros.image_convert import image_msg_to_rgb
    from ..ros.parameters import FlowNodeSettings

    settings = FlowNodeSettings(device=args.device, torch_threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="bag_throughput_") as tmp:
        source = Path(tmp) / "input"
        print(f"{PROG}: writing a {width}x{height} bag of {args.frames} frames ...", flush=True)
        make_bag(source, args.frames, height, width)
        with Reader(source) as reader:
            frames = [
                image_msg_to_rgb(deserialize_message(data, Image))[0].copy()
                for conn, _, data in reader.messages()
                if conn.topic == "/cam/image_raw"
            ]
        try:
            estimator, why = create_estimator(settings.backend, backend_config(settings))
        except Exception as exc:
            print(f"{PROG}: error: cannot create the backend: {exc}", file=sys.stderr)
            return 2
        info = estimator.info
        print(f"{PROG}: backend {why}; {info.model} on {info.device}, {info.precision}", flush=True)
        backend_rate(estimator, frames[: min(len(frames), args.batch + 1)], args.batch)  # warm-up
        options = BagFlowOptions(
            topics=["/cam/image_raw"],
            settings=settings,
            batch=args.batch,
            copy=not args.no_copy,
            storage=args.storage,
        )
        kept = cast("FlowEstimator", _KeepOpen(estimator))
        alone = bag_rate = 0.0
        for attempt in range(max(1, args.repeat)):
            rate = backend_rate(estimator, frames, args.batch)
            alone = max(alone, rate)
            print(f"{PROG}: backend alone: {rate:.2f} pairs/s", flush=True)
            output = Path(tmp) / f"output{attempt}"
            try:
                summary = process_bag(
                    source, output, options, estimator_factory=lambda name, config: (kept, why)
                )
            except BagError as exc:
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                return 2
            rate = summary.pairs / summary.elapsed_s
            bag_rate = max(bag_rate, rate)
            print(f"{PROG}: flownet2-bag end to end: {rate:.2f} pairs/s", flush=True)
            size_mb = sum(p.stat().st_size for p in output.iterdir()) / 1e6
            shutil.rmtree(output)
    ratio = bag_rate / alone
    print(
        f"{PROG}: best of {max(1, args.repeat)}: backend alone {alone:.2f} pairs/s, flownet2-bag {bag_rate:.2f} "
        f"pairs/s (output {summary.written} messages, {size_mb:.0f} MB)"
    )
    print(
        f"{PROG}: ratio {ratio:.3f} (target >= 0.9) | {args.frames} frames {width}x{height}, batch {args.batch}, "
        f"{args.storage}{', inputs copied' if not args.no_copy else ''} | {describe_machine(info.device)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
