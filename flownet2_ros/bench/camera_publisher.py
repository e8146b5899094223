"""Synthetic cameras in their own process (``python -m flownet2_ros.bench.camera_publisher``).

Publishes ``rgb8`` frames of a textured scene panning a few pixels per frame on one or more image topics
(with a matching ``camera_info`` on each sibling topic) at a fixed rate, for a fixed time or frame count,
then prints one line per camera: ``published <topic> <count>``.  The node benchmarks and the
large-image DDS test run it as a separate process, so frames cross the middleware as they do from a
camera driver.  Frames are prepared before the first one is sent; the publishing loop only stamps and
publishes prebuilt messages.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["main", "make_frames"]


def make_frames(height: int, width: int, count: int, step_px: int = 3, seed: int = 0) -> list[np.ndarray]:
    """``count`` (H, W, 3) uint8 frames of one random texture, each shifted ``step_px`` right and down."""
    import cv2

    rng = np.random.default_rng(seed)
    margin = step_px * count
    noise = rng.integers(0, 255, ((height + margin) // 4 + 1, (width + margin) // 4 + 1, 3), dtype=np.uint8)
    scene = cv2.resize(noise, ((width + margin) // 4 * 4 + 4, (height + margin) // 4 * 4 + 4))
    scene = cv2.GaussianBlur(scene, (3, 3), 0)
    return [
        np.ascontiguousarray(scene[i * step_px : i * step_px + height, i * step_px : i * step_px + width])
        for i in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flownet2_ros.bench.camera_publisher",
        description="Publish synthetic rgb8 camera frames (and camera_info) from this process.",
    )
    parser.add_argument(
        "--topics", nargs="+", default=["image"], help="image topics, one per camera (default: image)"
    )
    parser.add_argument("--width", type=int, default=640, help="frame width in px (default 640)")
    parser.add_argument("--height", type=int, default=480, help="frame height in px (default 480)")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second per camera (default 10)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to publish (default 10)")
    parser.add_argument(
        "--frames", type=int, default=0, help="stop after this many frames per camera (0: --duration decides)"
    )
    parser.add_argument(
        "--reliability",
        choices=("reliable", "best_effort"),
        default="reliable",
        help="QoS reliability of the publishers (camera drivers mostly publish reliable; default reliable)",
    )
    parser.add_argument("--depth", type=int, default=10, help="publisher queue depth (default 10)")
    parser.add_argument(
        "--wait-subscribers",
        type=float,
        default=30.0,
        help="wait up to this many seconds for a subscriber on every topic before starting (default 30)",
    )
    parser.add_argument("--namespace", default="", help="namespace of this publisher node")
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from ..ros.flow_node import sibling_topic
    from ..ros.image_convert import rgb_to_image_msg

    rclpy.init()
    node = rclpy.create_node("camera_publisher", namespace=args.namespace or None)
    policy = ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    qos = QoSProfile(depth=args.depth, reliability=policy)
    frames = [rgb_to_image_msg(f) for f in make_frames(args.height, args.width, 8)]
    cameras = []
    for index, topic in enumerate(args.topics):
        image_pub = node.create_publisher(Image, topic, qos)
        info_pub = node.create_publisher(CameraInfo, sibling_topic(image_pub.topic_name, "camera_info"), qos)
        info = CameraInfo(width=args.width, height=args.height, distortion_model="plumb_bob")
        info.k = np.array([500.0, 0, args.width / 2, 0, 500.0, args.height / 2, 0, 0, 1])
        info.header.frame_id = f"camera{index}"
        cameras.append((image_pub, info_pub, info, [0]))
    deadline = time.monotonic() + args.wait_subscribers
    while time.monotonic() < deadline and not all(c[0].get_subscription_count() for c in cameras):
        time.sleep(0.05)
    period = 1.0 / args.rate
    start = time.monotonic()
    tick = 0
    try:
        while True:
            elapsed = time.monotonic() - start
            if (args.frames and tick >= args.frames) or (not args.frames and elapsed >= args.duration):
                break
            stamp = node.get_clock().now().to_msg()
            for image_pub, info_pub, info, count in cameras:
                msg = frames[tick % len(frames)] if tick % 16 < 8 else frames[7 - tick % 8]
                msg.header.stamp = stamp
                msg.header.frame_id = info.header.frame_id
                info.header.stamp = stamp
                image_pub.publish(msg)
                info_pub.publish(info)
                count[0] += 1
            tick += 1
            sleep = start + tick * period - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
    except KeyboardInterrupt:
        pass
    for image_pub, _, _, count in cameras:
        print(f"published {image_pub.topic_name} {count[0]}", flush=True)
    time.sleep(0.5)  # let reliable samples still in flight reach their readers
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
