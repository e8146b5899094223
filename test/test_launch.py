"""``ros2 launch flownet2_ros flownet2.launch.py demo:=true cameras:=front,rear`` under launch_testing.

Runs the real ``ros2 launch`` command on the real launch file: one demo player per camera feeds the
bundled sequence to that camera's ``image`` and ``camera_info`` topics; one flow node serves both cameras
and which runs the torch backend on a thin FlowNet2S checkpoint with random
weights (written to a temporary folder and passed as the ``checkpoint`` launch argument) and takes
its other parameters from a YAML file (the installed ``config/flownet2.yaml`` with a few values
changed).  The test checks that both cameras' flow topics carry data, that ``front/flow/camera_info``
follows ``front/camera_info``, that the YAML values are in force
(through the node's parameter service, as ``ros2 param get`` reads them) and that the node is active.

``ros2 launch`` finds packages through the ament index; rather than a colcon build of the whole
package, a throwaway prefix registers ``flownet2_ros`` and links its launch file, config and the two
console scripts of this environment (the package itself is installed in editable mode).
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(100, 199)))

import launch.actions
import launch_testing
import launch_testing.actions
import launch_testing.asserts
import pytest
import rclpy
import yaml
from lifecycle_msgs.srv import GetState
from rcl_interfaces.srv import GetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, TimeReference

import launch

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "flownet2_ros"
NAMESPACE = f"/launch_test_{uuid.uuid4().hex[:8]}"
NODE = f"{NAMESPACE}/flownet2"
YAML_VALUES = {"color_max_flow": 12.5, "max_pair_gap_s": 2.0, "diagnostics_period_s": 0.5}
STATE: dict[str, Any] = {}


def ament_prefix() -> Path:
    """A temporary install prefix that registers the package and links what ``ros2 launch`` needs."""
    prefix = Path(tempfile.mkdtemp(prefix="flownet2_ament_"))
    atexit.register(shutil.rmtree, prefix, True)
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / PACKAGE).touch()
    share = prefix / "share" / PACKAGE
    (share / "launch").mkdir(parents=True)
    (share / "config").mkdir()
    (share / "package.xml").symlink_to(REPO / "package.xml")
    (share / "launch" / "flownet2.launch.py").symlink_to(REPO / "launch" / "flownet2.launch.py")
    for name in ("flownet2.yaml", "flownet2.rviz"):
        (share / "config" / name).symlink_to(REPO / "config" / name)
    lib = prefix / "lib" / PACKAGE
    lib.mkdir(parents=True)
    for exe in ("flow_node", "image_sequence_player"):
        found = shutil.which(exe) or str(Path(sys.prefix) / "bin" / exe)
        (lib / exe).symlink_to(found)
    return prefix


@pytest.mark.launch_test
def generate_test_description() -> Any:
    import torch

    from flownet2_ros.models import build

    prefix = ament_prefix()
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(
        p for p in (str(prefix), os.environ.get("AMENT_PREFIX_PATH", "")) if p
    )
    tmp = Path(tempfile.mkdtemp(prefix="flownet2_launch_"))
    atexit.register(shutil.rmtree, tmp, True)
    checkpoint = tmp / "thin_flownet2s.pth"
    torch.save({"state_dict": build("FlowNet2S", thin=True).state_dict()}, checkpoint)
    config = yaml.safe_load((REPO / "config" / "flownet2.yaml").read_text())
    [key] = config
    config[key]["ros__parameters"].update(YAML_VALUES)
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(config))
    STATE["checkpoint"] = str(checkpoint)

    ros2_launch = launch.actions.ExecuteProcess(
        cmd=[
            "ros2",
            "launch",
            PACKAGE,
            "flownet2.launch.py",
            "demo:=true",
            "cameras:=front,rear",
            "demo_rate_hz:=4.0",
            "log_level:=info",
            "use_sim_time:=false",
            "backend:=torch",
            f"checkpoint:={checkpoint}",
            f"params_file:={params}",
            f"namespace:={NAMESPACE}",
        ],
        output="screen",
        sigterm_timeout="10",
    )
    return (
        launch.LaunchDescription([ros2_launch, launch_testing.actions.ReadyToTest()]),
        {"ros2_launch": ros2_launch},
    )


class TestFlowLaunch(unittest.TestCase):
    context: Any
    node: Any

    @classmethod
    def setUpClass(cls) -> None:
        cls.context = rclpy.Context()
        rclpy.init(context=cls.context)
        cls.node = rclpy.create_node("launch_probe", context=cls.context)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.node.destroy_node()
        rclpy.try_shutdown(context=cls.context)

    def spin_until(self, predicate: Any, timeout: float) -> bool:
        executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        executor.add_node(self.node)
        try:
            deadline = time.monotonic() + timeout
            while not predicate() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            return bool(predicate())
        finally:
            executor.remove_node(self.node)
            executor.shutdown()

    def call(self, srv_type: Any, name: str, request: Any) -> Any:
        client = self.node.create_client(srv_type, f"{NODE}/{name}")
        try:
            self.assertTrue(self.spin_until(client.service_is_ready, 60.0), f"{name} not available")
            future = client.call_async(request)
            self.assertTrue(self.spin_until(future.done, 20.0), f"no answer from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def test_1_flow_topics_carry_data(self) -> None:
        kinds = {"flow": Image, "flow/magnitude": Image, "flow/color": Image}
        kinds.update({"flow/previous_stamp": TimeReference, "flow/camera_info": CameraInfo})
        got: dict[str, list[Any]] = {
            f"{camera}/{topic}": [] for camera in ("front", "rear") for topic in kinds
        }
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        subs = [
            self.node.create_subscription(
                kinds[topic.split("/", 1)[1]], f"{NAMESPACE}/{topic}", got[topic].append, qos
            )
            for topic in got
        ]

        try:
            self.assertTrue(
                self.spin_until(lambda: all(got.values()), 90.0), {k: len(v) for k, v in got.items()}
            )
        finally:
            for sub in subs:
                self.node.destroy_subscription(sub)
        for camera in ("front", "rear"):
            flow, magnitude = got[f"{camera}/flow"][0], got[f"{camera}/flow/magnitude"][0]
            color = got[f"{camera}/flow/color"][0]
            self.assertEqual((flow.encoding, flow.height, flow.width), ("32FC2", 240, 320))
            self.assertEqual((magnitude.encoding, magnitude.height, magnitude.width), ("32FC1", 240, 320))
            self.assertEqual((color.encoding, color.height, color.width), ("rgb8", 240, 320))
            self.assertEqual(flow.header.frame_id, f"camera_{camera}")  # that camera's player
            self.assertEqual(len(flow.data), 240 * 320 * 8)
        # front/flow/camera_info is front/camera_info (the image topic's sibling), stamped like its frame
        info = got["front/flow/camera_info"][0]
        self.assertEqual((info.width, info.height, info.header.frame_id), (320, 240, "camera_front"))
        self.assertEqual(list(info.k), [320.0, 0.0, 159.5, 0.0, 320.0, 119.5, 0.0, 0.0, 1.0])  # the player's
        flow_stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in got["front/flow"]}
        self.assertIn((info.header.stamp.sec, info.header.stamp.nanosec), flow_stamps)

    def test_2_parameters_from_yaml_and_launch_arguments(self) -> None:
        names = [*YAML_VALUES, "checkpoint", "backend"]
        reply = self.call(GetParameters, "get_parameters", GetParameters.Request(names=names))
        values = [v.double_value for v in reply.values[: len(YAML_VALUES)]]
        self.assertEqual(values, list(YAML_VALUES.values()))
        self.assertEqual(reply.values[-2].string_value, STATE["checkpoint"])
        self.assertEqual(reply.values[-1].string_value, "torch")

    def test_3_node_is_active(self) -> None:
        reply = self.call(GetState, "get_state", GetState.Request())
        self.assertEqual(reply.current_state.label, "active")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_launch_exits_cleanly(self, proc_info: Any, ros2_launch: Any) -> None:
        launch_testing.asserts.assertExitCodes(proc_info, [0, -2, 130], process=ros2_launch)
