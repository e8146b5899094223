"""The optical-flow node: camera images in, FlowNet 2.0 flow out (``ros2 run flownet2_ros flow_node``).

A managed (lifecycle) node serving one or several cameras with one backend.  ``configure`` creates the
backend (:func:`~flownet2_ros.backends.create_estimator`) and each camera's publishers, ``activate``
subscribes to the cameras and starts the inference worker, ``deactivate`` stops both, ``cleanup`` releases
the backend.  With ``autostart`` (default) ``main`` configures and activates the node itself.  The node
knows nothing of models: it only talks to a :class:`~flownet2_ros.backends.FlowEstimator`.

Cameras
-------
``cameras`` empty: one camera on ``image`` (``image/compressed``), outputs ``flow``, ...  ``cameras:
[front, rear]``: camera ``front`` subscribes ``front/image`` and publishes ``front/flow``, ...  Every name
is relative and remappable.  Each camera's ``camera_info`` is the sibling of its *resolved* image topic
(``image:=/cam/image_raw`` → ``/cam/camera_info``), as image_transport's CameraSubscriber does; remapping
``camera_info`` (``<name>/camera_info``) explicitly overrides that.  Infos are matched to frames by stamp:
exact, else the newest within one frame period.

Per frame
---------
Subscription callback (executor thread): if no output of the camera has a subscriber the frame is only
counted (the network does not run; the pair restarts when a subscriber appears).  Otherwise message →
zero-copy array view (or JPEG/PNG decode, sized from its header first) → RGB (a conversion into the
camera's reused buffer for non-rgb8 encodings) → the camera's :class:`FramePairer` (its one copy of the
frame) → the pair goes into a :class:`LatestPerKey` slot under the camera's name (a pair still waiting
when the same camera's next one arrives is dropped and counted).  Worker thread: takes every pending pair
at once (pairs of several cameras ready together) and runs them in one ``estimate_batch`` call, writing
each flow straight into the data buffer of that camera's outgoing ``flow`` message; magnitude and colour
are computed from it straight into the buffers of their messages; messages are reused from frame to frame.
Outputs without subscribers are not computed.

Topics per camera (relative, remappable): ``image`` or ``image/compressed`` and ``camera_info`` in;
``flow`` (32FC2), ``flow/magnitude`` (32FC1), ``flow/color`` (rgb8), ``flow/camera_info``,
``flow/previous_stamp`` (sensor_msgs/TimeReference) out; ``/diagnostics`` (one status per camera).
"""

from __future__ import annotations

import functools
import os
import posixpath
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, TimeReference
from std_msgs.msg import Header

from ..backends import BackendConfig, BackendError, BackendInfo, FlowEstimator, FlowRequest, create_estimator
from ..flowio.visualize import flow_magnitude, flow_to_color
from .diagnostics import BACKEND_ERROR, INTERNAL_ERROR, ErrorThrottle, FlowStats, build_status
from .image_convert import (
    KIND_CONVERSION_FAILED,
    KIND_UNSUPPORTED_ENCODING,
    ImageConversionError,
    RgbScratch,
    compressed_msg_to_rgb,
    header_stamp_seconds,
    image_msg_to_rgb,
)
from .pairing import FrameInfo, FramePairer, LatestPerKey, PairDecision, PairReason, StampMatcher
from .parameters import SPECS, FlowNodeSettings, check_change, declare_parameters, read_settings

__all__ = [
    "EstimatorFactory",
    "FlowNode",
    "camera_topics",
    "input_qos",
    "main",
    "output_qos",
    "sibling_topic",
]

#: ``(backend name, config) -> (estimator, sentence saying what was chosen)``; ``create_estimator``
#: by default, a stand-in in tests.
EstimatorFactory = Callable[[str, BackendConfig], tuple[FlowEstimator, str]]

#: Each camera's outputs: key -> (message type, topic relative to the camera).
OUTPUTS: dict[str, tuple[type, str]] = {
    "flow": (Image, "flow"),
    "magnitude": (Image, "flow/magnitude"),
    "color": (Image, "flow/color"),
    "camera_info": (CameraInfo, "flow/camera_info"),
    "previous_stamp": (TimeReference, "flow/previous_stamp"),
}

_NATIVE_BIG_ENDIAN = int(sys.byteorder == "big")


def _qos(depth: int, reliability: ReliabilityPolicy) -> QoSProfile:
    """Keep-last ``depth``, volatile, with the given reliability."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=reliability,
        durability=DurabilityPolicy.VOLATILE,
    )


def input_qos(depth: int, reliability: str = "best_effort") -> QoSProfile:
    """Input QoS (REP 2003 sensor data by default): keep-last ``depth``, ``best_effort`` or ``reliable``.

    Best effort matches every publisher and never slows a camera driver; reliable (against a reliable
    publisher) re-sends lost DDS fragments, which large images over UDP need.
    """
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return _qos(depth, policy)


def output_qos(depth: int) -> QoSProfile:
    """Reliable outputs: subscribers get every flow frame the node computes."""
    return _qos(depth, ReliabilityPolicy.RELIABLE)


def sibling_topic(topic: str, name: str) -> str:
    """The topic ``name`` next to ``topic``: ``/cam/image_raw`` → ``/cam/camera_info``."""
    return posixpath.join(posixpath.dirname(topic) or "/", name)


def camera_topics(resolve: Callable[[str, bool], str], prefix: str, transport: str) -> tuple[str, str, str]:
    """``(image topic, subscribed topic, camera_info topic)`` of the camera whose names start with ``prefix``.

    ``resolve(name, only_expand)`` resolves a relative name (remapping applied unless ``only_expand``).  The
    image topic is ``<prefix>image`` after remapping; compressed frames come from ``<image>/compressed``; the
    camera_info is the image topic's sibling (image_transport's convention), unless ``<prefix>camera_info``
    itself was remapped, which then wins.
    """
    image = resolve(prefix + "image", False)
    info_name = prefix + "camera_info"
    remapped = resolve(info_name, False)
    info = remapped if remapped != resolve(info_name, True) else sibling_topic(image, "camera_info")
    subscribed = f"{image}/compressed" if transport == "compressed" else image
    return image, subscribed, info


class _ImageOutput:
    """An outgoing ``Image`` reused across frames, with a numpy view on its ``data`` buffer.

    ``view(h, w)`` returns an ``(h, w[, channels])`` array that *is* the message's pixel buffer:
    computing into it fills the message without a copy.  The buffer is replaced only when the size
    changes.  ``rclpy`` copies the message when publishing, so reusing it for the next frame is safe.
    """

    def __init__(self, encoding: str, dtype: type[np.generic], channels: int) -> None:
        self.encoding = encoding
        self.dtype = np.dtype(dtype)
        self.channels = channels
        self.msg: Image | None = None
        self.array: np.ndarray | None = None

    def view(self, height: int, width: int) -> np.ndarray:
        if self.msg is None or self.array is None or (self.msg.height, self.msg.width) != (height, width):
            self.array = None  # release the old buffer's export before the message goes away
            msg = Image()
            msg.height, msg.width = height, width
            msg.encoding = self.encoding
            msg.is_bigendian = _NATIVE_BIG_ENDIAN if self.dtype.itemsize > 1 else 0
            msg.step = width * self.channels * self.dtype.itemsize
            msg.data.frombytes(bytes(msg.step * height))  # once per size, not per frame
            shape = (height, width) if self.channels == 1 else (height, width, self.channels)
            self.array = np.frombuffer(msg.data, dtype=self.dtype).reshape(shape)
            self.msg = msg
        return self.array

    def stamped(self, header: Header) -> Image:
        assert self.msg is not None
        self.msg.header = header
        return self.msg


class Camera:
    """One camera's state in the node: topics, pairer, buffers, outputs, counters.

    Callback-thread state: ``pairer`` pushes, ``scratch``, ``prev_header``/``prev_key``, ``idle``.  Worker
    state: the three reused output messages and the scaled camera_info cache.  ``stats`` and ``infos``
    are thread-safe.
    """

    def __init__(self, name: str) -> None:
        self.name = name  #: "" for the node's single camera
        self.prefix = f"{name}/" if name else ""
        self.stats = FlowStats()
        self.scratch = RgbScratch()
        self.infos: StampMatcher[CameraInfo] = StampMatcher()
        self.pairer: FramePairer | None = None
        self.pubs: dict[str, Any] = {}
        self.subs: list[Any] = []
        self.image_topic = ""  #: resolved image topic
        self.input_topic = ""  #: resolved subscribed topic (image or image/compressed)
        self.info_topic = ""  #: resolved camera_info topic
        self.prev_header: Header | None = None
        self.prev_key = 0
        self.idle = False
        self.out_flow = _ImageOutput("32FC2", np.float32, 2)
        self.out_mag = _ImageOutput("32FC1", np.float32, 1)
        self.out_color = _ImageOutput("rgb8", np.uint8, 3)
        self.scaled_info = ScaledInfoCache()

    @property
    def label(self) -> str:
        return self.name or "camera"

    def has_subscribers(self) -> bool:
        """True when any output of this camera has a subscriber (publishers exist once configured)."""
        return any(pub.get_subscription_count() > 0 for pub in self.pubs.values())

    def forget(self) -> None:
        """Drop the stream state: the next frame starts a new pair."""
        if self.pairer is not None:
            self.pairer.reset()
        self.prev_header = None


@dataclass(eq=False)
class _Job:
    """A frame pair handed from a subscription callback to the worker."""

    camera: Camera
    decision: PairDecision
    header: Header
    prev_stamp: TimeMsg
    key1: int
    key2: int
    callback_s: float  # time spent in the subscription callback (node overhead)

    def release(self) -> None:
        self.decision.release()


class FlowNode(LifecycleNode):
    """Managed optical-flow node; see the module docstring.

    ``estimator_factory``: how the backend is created on configure (default
    :func:`~flownet2_ros.backends.create_estimator`); tests inject a stand-in estimator here.
    Other keyword arguments go to :class:`rclpy.node.Node` (``context``, ``namespace``,
    ``parameter_overrides``, ``cli_args``, ...).
    """

    def __init__(
        self,
        node_name: str = "flownet2",
        *,
        estimator_factory: EstimatorFactory | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(node_name, **kwargs)
        self._factory: EstimatorFactory = estimator_factory or create_estimator
        self._param_problems = declare_parameters(self)
        self.settings: FlowNodeSettings = read_settings(self)
        log = self.get_logger()
        for name, reason in self._param_problems.items():
            log.error(f"parameter {name}: {reason}; the default is used and configure will fail")
        if self.settings.transport:
            log.warning(
                "parameter 'transport' is deprecated and goes away in the next release: use "
                f"'image_transport' (now {self.settings.input_transport!r})"
            )

        #: lifecycle state label (unconfigured, inactive, active, finalized), kept by the transitions
        self.lifecycle_state = "unconfigured"
        self.failure: str | None = None  #: why the last configure failed (None after a success)
        self._throttle = ErrorThrottle()
        self._estimator: FlowEstimator | None = None
        self._backend_info: BackendInfo | None = None
        self._backend_reason = ""
        self._network_sizes: dict[tuple[int, int], tuple[int, int]] = {}

        #: the cameras this node serves, in the order of the ``cameras`` parameter
        self.cameras: list[Camera] = [Camera(name) for name in self.settings.cameras] or [Camera("")]
        transport = self.settings.input_transport

        def resolve(name: str, only_expand: bool) -> str:
            return self.resolve_topic_name(name, only_expand=only_expand)

        for camera in self.cameras:
            camera.image_topic, camera.input_topic, camera.info_topic = camera_topics(
                resolve, camera.prefix, transport
            )
        self.input_topic = self.cameras[0].input_topic  #: the first camera's subscribed topic

        self._slot: LatestPerKey[str, _Job] | None = None
        self._worker: threading.Thread | None = None
        self._generation = 0  # bumped on deactivate: a late result of an old activation is not published
        self._seq = 0  # frame keys, unique across cameras (callback thread)
        self._worker_lock = threading.Lock()  # held while a batch is processed (cleanup waits on it)
        self.batches = 0  #: estimate_batch calls made (worker thread)
        self.batched_pairs = 0  #: pairs run in them

        self._diag_pub = self.create_publisher(
            DiagnosticArray,
            "/diagnostics",
            output_qos(10),
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
        )
        self._diag_timer = self.create_timer(self.settings.diagnostics_period_s, self.publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    @property
    def stats(self) -> FlowStats:
        """The first camera's counters (the only camera's, without ``cameras``)."""
        return self.cameras[0].stats

    def camera(self, name: str) -> Camera:
        """The camera called ``name`` ("" for the single camera)."""
        for camera in self.cameras:
            if camera.name == name:
                return camera
        raise KeyError(f"no camera {name!r}; cameras: {[c.name for c in self.cameras]}")

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> bool:
        """Configure and activate (what ``autostart`` does); False when a transition failed."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def backend_config(self) -> BackendConfig:
        """The backend configuration the parameters ask for."""
        s = self.settings
        return BackendConfig(
            checkpoint=s.checkpoint,
            engine=s.engine,
            model=s.model,
            device=s.device,
            precision=s.precision,
            network_size=s.network_size,
            onnx=s.onnx,
            engine_cache_dir=s.engine_cache_dir,
            allow_rebuild=s.allow_engine_rebuild,
            cuda_graph=s.cuda_graph,
            compile=s.compile,
            max_network_pixels=s.max_network_pixels,
            threads=s.inference_threads(os.cpu_count()),
        )

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        s = self.settings
        problems = dict(self._param_problems)
        if (s.network_width == 0) != (s.network_height == 0):
            problems["network_width/network_height"] = "both must be 0 (automatic) or both be set"
        if problems:
            return self._configure_failed(
                "invalid parameters: " + "; ".join(f"{k}: {v}" for k, v in problems.items())
            )
        config = self.backend_config()
        try:
            estimator, why = self._factory(s.backend, config)
        except BackendError as exc:
            return self._configure_failed(f"cannot create the '{s.backend}' backend: {exc}")
        except Exception as exc:  # a broken installation must not kill the node either
            return self._configure_failed(
                f"cannot create the '{s.backend}' backend: {type(exc).__name__}: {exc}"
            )
        self._estimator = estimator
        self._backend_reason = why
        for note in getattr(estimator, "notes", ()):  # options the backend ignores on this machine
            log.warning(f"backend: {note}")
        self._backend_info = self._safe_info()
        self._network_sizes.clear()
        info = self._backend_info
        log.info(
            f"backend {why}; "
            + (f"{info.model} on {info.device}, {info.precision}" if info is not None else "no info")
            + f"; {len(self.cameras)} camera(s), {config.threads} inference thread(s)"
        )
        qos = output_qos(s.qos_depth)
        overrides = QoSOverridingOptions.with_default_policies()
        for camera in self.cameras:
            camera.pubs = {
                key: self.create_lifecycle_publisher(
                    msg_type, camera.prefix + topic, qos, qos_overriding_options=overrides
                )
                for key, (msg_type, topic) in OUTPUTS.items()
            }
            camera.pairer = FramePairer(s.max_pair_gap_s or None)
        self.failure = None
        self.lifecycle_state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        self.get_logger().error(f"configure failed: {reason}")
        self.failure = reason
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        s = self.settings
        self._generation += 1
        self._slot = LatestPerKey(on_drop=_Job.release)
        self._worker = threading.Thread(
            target=self._work, args=(self._slot, self._generation), name="flow_worker", daemon=True
        )
        self._worker.start()
        overrides = QoSOverridingOptions.with_default_policies()
        image_qos = input_qos(s.qos_depth, s.input_reliability)
        info_qos = input_qos(max(5, s.qos_depth), s.input_reliability)
        compressed = s.input_transport == "compressed"
        for camera in self.cameras:
            camera.forget()
            camera.idle = False
            if compressed:
                sub = self.create_subscription(
                    CompressedImage,
                    camera.input_topic,
                    functools.partial(self._on_compressed, camera),
                    image_qos,
                    qos_overriding_options=overrides,
                )
            else:
                sub = self.create_subscription(
                    Image,
                    camera.input_topic,
                    functools.partial(self._on_image, camera),
                    image_qos,
                    qos_overriding_options=overrides,
                )
            info_sub = self.create_subscription(
                CameraInfo,
                camera.info_topic,
                functools.partial(self._on_camera_info, camera),
                info_qos,
                qos_overriding_options=overrides,
            )
            camera.subs = [sub, info_sub]
            self.get_logger().info(
                f"active: {camera.label}: flow from {sub.topic_name} ({s.input_reliability}), "
                f"camera_info from {info_sub.topic_name}, outputs under {self.resolve_topic_name(camera.prefix + 'flow')}"
            )
        self.lifecycle_state = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing(timeout=10.0)
        self.lifecycle_state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_all()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_all()
        self.lifecycle_state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("a lifecycle transition raised; releasing everything (back to unconfigured)")
        try:
            self._release_all()
        except Exception as exc:
            self.get_logger().error(f"release after error failed: {exc}")
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self, timeout: float) -> None:
        """Unsubscribe and stop the worker (waits up to ``timeout`` s for a batch in flight)."""
        self._generation += 1
        for camera in self.cameras:
            for sub in camera.subs:
                self.destroy_subscription(sub)
            camera.subs = []
        if self._slot is not None:
            self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                self.get_logger().warning(f"the backend is still busy after {timeout:.0f} s; not waiting")
        self._slot = None
        self._worker = None
        for camera in self.cameras:
            camera.forget()

    def _release_all(self) -> None:
        """Stop processing, destroy the publishers and close the backend (frees its device memory)."""
        self._stop_processing(timeout=10.0)
        # A batch that outlived the join above finishes before its publishers and backend go away.
        locked = self._worker_lock.acquire(timeout=30.0)
        if not locked:
            self.get_logger().warning("the backend is still busy after 40 s; releasing it anyway")
        try:
            destroy = getattr(self, "destroy_lifecycle_publisher", self.destroy_publisher)
            for camera in self.cameras:
                for pub in camera.pubs.values():
                    destroy(pub)
                camera.pubs = {}
            estimator, self._estimator = self._estimator, None
            if estimator is not None:
                try:
                    estimator.close()
                except Exception as exc:
                    self.get_logger().error(f"closing the backend failed: {exc}")
        finally:
            if locked:
                self._worker_lock.release()
        self._backend_info = None
        self._backend_reason = ""
        for camera in self.cameras:
            camera.pairer = None
            camera.scratch = RgbScratch()
            camera.infos.clear()
            camera.scaled_info.clear()

    def destroy_node(self) -> None:
        """Release the backend and stop the worker, then destroy the node."""
        if self.lifecycle_state in ("inactive", "active"):
            try:
                self._release_all()
            except Exception as exc:
                self.get_logger().error(f"release on destroy failed: {exc}")
        super().destroy_node()

    def _safe_info(self) -> BackendInfo | None:
        try:
            return None if self._estimator is None else self._estimator.info
        except Exception:
            return None

    # ----------------------------------------------------------------------------------- parameters

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            if param.name not in SPECS:
                continue  # use_sim_time, qos_overrides.*: rclpy's own
            reason = check_change(param.name, param.value, self.lifecycle_state)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        # All valid (and this is the only callback): apply now; rclpy stores the values after return.
        changed = {p.name: p.value for p in params if p.name in SPECS}
        old_period = self.settings.diagnostics_period_s
        self.settings.update(changed)
        if "max_pair_gap_s" in changed:
            for camera in self.cameras:
                if camera.pairer is not None:
                    camera.pairer.max_pair_gap_s = self.settings.max_pair_gap_s or None
        if self.settings.diagnostics_period_s != old_period:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(self.settings.diagnostics_period_s, self.publish_diagnostics)
        if any(SPECS[name].when == "configure" for name in changed):
            self._param_problems = {k: v for k, v in self._param_problems.items() if k not in changed}
        return SetParametersResult(successful=True)

    # ----------------------------------------------------------------------------------- callbacks

    def _report(self, camera: Camera, kind: str, text: str) -> None:
        """Count an error of ``kind`` for ``camera``; log at most once per ``error_log_period_s`` per kind."""
        camera.stats.error(kind)
        log_now, held = self._throttle.allow(f"{camera.name}:{kind}", self.settings.error_log_period_s)
        if log_now:
            more = f" ({held} more since the last report)" if held else ""
            where = f"{camera.name}: " if camera.name else ""
            self.get_logger().error(f"{where}{text}{more}")

    def _bad_input(self, camera: Camera, exc: Exception) -> None:
        if isinstance(exc, ImageConversionError):
            if exc.kind == KIND_UNSUPPORTED_ENCODING:
                camera.stats.encoding_refused(str(getattr(exc, "encoding", None) or "?"))
            self._report(camera, exc.kind, f"frame skipped: {exc}")
        else:  # anything a malformed message can still trigger
            self._report(camera, KIND_CONVERSION_FAILED, f"frame skipped: {type(exc).__name__}: {exc}")

    def _admit(self, camera: Camera, header: Header) -> bool:
        """Count a received frame; False when it is not to be processed (no output has a subscriber)."""
        camera.stats.frame_received()
        if camera.has_subscribers():
            if camera.idle:
                camera.idle = False
                self.get_logger().info(f"{camera.label}: an output has a subscriber again; flow resumes")
            return True
        if not camera.idle:
            camera.idle = True
            camera.forget()  # the first frame after a subscriber appears starts a fresh pair
            self.get_logger().info(
                f"{camera.label}: no output has a subscriber; idle (the network does not run)"
            )
        camera.stats.frame_idle()
        camera.stats.frame_stamp(header_stamp_seconds(header))  # a well-formed frame that arrived
        return False

    def _on_image(self, camera: Camera, msg: Image) -> None:
        start = time.perf_counter()
        if not self._admit(camera, msg.header):
            return
        try:
            rgb, encoding = image_msg_to_rgb(msg, self.settings.max_image_pixels, camera.scratch)
        except Exception as exc:
            self._bad_input(camera, exc)
            return
        self._push(camera, msg.header, rgb, encoding, start)

    def _on_compressed(self, camera: Camera, msg: CompressedImage) -> None:
        start = time.perf_counter()
        if not self._admit(camera, msg.header):
            return
        try:
            rgb = compressed_msg_to_rgb(msg, self.settings.max_image_pixels)
        except Exception as exc:
            self._bad_input(camera, exc)
            return
        self._push(camera, msg.header, rgb, f"compressed:{str(msg.format)[:64]}", start)

    def _push(self, camera: Camera, header: Header, rgb: np.ndarray, encoding: str, start: float) -> None:
        pairer, slot = camera.pairer, self._slot
        if pairer is None or slot is None:
            return
        try:
            info = FrameInfo(
                stamp=header_stamp_seconds(header),
                height=int(rgb.shape[0]),
                width=int(rgb.shape[1]),
                encoding=encoding,
                frame_id=str(header.frame_id),
            )
            camera.stats.frame_stamp(info.stamp)  # the lost-frame estimate sees well-formed frames only
            decision = pairer.push(info, rgb)
        except Exception as exc:
            self._report(
                camera, INTERNAL_ERROR, f"frame skipped: pairing failed: {type(exc).__name__}: {exc}"
            )
            return
        self._seq += 1
        prev_key, camera.prev_key = camera.prev_key, self._seq
        prev_header, camera.prev_header = camera.prev_header, header
        if not decision.paired:
            if decision.reason is not PairReason.FIRST_FRAME:
                camera.stats.pair_reset(decision.reason.value)
                log_now, held = self._throttle.allow(
                    f"{camera.name}:pair_reset", self.settings.error_log_period_s
                )
                if log_now:
                    self.get_logger().warning(
                        f"{camera.label}: frame pair reset ({decision.reason.value}): previous "
                        f"{decision.prev_info}, current {info}"
                        + (f" ({held} more since the last report)" if held else "")
                    )
            return
        assert prev_header is not None
        job = _Job(
            camera=camera,
            decision=decision,
            header=header,
            prev_stamp=prev_header.stamp,
            key1=prev_key,
            key2=self._seq,
            callback_s=time.perf_counter() - start,
        )
        if slot.offer(camera.name, job) or slot.closed:
            camera.stats.frame_dropped()

    def _on_camera_info(self, camera: Camera, msg: CameraInfo) -> None:
        try:
            camera.infos.add(header_stamp_seconds(msg.header), msg)
        except Exception as exc:
            self._report(camera, KIND_CONVERSION_FAILED, f"camera_info skipped: {type(exc).__name__}: {exc}")

    # -------------------------------------------------------------------------------------- worker

    def _work(self, slot: LatestPerKey[str, _Job], generation: int) -> None:
        while True:
            jobs = slot.take_all()
            if not jobs:
                return  # closed
            try:
                with self._worker_lock:
                    self._process(jobs, generation)
            except Exception as exc:  # never let the worker die
                for job in jobs:
                    self._report(job.camera, INTERNAL_ERROR, f"frame lost: {type(exc).__name__}: {exc}")
            finally:
                for job in jobs:
                    job.release()

    def _output_size(self, estimator: FlowEstimator, height: int, width: int) -> tuple[int, int]:
        if self.settings.output_resolution == "input":
            return height, width
        fixed = self.settings.network_size
        if fixed is not None:
            return fixed
        size = self._network_sizes.get((height, width))
        if size is None:
            estimator.warmup(height, width)  # the backend picks its size for this input
            info = estimator.info
            size = info.network_size or (height, width)
            self._network_sizes[(height, width)] = size
            self._backend_info = info
        return size

    def _process(self, jobs: list[_Job], generation: int) -> None:
        """Run the pairs of ``jobs`` (at most one per camera) in one batch, then publish each camera's outputs."""
        estimator = self._estimator
        if estimator is None:
            return
        requests: list[FlowRequest] = []
        ready: list[_Job] = []
        for job in jobs:
            decision = job.decision
            if decision.prev_image is None or decision.image is None:
                continue
            try:
                out_h, out_w = self._output_size(estimator, decision.info.height, decision.info.width)
            except Exception as exc:
                self._report(job.camera, BACKEND_ERROR, f"backend failed: {type(exc).__name__}: {exc}")
                continue
            flow_buf = job.camera.out_flow.view(out_h, out_w)
            requests.append(
                FlowRequest(
                    decision.prev_image,
                    decision.image,
                    key1=job.key1,
                    key2=job.key2,
                    output_size=(out_h, out_w),
                    out=flow_buf,
                )
            )
            ready.append(job)
        if not requests:
            return
        t0 = time.perf_counter()
        try:
            flows = estimator.estimate_batch(requests)
        except Exception as exc:
            for job in ready:
                self._report(
                    job.camera, BACKEND_ERROR, f"backend failed on a frame pair: {type(exc).__name__}: {exc}"
                )
            return
        t1 = time.perf_counter()
        self.batches += 1
        self.batched_pairs += len(requests)
        for job, request, flow in zip(ready, requests, flows, strict=True):
            if generation != self._generation:
                return  # deactivated meanwhile
            assert request.out is not None
            if flow is not request.out:
                np.copyto(request.out, flow)
            try:
                self._publish(job, request.out, backend_s=t1 - t0)
            except Exception as exc:
                self._report(job.camera, INTERNAL_ERROR, f"publishing failed: {type(exc).__name__}: {exc}")

    def _publish(self, job: _Job, flow_buf: np.ndarray, backend_s: float) -> None:
        camera = job.camera
        pubs = camera.pubs
        if not pubs:
            return
        t1 = time.perf_counter()
        out_h, out_w = flow_buf.shape[:2]
        header = job.header
        s = self.settings
        want_mag = s.publish_magnitude and pubs["magnitude"].get_subscription_count() > 0
        want_color = s.publish_color and pubs["color"].get_subscription_count() > 0
        mag_buf = camera.out_mag.view(out_h, out_w) if want_mag else None
        if want_color:  # the magnitude comes out of the colour coding for free
            color_buf = camera.out_color.view(out_h, out_w)
            flow_to_color(flow_buf, s.color_max_flow or None, out=color_buf, magnitude_out=mag_buf)
        elif mag_buf is not None:
            flow_magnitude(flow_buf, out=mag_buf)
        # compute first, publish after: subscribers deserialising the flow would compete for the CPU
        if pubs["flow"].get_subscription_count():
            pubs["flow"].publish(camera.out_flow.stamped(header))
        if want_mag:
            pubs["magnitude"].publish(camera.out_mag.stamped(header))
        if want_color:
            pubs["color"].publish(camera.out_color.stamped(header))
        if pubs["previous_stamp"].get_subscription_count():
            pubs["previous_stamp"].publish(
                TimeReference(header=header, time_ref=job.prev_stamp, source="previous_frame")
            )
        if pubs["camera_info"].get_subscription_count():
            decision = job.decision
            info = self._scaled_camera_info(camera, decision, out_h, out_w)
            if info is not None:
                info.header = header
                pubs["camera_info"].publish(info)
        t2 = time.perf_counter()
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        camera.stats.frame_published(
            latency_s=(now_ns - stamp_ns) * 1e-9, backend_s=backend_s, overhead_s=job.callback_s + (t2 - t1)
        )

    def _scaled_camera_info(
        self, camera: Camera, decision: PairDecision, out_h: int, out_w: int
    ) -> CameraInfo | None:
        """The camera_info matching the current frame, scaled to the output grid (cached per info and size)."""
        period = decision.dt if decision.dt and decision.dt > 0 else camera.stats.loss.period
        src = camera.infos.match(decision.info.stamp, period)
        if src is None:
            return None
        return camera.scaled_info.get(src, decision.info, out_h, out_w)

    # --------------------------------------------------------------------------------- diagnostics

    def diagnostic_statuses(self) -> list[Any]:
        """One ``DiagnosticStatus`` per camera (named ``<node>: optical flow`` or ``… (<camera>)``)."""
        s = self.settings
        if self._estimator is not None:  # the network size is known once the first pair ran
            self._backend_info = self._safe_info() or self._backend_info
        mean_batch = self.batched_pairs / self.batches if self.batches else 0.0
        extra = [
            ("cameras", str(len(self.cameras))),
            ("batches", str(self.batches)),
            ("batch_size_mean", f"{mean_batch:.2f}"),
            ("input_reliability", s.input_reliability),
            ("image_transport", s.input_transport),
        ]
        statuses = []
        for camera in self.cameras:
            snap = camera.stats.snapshot(recent_s=max(5.0, 2.0 * s.diagnostics_period_s))
            name = f"{self.get_name()}: optical flow" + (f" ({camera.name})" if camera.name else "")
            statuses.append(
                build_status(
                    snap,
                    name=name,
                    state=self.lifecycle_state,
                    input_topic=camera.input_topic,
                    input_timeout_s=s.input_timeout_s,
                    backend=self._backend_info,
                    backend_reason=self._backend_reason,
                    failure=self.failure,
                    camera=camera.name,
                    idle=camera.idle,
                    extra=[("camera_info_topic", camera.info_topic), *extra],
                )
            )
        return statuses

    def publish_diagnostics(self) -> None:
        """Publish the cameras' statuses on ``/diagnostics`` (the timer does this every period)."""
        try:
            statuses = self.diagnostic_statuses()
            self._diag_pub.publish(
                DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=statuses)
            )
        except Exception as exc:
            self.get_logger().error(f"diagnostics failed: {type(exc).__name__}: {exc}")


class ScaledInfoCache:
    """A camera_info scaled to the flow's output grid, remade only when the source info or the grid
    changes (the node's and the bag tool's rule: intrinsics scaled by output / info size, the info's
    size falling back to the frame's when it is 0)."""

    def __init__(self) -> None:
        self._cached: tuple[CameraInfo, tuple[int, int], CameraInfo] | None = None

    def clear(self) -> None:
        self._cached = None

    def get(self, src: CameraInfo, frame: FrameInfo, out_h: int, out_w: int) -> CameraInfo:
        cached = self._cached
        if cached is not None and cached[0] is src and cached[1] == (out_h, out_w):
            return cached[2]
        in_w = src.width or frame.width
        in_h = src.height or frame.height
        scaled = scale_camera_info(src, out_w / in_w, out_h / in_h)
        scaled.width, scaled.height = out_w, out_h
        self._cached = (src, (out_h, out_w), scaled)
        return scaled


def scale_camera_info(info: CameraInfo, sx: float, sy: float) -> CameraInfo:
    """A copy of ``info`` for the image scaled by ``sx`` horizontally and ``sy`` vertically.

    Scales the intrinsics ``K`` and the projection ``P`` (fx, cx, Tx by ``sx``; fy, cy, Ty by ``sy``)
    and the ROI; distortion and rectification are unchanged; binning is reset (the scaled image is
    what the intrinsics describe).
    """
    out = CameraInfo()
    out.header = info.header
    out.width = round(info.width * sx)
    out.height = round(info.height * sy)
    out.distortion_model = info.distortion_model
    out.d = info.d
    k = np.array(info.k, dtype=np.float64).reshape(3, 3)
    k[0] *= sx
    k[1] *= sy
    out.k = k.reshape(9)
    out.r = info.r
    p = np.array(info.p, dtype=np.float64).reshape(3, 4)
    p[0] *= sx
    p[1] *= sy
    out.p = p.reshape(12)
    out.binning_x = 0
    out.binning_y = 0
    roi = info.roi
    out.roi.x_offset = round(roi.x_offset * sx)
    out.roi.y_offset = round(roi.y_offset * sy)
    out.roi.width = round(roi.width * sx)
    out.roi.height = round(roi.height * sy)
    out.roi.do_rectify = roi.do_rectify
    return out


def main(args: list[str] | None = None) -> None:
    """``flow_node``: run the node; with ``autostart`` it configures and activates itself."""
    rclpy.init(args=args)
    node: FlowNode | None = None
    try:
        node = FlowNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.settings.autostart and not node.start():
            node.get_logger().error(
                "autostart did not reach 'active'; the node stays up (see /diagnostics), fix the "
                "parameters and use `ros2 lifecycle set` to retry"
            )
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
