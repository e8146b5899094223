"""Launch the FlowNet 2.0 optical-flow node (a managed node), optionally with RViz and a demo camera.

    ros2 launch flownet2_ros flownet2.launch.py image:=/camera/image_raw
    ros2 launch flownet2_ros flownet2.launch.py demo:=true checkpoint:=/path/FlowNet2-S.pth.tar
    ros2 launch flownet2_ros flownet2.launch.py autostart:=false   # then: ros2 lifecycle set /flownet2 configure

Arguments (``ros2 launch flownet2_ros flownet2.launch.py --show-args``):
image, camera_info, transport, params_file, backend, checkpoint, engine, namespace, autostart, rviz,
demo, demo_path, demo_rate_hz.  ``backend``/``checkpoint``/``engine`` left empty keep the values of
``params_file``.  ``demo:=true`` starts ``image_sequence_player`` on the bundled sequence, publishing
to the node's input topic, so that the node runs without a camera.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

PACKAGE = "flownet2_ros"

ARGUMENTS = (
    (
        "image",
        "image",
        "Camera image topic (remaps the node's `image`; `<image>/compressed` with transport:=compressed).",
    ),
    (
        "camera_info",
        "camera_info",
        "CameraInfo topic of that camera (optional; republished scaled on flow/camera_info).",
    ),
    (
        "transport",
        "",
        "raw (sensor_msgs/Image) or compressed (CompressedImage, jpeg/png); empty: as in params_file.",
    ),
    ("params_file", "", "Parameter YAML for the node; empty: the installed config/flownet2.yaml."),
    ("backend", "", "auto | torch | tensorrt; empty: as in params_file."),
    (
        "checkpoint",
        "",
        "Torch weights file; empty: as in params_file (there: empty = the embedded default model).",
    ),
    ("engine", "", "TensorRT engine file; empty: as in params_file."),
    ("namespace", "", "Namespace of the node(s)."),
    ("autostart", "true", "Configure and activate at startup; false: wait for `ros2 lifecycle set`."),
    ("rviz", "false", "Also start rviz2 with config/flownet2.rviz (flow/color, flow/magnitude)."),
    ("demo", "false", "Also play the bundled demo sequence into the node's input topic (no camera needed)."),
    ("demo_path", "", "Folder of images or video file for demo:=true; empty: the bundled sequence."),
    ("demo_rate_hz", "10.0", "Frame rate of the demo player."),
)


def _truthy(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _nodes(context: LaunchContext) -> list[Node]:
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    share = FindPackageShare(PACKAGE).perform(context)
    params_file = arg["params_file"] or f"{share}/config/flownet2.yaml"
    overrides: dict[str, object] = {"autostart": _truthy(arg["autostart"])}
    for name in ("transport", "backend", "checkpoint", "engine"):
        if arg[name]:
            overrides[name] = arg[name]
    image = arg["image"]
    remappings = [
        ("image", image),
        ("image/compressed", f"{image}/compressed"),
        ("camera_info", arg["camera_info"]),
    ]
    namespace = arg["namespace"]
    nodes = [
        Node(
            package=PACKAGE,
            executable="flow_node",
            name="flownet2",
            namespace=namespace,
            parameters=[params_file, overrides],  # later entries win: launch arguments over the file
            remappings=remappings,
            output="screen",
            emulate_tty=True,
        )
    ]
    if _truthy(arg["demo"]):
        demo_params: dict[str, object] = {"rate_hz": float(arg["demo_rate_hz"])}
        if arg["demo_path"]:
            demo_params["path"] = arg["demo_path"]
        nodes.append(
            Node(
                package=PACKAGE,
                executable="image_sequence_player",
                name="image_sequence_player",
                namespace=namespace,
                parameters=[demo_params],
                remappings=[("image", image), ("camera_info", arg["camera_info"])],
                output="screen",
            )
        )
    if _truthy(arg["rviz"]):
        nodes.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                namespace=namespace,
                arguments=["-d", f"{share}/config/flownet2.rviz"],
                remappings=[("image", image)],
                output="screen",
            )
        )
    return nodes


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=text)
        for name, default, text in ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
