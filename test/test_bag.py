"""flownet2-bag: bags in and out (MCAP, SQLite3, folders, single files), raw and compressed frames, the node's
pairing and camera_info rules, errors, Ctrl-C, and equality with the flow node's own output.

Most tests use the stand-in backend of the node tests (:class:`FixedFlowEstimator`, a known flow) through
the library (:func:`process_bag`); the CLI is run in-process for its error paths, in a subprocess for
Ctrl-C, and the node-equality test runs the real embedded model in both.
"""

from __future__ import annotations

import io
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(100, 199)))

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, TimeReference
from std_msgs.msg import Header

from flownet2_ros.backends.fixed import FixedFlowEstimator, fixed_factory
from flownet2_ros.cli import bag as bag_cli
from flownet2_ros.flowio import flow_to_color, read_flo
from flownet2_ros.ros.bag import BagError, BagFlowOptions, image_cdr, output_topics, process_bag
from flownet2_ros.ros.flow_node import scale_camera_info
from flownet2_ros.ros.image_convert import image_msg_to_array, rgb_to_image_msg
from flownet2_ros.ros.parameters import FlowNodeSettings
from flownet2_ros.ros.sequence_player import demo_bag_dir

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
T0 = 1_000 * 10**9  # bag time of the first frame (ns)
PERIOD = 100_000_000  # 10 Hz


def texture(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def stamp_header(ns: int, frame_id: str = "cam") -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(ns, 10**9)
    return header


def raw_frame(ns: int, rgb: np.ndarray, frame_id: str = "cam", encoding: str = "rgb8") -> bytes:
    msg = rgb_to_image_msg(rgb, stamp_header(ns, frame_id))
    msg.encoding = encoding
    return serialize_message(msg)


def png_frame(ns: int, rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(header=stamp_header(ns), format="png")
    msg.data.frombytes(data.tobytes())
    return serialize_message(msg)


def info_msg(ns: int, width: int = 64, height: int = 48) -> bytes:
    info = CameraInfo(header=stamp_header(ns), width=width, height=height, distortion_model="plumb_bob")
    info.k = np.array([50.0, 0, 32.0, 0, 55.0, 24.0, 0, 0, 1])
    info.p = np.array([50.0, 0, 32.0, 0, 0, 55.0, 24.0, 0, 0, 0, 1, 0])
    info.d = [0.0] * 5
    return serialize_message(info)


def write_bag(
    path: Path,
    messages: list[tuple[str, str, int, bytes]],
    storage: str = "mcap",
    single_file: bool = False,
) -> Path:
    """Write ``(topic, type, ns, data)`` messages; returns the bag folder or its single storage file."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns: dict[str, Any] = {}
        for topic, msgtype, ns, data in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            writer.write(conns[topic], ns, data)
    if single_file:
        return path / f"{path.name}.{'mcap' if storage == 'mcap' else 'db3'}"
    return path


def camera_bag(path: Path, frames: int = 6, storage: str = "mcap", **kw: Any) -> Path:
    """/cam/image_raw (rgb8 64x48, 10 Hz) with /cam/camera_info stamped like each frame, and /other."""
    messages: list[tuple[str, str, int, bytes]] = []
    for i in range(frames):
        ns = T0 + i * PERIOD
        messages.append(("/cam/image_raw", "sensor_msgs/msg/Image", ns, raw_frame(ns, texture(48, 64, i))))
        messages.append(("/cam/camera_info", "sensor_msgs/msg/CameraInfo", ns, info_msg(ns)))
        header = stamp_header(ns)
        ref = serialize_message(TimeReference(header=header, time_ref=header.stamp, source="x"))
        messages.append(("/other", "sensor_msgs/msg/TimeReference", ns + 1, ref))
    return write_bag(path, messages, storage, **kw)


def read_bag(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """``{topic: [(bag ns, deserialised message)]}``; also checks bag-time order and embedded definitions."""
    types = {
        "sensor_msgs/msg/Image": Image,
        "sensor_msgs/msg/CameraInfo": CameraInfo,
        "sensor_msgs/msg/TimeReference": TimeReference,
        "sensor_msgs/msg/CompressedImage": CompressedImage,
    }
    out: dict[str, list[tuple[int, Any]]] = {}
    with Reader(path) as reader:
        for conn in reader.connections:
            assert conn.msgdef.data, f"{conn.topic}: no message definition in the bag"
        last = -1
        for conn, ns, data in reader.messages():
            assert ns >= last, "messages out of bag-time order"
            last = ns
            out.setdefault(conn.topic, []).append((ns, deserialize_message(data, types[conn.msgtype])))
    return out


def run(source: Path, output: Path, estimator: Any = None, **options: Any) -> Any:
    options.setdefault("topics", ["/cam/image_raw"])
    estimator = estimator or FixedFlowEstimator()
    return process_bag(source, output, BagFlowOptions(**options), estimator_factory=fixed_factory(estimator))


def cli(*args: str) -> tuple[int, str, str]:
    """Run flownet2-bag in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = bag_cli.main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


# ------------------------------------------------------------------------------------------------ tests


def test_output_topics_are_siblings_of_the_image_topic() -> None:
    assert output_topics("/cam/image_raw") == {
        "flow": "/cam/flow",
        "magnitude": "/cam/flow/magnitude",
        "color": "/cam/flow/color",
        "camera_info": "/cam/flow/camera_info",
        "previous_stamp": "/cam/flow/previous_stamp",
    }
    assert output_topics("/image")["flow"] == "/flow"


def test_mcap_folder_to_single_mcap_file(tmp_path: Path) -> None:
    source = camera_bag(tmp_path / "in", frames=6)
    estimator = FixedFlowEstimator()
    summary = run(
        source, tmp_path / "out.mcap", estimator, batch=4, settings=FlowNodeSettings(color_max_flow=8.0)
    )
    assert (summary.frames, summary.pairs, summary.storage) == (6, 5, "mcap")
    assert estimator.batch_sizes == [4, 1]  # consecutive pairs of one topic in one call
    assert [call[2:] for call in estimator.calls] == [
        (k, k + 1) for k in range(1, 6)
    ]  # frame keys, as the node
    out = read_bag(tmp_path / "out.mcap")  # a single file, readable, in order, definitions embedded
    assert not list(tmp_path.glob(".out*")), "temporary files left behind"
    expected = estimator.flow_for(48, 64)
    flows = out["/cam/flow"]
    assert len(flows) == 5
    for k, (ns, msg) in enumerate(flows, start=1):
        assert ns == T0 + k * PERIOD and stamp_ns(msg.header) == ns and msg.header.frame_id == "cam"
        assert (msg.encoding, msg.height, msg.width, msg.step) == ("32FC2", 48, 64, 64 * 8)
        np.testing.assert_array_equal(image_msg_to_array(msg)[0], expected)
    magnitude = image_msg_to_array(out["/cam/flow/magnitude"][0][1])[0]
    np.testing.assert_allclose(magnitude, np.hypot(expected[..., 0], expected[..., 1]), rtol=1e-6)
    color = image_msg_to_array(out["/cam/flow/color"][0][1])[0]
    np.testing.assert_array_equal(color, flow_to_color(expected, 8.0))
    prev = out["/cam/flow/previous_stamp"][2][1]
    assert stamp_ns(prev.header) == T0 + 3 * PERIOD
    assert prev.time_ref.sec * 10**9 + prev.time_ref.nanosec == T0 + 2 * PERIOD
    info = out["/cam/flow/camera_info"][0][1]
    assert stamp_ns(info.header) == T0 + PERIOD and (info.width, info.height) == (64, 48)
    np.testing.assert_allclose(info.k, [50.0, 0, 32.0, 0, 55.0, 24.0, 0, 0, 1])
    # the inputs are copied unchanged, the other topic too
    assert len(out["/cam/image_raw"]) == 6 and len(out["/cam/camera_info"]) == 6 and len(out["/other"]) == 6
    np.testing.assert_array_equal(image_msg_to_array(out["/cam/image_raw"][2][1])[0], texture(48, 64, 2))
    with Reader(tmp_path / "out.mcap") as reader:  # the node's output QoS is offered
        qos = next(c for c in reader.connections if c.topic == "/cam/flow").ext.offered_qos_profiles
        assert qos and qos[0].reliability.name == "RELIABLE" and qos[0].depth == 2


def test_sqlite_single_file_compressed_in_sqlite_folder_out(tmp_path: Path) -> None:
    messages = []
    for i in range(5):
        ns = T0 + i * PERIOD
        messages.append(
            (
                "/cam/image_raw/compressed",
                "sensor_msgs/msg/CompressedImage",
                ns,
                png_frame(ns, texture(48, 64, i)),
            )
        )
    source = write_bag(tmp_path / "in", messages, storage="sqlite3", single_file=True)
    assert source.suffix == ".db3"
    estimator = FixedFlowEstimator()
    summary = run(
        source,
        tmp_path / "out",
        estimator,
        topics=["/cam/image_raw/compressed"],
        storage="sqlite3",
        copy=False,
    )
    assert (summary.pairs, summary.storage) == (4, "sqlite3")
    assert (tmp_path / "out" / "metadata.yaml").is_file() and (tmp_path / "out" / "out.db3").is_file()
    out = read_bag(tmp_path / "out")
    assert set(out) == {"/cam/flow", "/cam/flow/magnitude", "/cam/flow/color", "/cam/flow/previous_stamp"}
    assert len(out["/cam/flow"]) == 4  # no camera_info in the bag: no flow/camera_info topic
    assert estimator.calls[0][0] == (48, 64, 3)


def test_sqlite_folder_to_mcap_folder_with_outputs_chosen(tmp_path: Path) -> None:
    source = camera_bag(tmp_path / "in", frames=4, storage="sqlite3")
    summary = run(source, tmp_path / "out", outputs=("flow", "camera_info"), copy=False)
    assert summary.storage == "mcap" and (tmp_path / "out" / "out.mcap").is_file()
    out = read_bag(tmp_path / "out")
    assert set(out) == {"/cam/flow", "/cam/flow/camera_info"} and len(out["/cam/flow"]) == 3


def test_pairing_resets_and_skipped_messages_are_counted(tmp_path: Path) -> None:
    def frame(i: int, ns: int, **kw: Any) -> tuple[str, str, int, bytes]:
        return (
            "/cam/image_raw",
            "sensor_msgs/msg/Image",
            ns,
            raw_frame(ns, texture(kw.pop("h", 48), 64, i), **kw),
        )

    bad_step = rgb_to_image_msg(texture(48, 64, 9), stamp_header(T0 + 9 * PERIOD))
    bad_step.step = 10
    messages = [
        frame(0, T0),
        frame(1, T0 + PERIOD),  # pair
        frame(2, T0 + 2 * PERIOD, encoding="yuv420p"),  # unsupported encoding: skipped
        ("/cam/image_raw", "sensor_msgs/msg/Image", T0 + 3 * PERIOD, serialize_message(bad_step)),  # bad step
        frame(4, T0 + 4 * PERIOD),  # pair (the skipped frames never entered the pairer)
        frame(5, T0 + 5 * PERIOD, h=40),  # size change: reset
        frame(6, T0 + 6 * PERIOD, h=40),  # pair
        frame(7, T0 + 7 * PERIOD, frame_id="other"),  # size and frame_id change: reset
        ("/cam/image_raw", "sensor_msgs/msg/Image", T0 + 8 * PERIOD, b"\x00\x01\x00\x00\xff"),  # undecodable
    ]
    # a frame stamped earlier than the previous one (a restarted driver), recorded later
    late = raw_frame(T0 + 6 * PERIOD + 50_000_000, texture(48, 64, 10), frame_id="other")
    messages.append(("/cam/image_raw", "sensor_msgs/msg/Image", T0 + 10 * PERIOD, late))
    source = write_bag(tmp_path / "in", messages)
    summary = run(source, tmp_path / "out", settings=FlowNodeSettings(max_image_pixels=100_000), copy=False)
    topic = summary.topics["/cam/image_raw"]
    assert topic.pairs == 3
    assert dict(topic.resets) == {"reset_format_change": 2, "reset_time_backwards": 1}
    assert dict(summary.skipped) == {"unsupported_encoding": 1, "bad_step": 1, "deserialize_failed": 1}
    assert dict(summary.refused_encodings) == {"yuv420p": 1}
    text = "\n".join(summary.lines())
    assert "unsupported_encoding 1" in text and "reset_time_backwards 1" in text
    flows = read_bag(tmp_path / "out")["/cam/flow/previous_stamp"]
    assert [(stamp_ns(m.header) - T0) // PERIOD for _, m in flows] == [1, 4, 6]
    assert [(m.time_ref.sec * 10**9 + m.time_ref.nanosec - T0) // PERIOD for _, m in flows] == [0, 1, 5]


def test_two_topics_batch_together_and_start_end(tmp_path: Path) -> None:
    messages = []
    for i in range(10):
        ns = T0 + i * PERIOD
        for cam in ("front", "rear"):
            messages.append(
                (f"/{cam}/image_raw", "sensor_msgs/msg/Image", ns, raw_frame(ns, texture(48, 64, i)))
            )
    source = write_bag(tmp_path / "in", messages)
    estimator = FixedFlowEstimator()
    topics = ["/front/image_raw", "/rear/image_raw"]
    summary = run(source, tmp_path / "out", estimator, topics=topics, batch=3, start_s=0.2, end_s=0.7)
    # frames at 0.2 .. 0.6 s: 5 per camera, 4 pairs per camera
    assert {t: s.frames for t, s in summary.topics.items()} == {t: 5 for t in topics}
    assert summary.pairs == 8 and estimator.batch_sizes == [3, 3, 2]
    out = read_bag(tmp_path / "out")
    assert {ns for ns, _ in out["/front/image_raw"]} == {T0 + i * PERIOD for i in range(2, 7)}
    assert len(out["/front/flow"]) == len(out["/rear/flow"]) == 4
    with pytest.raises(BagError, match="must be after"):
        run(source, tmp_path / "out2", topics=topics, start_s=0.5, end_s=0.5)


def test_export_dir_writes_png_and_flo(tmp_path: Path) -> None:
    source = camera_bag(tmp_path / "in", frames=3)
    estimator = FixedFlowEstimator()
    summary = run(source, tmp_path / "out", estimator, export_dir=tmp_path / "frames", outputs=("flow",))
    folder = tmp_path / "frames" / "cam_image_raw"
    assert summary.exported == 2 and sorted(p.name for p in folder.glob("flow_*")) == [
        "flow_0000.flo",
        "flow_0000.png",
        "flow_0001.flo",
        "flow_0001.png",
    ]
    np.testing.assert_array_equal(read_flo(folder / "flow_0001.flo"), estimator.flow_for(48, 64))
    png = cv2.cvtColor(cv2.imread(str(folder / "flow_0000.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(png, flow_to_color(estimator.flow_for(48, 64), 20.0))
    lines = (folder / "stamps.txt").read_text().splitlines()
    assert lines[1] == "flow_0000 1000.100000000 1000.000000000"


def test_image_cdr_is_what_rclpy_serialises() -> None:
    rng = np.random.default_rng(0)
    for frame_id in ("", "c", "cam", "camera_xyz"):
        header = stamp_header(T0 + 12345, frame_id)
        for encoding, pixels in (
            ("32FC2", rng.normal(size=(3, 5, 2)).astype(np.float32)),
            ("32FC1", rng.normal(size=(3, 5)).astype(np.float32)),
            ("rgb8", rng.integers(0, 255, (3, 5, 3), dtype=np.uint8)),
        ):
            msg = deserialize_message(image_cdr(header, encoding, pixels), Image)
            assert (msg.header, msg.encoding, msg.height, msg.width) == (header, encoding, 3, 5)
            assert msg.step == pixels.strides[0]
            np.testing.assert_array_equal(image_msg_to_array(msg)[0], pixels)


# ---------------------------------------------------------------------------------------------- the CLI


def test_cli_missing_topic_lists_the_image_topics(tmp_path: Path) -> None:
    source = camera_bag(tmp_path / "in", frames=2)
    code, _, err = cli(str(source), "-o", str(tmp_path / "out"), "--topic", "/nope")
    assert code == 2 and err.count("\n") == 1
    assert "/nope not in" in err and "image topics: /cam/image_raw" in err
    code, _, err = cli(str(source), "-o", str(tmp_path / "out"))
    assert code == 2 and "no --topic given" in err and "/cam/image_raw" in err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_to_overwrite(tmp_path: Path) -> None:
    source = camera_bag(tmp_path / "in", frames=2)
    existing = tmp_path / "out.mcap"
    existing.write_bytes(b"precious")
    code, _, err = cli(str(source), "-o", str(existing), "-t", "/cam/image_raw")
    assert code == 2 and "exists; pass --overwrite" in err and err.count("\n") == 1
    assert existing.read_bytes() == b"precious"
    code, _, err = cli(str(source), "-o", str(source), "-t", "/cam/image_raw", "--overwrite")
    assert code == 2 and "would overwrite" in err
    # with --overwrite the old output is replaced by a complete bag
    summary = run(source, existing, overwrite=True)
    assert summary.pairs == 1 and len(read_bag(existing)["/cam/flow"]) == 1


@pytest.mark.parametrize("damage", ["truncated_mcap", "garbage_mcap", "bad_metadata", "truncated_db3"])
def test_cli_corrupt_or_truncated_bag_is_one_line_exit_2(tmp_path: Path, damage: str) -> None:
    if damage == "truncated_db3":
        source = camera_bag(tmp_path / "in", frames=4, storage="sqlite3", single_file=True)
        data = source.read_bytes()
        source.write_bytes(data[: len(data) // 3])
    else:
        folder = camera_bag(tmp_path / "in", frames=4)
        source = folder / "in.mcap"
        data = source.read_bytes()
        if damage == "truncated_mcap":
            source.write_bytes(data[: len(data) // 2])
        elif damage == "garbage_mcap":
            source.write_bytes(data[:8] + bytes(range(256)) * 40)
        else:
            (folder / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, mapping")
            source = folder
    code, out, err = cli(str(source), "-o", str(tmp_path / "out"), "-t", "/cam/image_raw")
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("flownet2-bag: error: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_cli_help_explains_every_flag() -> None:
    parser = bag_cli.build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help"
    text = parser.format_help()
    assert "/cam/image_raw -> /cam/flow" in text and "Exit status" in text


def test_ctrl_c_leaves_a_closed_readable_bag(tmp_path: Path) -> None:
    """SIGINT to a real flownet2-bag process mid-run: exit 130, and the output holds what was processed."""
    frames = 150
    messages = [
        (
            "/cam/image_raw",
            "sensor_msgs/msg/Image",
            T0 + i * PERIOD,
            raw_frame(T0 + i * PERIOD, texture(240, 320, i % 7)),
        )
        for i in range(frames)
    ]
    source = write_bag(tmp_path / "in", messages)
    output = tmp_path / "out.mcap"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flownet2_ros.cli.bag",
            str(source),
            "-o",
            str(output),
            "-t",
            "/cam/image_raw",
            "--batch",
            "1",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None and proc.stdout is not None
    seen: list[int] = []
    err_text: list[str] = []

    def watch() -> None:
        assert proc.stderr is not None
        buffer = ""
        while chunk := proc.stderr.read1(4096).decode(errors="replace"):  # type: ignore[attr-defined]
            buffer += chunk
            err_text.append(chunk)
            seen.extend(int(m) for m in re.findall(r"(\d+)/" + str(frames), buffer[-200:]))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        deadline = time.monotonic() + 120
        while not (seen and max(seen) >= 8):
            assert proc.poll() is None, "".join(err_text)
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout = proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    watcher.join(5)
    assert proc.returncode == 130, "".join(err_text)
    summary = stdout.decode()
    match = re.search(r"interrupted: (\d+) frames, (\d+) pairs", summary)
    assert match, summary
    read, pairs = int(match.group(1)), int(match.group(2))
    assert 8 <= read < frames and pairs >= 7
    out = read_bag(output)  # closed and readable
    assert len(out["/cam/flow"]) == pairs and len(out["/cam/flow/color"]) == pairs
    assert len(out["/cam/image_raw"]) == read  # every frame read was copied
    assert not list(tmp_path.glob(".out*"))


# ------------------------------------------------------------------------------------- equal to the node


def test_bundled_demo_bag() -> None:
    bag = demo_bag_dir()
    assert sum(p.stat().st_size for p in bag.iterdir()) < 4e6
    with Reader(bag) as reader:
        topics = {t: i.msgcount for t, i in reader.topics.items()}
        assert topics == {"/camera/image_raw": 12, "/camera/camera_info": 12}
        assert reader.duration == 11 * PERIOD + 1  # 10 Hz


def test_flow_equals_the_nodes_on_the_demo_bag(
    harness_factory: Callable[..., Any], tmp_path: Path, one_torch_thread: None
) -> None:
    """The real embedded model in both: flownet2-bag on the demo bag, and the node fed the bag's frames."""
    from flownet2_ros.backends import create_estimator

    settings = FlowNodeSettings(device="cpu", torch_threads=1)
    summary = process_bag(
        demo_bag_dir(),
        tmp_path / "out.mcap",
        BagFlowOptions(topics=["/camera/image_raw"], settings=settings, batch=4),
    )
    assert summary.pairs == 11
    out = read_bag(tmp_path / "out.mcap")

    h = harness_factory(
        factory=create_estimator,
        params={"device": "cpu", "torch_threads": 1, "input_reliability": "reliable"},
        outputs=("flow", "flow/camera_info"),
    )
    frames = [msg for _, msg in out["/camera/image_raw"]]
    for i, (_, info) in enumerate(out["/camera/camera_info"]):
        h.info_pub.publish(info)
        h.wait_for(lambda n=i: len(h.node.cameras[0].infos) > min(n, 7), what="camera_info")
        h.send(frames[i])
        h.wait_for(lambda n=i: h.count("flow") >= n, timeout=30.0, what=f"flow {i}")
    node_flows = h.messages("flow")
    assert len(node_flows) == len(out["/camera/flow"]) == 11
    for (ns, bag_msg), node_msg in zip(out["/camera/flow"], node_flows, strict=True):
        assert bag_msg.header == node_msg.header and stamp_ns(bag_msg.header) == ns
        np.testing.assert_allclose(image_msg_to_array(bag_msg)[0], image_msg_to_array(node_msg)[0], atol=1e-5)
    h.wait_for(lambda: h.count("flow/camera_info") >= 11, what="flow/camera_info")
    for (_, bag_info), node_info in zip(
        out["/camera/flow/camera_info"], h.messages("flow/camera_info"), strict=True
    ):
        assert bag_info == node_info
    first_info = out["/camera/camera_info"][1][1]
    expected = scale_camera_info(first_info, 1.0, 1.0)
    np.testing.assert_allclose(out["/camera/flow/camera_info"][0][1].k, expected.k)
