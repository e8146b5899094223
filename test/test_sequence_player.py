"""The image-sequence player with real rclpy: the bundled demo, folders, videos, encodings, looping."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(100, 199)))

import itertools

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image

from flownet2_ros.ros.image_convert import image_msg_to_array
from flownet2_ros.ros.sequence_player import SequencePlayer, demo_sequence_dir

pytestmark = pytest.mark.ros


class PlayerHarness:
    def __init__(self, **params: Any) -> None:
        self.namespace = f"/p{uuid.uuid4().hex[:10]}"
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.probe = rclpy.create_node("probe", namespace=self.namespace, context=self.context)
        self.images: list[Image] = []
        self.infos: list[CameraInfo] = []
        self.probe.create_subscription(Image, "image", self.images.append, QoSProfile(depth=100))
        self.probe.create_subscription(CameraInfo, "camera_info", self.infos.append, QoSProfile(depth=100))
        self.player: SequencePlayer | None = None
        self.params = [Parameter(k, value=v) for k, v in params.items()]
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.probe)
        self.thread: threading.Thread | None = None

    def start(self) -> SequencePlayer:
        self.player = SequencePlayer(
            namespace=self.namespace, context=self.context, parameter_overrides=self.params
        )
        self.executor.add_node(self.player)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        return self.player

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        if self.player is not None:
            self.player.destroy_node()
        self.probe.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def make() -> Iterator[Any]:
    made: list[PlayerHarness] = []

    def factory(**params: Any) -> PlayerHarness:
        made.append(PlayerHarness(**params))
        return made[-1]

    yield factory
    for h in made:
        h.close()


def test_bundled_demo_sequence_files() -> None:
    folder = demo_sequence_dir()
    frames = sorted(folder.glob("*.png"))
    assert 8 <= len(frames) <= 16
    assert sum(p.stat().st_size for p in frames) <= 1.5e6
    first = cv2.imread(str(frames[0]))
    assert first is not None and first.shape == (240, 320, 3)
    # textured, and moving: consecutive frames differ, but not wildly
    assert first.std() > 20
    second = cv2.imread(str(frames[1]))
    diff = np.abs(first.astype(int) - second.astype(int)).mean()
    assert 2 < diff < 60


def test_plays_the_demo_by_default_and_stops_without_loop(make: Any) -> None:
    h = make(rate_hz=50.0, loop=False, frame_id="demo_cam")
    player = h.start()
    count = len(list(demo_sequence_dir().glob("*.png")))
    h.wait_for(lambda: player.finished)
    time.sleep(0.2)
    h.wait_for(lambda: len(h.images) == count)
    assert player.frames_published == count
    first = h.images[0]
    assert (first.encoding, first.height, first.width, first.step) == ("rgb8", 240, 320, 960)
    assert first.header.frame_id == "demo_cam"
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in h.images]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    rgb, _ = image_msg_to_array(first)
    expected = cv2.cvtColor(cv2.imread(str(sorted(demo_sequence_dir().glob("*.png"))[0])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(rgb, expected)
    h.wait_for(lambda: len(h.infos) == count)
    info = h.infos[0]
    assert (
        (info.width, info.height) == (320, 240)
        and info.k[0] == 320.0
        and info.header.stamp == first.header.stamp
    )


def test_folder_bgr8_and_loop(make: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    for i, bgr in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), bgr)
    (tmp_path / "notes.txt").write_text("not an image")
    h = make(path=str(tmp_path), rate_hz=100.0, encoding="bgr8", publish_camera_info=False)
    h.start()
    h.wait_for(lambda: len(h.images) >= 7)
    for k, msg in enumerate(h.images[:7]):
        assert msg.encoding == "bgr8"
        np.testing.assert_array_equal(image_msg_to_array(msg)[0], frames[k % 3])  # looped
    assert h.infos == []


def test_video_file(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(4):
        writer.write(np.full((48, 64, 3), 40 * i + 20, np.uint8))
    writer.release()
    h = make(path=str(path), rate_hz=100.0, loop=False)
    player = h.start()
    h.wait_for(lambda: player.finished)
    time.sleep(0.1)
    assert 3 <= len(h.images) <= 4 and player.frames_published == len(h.images)
    assert (h.images[0].height, h.images[0].width) == (48, 64)
    means = [float(image_msg_to_array(m)[0].mean()) for m in h.images]
    assert means == sorted(means)  # frames in order


def test_bad_path_is_a_clear_error(make: Any, tmp_path: Path) -> None:
    h = make(path=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        h.start()
    h2 = make(path=str(tmp_path))  # empty folder
    with pytest.raises(FileNotFoundError, match="no images"):
        h2.start()
