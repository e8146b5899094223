"""The flow node's parameters: one table of specs, declaration with descriptors, and validation.

Plain functions over an ``rclpy`` node, so that the table is the single source of truth for the node,
the YAML defaults (``config/flownet2.yaml``), the README table (:func:`markdown_table`) and the tests.

When a parameter may change
---------------------------
* ``startup`` (``read_only`` descriptor): fixed for the node's lifetime: ``autostart``, ``cameras``,
  ``image_transport``, ``input_reliability``, ``qos_depth`` (the subscriptions' topics and QoS-override
  parameters are made from them), and every path that loads code or weights (``checkpoint``, ``engine``,
  ``onnx``, ``engine_cache_dir``, ``allow_engine_rebuild``): loading a TensorRT engine runs native code, and
  anyone on the DDS domain can call a node's parameter services.
* ``configure``: read when the backend is created; may be changed only while the node is
  ``unconfigured`` (``ros2 lifecycle set <node> cleanup`` first), otherwise the change is rejected.
* ``runtime``: applied to the next frame (``color_max_flow``, logging periods, ...).

Every change is validated: ranges by the descriptors (rclpy checks those), choices and cross-field
rules by :func:`check_value` from the node's ``add_on_set_parameters_callback``.  A bad value is
rejected with a reason (``SetParametersResult(successful=False, reason=...)``).  A bad value in a YAML
file or on the command line does not stop the node: the default is used, the problem is logged and the
``configure`` transition fails with that reason, so the node stays up (``unconfigured``) and reports it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

__all__ = [
    "PARAMETERS",
    "SPECS",
    "FlowNodeSettings",
    "ParamSpec",
    "check_change",
    "check_value",
    "declare_parameters",
    "markdown_table",
    "read_settings",
]

STARTUP = "startup"
CONFIGURE = "configure"
RUNTIME = "runtime"

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_MAX_NETWORK_SIDE = 4096


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: default (its type is the parameter's type), description and constraints."""

    name: str
    default: bool | int | float | str | tuple[str, ...]
    description: str
    when: str = RUNTIME
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int, int] | None = None  # from, to, step
    float_range: tuple[float, float] | None = None  # from, to

    @property
    def type_name(self) -> str:
        return {bool: "bool", int: "int", float: "double", str: "string", tuple: "string[]"}[
            type(self.default)
        ]

    def descriptor(self) -> ParameterDescriptor:
        text = self.description
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        if self.when == CONFIGURE:
            text += " Read on configure; change it only while unconfigured."
        desc = ParameterDescriptor(
            name=self.name,
            type=_PARAM_TYPES[type(self.default)],
            description=text,
            read_only=self.when == STARTUP,
        )
        if self.choices:
            desc.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.int_range is not None:
            low, high, step = self.int_range
            desc.integer_range = [IntegerRange(from_value=low, to_value=high, step=step)]
        if self.float_range is not None:
            desc.floating_point_range = [
                FloatingPointRange(from_value=self.float_range[0], to_value=self.float_range[1], step=0.0)
            ]
        return desc


_PARAM_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
    tuple: ParameterType.PARAMETER_STRING_ARRAY,
}

PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "autostart",
        True,
        "Configure and activate the node by itself at startup; false: wait for `ros2 lifecycle set`.",
        when=STARTUP,
    ),
    ParamSpec(
        "cameras",
        (),
        "Camera names served by this node with one model: camera `<name>` subscribes `<name>/image` and "
        "`<name>/camera_info` and publishes `<name>/flow`, ...; empty: one camera on `image`.",
        when=STARTUP,
    ),
    ParamSpec(
        "backend",
        "auto",
        "Flow backend: tensorrt when an engine is given and usable here, else torch (auto).",
        when=CONFIGURE,
        choices=("auto", "torch", "tensorrt"),
    ),
    ParamSpec(
        "checkpoint",
        "",
        "Torch weights (official .pth.tar or a flownet2-train checkpoint); empty: the embedded default model.",
        when=STARTUP,
    ),
    ParamSpec("engine", "", "TensorRT engine file (backend tensorrt or auto).", when=STARTUP),
    ParamSpec(
        "onnx",
        "",
        "ONNX file the engine was built from; with allow_engine_rebuild, an engine that does not match this "
        "TensorRT/GPU is rebuilt from it.",
        when=STARTUP,
    ),
    ParamSpec(
        "allow_engine_rebuild",
        False,
        "Rebuild a mismatched or corrupt engine from `onnx` into engine_cache_dir (takes minutes once).",
        when=STARTUP,
    ),
    ParamSpec(
        "engine_cache_dir", "", "Folder for rebuilt engines; empty: next to the engine file.", when=STARTUP
    ),
    ParamSpec(
        "cuda_graph",
        False,
        "Capture inference in CUDA graphs (one per batch and network size), torch and TensorRT; ignored "
        "with a logged note on a CPU.",
        when=CONFIGURE,
    ),
    ParamSpec(
        "compile",
        False,
        "torch backend on CUDA: torch.compile the network (faster, but the first frame of each size takes "
        "minutes); ignored with a logged note on a CPU.",
        when=CONFIGURE,
    ),
    ParamSpec(
        "model",
        "",
        "Stack the weights must hold (FlowNet2, FlowNet2S, FlowNet2CSS, ...); empty: whatever they hold.",
        when=CONFIGURE,
    ),
    ParamSpec("device", "auto", "auto (CUDA when available), cpu, cuda or cuda:N.", when=CONFIGURE),
    ParamSpec(
        "precision",
        "auto",
        "Inference precision: auto is fp16 on CUDA and fp32 on a CPU; fp32 is true fp32 (no TF32); fp16 "
        "needs CUDA.",
        when=CONFIGURE,
        choices=("auto", "fp32", "fp16"),
    ),
    ParamSpec(
        "network_width",
        0,
        "Network input width in px, a multiple of 64; 0: nearest multiple of 64 of each frame's width "
        "(capped by max_network_pixels).",
        when=CONFIGURE,
        int_range=(0, _MAX_NETWORK_SIDE, 64),
    ),
    ParamSpec(
        "network_height",
        0,
        "Network input height in px, a multiple of 64; 0: nearest multiple of 64 of each frame's height "
        "(capped by max_network_pixels).",
        when=CONFIGURE,
        int_range=(0, _MAX_NETWORK_SIDE, 64),
    ),
    ParamSpec(
        "max_network_pixels",
        0,
        "Cap on the automatic network size (width x height): larger frames are downscaled for the network "
        "and their flow scaled back. 0: the model's own cap (the embedded model's is on its model card; "
        "other checkpoints 1024x576); otherwise at least 4096 (64x64).",
        when=CONFIGURE,
        int_range=(0, _MAX_NETWORK_SIDE * _MAX_NETWORK_SIDE, 1),
    ),
    ParamSpec(
        "torch_threads",
        0,
        "CPU threads for inference; 0: the machine's cores minus one (at least 1), leaving a core to the "
        "DDS receive threads.",
        when=CONFIGURE,
        int_range=(0, 1024, 1),
    ),
    ParamSpec(
        "output_resolution",
        "input",
        "Grid of the published flow: the input image's or the network's (vectors scaled to it).",
        choices=("input", "network"),
    ),
    ParamSpec(
        "image_transport",
        "raw",
        "Input transport, as in image_pipeline: raw subscribes `image` (sensor_msgs/Image), compressed "
        "`image/compressed` (jpeg/png).",
        when=STARTUP,
        choices=("raw", "compressed"),
    ),
    ParamSpec(
        "transport",
        "",
        "Deprecated alias of image_transport (removed in the next release); empty: unused.",
        when=STARTUP,
        choices=("", "raw", "compressed"),
    ),
    ParamSpec(
        "input_reliability",
        "best_effort",
        "QoS reliability of the image subscriptions: best_effort matches every publisher; reliable loses no "
        "DDS fragments of large images when the camera publishes reliable (most drivers do).",
        when=STARTUP,
        choices=("best_effort", "reliable"),
    ),
    ParamSpec(
        "qos_depth",
        2,
        "Depth of the input subscription queues and of the (reliable) output publishers.",
        when=STARTUP,
        int_range=(1, 100, 1),
    ),
    ParamSpec(
        "max_pair_gap_s",
        0.0,
        "Largest stamp gap between paired frames (s); a larger gap resets the pair. 0: no limit (streams "
        "of any rate pair; time jumps backwards and size changes still reset).",
        float_range=(0.0, 3600.0),
    ),
    ParamSpec(
        "color_max_flow",
        20.0,
        "Flow magnitude (px, output grid) drawn fully saturated on flow/color; 0: each frame's maximum.",
        float_range=(0.0, 100000.0),
    ),
    ParamSpec(
        "max_image_pixels",
        4096 * 4096,
        "Largest accepted input image (width x height); larger frames (compressed ones by their header, "
        "before decoding) are rejected and counted.",
        int_range=(1, 1 << 28, 1),
    ),
    ParamSpec(
        "diagnostics_period_s",
        1.0,
        "Period of the /diagnostics status (s); rates and latencies are averaged over it.",
        float_range=(0.1, 3600.0),
    ),
    ParamSpec(
        "error_log_period_s",
        5.0,
        "At most one log line per error kind per this many seconds (others are counted); 0: log all.",
        float_range=(0.0, 3600.0),
    ),
    ParamSpec(
        "input_timeout_s",
        3.0,
        "Diagnostics warn when an active camera has received no image for this long (s).",
        float_range=(0.1, 3600.0),
    ),
    ParamSpec("publish_color", True, "Publish flow/color (also skipped while it has no subscriber)."),
    ParamSpec("publish_magnitude", True, "Publish flow/magnitude (also skipped while it has no subscriber)."),
)

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}


@dataclass
class FlowNodeSettings:
    """The parameters' current values, typed (one attribute per :data:`PARAMETERS` entry)."""

    autostart: bool = True
    cameras: tuple[str, ...] = ()
    backend: str = "auto"
    checkpoint: str = ""
    engine: str = ""
    onnx: str = ""
    allow_engine_rebuild: bool = False
    engine_cache_dir: str = ""
    cuda_graph: bool = False
    compile: bool = False
    model: str = ""
    device: str = "auto"
    precision: str = "auto"
    network_width: int = 0
    network_height: int = 0
    max_network_pixels: int = 0
    torch_threads: int = 0
    output_resolution: str = "input"
    image_transport: str = "raw"
    transport: str = ""
    input_reliability: str = "best_effort"
    qos_depth: int = 2
    max_pair_gap_s: float = 0.0
    color_max_flow: float = 20.0
    max_image_pixels: int = 4096 * 4096
    diagnostics_period_s: float = 1.0
    error_log_period_s: float = 5.0
    input_timeout_s: float = 3.0
    publish_color: bool = True
    publish_magnitude: bool = True

    @property
    def network_size(self) -> tuple[int, int] | None:
        """(height, width) when both are set, else None (automatic)."""
        if self.network_width > 0 and self.network_height > 0:
            return self.network_height, self.network_width
        return None

    @property
    def input_transport(self) -> str:
        """The transport in effect: ``image_transport``, or the deprecated ``transport`` when only it is set."""
        if self.transport and self.image_transport == SPECS["image_transport"].default:
            return self.transport
        return self.image_transport

    def inference_threads(self, cores: int | None) -> int:
        """``torch_threads``, or for 0 the cores minus one (at least 1)."""
        return self.torch_threads or max(1, (cores or 1) - 1)

    def update(self, values: Mapping[str, Any]) -> None:
        """Set the attributes named in ``values`` (unknown names are ignored)."""
        for name, value in values.items():
            spec = SPECS.get(name)
            if spec is not None:
                setattr(self, name, _coerce(spec, value))


def _coerce(spec: ParamSpec, value: Any) -> Any:
    if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(spec.default, tuple):
        if value is None:  # a string array declared without a value (an empty list in YAML)
            return ()
        if isinstance(value, list | tuple):
            return tuple(value)
    return value


def check_value(name: str, raw: Any) -> str | None:
    """Why value ``raw`` is not acceptable for parameter ``name`` (``None`` when it is).

    Checks type, choices and ranges (the same as the descriptor, so that YAML values and direct calls
    are judged alike) and the rules descriptors cannot express (the device's form).  The one
    cross-field rule (network width and height both 0 or both set) is checked on configure, so that
    they can be changed one at a time.
    """
    spec = SPECS.get(name)
    if spec is None:
        return None
    value: Any = _coerce(spec, raw)
    if type(value) is not type(spec.default):  # exact: a bool is no int here
        return f"{name} must be a {spec.type_name}, got {type(value).__name__} {value!r}"
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if name == "device" and not _DEVICE.match(str(value)):
        return f"device must be auto, cpu, cuda or cuda:N, got {value!r}"
    checked: Any = value  # (the exact-type test above narrows `value` in mypy's eyes)
    if name == "cameras":
        return check_camera_names(checked)
    if name == "max_network_pixels" and 0 < int(checked) < 64 * 64:
        return (
            f"max_network_pixels out of range: 0 (the model's own cap) or at least 4096 (64x64), got {value}"
        )
    if spec.int_range is not None:
        low, high, step = spec.int_range
        integer = int(checked)
        if not low <= integer <= high:
            return f"{name} must be in [{low}, {high}], got {value}"
        if step > 1 and (integer - low) % step:
            return f"{name} must be a multiple of {step} (0 = automatic), got {value}"
    if spec.float_range is not None:
        low_f, high_f = spec.float_range
        number = float(checked)
        if not (math.isfinite(number) and low_f <= number <= high_f):
            return f"{name} must be in [{low_f:g}, {high_f:g}], got {value}"
    return None


_CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


def check_camera_names(names: tuple[str, ...]) -> str | None:
    """Why ``names`` is not a valid ``cameras`` list (None when it is): relative ROS names, no duplicates."""
    if not all(isinstance(n, str) for n in names):
        return "cameras must be a list of strings"
    for name in names:
        if not _CAMERA_NAME.match(name):
            return (
                f"camera name {name!r} is not a relative ROS name (letters, digits and _, parts separated "
                "by /, each starting with a letter)"
            )
    if len(set(names)) != len(names):
        return f"camera names must be unique, got {list(names)}"
    return None


def check_change(name: str, value: Any, state: str) -> str | None:
    """Why parameter ``name`` cannot become ``value`` now, in lifecycle ``state`` (None: it can)."""
    reason = check_value(name, value)
    if reason is not None:
        return reason
    spec = SPECS.get(name)
    if spec is not None and spec.when == STARTUP:
        return f"{name} is read-only: set it at startup (launch argument, params file or --ros-args -p)"
    if spec is not None and spec.when == CONFIGURE and state != "unconfigured":
        return (
            f"{name} is read when the backend is created: change it while the node is unconfigured "
            f"(it is {state}; use the cleanup transition first)"
        )
    return None


def declare_parameters(node: Node) -> dict[str, str]:
    """Declare every parameter on ``node`` with its descriptor.

    A YAML/command-line override that is invalid (wrong type, out of range, not a choice) does not
    raise: the parameter is declared with its default instead and ``{name: reason}`` is returned, so the
    node can refuse to configure with that reason.  An integer override for a double parameter
    (``color_max_flow: 20``) is accepted as the float it means.
    """
    problems: dict[str, str] = {}
    overrides: Mapping[str, Parameter] = getattr(node, "_parameter_overrides", {}) or {}
    for spec in PARAMETERS:
        descriptor = spec.descriptor()
        override = overrides.get(spec.name)
        value = spec.default
        ignore_override = False
        if override is not None:
            candidate = _coerce(spec, override.value)
            reason = check_value(spec.name, candidate)
            if reason is not None:
                problems[spec.name] = f"invalid value from parameter overrides: {reason}"
                ignore_override = True
            elif candidate is not override.value:  # int given for a double: declare the float
                value, ignore_override = candidate, True
        try:
            node.declare_parameter(spec.name, _declarable(value), descriptor, ignore_override=ignore_override)
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            problems[spec.name] = f"invalid value from parameter overrides: {exc}"
            node.declare_parameter(spec.name, _declarable(spec.default), descriptor, ignore_override=True)
    return problems


def _declarable(value: Any) -> Any:
    """What ``declare_parameter`` takes: a list for arrays, and the type alone for an empty string array
    (rclpy cannot tell an empty list's type; it is then declared unset and read back as ``()``)."""
    if isinstance(value, tuple):
        return list(value) if value else Parameter.Type.STRING_ARRAY
    return value


def read_settings(node: Node) -> FlowNodeSettings:
    """The node's current parameter values as :class:`FlowNodeSettings`."""
    settings = FlowNodeSettings()
    values: dict[str, Any] = {}
    for spec in PARAMETERS:
        try:
            values[spec.name] = node.get_parameter(spec.name).value
        except ParameterUninitializedException:  # an empty string array (declared by type alone)
            values[spec.name] = spec.default
    settings.update(values)
    return settings


def defaults() -> dict[str, Any]:
    """``{name: default}`` for every parameter (what ``config/flownet2.yaml`` holds; arrays as lists)."""
    return {spec.name: list(d) if isinstance(d := spec.default, tuple) else d for spec in PARAMETERS}


def markdown_table(specs: Iterable[ParamSpec] = PARAMETERS) -> str:
    """The parameters as a Markdown table (name, type, default, when it may change, description)."""
    when_text = {STARTUP: "startup (read-only)", CONFIGURE: "while unconfigured", RUNTIME: "any time"}
    lines = ["| parameter | type | default | changeable | description |", "|---|---|---|---|---|"]
    for spec in specs:
        default = spec.default
        shown = (
            "`[]`"
            if isinstance(default, tuple)
            else f'`"{default}"`'
            if isinstance(default, str)
            else f"`{str(default).lower()}`"
            if isinstance(default, bool)
            else f"`{default}`"
        )
        text = spec.description + (f" One of: {', '.join(spec.choices)}." if spec.choices else "")
        lines.append(f"| `{spec.name}` | {spec.type_name} | {shown} | {when_text[spec.when]} | {text} |")
    return "\n".join(lines)


# The settings dataclass and the table must not drift apart.
assert {f.name for f in fields(FlowNodeSettings)} == set(SPECS), (
    "FlowNodeSettings out of sync with PARAMETERS"
)
