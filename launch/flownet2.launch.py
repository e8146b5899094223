"""Launch the FlowNet 2.0 optical-flow node (a managed node), optionally with RViz and demo cameras.

    ros2 launch flownet2_ros flownet2.launch.py image:=/camera/image_raw
    ros2 launch flownet2_ros flownet2.launch.py cameras:=front,rear     # front/image, rear/image, ... one model
    ros2 launch flownet2_ros flownet2.launch.py demo:=true checkpoint:=/path/FlowNet2-S.pth.tar
    ros2 launch flownet2_ros flownet2.launch.py demo_bag:=/data/drive.mcap    # a recorded camera instead
    ros2 launch flownet2_ros flownet2.launch.py autostart:=false   # then: ros2 lifecycle set /flownet2 configure

Arguments: ``ros2 launch flownet2_ros flownet2.launch.py --show-args``.  Those left empty keep the values
of ``params_file``.  ``demo:=true`` starts one ``image_sequence_player`` per camera on the bundled
sequence, publishing to that camera's image and camera_info topics, so that the node runs without a camera;
``demo_source:=bag`` plays the same sequence from the bundled demo bag, and ``demo_bag:=PATH`` plays a bag's
one image topic (and its camera_info) into each camera with the recorded stamps and spacing.
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
        "Camera image topic of the single camera (remaps the node's `image`; `<image>/compressed` with "
        "image_transport:=compressed). Its camera_info is the sibling topic `camera_info`.",
    ),
    (
        "camera_info",
        "",
        "CameraInfo topic, only to override the default: the sibling of the image topic "
        "(/cam/image_raw -> /cam/camera_info).",
    ),
    (
        "cameras",
        "",
        "Comma-separated camera names served by one node and one model (front,rear): camera <name> "
        "subscribes <name>/image and publishes <name>/flow...; empty: as in params_file (one camera).",
    ),
    (
        "image_transport",
        "",
        "raw (sensor_msgs/Image) or compressed (CompressedImage, jpeg/png); empty: as in params_file.",
    ),
    ("transport", "", "Deprecated alias of image_transport."),
    (
        "input_reliability",
        "",
        "best_effort or reliable (use reliable for large images from a reliable camera driver); empty: as "
        "in params_file.",
    ),
    ("params_file", "", "Parameter YAML for the node; empty: the installed config/flownet2.yaml."),
    ("backend", "", "auto | torch | tensorrt; empty: as in params_file."),
    (
        "checkpoint",
        "",
        "Torch weights file; empty: as in params_file (there: empty = the embedded default model).",
    ),
    ("engine", "", "TensorRT engine file; empty: as in params_file."),
    ("color_max_flow", "", "Flow (px) drawn fully saturated on flow/color; empty: as in params_file."),
    ("namespace", "", "Namespace of the node(s)."),
    ("autostart", "true", "Configure and activate at startup; false: wait for `ros2 lifecycle set`."),
    ("rviz", "false", "Also start rviz2 with config/flownet2.rviz (flow/color, flow/magnitude)."),
    ("demo", "false", "Also play the bundled demo sequence into the node's input topic (no camera needed)."),
    ("demo_path", "", "Folder of images or video file for demo:=true; empty: the bundled sequence."),
    ("demo_rate_hz", "10.0", "Frame rate of the demo player (folder source)."),
    (
        "demo_source",
        "folder",
        "What demo:=true plays: folder (the bundled image sequence, or demo_path) or bag (the bundled demo "
        "bag, the same frames and camera_info as MCAP, at its recorded 10 Hz times demo_bag_rate).",
    ),
    (
        "demo_bag",
        "",
        "Play this ROS 2 bag (folder, .mcap or .db3) into the node's camera(s), one player per camera "
        "(implies demo:=true): its one image topic and that topic's camera_info, recorded stamps and "
        "spacing, looping. A CompressedImage topic needs image_transport:=compressed.",
    ),
    ("demo_bag_rate", "1.0", "Playback speed factor of a demo bag (3.0: a 10 Hz recording at 30 Hz)."),
    ("use_sim_time", "false", "Use /clock for the nodes' time (playing a bag with --clock)."),
    ("log_level", "info", "Log level of the nodes: debug, info, warn, error or fatal."),
)


def _truthy(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def camera_names(text: str) -> list[str]:
    """``"front, rear"`` → ``["front", "rear"]`` (empty parts dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _nodes(context: LaunchContext) -> list[Node]:
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    share = FindPackageShare(PACKAGE).perform(context)
    params_file = arg["params_file"] or f"{share}/config/flownet2.yaml"
    sim_time = _truthy(arg["use_sim_time"])
    overrides: dict[str, object] = {"autostart": _truthy(arg["autostart"]), "use_sim_time": sim_time}
    for name in ("image_transport", "transport", "input_reliability", "backend", "checkpoint", "engine"):
        if arg[name]:
            overrides[name] = arg[name]
    if arg["color_max_flow"]:
        overrides["color_max_flow"] = float(arg["color_max_flow"])
    cameras = camera_names(arg["cameras"])
    if cameras:
        overrides["cameras"] = cameras
    image = arg["image"]
    remappings = [] if cameras else [("image", image)]
    if arg["camera_info"] and not cameras:
        remappings.append(("camera_info", arg["camera_info"]))
    namespace = arg["namespace"]
    ros_args = ["--ros-args", "--log-level", arg["log_level"]]
    nodes = [
        Node(
            package=PACKAGE,
            executable="flow_node",
            name="flownet2",
            namespace=namespace,
            parameters=[params_file, overrides],  # later entries win: launch arguments over the file
            remappings=remappings,
            arguments=ros_args,
            output="screen",
            emulate_tty=True,
        )
    ]
    demo_source = arg["demo_source"].strip().lower()
    if demo_source not in ("folder", "bag"):
        raise ValueError(f"demo_source must be folder or bag, got {arg['demo_source']!r}")
    if _truthy(arg["demo"]) or arg["demo_bag"]:
        demo_params: dict[str, object] = {"rate_hz": float(arg["demo_rate_hz"]), "use_sim_time": sim_time}
        if arg["demo_bag"] or demo_source == "bag":
            from flownet2_ros.ros.sequence_player import demo_bag_dir

            demo_params = {
                "bag": arg["demo_bag"] or str(demo_bag_dir()),
                "rate": float(arg["demo_bag_rate"]),
                "use_sim_time": sim_time,
            }
        elif arg["demo_path"]:
            demo_params["path"] = arg["demo_path"]
        # one player per camera, each on that camera's image topic and its sibling camera_info
        targets = [(f"{c}/image", f"{c}/camera_info", f"image_sequence_player_{c}") for c in cameras] or [
            (image, arg["camera_info"] or _sibling(image, "camera_info"), "image_sequence_player")
        ]
        for image_topic, info_topic, player in targets:
            frame_id = player.replace("image_sequence_player", "camera").strip("_") or "camera"
            nodes.append(
                Node(
                    package=PACKAGE,
                    executable="image_sequence_player",
                    name=player.replace("/", "_"),
                    namespace=namespace,
                    parameters=[{**demo_params, "frame_id": frame_id.replace("/", "_")}],
                    remappings=[
                        ("image", image_topic),
                        ("image/compressed", f"{image_topic}/compressed"),
                        ("camera_info", info_topic),
                    ],
                    arguments=ros_args,
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
                arguments=["-d", f"{share}/config/flownet2.rviz", *ros_args],
                remappings=[("image", image)],
                parameters=[{"use_sim_time": sim_time}],
                output="screen",
            )
        )
    return nodes


def _sibling(topic: str, name: str) -> str:
    head, _, _ = topic.rpartition("/")
    return f"{head}/{name}" if head else name


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=text)
        for name, default, text in ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
