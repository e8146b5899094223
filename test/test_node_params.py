"""Parameters (descriptors, validation, rejection with a reason) and lifecycle transitions of the flow node.

Transitions and parameter changes go through the node's real ROS services (``change_state``,
``get_state``, ``set_parameters``) called from a probe node, as ``ros2 lifecycle``/``ros2 param`` do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.parameter import Parameter
from test_flow_node import NodeHarness, image_msg

from flownet2_ros.backends import create_estimator
from flownet2_ros.backends.fixed import FixedFlowEstimator, fixed_factory
from flownet2_ros.ros.parameters import PARAMETERS, SPECS, check_value, defaults, markdown_table

pytestmark = pytest.mark.ros


def call(h: NodeHarness, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
    client = h.probe.create_client(srv_type, f"{h.namespace}/flownet2/{name}")
    try:
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        h.wait_for(future.done, timeout, what=f"{name} response")
        return future.result()
    finally:
        h.probe.destroy_client(client)


def transition(h: NodeHarness, transition_id: int) -> bool:
    request = ChangeState.Request()
    request.transition.id = transition_id
    return bool(call(h, ChangeState, "change_state", request).success)


def state(h: NodeHarness) -> str:
    return str(call(h, GetState, "get_state", GetState.Request()).current_state.label)


def set_remote(h: NodeHarness, **values: Any) -> list[Any]:
    request = SetParameters.Request()
    request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    return list(call(h, SetParameters, "set_parameters", request).results)


# ------------------------------------------------------------------------------------------- parameters


def test_descriptors_and_defaults(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(start=False)
    request = DescribeParameters.Request(names=[spec.name for spec in PARAMETERS])
    descriptors = {d.name: d for d in call(h, DescribeParameters, "describe_parameters", request).descriptors}
    for spec in PARAMETERS:
        d = descriptors[spec.name]
        assert d.description, spec.name
        assert d.read_only == (spec.when == "startup"), spec.name
    assert descriptors["network_width"].integer_range[0].step == 64
    assert descriptors["color_max_flow"].floating_point_range[0].from_value == 0.0
    assert descriptors["precision"].type == ParameterType.PARAMETER_STRING
    got = call(h, GetParameters, "get_parameters", GetParameters.Request(names=["backend", "qos_depth"]))
    assert [got.values[0].string_value, got.values[1].integer_value] == ["auto", 2]
    table = markdown_table()
    assert all(f"`{spec.name}`" in table for spec in PARAMETERS)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("network_width", 100, "step"),  # rclpy's range check (multiples of 64)
        ("network_height", -64, "range"),
        ("precision", "fp8", "precision must be one of auto, fp32, fp16"),
        ("backend", "onnx", "backend must be one of"),
        ("device", "gpu0", "device must be"),
        ("color_max_flow", -1.0, "range"),
        ("color_max_flow", "fast", "type"),
        ("output_resolution", "half", "output_resolution must be one of"),
        ("transport", "compressed", "read-only"),
        ("image_transport", "compressed", "read-only"),
        ("input_reliability", "reliable", "read-only"),
        ("qos_depth", 5, "read-only"),
        # paths that load code or weights are fixed at startup: anyone on the DDS domain can set parameters
        ("checkpoint", "/tmp/other.pth", "read-only"),
        ("engine", "/tmp/evil.engine", "read-only"),
        ("onnx", "/tmp/evil.onnx", "read-only"),
        ("engine_cache_dir", "/tmp", "read-only"),
        ("allow_engine_rebuild", True, "read-only"),
        ("cameras", ["a", "b"], "read-only"),
        ("torch_threads", -1, "range"),
        ("max_network_pixels", 10, "range"),
        ("diagnostics_period_s", 0.0, "range"),
    ],
)
def test_bad_values_are_rejected_with_a_reason(
    harness_factory: Callable[..., NodeHarness], name: str, value: Any, reason: str
) -> None:
    h = harness_factory(start=False)
    [result] = set_remote(h, **{name: value})
    assert not result.successful
    assert reason.lower() in result.reason.lower(), result.reason
    if name != "cameras":  # declared without a value: reading it raises "uninitialized"
        assert h.node.get_parameter(name).value == SPECS[name].default


def test_runtime_and_configure_time_parameters(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory()
    [ok] = set_remote(h, color_max_flow=5.0)
    assert ok.successful and h.node.settings.color_max_flow == 5.0
    results = set_remote(h, error_log_period_s=0.5, diagnostics_period_s=0.3, publish_color=False)
    assert all(r.successful for r in results)
    assert h.node.settings.error_log_period_s == 0.5 and h.node.settings.publish_color is False
    [ok] = set_remote(h, max_pair_gap_s=2.0)
    pairer = h.node.cameras[0].pairer
    assert ok.successful and pairer is not None and pairer.max_pair_gap_s == 2.0
    # configure-time parameters: rejected while configured, with the way out in the reason
    [rejected] = set_remote(h, backend="torch")
    assert not rejected.successful and "unconfigured" in rejected.reason
    [rejected] = set_remote(h, network_width=128)
    assert not rejected.successful and "cleanup" in rejected.reason
    assert h.node.get_parameter("backend").value == "auto"


def test_bad_overrides_do_not_kill_the_node(harness_factory: Callable[..., NodeHarness]) -> None:
    h = harness_factory(start=False, params={"precision": "fp8", "network_width": 100, "color_max_flow": 12})
    assert h.node.settings.color_max_flow == 12.0  # an integer for a double is taken as meant
    assert h.node.get_parameter("precision").value == "auto"  # the default replaced the bad value
    assert not transition(h, Transition.TRANSITION_CONFIGURE)
    assert state(h) == "unconfigured"
    assert h.node.failure is not None and "precision" in h.node.failure and "network_width" in h.node.failure
    # fixing them while unconfigured makes configure succeed
    assert all(r.successful for r in set_remote(h, precision="fp32", network_width=128, network_height=64))
    assert transition(h, Transition.TRANSITION_CONFIGURE)
    assert state(h) == "inactive"


def test_check_value_matches_the_descriptors() -> None:
    assert check_value("network_width", 128) is None
    assert check_value("network_width", 100) is not None
    assert check_value("color_max_flow", 3) is None  # int accepted for a double
    assert check_value("color_max_flow", float("nan")) is not None
    assert check_value("publish_color", 1) is not None
    assert check_value("device", "cuda:1") is None
    assert check_value("unknown_parameter", object()) is None


# -------------------------------------------------------------------------------------------- lifecycle


def test_lifecycle_transitions(harness_factory: Callable[..., NodeHarness]) -> None:
    estimator = FixedFlowEstimator()
    made: list[FixedFlowEstimator] = []

    def factory(name: str, config: Any) -> Any:
        made.append(FixedFlowEstimator())
        return fixed_factory(made[-1])(name, config)

    h = harness_factory(estimator=estimator, factory=factory, start=False, outputs=("flow",))
    assert state(h) == "unconfigured"
    assert h.image_pub.get_subscription_count() == 0

    assert transition(h, Transition.TRANSITION_CONFIGURE)
    assert state(h) == "inactive" and len(made) == 1
    time.sleep(0.2)
    assert h.image_pub.get_subscription_count() == 0  # no subscription before activate

    assert transition(h, Transition.TRANSITION_ACTIVATE)
    assert state(h) == "active"
    h.wait_connected()
    h.send(image_msg(1.0))
    h.send(image_msg(1.1, seed=1))
    h.wait_for(lambda: h.count("flow") == 1, what="flow while active")

    assert transition(h, Transition.TRANSITION_DEACTIVATE)
    assert state(h) == "inactive"
    h.wait_for(lambda: h.image_pub.get_subscription_count() == 0, what="unsubscribe")
    h.image_pub.publish(image_msg(1.2, seed=2))
    h.image_pub.publish(image_msg(1.3, seed=3))
    time.sleep(0.3)
    assert h.count("flow") == 1  # nothing processed while inactive

    assert transition(h, Transition.TRANSITION_CLEANUP)
    assert state(h) == "unconfigured" and made[0].closed and h.node._estimator is None
    assert all(r.successful for r in set_remote(h, precision="fp16", network_width=128, network_height=64))

    assert transition(h, Transition.TRANSITION_CONFIGURE) and transition(h, Transition.TRANSITION_ACTIVATE)
    assert len(made) == 2 and not made[1].closed
    h.wait_connected()
    h.send(image_msg(2.0))  # the pair was reset on deactivate: the first frame only starts a pair
    h.send(image_msg(2.1, seed=1))
    h.wait_for(lambda: h.count("flow") == 2, what="flow after re-activation")
    assert h.node.stats.resets == {}

    assert transition(h, Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert state(h) == "finalized" and made[1].closed


def test_configure_fails_cleanly_without_weights(
    harness_factory: Callable[..., NodeHarness], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pth"
    h = harness_factory(
        factory=create_estimator, start=False, params={"checkpoint": str(missing), "device": "cpu"}
    )
    assert not transition(h, Transition.TRANSITION_CONFIGURE)
    assert state(h) == "unconfigured"
    assert h.node.failure is not None and "missing.pth" in h.node.failure
    h.node.publish_diagnostics()  # reports the failure as ERROR
    assert h.node.lifecycle_state == "unconfigured"

    # the path is fixed at startup: it cannot be pointed elsewhere over the parameter services
    [rejected] = set_remote(h, checkpoint="")
    assert not rejected.successful and "read-only" in rejected.reason

    # empty checkpoint: the embedded default model, or a clear failure while the package carries none
    from flownet2_ros.models import default_checkpoint

    h2 = harness_factory(factory=create_estimator, start=False, params={"checkpoint": "", "device": "cpu"})
    configured = transition(h2, Transition.TRANSITION_CONFIGURE)
    if default_checkpoint() is None:
        assert not configured
        assert h2.node.failure is not None and "default" in h2.node.failure
    else:
        assert configured


# ------------------------------------------------------------------------------- config and launch files

REPO = Path(__file__).resolve().parents[1]


def test_config_yaml_holds_every_default() -> None:
    import yaml

    config = yaml.safe_load((REPO / "config" / "flownet2.yaml").read_text())
    params = config["/**/flownet2"]["ros__parameters"]
    assert params == defaults()
    for name, value in params.items():
        assert type(value) is type(defaults()[name]), name  # 20.0 stays a double, not an int


def test_rviz_config_shows_the_flow_images() -> None:
    import yaml

    rviz = yaml.safe_load((REPO / "config" / "flownet2.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    images = {d["Topic"]["Value"]: d for d in displays if d["Class"] == "rviz_default_plugins/Image"}
    assert {"flow/color", "flow/magnitude"} <= set(images)
    assert all(d["Enabled"] for d in images.values())
    assert images["flow/magnitude"]["Normalize Range"] is False  # fixed scale, px/frame


def test_launch_file_arguments() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("flownet2_launch", REPO / "launch" / "flownet2.launch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {arg.name for arg in description.get_launch_arguments()}
    expected = {
        "image",
        "params_file",
        "backend",
        "checkpoint",
        "engine",
        "namespace",
        "autostart",
        "rviz",
        "demo",
        "cameras",
        "image_transport",
        "input_reliability",
        "use_sim_time",
        "log_level",
    }
    assert expected <= names


def test_readme_parameter_table_is_the_generated_one() -> None:
    readme = (REPO / "README.md").read_text()
    assert markdown_table() in readme, (
        "README's parameter table differs from markdown_table(): paste it again"
    )


def test_inference_threads_leave_a_core_to_dds(harness_factory: Callable[..., NodeHarness]) -> None:
    import os

    h = harness_factory(start=False)
    assert h.node.backend_config().threads == max(1, (os.cpu_count() or 1) - 1)
    assert h.node.backend_config().max_network_pixels == 0  # the model's own cap
    h2 = harness_factory(start=False, params={"torch_threads": 3, "max_network_pixels": 320 * 256})
    assert (h2.node.backend_config().threads, h2.node.backend_config().max_network_pixels) == (3, 320 * 256)
