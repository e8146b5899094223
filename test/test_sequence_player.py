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
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from flownet2_ros.ros.image_convert import image_msg_to_array
from flownet2_ros.ros.sequence_player import SequencePlayer, demo_sequence_dir

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]


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


# ------------------------------------------------------------------------------------------- bag mode


def _bag_with_gaps(path: Path, compressed_too: bool = False) -> tuple[Path, list[int], list[int]]:
    """Frames at irregular bag times, header stamps 10 ms before them, a camera_info per frame."""
    from test_bag import info_msg, png_frame, raw_frame, texture, write_bag

    bag_ns = [0, 150_000_000, 300_000_000, 750_000_000, 900_000_000]
    base = 5_000 * 10**9
    stamps = [base + ns - 10_000_000 for ns in bag_ns]
    messages = []
    for i, (ns, stamp) in enumerate(zip(bag_ns, stamps, strict=True)):
        rgb = texture(24, 32, i)
        messages.append(
            ("/cam/image_raw", "sensor_msgs/msg/Image", base + ns, raw_frame(stamp, rgb, "recorded"))
        )
        messages.append(
            ("/cam/camera_info", "sensor_msgs/msg/CameraInfo", base + ns, info_msg(stamp, 32, 24))
        )
        if compressed_too:
            messages.append(
                (
                    "/b/image_raw/compressed",
                    "sensor_msgs/msg/CompressedImage",
                    base + ns + 1,
                    png_frame(stamp, rgb),
                )
            )
    return write_bag(path, messages), bag_ns, stamps


def test_bag_mode_keeps_the_recorded_stamps_and_spacing(make: Any, tmp_path: Path) -> None:
    bag, bag_ns, stamps = _bag_with_gaps(tmp_path / "bag")
    h = make(bag=str(bag), rate=1.5, loop=False)
    arrivals: list[tuple[float, Image]] = []
    h.probe.create_subscription(
        Image, "image", lambda msg: arrivals.append((time.monotonic(), msg)), QoSProfile(depth=100)
    )
    player = h.start()
    h.wait_for(lambda: player.finished and len(arrivals) == 5 and len(h.infos) == 5)
    assert player.frames_published == 5
    got = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in arrivals]
    assert got == stamps and all(m.header.frame_id == "recorded" for _, m in arrivals)
    assert [i.header.stamp.sec * 10**9 + i.header.stamp.nanosec for i in h.infos] == stamps
    rgb, _ = image_msg_to_array(arrivals[3][1])
    from test_bag import texture

    np.testing.assert_array_equal(rgb, texture(24, 32, 3))
    gaps = np.diff([t for t, _ in arrivals])
    expected = np.diff(bag_ns) * 1e-9 / 1.5
    assert np.all(np.abs(gaps - expected) < 0.08), (gaps, expected)
    assert gaps[2] > 2 * gaps[1]  # the long recorded gap stays long


def test_bag_mode_compressed_topic_and_recorded_names(make: Any, tmp_path: Path) -> None:
    bag, _, stamps = _bag_with_gaps(tmp_path / "bag", compressed_too=True)
    h = make(bag=str(bag))
    with pytest.raises(ValueError, match="2 image topics"):
        h.start()
    h2 = make(bag=str(bag), topics=["/b/image_raw/compressed"], rate=4.0, loop=False)
    compressed: list[CompressedImage] = []
    h2.probe.create_subscription(
        CompressedImage, "image/compressed", compressed.append, QoSProfile(depth=100)
    )
    player = h2.start()
    h2.wait_for(lambda: player.finished and len(compressed) == 5)
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in compressed] == stamps
    assert compressed[0].format == "png" and h2.images == [] and h2.infos == []  # /b has no camera_info
    h3 = make(bag=str(bag), as_camera=False, rate=4.0, loop=True)
    recorded: list[Image] = []
    h3.probe.create_subscription(Image, "/cam/image_raw", recorded.append, QoSProfile(depth=100))
    player3 = h3.start()
    h3.wait_for(lambda: len(recorded) >= 7)  # looped: the recording again, with its own stamps
    first = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in recorded[:7]]
    assert first == stamps + stamps[:2] and not player3.finished
    with pytest.raises(OSError, match="does not exist"):
        make(bag=str(tmp_path / "missing.mcap")).start()


def test_bag_mode_plays_the_bundled_demo_bag(make: Any) -> None:
    from flownet2_ros.ros.sequence_player import demo_bag_dir

    h = make(bag=str(demo_bag_dir()), rate=10.0, loop=False)
    player = h.start()
    h.wait_for(lambda: player.finished and len(h.images) == 12 and len(h.infos) == 12)
    folder = sorted(demo_sequence_dir().glob("*.png"))
    rgb, _ = image_msg_to_array(h.images[5])
    np.testing.assert_array_equal(rgb, cv2.cvtColor(cv2.imread(str(folder[5])), cv2.COLOR_BGR2RGB))
    info = h.infos[5]  # the player's own camera_info rule
    assert info.k[0] == 320.0 and info.k[2] == 159.5 and info.header == h.images[5].header


# ------------------------------------------------------------------------------------------- launch file


def _launch_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("flownet2_launch", REPO / "launch" / "flownet2.launch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _players(module: Any, monkeypatch: Any, **args: str) -> list[dict[str, Any]]:
    """The image_sequence_player nodes the launch file makes: their parameters and remappings, evaluated."""
    import yaml
    from launch.utilities import perform_substitutions

    from launch import LaunchContext

    class Share:
        def __init__(self, package: str) -> None:
            pass

        def perform(self, context: Any) -> str:
            return "/share"

    monkeypatch.setattr(module, "FindPackageShare", Share)
    context = LaunchContext()
    for name, default, _ in module.ARGUMENTS:
        context.launch_configurations[name] = args.get(name, default)
    found = []
    for node in module._nodes(context):
        if node.node_executable != "image_sequence_player":
            continue
        params: dict[str, Any] = {}
        for entry in node._Node__parameters:
            for key, value in entry.items():
                name = perform_substitutions(context, list(key))
                text = perform_substitutions(context, list(value)) if isinstance(value, tuple) else value
                params[name] = (
                    yaml.safe_load(text) if isinstance(text, str) else text
                )  # launch_ros holds YAML
        remaps = {
            perform_substitutions(context, list(a)): perform_substitutions(context, list(b))
            for a, b in node._Node__remappings
        }
        found.append({"params": params, "remaps": remaps})
    return found


def test_launch_file_demo_bag_arguments(monkeypatch: Any, tmp_path: Path) -> None:
    from flownet2_ros.ros.sequence_player import demo_bag_dir

    module = _launch_module()
    names = {arg.name for arg in module.generate_launch_description().get_launch_arguments()}
    assert {"demo_bag", "demo_source", "demo_bag_rate", "demo", "demo_path", "demo_rate_hz"} <= names
    assert _players(module, monkeypatch) == []
    # demo_bag:=PATH plays that bag into every camera (no demo:=true needed)
    players = _players(
        module, monkeypatch, demo_bag=str(tmp_path / "x.mcap"), cameras="front,rear", demo_bag_rate="3.0"
    )
    assert [p["params"]["bag"] for p in players] == [str(tmp_path / "x.mcap")] * 2
    assert all(float(p["params"]["rate"]) == 3.0 for p in players)
    assert players[0]["remaps"] == {
        "image": "front/image",
        "image/compressed": "front/image/compressed",
        "camera_info": "front/camera_info",
    }
    # demo:=true demo_source:=bag: the bundled demo bag; the folder source stays the default
    [bag_player] = _players(module, monkeypatch, demo="true", demo_source="bag", image="/cam/image_raw")
    assert bag_player["params"]["bag"] == str(demo_bag_dir())
    assert (
        bag_player["remaps"]["image"] == "/cam/image_raw"
        and bag_player["remaps"]["camera_info"] == "/cam/camera_info"
    )
    [folder_player] = _players(module, monkeypatch, demo="true")
    assert "bag" not in folder_player["params"] and float(folder_player["params"]["rate_hz"]) == 10.0
    with pytest.raises(ValueError, match="demo_source"):
        _players(module, monkeypatch, demo="true", demo_source="video")
