"""Several cameras in one node and the ROS conventions around them, with real rclpy and DDS in-process.

One backend serves every camera (pairs ready together go through one ``estimate_batch``), each camera has
its own topics, pairing, counters and diagnostics status; camera_info follows the image topic and is
matched by stamp; ``image_transport`` chooses the input; no subscriber means no inference; lost input
frames are estimated from the stamps; refused encodings are named.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import rclpy
from lifecycle_msgs.msg import Transition
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from test_flow_node import NodeHarness, camera_info, image_msg, stamp_of
from test_node_params import transition

from flownet2_ros.backends.fixed import FixedFlowEstimator
from flownet2_ros.ros.flow_node import camera_topics, sibling_topic
from flownet2_ros.ros.image_convert import image_msg_to_array

pytestmark = pytest.mark.ros


def stamped_info(stamp: float, width: int = 64, height: int = 48) -> CameraInfo:
    info = camera_info(width, height)
    info.header.stamp.sec, info.header.stamp.nanosec = int(stamp), round((stamp % 1) * 1e9)
    return info


def status_values(status: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_topic_rules() -> None:
    assert sibling_topic("/cam/image_raw", "camera_info") == "/cam/camera_info"
    assert sibling_topic("/image", "camera_info") == "/camera_info"
    remaps = {"/ns/image": "/cam/image_raw", "/ns/front/camera_info": "/calib/front"}

    def resolve(name: str, only_expand: bool) -> str:
        full = f"/ns/{name}"
        return full if only_expand else remaps.get(full, full)

    assert camera_topics(resolve, "", "raw") == ("/cam/image_raw", "/cam/image_raw", "/cam/camera_info")
    assert camera_topics(resolve, "", "compressed")[1] == "/cam/image_raw/compressed"
    # an explicit camera_info remap wins over the sibling rule
    assert camera_topics(resolve, "front/", "raw") == ("/ns/front/image", "/ns/front/image", "/calib/front")


def test_two_cameras_share_one_backend_in_batches(harness_factory: Callable[..., NodeHarness]) -> None:
    estimator = FixedFlowEstimator(delay_s=0.3)  # busy: pairs of both cameras wait together
    h = harness_factory(
        estimator=estimator,
        params={"cameras": ["front", "rear"]},
        outputs=("flow", "flow/previous_stamp", "flow/camera_info"),
    )
    assert [c.name for c in h.node.cameras] == ["front", "rear"]
    assert h.node.camera("front").info_topic == f"{h.namespace}/front/camera_info"
    for i in range(4):
        for name, frame_id in (("front", "cam_f"), ("rear", "cam_r")):
            stamp = 10.0 + 0.1 * i
            h.info_pubs[f"{name}/"].publish(stamped_info(stamp))
            h.send(image_msg(stamp, frame_id=frame_id, seed=i), camera=name)
    h.settle()
    h.wait_for(lambda: h.count("front/flow") >= 1 and h.count("rear/flow") >= 1, what="flow of both cameras")
    h.settle()
    assert max(estimator.batch_sizes) == 2, estimator.batch_sizes  # one call ran both cameras' pairs
    for name, frame_id in (("front", "cam_f"), ("rear", "cam_r")):
        flows = h.messages(f"{name}/flow")
        assert all(m.header.frame_id == frame_id for m in flows)
        np.testing.assert_array_equal(image_msg_to_array(flows[-1])[0], estimator.flow_for(48, 64))
        assert stamp_of(flows[-1].header) == pytest.approx(10.3)  # the newest pair is never dropped
        prev = h.messages(f"{name}/flow/previous_stamp")[-1]
        assert prev.time_ref.sec + prev.time_ref.nanosec * 1e-9 == pytest.approx(10.2)
        stats = h.node.camera(name).stats
        assert stats.received == 4 and stats.published + stats.dropped == 3
        h.wait_for(lambda n=name: h.count(f"{n}/flow/camera_info") >= 1, what="camera_info")
    # keys never mix cameras: each pair's first frame is that camera's previous frame
    keys = [(k1, k2) for _, _, k1, k2 in estimator.calls]
    assert len({k2 for _, k2 in keys}) == len(keys)


def test_each_camera_has_its_own_diagnostics(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(
        params={"cameras": ["left", "right"], "diagnostics_period_s": 0.2},
        outputs=("flow",),
        diagnostics=True,
    )
    h.send(image_msg(1.0), camera="left")
    h.send(image_msg(1.1, seed=1), camera="left")
    bad = image_msg(1.0)
    bad.encoding = "yuv420_fancy"
    h.send(bad, camera="right")
    h.wait_for(lambda: h.count("left/flow") >= 1, what="left flow")

    def latest(camera: str) -> Any:
        found = [s for s in h.messages("diagnostics") if s.name == f"flownet2: optical flow ({camera})"]
        return found[-1] if found else None

    def reported() -> bool:
        left, right = latest("left"), latest("right")
        return (
            left is not None
            and right is not None
            and status_values(left).get("frames_published") == "1"
            and status_values(right).get("errors.unsupported_encoding") == "1"
        )

    h.wait_for(reported, what="per-camera statuses")
    left, right = status_values(latest("left")), status_values(latest("right"))
    assert left["camera"] == "left" and left["input_topic"] == f"{h.namespace}/left/image"
    assert left["camera_info_topic"] == f"{h.namespace}/left/camera_info"
    assert left["errors.unsupported_encoding"] == "0" and left["cameras"] == "2"
    assert right["unsupported_encoding.yuv420_fancy"] == "1" and right["frames_published"] == "0"
    assert "yuv420_fancy" in latest("right").message


def test_camera_info_follows_the_remapped_image_topic(harness_factory: Callable[..., NodeHarness]) -> None:
    base = f"/remapped_{time.monotonic_ns() % 10**9}"
    h = harness_factory(
        outputs=("flow", "flow/camera_info"), cli_args=["--ros-args", "-r", f"image:={base}/image_raw"]
    )
    camera = h.node.cameras[0]
    assert (camera.image_topic, camera.info_topic) == (f"{base}/image_raw", f"{base}/camera_info")
    assert h.info_pub.topic_name == f"{base}/camera_info"
    h.info_pub.publish(stamped_info(5.0))
    h.info_pub.publish(stamped_info(5.1))
    h.wait_for(lambda: len(camera.infos) >= 2, what="camera_info on the sibling topic")
    h.send(image_msg(5.0))
    h.send(image_msg(5.1, seed=1))
    h.wait_for(lambda: h.count("flow/camera_info") >= 1, what="flow/camera_info")
    assert stamp_of(h.messages("flow/camera_info")[0].header) == pytest.approx(5.1)


def test_camera_info_remap_overrides_the_sibling(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(
        outputs=("flow",), start=False, cli_args=["--ros-args", "-r", "camera_info:=/calibration/cam0"]
    )
    assert h.node.cameras[0].info_topic == "/calibration/cam0"


def test_camera_info_is_matched_by_stamp(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(outputs=("flow", "flow/camera_info"))
    camera = h.node.cameras[0]
    wide, narrow = stamped_info(2.0, 64, 48), stamped_info(2.15, 64, 48)
    wide.k[0], narrow.k[0] = 40.0, 60.0
    old = stamped_info(0.5)
    old.k[0] = 99.0
    for info in (old, wide, narrow):
        h.info_pub.publish(info)
    h.wait_for(lambda: len(camera.infos) >= 3, what="camera_info")
    h.send(image_msg(2.0))
    h.send(image_msg(2.1, seed=1))  # no exact info; 2.0 is within one period (0.1 s): used
    h.wait_for(lambda: h.count("flow/camera_info") >= 1, what="info within a period")
    assert h.messages("flow/camera_info")[0].k[0] == 40.0
    h.send(image_msg(2.15, seed=2))  # exact match
    h.wait_for(lambda: h.count("flow/camera_info") >= 2, what="exact info")
    assert h.messages("flow/camera_info")[1].k[0] == 60.0
    h.send(image_msg(3.0, seed=3))  # period 0.85 s; the newest info (2.15) is that old: still matched
    h.wait_for(lambda: h.count("flow") >= 3, what="third flow")
    h.settle()
    assert h.count("flow/camera_info") == 3
    h.send(image_msg(3.05, seed=4))  # period 0.05 s; newest info 0.9 s old: no camera_info for this frame
    h.wait_for(lambda: h.count("flow") >= 4, what="fourth flow")
    h.settle()
    assert h.count("flow/camera_info") == 3


def test_image_transport_parameter_and_deprecated_alias(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(params={"image_transport": "compressed"}, outputs=("flow",), start=False)
    assert h.node.input_topic == f"{h.namespace}/image/compressed"
    old = harness_factory(params={"transport": "compressed"}, outputs=("flow",), start=False)
    assert old.node.settings.input_transport == "compressed"
    assert old.node.input_topic == f"{old.namespace}/image/compressed"
    both = harness_factory(
        params={"transport": "compressed", "image_transport": "raw"}, outputs=("flow",), start=False
    )
    assert both.node.settings.input_transport == "compressed"  # raw is the default: the alias was meant
    plain = harness_factory(outputs=("flow",), start=False)
    assert plain.node.input_topic == f"{plain.namespace}/image"


def test_no_inference_without_subscribers(harness_factory: Callable[..., NodeHarness]) -> None:
    estimator = FixedFlowEstimator()
    h = harness_factory(
        estimator=estimator, outputs=(), params={"diagnostics_period_s": 0.2}, diagnostics=True
    )
    camera = h.node.cameras[0]
    h.wait_for(lambda: h.image_pub.get_subscription_count() > 0, what="discovery")
    for i in range(4):
        h.send(image_msg(1.0 + 0.1 * i, seed=i))
    h.settle()
    assert estimator.calls == [] and camera.idle and camera.stats.idle_frames == 4

    def idle_status() -> bool:
        found = [s for s in h.messages("diagnostics") if s.name == "flownet2: optical flow"]
        return bool(found) and found[-1].message == "idle (no subscribers)"

    h.wait_for(idle_status, what="an idle status")
    # the first subscriber starts it again, with a fresh pair (no pair across the idle time)
    got: list[Any] = []
    h.probe.create_subscription(
        Image, "flow", got.append, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    h.wait_for(lambda: camera.pubs["flow"].get_subscription_count() > 0, what="the new subscriber")
    h.send(image_msg(2.0, seed=7))
    h.settle()
    assert estimator.calls == [] and not camera.idle  # the first frame after idling only starts a pair
    h.send(image_msg(2.1, seed=8))
    h.wait_for(lambda: len(got) >= 1, what="flow after a subscriber appeared")
    assert len(estimator.calls) == 1 and stamp_of(got[0].header) == pytest.approx(2.1)
    assert camera.stats.resets == {}


def test_lost_input_frames_are_estimated(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(outputs=("flow",), params={"diagnostics_period_s": 0.2}, diagnostics=True)
    stamps = [10.0 + 0.1 * i for i in range(30) if i < 10 or i % 2 == 0]  # then every 2nd lost: 9 gaps
    for i, stamp in enumerate(stamps):
        h.send(image_msg(stamp, seed=i % 3))
    stats = h.node.cameras[0].stats
    assert stats.loss.lost == 9 and stats.loss.period == pytest.approx(0.1)

    def loss_reported() -> bool:
        found = [s for s in h.messages("diagnostics") if status_values(s).get("frames_lost_estimate") == "9"]
        return bool(found)

    h.wait_for(loss_reported, what="the loss estimate in diagnostics")
    status = [s for s in h.messages("diagnostics") if status_values(s).get("frames_lost_estimate") == "9"][-1]
    assert float(status_values(status)["input_loss_percent"]) == pytest.approx(100 * 9 / 29, abs=0.1)


def test_deactivate_and_activate_with_cameras(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(params={"cameras": ["a", "b"]}, outputs=("flow",))
    assert transition(h, Transition.TRANSITION_DEACTIVATE) and h.node.lifecycle_state == "inactive"
    assert all(c.subs == [] for c in h.node.cameras)
    assert transition(h, Transition.TRANSITION_ACTIVATE) and h.node.lifecycle_state == "active"
    h.wait_connected()
    for name in ("a", "b"):
        h.send(image_msg(1.0), camera=name)
        h.send(image_msg(1.1, seed=1), camera=name)
    h.wait_for(lambda: h.count("a/flow") >= 1 and h.count("b/flow") >= 1, what="flow after re-activation")
    assert rclpy.ok(context=h.context)


def test_bad_camera_names_fail_configure(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(params={"cameras": ["front", "front"]}, outputs=(), start=False)
    assert not transition(h, Transition.TRANSITION_CONFIGURE)
    assert h.node.lifecycle_state == "unconfigured"
    assert h.node.failure is not None and "unique" in h.node.failure
