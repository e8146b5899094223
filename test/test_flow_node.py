"""The flow node in-process with real rclpy and DDS: outputs, stamps, scaling, pairing and drop rules.

The backend is a stand-in (:class:`FixedFlowEstimator`, a known flow) so that outputs can be checked
exactly; one test runs the real torch backend with a thin FlowNet2S checkpoint with random weights.
Each test gets its own rclpy context and namespace; the module picks a random ROS domain on import.

``NodeHarness`` is shared with the other node test files (imported from here).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(100, 199)))

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, TimeReference

from flownet2_ros.backends.fixed import FixedFlowEstimator, fixed_factory
from flownet2_ros.flowio import flow_to_color
from flownet2_ros.ros.flow_node import FlowNode, scale_camera_info
from flownet2_ros.ros.image_convert import image_msg_to_array, rgb_to_image_msg

pytestmark = pytest.mark.ros

OUTPUTS: dict[str, type] = {
    "flow": Image,
    "flow/magnitude": Image,
    "flow/color": Image,
    "flow/camera_info": CameraInfo,
    "flow/previous_stamp": TimeReference,
}


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def image_msg(
    stamp: float,
    height: int = 48,
    width: int = 64,
    *,
    encoding: str = "rgb8",
    frame_id: str = "cam",
    seed: int = 0,
) -> Image:
    rgb = texture(height, width, seed)
    if encoding == "rgb8":
        msg = rgb_to_image_msg(rgb)
    else:
        msg = Image(height=height, width=width, encoding=encoding)
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if encoding == "bgr8" else rgb[..., 1].copy()
        msg.step = pixels.strides[0]
        msg.data.frombytes(pixels.tobytes())
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = int(stamp)
    msg.header.stamp.nanosec = round((stamp - int(stamp)) * 1e9)
    return msg


def stamp_of(header: Any) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class NodeHarness:
    """A :class:`FlowNode` and a probe node in their own context, spun by one executor thread.

    With ``params={"cameras": [...]}`` the probe publishes and subscribes every camera's topics; output
    topics are then named ``<camera>/flow`` etc. in :meth:`count` and :meth:`messages`.
    """

    def __init__(
        self,
        *,
        estimator: Any = None,
        factory: Callable[..., Any] | None = None,
        params: dict[str, Any] | None = None,
        start: bool = True,
        outputs: tuple[str, ...] = tuple(OUTPUTS),
        diagnostics: bool = False,
        cli_args: list[str] | None = None,
    ) -> None:
        self.namespace = f"/t{uuid.uuid4().hex[:10]}"
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.estimator = estimator if estimator is not None or factory is not None else FixedFlowEstimator()
        overrides = [Parameter(k, value=v) for k, v in (params or {}).items()]
        self.node = FlowNode(
            namespace=self.namespace,
            context=self.context,
            estimator_factory=factory or fixed_factory(self.estimator),
            parameter_overrides=overrides,
            cli_args=cli_args,
        )
        self.probe = rclpy.create_node("probe", namespace=self.namespace, context=self.context)
        self.lock = threading.Lock()
        self.received: dict[str, list[Any]] = defaultdict(list)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.outputs = outputs
        self.prefixes = [camera.prefix for camera in self.node.cameras]
        self.image_pubs: dict[str, Any] = {}
        self.compressed_pubs: dict[str, Any] = {}
        self.info_pubs: dict[str, Any] = {}
        for prefix in self.prefixes:
            for topic in outputs:
                self.probe.create_subscription(
                    OUTPUTS[topic], prefix + topic, self._collector(prefix + topic), qos
                )
            camera = self.node.camera(prefix.rstrip("/"))
            self.image_pubs[prefix] = self.probe.create_publisher(
                Image, camera.image_topic, QoSProfile(depth=50)
            )
            self.compressed_pubs[prefix] = self.probe.create_publisher(
                CompressedImage, camera.image_topic + "/compressed", QoSProfile(depth=50)
            )
            self.info_pubs[prefix] = self.probe.create_publisher(
                CameraInfo, camera.info_topic, QoSProfile(depth=5)
            )
        self.image_pub = self.image_pubs[self.prefixes[0]]
        self.compressed_pub = self.compressed_pubs[self.prefixes[0]]
        self.info_pub = self.info_pubs[self.prefixes[0]]
        if diagnostics:
            self.probe.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        if start:
            assert self.node.start(), self.node.failure
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        if start:
            self.wait_connected()

    def _collector(self, topic: str) -> Callable[[Any], None]:
        def collect(msg: Any) -> None:
            with self.lock:
                self.received[topic].append(msg)

        return collect

    def _diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for status in msg.status:
                if status.name.startswith("flownet2:"):
                    self.received["diagnostics"].append(status)

    def count(self, topic: str) -> int:
        with self.lock:
            return len(self.received[topic])

    def messages(self, topic: str) -> list[Any]:
        with self.lock:
            return list(self.received[topic])

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)

    def wait_connected(self, transport: str = "raw") -> None:
        pubs = self.compressed_pubs if transport == "compressed" else self.image_pubs
        keys = {"flow": "flow", "flow/magnitude": "magnitude", "flow/color": "color"}
        keys.update({"flow/camera_info": "camera_info", "flow/previous_stamp": "previous_stamp"})

        def ready() -> bool:
            return all(
                pubs[prefix].get_subscription_count() > 0
                and self.info_pubs[prefix].get_subscription_count() > 0
                and all(
                    self.node.camera(prefix.rstrip("/")).pubs[keys[topic]].get_subscription_count() > 0
                    for topic in self.outputs
                )
                for prefix in self.prefixes
            )

        self.wait_for(ready, what="discovery")

    def send(self, msg: Any, *, wait: bool = True, camera: str = "") -> None:
        """Publish an input message; with ``wait``, until the node's callback has seen it."""
        prefix = f"{camera}/" if camera else self.prefixes[0]
        stats = self.node.camera(prefix.rstrip("/")).stats
        before = stats.received
        pubs = self.compressed_pubs if isinstance(msg, CompressedImage) else self.image_pubs
        pubs[prefix].publish(msg)
        if wait:
            self.wait_for(lambda: stats.received > before, what="the node to receive a frame")

    def settle(self) -> None:
        """Wait until the worker has nothing pending or in flight."""

        def idle() -> bool:
            slot = self.node._slot
            busy = self.node._worker_lock.locked()
            return (slot is None or not slot.pending) and not busy

        self.wait_for(idle, what="the worker to go idle")
        time.sleep(0.05)
        self.wait_for(idle, what="the worker to go idle")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(5.0)
        self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.try_shutdown(context=self.context)


def camera_info(width: int, height: int) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.k = np.array([50.0, 0, 32.0, 0, 55.0, 24.0, 0, 0, 1])
    info.p = np.array([50.0, 0, 32.0, -5.0, 0, 55.0, 24.0, 0, 0, 0, 1, 0])
    info.d = [0.1, -0.01, 0.0, 0.0, 0.0]
    return info


# ------------------------------------------------------------------------------------------------ tests


def test_outputs_of_a_frame_pair(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(params={"color_max_flow": 8.0})
    info = camera_info(64, 48)
    info.header.stamp.sec, info.header.stamp.nanosec = 100, 100_000_000  # the second frame's stamp
    h.info_pub.publish(info)
    h.wait_for(lambda: len(h.node.cameras[0].infos) > 0, what="camera_info")
    h.send(image_msg(100.0, frame_id="cam_a"))
    h.send(image_msg(100.1, frame_id="cam_a", seed=1))
    h.wait_for(lambda: all(h.count(t) >= 1 for t in OUTPUTS), what="all outputs")
    h.settle()
    expected = h.estimator.flow_for(48, 64)

    flow_msg = h.messages("flow")[0]
    assert (flow_msg.encoding, flow_msg.height, flow_msg.width, flow_msg.step) == ("32FC2", 48, 64, 64 * 8)
    flow, _ = image_msg_to_array(flow_msg)
    np.testing.assert_array_equal(flow, expected)

    mag_msg = h.messages("flow/magnitude")[0]
    assert (mag_msg.encoding, mag_msg.height, mag_msg.width) == ("32FC1", 48, 64)
    magnitude, _ = image_msg_to_array(mag_msg)
    np.testing.assert_allclose(magnitude, np.hypot(expected[..., 0], expected[..., 1]), rtol=1e-6)

    color_msg = h.messages("flow/color")[0]
    assert (color_msg.encoding, color_msg.height, color_msg.width) == ("rgb8", 48, 64)
    color, _ = image_msg_to_array(color_msg)
    np.testing.assert_array_equal(color, flow_to_color(expected, 8.0))
    exact = flow_to_color(expected, 8.0, exact=True).astype(int)
    assert np.abs(color.astype(int) - exact).max() <= 2  # the lookup table's quantisation

    for msg in (flow_msg, mag_msg, color_msg, h.messages("flow/camera_info")[0]):
        assert msg.header.frame_id == "cam_a"
        assert stamp_of(msg.header) == pytest.approx(100.1)
    prev = h.messages("flow/previous_stamp")[0]
    assert stamp_of(prev.header) == pytest.approx(100.1) and prev.header.frame_id == "cam_a"
    assert prev.time_ref.sec + prev.time_ref.nanosec * 1e-9 == pytest.approx(100.0)

    info = h.messages("flow/camera_info")[0]
    assert (info.width, info.height) == (64, 48)
    np.testing.assert_allclose(info.k, camera_info(64, 48).k)

    [(shape, output_size, key1, key2)] = h.estimator.calls
    assert shape == (48, 64, 3) and output_size == (48, 64) and key2 == key1 + 1
    assert h.node.stats.published == 1 and h.node.stats.dropped == 0


def test_output_resolution_network_scales_outputs_and_camera_info(
    harness_factory: Callable[..., NodeHarness],
) -> None:
    h = harness_factory(params={"output_resolution": "network", "network_width": 128, "network_height": 64})
    info = camera_info(100, 60)
    info.header.stamp.sec, info.header.stamp.nanosec = 1, 50_000_000  # within one frame period before 1.1
    h.info_pub.publish(info)
    h.wait_for(lambda: len(h.node.cameras[0].infos) > 0, what="camera_info")
    h.send(image_msg(1.0, 60, 100))
    h.send(image_msg(1.1, 60, 100, seed=1))
    h.wait_for(lambda: h.count("flow/camera_info") >= 1 and h.count("flow") >= 1, what="outputs")
    flow_msg = h.messages("flow")[0]
    assert (flow_msg.height, flow_msg.width) == (64, 128)
    np.testing.assert_array_equal(image_msg_to_array(flow_msg)[0], h.estimator.flow_for(64, 128))
    assert h.estimator.calls[-1][1] == (64, 128)
    info = h.messages("flow/camera_info")[0]
    assert (info.width, info.height) == (128, 64)
    sx, sy = 128 / 100, 64 / 60
    np.testing.assert_allclose(info.k, [50 * sx, 0, 32 * sx, 0, 55 * sy, 24 * sy, 0, 0, 1])
    np.testing.assert_allclose(info.p, [50 * sx, 0, 32 * sx, -5 * sx, 0, 55 * sy, 24 * sy, 0, 0, 0, 1, 0])
    assert list(info.d) == pytest.approx([0.1, -0.01, 0.0, 0.0, 0.0])
    for topic in ("flow/magnitude", "flow/color"):
        h.wait_for(lambda t=topic: h.count(t) >= 1, what=topic)
        assert (h.messages(topic)[0].height, h.messages(topic)[0].width) == (64, 128)

    # back to the input grid at runtime
    assert h.node.set_parameters([Parameter("output_resolution", value="input")])[0].successful
    h.send(image_msg(1.2, 60, 100, seed=2))
    h.wait_for(lambda: h.count("flow") >= 2, what="second flow")
    assert (h.messages("flow")[1].height, h.messages("flow")[1].width) == (60, 100)
    assert h.estimator.calls[-1][1] == (60, 100)


def test_output_resolution_network_automatic_size(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(params={"output_resolution": "network"}, outputs=("flow",))
    h.send(image_msg(1.0, 60, 100))
    h.send(image_msg(1.1, 60, 100, seed=1))
    h.wait_for(lambda: h.count("flow") >= 1, what="flow")
    assert (h.messages("flow")[0].height, h.messages("flow")[0].width) == (64, 128)  # nearest multiples of 64


def test_scale_camera_info_roi() -> None:
    info = camera_info(640, 480)
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 10, 20, 320, 240
    info.binning_x = 2
    scaled = scale_camera_info(info, 0.5, 0.5)
    assert (scaled.width, scaled.height, scaled.binning_x) == (320, 240, 0)
    assert (scaled.roi.x_offset, scaled.roi.y_offset, scaled.roi.width, scaled.roi.height) == (
        5,
        10,
        160,
        120,
    )
    assert scaled.k[0] == 25.0 and scaled.k[5] == 12.0 and scaled.p[3] == -2.5


def test_pairing_resets_are_counted(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(params={"max_pair_gap_s": 0.5}, outputs=("flow", "flow/previous_stamp"))
    frames = [
        image_msg(10.0),
        image_msg(10.1, seed=1),  # pair 1
        image_msg(10.05, seed=2),  # stamp backwards: reset
        image_msg(10.15, seed=3),  # pair 2
        image_msg(12.0, seed=4),  # gap 1.85 s > 0.5 s: reset
        image_msg(12.1, seed=5),  # pair 3
        image_msg(12.2, 40, 80, seed=6),  # size change: reset
        image_msg(12.3, 40, 80, seed=7),  # pair 4
        image_msg(12.4, 40, 80, encoding="bgr8", seed=8),  # encoding change: reset
        image_msg(12.5, 40, 80, encoding="bgr8", seed=9),  # pair 5
        image_msg(12.6, 40, 80, encoding="bgr8", frame_id="other"),  # frame id change: reset
        image_msg(12.7, 40, 80, encoding="mono8", frame_id="other"),  # encoding change: reset
        image_msg(12.8, 40, 80, encoding="mono8", frame_id="other", seed=3),  # pair 6
    ]
    for msg in frames:
        h.send(msg)
        h.settle()
    h.wait_for(lambda: h.count("flow/previous_stamp") >= 6, what="six pairs")
    time.sleep(0.1)
    assert h.node.stats.resets == {"reset_time_backwards": 1, "reset_gap": 1, "reset_format_change": 4}
    pairs = [
        (stamp_of(m.header), m.time_ref.sec + m.time_ref.nanosec * 1e-9)
        for m in h.messages("flow/previous_stamp")
    ]
    assert pairs == pytest.approx(
        [(10.1, 10.0), (10.15, 10.05), (12.1, 12.0), (12.3, 12.2), (12.5, 12.4), (12.8, 12.7)]
    )
    assert [(m.height, m.width) for m in h.messages("flow")] == [(48, 64)] * 3 + [(40, 80)] * 3
    assert h.node.stats.dropped == 0

    # runtime change of the gap: 0 disables the check
    assert h.node.set_parameters([Parameter("max_pair_gap_s", value=0.0)])[0].successful
    h.send(image_msg(100.0, 40, 80, encoding="mono8", frame_id="other", seed=4))
    h.wait_for(lambda: h.count("flow/previous_stamp") >= 7, what="a pair across a long gap")
    assert h.node.stats.resets["reset_gap"] == 1


def test_busy_backend_keeps_only_the_newest_pair(harness_factory: Callable[..., NodeHarness]) -> None:
    estimator = FixedFlowEstimator(delay_s=0.4)
    h = harness_factory(estimator=estimator, outputs=("flow", "flow/previous_stamp"))
    stamps = [20.0 + 0.05 * i for i in range(8)]
    for i, stamp in enumerate(stamps):
        h.send(image_msg(stamp, seed=i))
    h.settle()
    h.wait_for(lambda: h.count("flow/previous_stamp") >= 1, what="flow")
    published = h.messages("flow/previous_stamp")
    # 7 pairs were offered; the worker took the first and (at most) a few later ones; the rest were dropped
    assert h.node.stats.dropped >= 3
    assert h.node.stats.dropped + len(published) == 7
    last = published[-1]
    assert stamp_of(last.header) == pytest.approx(stamps[-1])  # the newest pair is never dropped
    assert last.time_ref.sec + last.time_ref.nanosec * 1e-9 == pytest.approx(stamps[-2])
    # pooled buffers all came back: nothing leaked by the drops
    pairer = h.node.cameras[0].pairer
    assert pairer is not None and pairer.allocations <= 6


def test_compressed_transport(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(params={"transport": "compressed"}, outputs=("flow", "flow/color"), start=False)
    assert h.node.start()
    h.wait_connected(transport="compressed")

    def compressed(fmt: str, stamp: float, seed: int) -> CompressedImage:
        ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", texture(48, 64, seed))
        assert ok
        msg = CompressedImage(format=fmt)
        msg.header.frame_id = "cam"
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), round((stamp % 1) * 1e9)
        msg.data.frombytes(data.tobytes())
        return msg

    h.send(compressed("jpeg", 30.0, 0))
    h.send(compressed("jpeg", 30.0, 1))  # same stamp: time did not advance -> reset
    h.send(compressed("png", 30.1, 2))  # format changed -> reset
    h.send(compressed("png", 30.2, 3))  # pair
    h.send(compressed("jpeg", 30.3, 4))  # format changed -> reset
    h.send(compressed("jpeg", 30.4, 5))  # pair
    h.wait_for(lambda: h.count("flow") >= 2 and h.count("flow/color") >= 2, what="flow from compressed input")
    assert [round(stamp_of(m.header), 3) for m in h.messages("flow")] == [30.2, 30.4]
    assert h.node.stats.resets == {"reset_time_backwards": 1, "reset_format_change": 2}
    assert h.estimator.calls[0][0] == (48, 64, 3)


def test_outputs_without_subscribers_are_skipped(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(outputs=("flow",), params={"publish_color": False})
    h.send(image_msg(1.0))
    h.send(image_msg(1.1, seed=1))
    h.wait_for(lambda: h.count("flow") >= 1, what="flow")
    h.settle()
    assert h.node.cameras[0].out_color.msg is None and h.node.cameras[0].out_mag.msg is None  # never computed


def test_diagnostics_report(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(params={"diagnostics_period_s": 0.2}, outputs=("flow",), diagnostics=True)
    h.send(image_msg(1.0))
    h.send(image_msg(1.1, seed=1))
    h.wait_for(lambda: h.count("flow") >= 1, what="flow")

    def published_status() -> bool:
        return any(
            dict((kv.key, kv.value) for kv in s.values).get("frames_published") == "1"
            for s in h.messages("diagnostics")
        )

    h.wait_for(published_status, what="a status after the flow")
    status = [
        s
        for s in h.messages("diagnostics")
        if any(kv.key == "frames_published" and kv.value == "1" for kv in s.values)
    ][-1]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == b"\x00", status.message
    assert values["state"] == "active" and values["backend"] == "fixed" and values["backend_device"] == "cpu"
    assert values["frames_received"] == "2" and values["frames_dropped"] == "0"
    assert float(values["backend_ms_mean"]) >= 0.0 or values["backend_ms_mean"] == "n/a"
    for key in (
        "input_rate_hz",
        "output_rate_hz",
        "latency_ms_mean",
        "pair_resets.reset_gap",
        "errors.bad_step",
    ):
        assert key in values
    # no input for a while: WARN
    assert h.node.set_parameters([Parameter("input_timeout_s", value=0.2)])[0].successful
    h.wait_for(lambda: h.messages("diagnostics")[-1].level == b"\x01", what="a warning without input")
    assert "no input" in h.messages("diagnostics")[-1].message


def test_real_torch_backend_with_thin_checkpoint(
    harness_factory: Callable[..., NodeHarness], tmp_path: Any
) -> None:
    import torch

    from flownet2_ros.backends import create_estimator
    from flownet2_ros.models import build

    checkpoint = tmp_path / "thin.pth"
    torch.save({"state_dict": build("FlowNet2S", thin=True).state_dict()}, checkpoint)
    h = harness_factory(
        factory=create_estimator,
        params={"backend": "torch", "checkpoint": str(checkpoint), "device": "cpu"},
        outputs=("flow", "flow/magnitude", "flow/color"),
    )
    assert h.node._backend_info is not None and h.node._backend_info.name == "torch"
    h.send(image_msg(1.0, 64, 64))
    h.send(image_msg(1.1, 64, 64, seed=1))
    h.wait_for(
        lambda: all(h.count(t) >= 1 for t in h.outputs), timeout=30.0, what="flow from the torch backend"
    )
    flow, _ = image_msg_to_array(h.messages("flow")[0])
    assert flow.shape == (64, 64, 2) and np.isfinite(flow).all()
    magnitude, _ = image_msg_to_array(h.messages("flow/magnitude")[0])
    np.testing.assert_allclose(magnitude, np.hypot(flow[..., 0], flow[..., 1]), rtol=1e-6)
