"""Play a folder of images, a video or a ROS 2 bag as a camera (``ros2 run flownet2_ros image_sequence_player``).

Folders and videos: publishes ``image`` (sensor_msgs/Image, ``rgb8`` or ``bgr8``) and ``camera_info`` at
``rate_hz``, stamped with the node's clock, looping by default.  With no ``path`` it plays the demo sequence
bundled with the package (``flownet2_ros/resources/demo_sequence``: a textured scene under smooth
camera motion), so the flow node can run without a camera: ``ros2 launch flownet2_ros
flownet2.launch.py demo:=true``.

Parameters: ``path`` (folder of images — sorted by name — or a video file; empty: the demo),
``rate_hz``, ``loop``, ``encoding`` (rgb8|bgr8), ``frame_id``, ``publish_camera_info``,
``focal_length_px`` (pinhole focal length for camera_info; 0: the image width, ~53 deg field of view).
Folders whose decoded frames fit in ``cache_mb`` are decoded once and kept as ready messages.

Bags (parameter ``bag``: a bag folder, ``.mcap`` or ``.db3``; needs the ``rosbags`` package): replays the
bag's image topics (sensor_msgs/Image and CompressedImage) and camera_info topics as recorded — the
serialized messages unchanged, so with their recorded stamps and frame_ids — spaced as recorded (bag
time) divided by ``rate`` (a speed factor: 2.0 plays twice as fast); ``loop`` replays it again after one
mean frame period (each pass repeats the recorded stamps, as ``ros2 bag play --loop`` does; the flow node
resets its pair when time goes back).  ``topics`` picks the topics to play (default: every image and
camera_info topic).  With ``as_camera`` (default) the bag must hold one image topic (after ``topics``):
it is published as ``image`` (``image/compressed`` for a CompressedImage topic) and its camera_info (the
image topic's sibling in the bag) as ``camera_info`` — the names of folder mode, remapped the same way;
``as_camera: false`` publishes every topic under its recorded name.  Bags that fit in ``cache_mb`` are
read once into memory.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..flowio.demo_sequence import demo_sequence_dir
from ..flowio.frames import IMAGE_SUFFIXES

__all__ = ["IMAGE_SUFFIXES", "SequencePlayer", "demo_bag_dir", "demo_sequence_dir", "main"]


def demo_bag_dir() -> Path:
    """The bundled demo bag (package data ``flownet2_ros/resources/demo_bag``: the demo sequence as MCAP)."""
    return demo_sequence_dir().parent / "demo_bag"


def _image_msg(bgr: np.ndarray, encoding: str) -> Image:
    pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if encoding == "rgb8" else np.ascontiguousarray(bgr)
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, step=pixels.shape[1] * 3)
    msg.data.frombytes(pixels.data.cast("B"))  # one copy into the message's own buffer
    return msg


class SequencePlayer(Node):
    """Publishes the frames of a folder or video at a fixed rate, or replays a bag; see the module docstring."""

    def __init__(self, node_name: str = "image_sequence_player", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)

        def declare(name: str, default: Any, description: str, **extra: Any) -> Any:
            desc = ParameterDescriptor(description=description, **extra)
            return self.declare_parameter(name, default, desc).value

        path = declare(
            "path", "", "Folder of images (sorted by name) or a video file; empty: the bundled demo."
        )
        self.rate_hz = float(
            declare(
                "rate_hz",
                10.0,
                "Frames per second.",
                floating_point_range=[FloatingPointRange(from_value=0.01, to_value=1000.0, step=0.0)],
            )
        )
        self.loop = bool(declare("loop", True, "Start again after the last frame."))
        self.encoding = str(declare("encoding", "rgb8", "rgb8 or bgr8.", read_only=True))
        self.frame_id = str(declare("frame_id", "camera", "header.frame_id of the images and camera_info."))
        publish_info = bool(declare("publish_camera_info", True, "Also publish a pinhole camera_info."))
        self.focal = float(
            declare("focal_length_px", 0.0, "camera_info focal length (px); 0: the image width.")
        )
        cache_mb = float(
            declare(
                "cache_mb",
                256.0,
                "Keep a folder's decoded frames (a bag's messages) in memory up to this size.",
            )
        )
        bag = str(
            declare(
                "bag", "", "A ROS 2 bag (folder, .mcap or .db3) to replay instead of path.", read_only=True
            )
        )
        topics = declare(
            "topics",
            [""],
            "Bag topics to replay (empty: every Image, CompressedImage and CameraInfo topic).",
            read_only=True,
        )
        self.rate = float(
            declare(
                "rate",
                1.0,
                "Bag playback speed factor (2.0: twice as fast as recorded).",
                floating_point_range=[FloatingPointRange(from_value=0.01, to_value=100.0, step=0.0)],
            )
        )
        as_camera = bool(
            declare(
                "as_camera",
                True,
                "Bag: publish its one image topic as image (image/compressed) and its camera_info as "
                "camera_info; false: every topic under its recorded name.",
                read_only=True,
            )
        )
        if self.encoding not in ("rgb8", "bgr8"):
            raise ValueError(f"encoding must be rgb8 or bgr8, got {self.encoding!r}")
        self.frames_published = 0
        self.finished = False
        self._bag_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if bag:
            self._start_bag(
                Path(bag).expanduser(), [t for t in topics if t], as_camera, cache_mb, publish_info
            )
            return

        self.source = Path(path).expanduser() if path else demo_sequence_dir()
        self._files: list[Path] = []
        self._capture: Any = None
        self._cache: list[Image] | None = None
        if self.source.is_dir():
            self._files = sorted(p for p in self.source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.source}")
            first = self._read_file(0)
            if first.nbytes * len(self._files) <= cache_mb * 1e6:
                self._cache = [_image_msg(first, self.encoding)]
                self._cache += [
                    _image_msg(self._read_file(i), self.encoding) for i in range(1, len(self._files))
                ]
        elif self.source.is_file():
            self._capture = cv2.VideoCapture(str(self.source))
            if not self._capture.isOpened():
                raise OSError(f"OpenCV cannot open {self.source} as a video")
        else:
            raise FileNotFoundError(f"{self.source} is neither a folder of images nor a video file")

        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        overrides = QoSOverridingOptions.with_default_policies()
        self._image_pub = self.create_publisher(Image, "image", qos, qos_overriding_options=overrides)
        self._info_pub = self.create_publisher(CameraInfo, "camera_info", qos) if publish_info else None
        self._index = 0
        self._timer = self.create_timer(1.0 / self.rate_hz, self._tick)
        count = len(self._files) if self._files else "?"
        self.get_logger().info(
            f"playing {self.source} ({count} frames) at {self.rate_hz:g} Hz as {self.encoding}"
            + (", looping" if self.loop else "")
        )

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            if param.name == "loop":
                self.loop = bool(param.value)
            elif param.name == "rate":
                self.rate = float(param.value)  # the bag thread re-anchors its clock at the next message
            elif param.name == "rate_hz" and self._bag_thread is None:
                self.rate_hz = float(param.value)
                self.destroy_timer(self._timer)
                self._timer = self.create_timer(1.0 / self.rate_hz, self._tick)
            elif param.name == "frame_id":
                self.frame_id = str(param.value)
        return SetParametersResult(successful=True)

    def _read_file(self, index: int) -> np.ndarray:
        path = self._files[index]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"cannot read image {path}")
        return bgr

    def _next_msg(self) -> Image | None:
        if self._capture is not None:
            ok, bgr = self._capture.read()
            if not ok and self.loop and self.frames_published:
                self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, bgr = self._capture.read()
            return _image_msg(bgr, self.encoding) if ok else None
        if self._index >= len(self._files):
            if not self.loop:
                return None
            self._index = 0
        index, self._index = self._index, self._index + 1
        if self._cache is not None:
            return self._cache[index]
        return _image_msg(self._read_file(index), self.encoding)

    def _tick(self) -> None:
        if self.finished:
            return
        try:
            msg = self._next_msg()
        except Exception as exc:  # a bad file in the folder: skip it, keep playing
            self.get_logger().error(f"skipping a frame: {exc}")
            return
        if msg is None:
            self.finished = True
            self.destroy_timer(self._timer)
            self.get_logger().info(f"end of {self.source} after {self.frames_published} frames")
            return
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.frame_id
        self._image_pub.publish(msg)
        if self._info_pub is not None:
            self._info_pub.publish(self.camera_info(msg))
        self.frames_published += 1

    def camera_info(self, image: Image) -> CameraInfo:
        """A distortion-free pinhole camera_info for ``image`` (principal point at the centre)."""
        width, height = image.width, image.height
        f = self.focal or float(width)
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        info = CameraInfo(header=image.header, width=width, height=height, distortion_model="plumb_bob")
        info.d = [0.0] * 5
        info.k = np.array([f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0])
        info.r = np.eye(3).reshape(9)
        info.p = np.array([f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
        return info

    # ------------------------------------------------------------------------------------------ bags

    def _start_bag(
        self, path: Path, topics: list[str], as_camera: bool, cache_mb: float, publish_info: bool
    ) -> None:
        """Open the bag, choose its topics and publishers, and start the playing thread."""
        from .bag import COMPRESSED_TYPE, IMAGE_TYPE, INFO_TYPE, BagError, image_base_topic, open_bag

        self.source = path
        self._files, self._capture, self._cache = [], None, None
        try:
            reader = open_bag(path)
        except BagError as exc:
            raise OSError(str(exc)) from None
        types = {IMAGE_TYPE: Image, COMPRESSED_TYPE: CompressedImage, INFO_TYPE: CameraInfo}
        playable = {c.topic: c.msgtype for c in reader.connections if c.msgtype in types}
        unknown = [t for t in topics if t not in playable]
        if unknown:
            reader.close()
            raise ValueError(
                f"{', '.join(unknown)} not in {path} as Image, CompressedImage or CameraInfo; it has: "
                f"{', '.join(sorted(playable)) or 'none of them'}"
            )
        chosen = {t: playable[t] for t in (topics or sorted(playable))}
        images = [t for t, kind in chosen.items() if kind != INFO_TYPE]
        names: dict[str, str] = {t: t for t in chosen}  # recorded topic -> published name
        if as_camera:
            if len(images) != 1:
                reader.close()
                raise ValueError(
                    f"{path} has {len(images)} image topics ({', '.join(images) or 'none'}): choose one with "
                    "the parameter topics, or set as_camera false to play them under their recorded names"
                )
            image = images[0]
            kind = chosen[image]
            info = f"{image_base_topic(image, kind).rsplit('/', 1)[0]}/camera_info"
            names = {image: "image/compressed" if kind == COMPRESSED_TYPE else "image"}
            if publish_info and playable.get(info) == INFO_TYPE:
                names[info] = "camera_info"
                chosen[info] = INFO_TYPE
        self._image_topics = {t for t in names if chosen[t] != INFO_TYPE}
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        overrides = QoSOverridingOptions.with_default_policies()
        self._bag_pubs: dict[str, Any] = {}
        for topic, name in names.items():
            msg_type = types[chosen[topic]]
            kw: dict[str, Any] = {"qos_overriding_options": overrides} if msg_type is not CameraInfo else {}
            self._bag_pubs[topic] = self.create_publisher(msg_type, name, qos, **kw)
        self._bag_conns = [c for c in reader.connections if c.topic in names and c.msgtype == chosen[c.topic]]
        frames = sum(c.msgcount for c in self._bag_conns if c.topic in self._image_topics)
        duration_s = max(0, int(reader.duration) - 1) * 1e-9 if reader.message_count else 0.0
        self._loop_gap_s = duration_s / (frames - 1) if frames > 1 else 0.1  # one mean frame period
        self._reader = reader
        self._bag_cache: list[tuple[str, int, bytes]] | None = None
        self._cache_limit = cache_mb * 1e6
        self._bag_thread = threading.Thread(target=self._play_bag, name="bag_player", daemon=True)
        self._bag_thread.start()
        shown = ", ".join(f"{t} -> {self.resolve_topic_name(n)}" for t, n in names.items())
        self.get_logger().info(
            f"playing bag {path} ({frames} frames, {duration_s:.1f} s) at x{self.rate:g}: {shown}"
            + (", looping" if self.loop else "")
        )

    def _bag_messages(self) -> Any:
        """The chosen messages in bag order: from memory after a first pass that fitted in cache_mb."""
        if self._bag_cache is not None:
            yield from self._bag_cache
            return
        kept: list[tuple[str, int, bytes]] | None = []
        size = 0
        for conn, ns, data in self._reader.messages(connections=self._bag_conns):
            if kept is not None:
                size += len(data)
                kept.append((conn.topic, ns, data))
                if size > self._cache_limit:
                    kept = None
            yield conn.topic, ns, data
        if kept is not None:
            self._bag_cache = kept

    def _play_bag(self) -> None:
        """The playing thread: publish each message when its (scaled) bag time comes."""
        try:
            while not self._stop.is_set():
                anchor_wall = anchor_bag = None
                rate = self.rate
                for topic, ns, data in self._bag_messages():
                    if self._stop.is_set():
                        return
                    if anchor_bag is None or rate != self.rate:  # first message, or the rate changed
                        rate = self.rate
                        anchor_wall, anchor_bag = time.monotonic(), ns
                    assert anchor_wall is not None
                    delay = anchor_wall + (ns - anchor_bag) * 1e-9 / rate - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    self._bag_pubs[topic].publish(data)  # serialized as recorded: stamps kept
                    if topic in self._image_topics:
                        self.frames_published += 1
                if not self.loop:
                    break
                if self._stop.wait(self._loop_gap_s / self.rate):
                    return
        except Exception as exc:  # a damaged bag: say so and stop playing (the node stays up)
            self.get_logger().error(f"cannot play {self.source}: {type(exc).__name__}: {exc}")
        self.finished = True
        self.get_logger().info(f"end of {self.source} after {self.frames_published} frames")

    def destroy_node(self) -> None:
        self._stop.set()
        if self._bag_thread is not None:
            self._bag_thread.join(5.0)
            self._bag_thread = None
            try:
                self._reader.close()
            except Exception:
                pass
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``image_sequence_player``: run until interrupted (or the end, without ``loop``)."""
    rclpy.init(args=args)
    node: SequencePlayer | None = None
    code = 0
    try:
        node = SequencePlayer()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (OSError, ValueError) as exc:
        print(f"image_sequence_player: {exc}", file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
