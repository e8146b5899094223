#!/usr/bin/env python3
"""Build the bundled demo bag (flownet2_ros/resources/demo_bag/) from the bundled demo sequence.

One camera: ``/camera/image_raw`` (sensor_msgs/Image, rgb8, the sequence's PNG frames in name order) and
``/camera/camera_info`` (the pinhole camera_info the image_sequence_player publishes for those frames:
focal length = image width, principal point at the centre, no distortion), frame_id ``camera``, at
10 Hz (the player's default rate) from a fixed start time, so that the bag is the same on every run.
MCAP storage, raw frames in zstd-compressed chunks (a standard MCAP feature that ``ros2 bag play``,
Foxglove and rosbags read): the node gets raw images without decoding, and the file stays small.

Usage: python scripts/make_demo_bag.py [--frames DIR] [--out DIR] [--rate-hz 10] [--overwrite]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FRAMES = ROOT / "flownet2_ros" / "resources" / "demo_sequence"
DEFAULT_OUT = ROOT / "flownet2_ros" / "resources" / "demo_bag"
START_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z: a fixed start, so the bag is reproducible
IMAGE_TOPIC = "/camera/image_raw"
INFO_TOPIC = "/camera/camera_info"
PROG = "make_demo_bag"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=f"Write the demo sequence as a ROS 2 bag (MCAP): {IMAGE_TOPIC} (rgb8) and {INFO_TOPIC}.",
    )
    parser.add_argument(
        "--frames", type=Path, default=DEFAULT_FRAMES, help=f"folder of frames (default {DEFAULT_FRAMES})"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"bag folder to write (default {DEFAULT_OUT})"
    )
    parser.add_argument("--rate-hz", type=float, default=10.0, help="frame rate of the stamps (default 10)")
    parser.add_argument("--frame-id", default="camera", help="header.frame_id (default camera)")
    parser.add_argument(
        "--no-compress", action="store_true", help="uncompressed MCAP chunks (about 2.8 MB instead of less)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        write_bag(args)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


def write_bag(args: argparse.Namespace) -> None:
    import cv2
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from flownet2_ros.flowio.frames import IMAGE_SUFFIXES
    from flownet2_ros.ros.image_convert import rgb_to_image_msg
    from flownet2_ros.ros.sequence_player import SequencePlayer

    if args.rate_hz <= 0:
        raise ValueError(f"--rate-hz must be positive, got {args.rate_hz}")
    files = sorted(p for p in args.frames.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images in {args.frames}")
    if args.out.exists() and not args.overwrite:
        raise ValueError(f"{args.out} exists; pass --overwrite to replace it")
    typestore = get_typestore(Stores.ROS2_JAZZY)
    # The player's camera_info rule (focal length = width unless focal_length_px is set), from its own code.
    player = cast(Any, SimpleNamespace(focal=0.0))
    period_ns = round(1e9 / args.rate_hz)
    with tempfile.TemporaryDirectory(dir=args.out.parent) as tmp:
        bag = Path(tmp) / args.out.name
        writer = Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP)
        if not args.no_compress:
            writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        with writer:
            image_conn = writer.add_connection(IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=typestore)
            info_conn = writer.add_connection(INFO_TOPIC, "sensor_msgs/msg/CameraInfo", typestore=typestore)
            for index, path in enumerate(files):
                bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise ValueError(f"cannot read image {path}")
                image = rgb_to_image_msg(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                ns = START_NS + index * period_ns
                image.header.stamp.sec, image.header.stamp.nanosec = divmod(ns, 10**9)
                image.header.frame_id = args.frame_id
                info = SequencePlayer.camera_info(player, image)
                writer.write(image_conn, ns, serialize_message(image))
                writer.write(info_conn, ns, serialize_message(info))
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.move(str(bag), args.out)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{PROG}: {len(files)} frames at {args.rate_hz:g} Hz -> {args.out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    raise SystemExit(main())
