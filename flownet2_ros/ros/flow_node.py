"""The optical-flow node: camera images in, FlowNet 2.0 flow out (``ros2 run flownet2_ros flow_node``).

A managed (lifecycle) node.  ``configure`` creates the backend (:func:`~flownet2_ros.backends.create_estimator`)
and the publishers, ``activate`` subscribes to the camera and starts the inference worker,
``deactivate`` stops both, ``cleanup`` releases the backend.  With ``autostart`` (default) ``main``
configures and activates the node itself.  The node knows nothing of models: it only talks to a
:class:`~flownet2_ros.backends.FlowEstimator`.

Per frame
---------
Subscription callback (executor thread): message → zero-copy array view (or JPEG/PNG decode) →
RGB (a conversion into a reused buffer for non-rgb8 encodings) → :class:`FramePairer` (its one copy of
the frame) → the pair goes into a :class:`LatestOnlySlot` (a pair still waiting when the next one
arrives is dropped and counted).  Worker thread: ``estimate`` writes the flow straight into the data
buffer of the outgoing ``flow`` message; magnitude and colour are computed from it straight into the
buffers of their messages; the messages are reused from frame to frame (publishing copies them into
the middleware), so no image-sized buffer is allocated or copied per frame beyond the pairer's copy and
the backend's own input copy.  Outputs without subscribers are not computed.

Topics (relative, remappable): ``image`` or ``image/compressed`` and ``camera_info`` in; ``flow``
(32FC2), ``flow/magnitude`` (32FC1), ``flow/color`` (rgb8), ``flow/camera_info``,
``flow/previous_stamp`` (sensor_msgs/TimeReference) out; ``/diagnostics``.
"""

from __future__ import annotations

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
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, TimeReference
from std_msgs.msg import Header

from ..backends import BackendConfig, BackendError, BackendInfo, FlowEstimator, create_estimator
from ..flowio.visualize import flow_magnitude, flow_to_color
from .diagnostics import BACKEND_ERROR, INTERNAL_ERROR, ErrorThrottle, FlowStats, build_status
from .image_convert import (
    KIND_CONVERSION_FAILED,
    ImageConversionError,
    compressed_msg_to_rgb,
    header_stamp_seconds,
    image_msg_to_array,
    to_rgb,
)
from .pairing import FrameInfo, FramePairer, LatestOnlySlot, PairDecision, PairReason
from .parameters import SPECS, FlowNodeSettings, check_change, declare_parameters, read_settings

__all__ = ["EstimatorFactory", "FlowNode", "main"]

#: ``(backend name, config) -> (estimator, sentence saying what was chosen)``; ``create_estimator``
#: by default, a stand-in in tests.
EstimatorFactory = Callable[[str, BackendConfig], tuple[FlowEstimator, str]]

_NATIVE_BIG_ENDIAN = int(sys.byteorder == "big")


def _qos(depth: int, reliability: ReliabilityPolicy) -> QoSProfile:
    """Keep-last ``depth``, volatile, with the given reliability."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=reliability,
        durability=DurabilityPolicy.VOLATILE,
    )


def _input_qos(depth: int) -> QoSProfile:
    """Sensor-data QoS (best effort): never blocks a camera driver."""
    return _qos(depth, ReliabilityPolicy.BEST_EFFORT)


def _output_qos(depth: int) -> QoSProfile:
    """Reliable outputs: subscribers get every flow frame the node computes."""
    return _qos(depth, ReliabilityPolicy.RELIABLE)


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


@dataclass(eq=False)
class _Job:
    """A frame pair handed from the subscription callback to the worker."""

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
        for name, reason in self._param_problems.items():
            self.get_logger().error(
                f"parameter {name}: {reason}; the default is used and configure will fail"
            )

        #: lifecycle state label (unconfigured, inactive, active, finalized), kept by the transitions
        self.lifecycle_state = "unconfigured"
        self.failure: str | None = None  #: why the last configure failed (None after a success)
        self.stats = FlowStats()
        self._throttle = ErrorThrottle()
        self._estimator: FlowEstimator | None = None
        self._backend_info: BackendInfo | None = None
        self._backend_reason = ""
        self._network_sizes: dict[tuple[int, int], tuple[int, int]] = {}

        self._pairer: FramePairer | None = None
        self._slot: LatestOnlySlot[_Job] | None = None
        self._worker: threading.Thread | None = None
        self._generation = 0  # bumped on deactivate: a late result of an old activation is not published
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._camera_info: CameraInfo | None = None
        self._scaled_info: tuple[CameraInfo, tuple[int, int], CameraInfo] | None = None
        self._info_lock = threading.Lock()

        # callback-thread state
        self._seq = 0
        self._prev_header: Header | None = None
        self._rgb_buffer: np.ndarray | None = None

        # worker-thread state: reused output messages
        self._out_flow = _ImageOutput("32FC2", np.float32, 2)
        self._out_mag = _ImageOutput("32FC1", np.float32, 1)
        self._out_color = _ImageOutput("rgb8", np.uint8, 3)
        self._worker_lock = threading.Lock()  # held while a job is processed (cleanup waits on it)

        self.input_topic = "image/compressed" if self.settings.transport == "compressed" else "image"
        self._diag_pub = self.create_publisher(
            DiagnosticArray,
            "/diagnostics",
            _output_qos(10),
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
        )
        self._diag_timer = self.create_timer(self.settings.diagnostics_period_s, self.publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> bool:
        """Configure and activate (what ``autostart`` does); False when a transition failed."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

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
        config = BackendConfig(
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
        )
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
        self._backend_info = self._safe_info()
        self._network_sizes.clear()
        info = self._backend_info
        log.info(
            f"backend {why}; "
            + (f"{info.model} on {info.device}, {info.precision}" if info is not None else "no info")
        )
        qos = _output_qos(s.qos_depth)
        overrides = QoSOverridingOptions.with_default_policies()
        self._pubs = {
            "flow": self.create_lifecycle_publisher(Image, "flow", qos, qos_overriding_options=overrides),
            "magnitude": self.create_lifecycle_publisher(
                Image, "flow/magnitude", qos, qos_overriding_options=overrides
            ),
            "color": self.create_lifecycle_publisher(
                Image, "flow/color", qos, qos_overriding_options=overrides
            ),
            "camera_info": self.create_lifecycle_publisher(
                CameraInfo, "flow/camera_info", qos, qos_overriding_options=overrides
            ),
            "previous_stamp": self.create_lifecycle_publisher(
                TimeReference, "flow/previous_stamp", qos, qos_overriding_options=overrides
            ),
        }
        self._pairer = FramePairer(s.max_pair_gap_s or None)
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
        self._slot = LatestOnlySlot(on_drop=_Job.release)
        self._worker = threading.Thread(
            target=self._work, args=(self._slot, self._generation), name="flow_worker", daemon=True
        )
        self._worker.start()
        if self._pairer is not None:
            self._pairer.reset()
        self._prev_header = None
        qos = _input_qos(s.qos_depth)
        overrides = QoSOverridingOptions.with_default_policies()
        if s.transport == "compressed":
            sub = self.create_subscription(
                CompressedImage, self.input_topic, self._on_compressed, qos, qos_overriding_options=overrides
            )
        else:
            sub = self.create_subscription(
                Image, self.input_topic, self._on_image, qos, qos_overriding_options=overrides
            )
        info_sub = self.create_subscription(
            CameraInfo, "camera_info", self._on_camera_info, _input_qos(1), qos_overriding_options=overrides
        )
        self._subs = [sub, info_sub]
        self.lifecycle_state = "active"
        self.get_logger().info(f"active: flow from {sub.topic_name}")
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
        """Unsubscribe and stop the worker (waits up to ``timeout`` s for a frame in flight)."""
        self._generation += 1
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._slot is not None:
            self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                self.get_logger().warning(f"the backend is still busy after {timeout:.0f} s; not waiting")
        self._slot = None
        self._worker = None
        if self._pairer is not None:
            self._pairer.reset()
        self._prev_header = None

    def _release_all(self) -> None:
        """Stop processing, destroy the publishers and close the backend (frees its device memory)."""
        self._stop_processing(timeout=10.0)
        # A job that outlived the join above finishes before its publishers and backend go away.
        locked = self._worker_lock.acquire(timeout=30.0)
        if not locked:
            self.get_logger().warning("the backend is still busy after 40 s; releasing it anyway")
        try:
            destroy = getattr(self, "destroy_lifecycle_publisher", self.destroy_publisher)
            for pub in self._pubs.values():
                destroy(pub)
            self._pubs = {}
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
        self._pairer = None
        self._rgb_buffer = None
        with self._info_lock:
            self._camera_info = None
            self._scaled_info = None

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
        if self._pairer is not None and "max_pair_gap_s" in changed:
            self._pairer.max_pair_gap_s = self.settings.max_pair_gap_s or None
        if self.settings.diagnostics_period_s != old_period:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(self.settings.diagnostics_period_s, self.publish_diagnostics)
        if any(SPECS[name].when == "configure" for name in changed):
            self._param_problems = {k: v for k, v in self._param_problems.items() if k not in changed}
        return SetParametersResult(successful=True)

    # ----------------------------------------------------------------------------------- callbacks

    def _report(self, kind: str, text: str) -> None:
        """Count an error of ``kind`` and log it, at most once per ``error_log_period_s`` per kind."""
        self.stats.error(kind)
        log_now, held = self._throttle.allow(kind, self.settings.error_log_period_s)
        if log_now:
            more = f" ({held} more since the last report)" if held else ""
            self.get_logger().error(f"{text}{more}")

    def _on_image(self, msg: Image) -> None:
        start = time.perf_counter()
        self.stats.frame_received()
        try:
            array, encoding = image_msg_to_array(msg, self.settings.max_image_pixels)
            out = None
            if encoding != "rgb8":
                height, width = array.shape[:2]
                if self._rgb_buffer is None or self._rgb_buffer.shape[:2] != (height, width):
                    self._rgb_buffer = np.empty((height, width, 3), np.uint8)
                out = self._rgb_buffer
            rgb = to_rgb(array, encoding, out=out)
        except ImageConversionError as exc:
            self._report(exc.kind, f"frame skipped: {exc}")
            return
        except Exception as exc:  # anything a malformed message can still trigger
            self._report(KIND_CONVERSION_FAILED, f"frame skipped: {type(exc).__name__}: {exc}")
            return
        self._push(msg.header, rgb, encoding, start)

    def _on_compressed(self, msg: CompressedImage) -> None:
        start = time.perf_counter()
        self.stats.frame_received()
        try:
            rgb = compressed_msg_to_rgb(msg, self.settings.max_image_pixels)
        except ImageConversionError as exc:
            self._report(exc.kind, f"frame skipped: {exc}")
            return
        except Exception as exc:
            self._report(KIND_CONVERSION_FAILED, f"frame skipped: {type(exc).__name__}: {exc}")
            return
        self._push(msg.header, rgb, f"compressed:{msg.format}", start)

    def _push(self, header: Header, rgb: np.ndarray, encoding: str, start: float) -> None:
        pairer, slot = self._pairer, self._slot
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
            decision = pairer.push(info, rgb)
        except Exception as exc:
            self._report(INTERNAL_ERROR, f"frame skipped: pairing failed: {type(exc).__name__}: {exc}")
            return
        self._seq += 1
        prev_header, self._prev_header = self._prev_header, header
        if not decision.paired:
            if decision.reason is not PairReason.FIRST_FRAME:
                self.stats.pair_reset(decision.reason.value)
                log_now, held = self._throttle.allow("pair_reset", self.settings.error_log_period_s)
                if log_now:
                    self.get_logger().warning(
                        f"frame pair reset ({decision.reason.value}): previous {decision.prev_info}, "
                        f"current {info}" + (f" ({held} more since the last report)" if held else "")
                    )
            return
        assert prev_header is not None
        job = _Job(
            decision=decision,
            header=header,
            prev_stamp=prev_header.stamp,
            key1=self._seq - 1,
            key2=self._seq,
            callback_s=time.perf_counter() - start,
        )
        if slot.offer(job) or slot.closed:
            self.stats.frame_dropped()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._info_lock:
            self._camera_info = msg

    # -------------------------------------------------------------------------------------- worker

    def _work(self, slot: LatestOnlySlot[_Job], generation: int) -> None:
        while True:
            job = slot.take()
            if job is None:
                return
            try:
                with self._worker_lock:
                    self._process(job, generation)
            except Exception as exc:  # never let the worker die
                self._report(INTERNAL_ERROR, f"frame lost: {type(exc).__name__}: {exc}")
            finally:
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

    def _process(self, job: _Job, generation: int) -> None:
        estimator = self._estimator
        decision = job.decision
        if estimator is None or decision.prev_image is None or decision.image is None:
            return
        height, width = decision.info.height, decision.info.width
        pubs = self._pubs
        try:
            out_h, out_w = self._output_size(estimator, height, width)
            flow_buf = self._out_flow.view(out_h, out_w)
            t0 = time.perf_counter()
            flow = estimator.estimate(
                decision.prev_image,
                decision.image,
                key1=job.key1,
                key2=job.key2,
                output_size=(out_h, out_w),
                out=flow_buf,
            )
            t1 = time.perf_counter()
            if flow is not flow_buf:
                np.copyto(flow_buf, flow)
        except Exception as exc:
            self._report(BACKEND_ERROR, f"backend failed on a frame pair: {type(exc).__name__}: {exc}")
            return
        if generation != self._generation or not pubs:
            return  # deactivated meanwhile
        header = job.header
        s = self.settings
        want_mag = s.publish_magnitude and pubs["magnitude"].get_subscription_count() > 0
        want_color = s.publish_color and pubs["color"].get_subscription_count() > 0
        mag_buf = self._out_mag.view(out_h, out_w) if want_mag else None
        if want_color:  # the magnitude comes out of the colour coding for free
            color_buf = self._out_color.view(out_h, out_w)
            flow_to_color(flow_buf, s.color_max_flow or None, out=color_buf, magnitude_out=mag_buf)
        elif mag_buf is not None:
            flow_magnitude(flow_buf, out=mag_buf)
        # compute first, publish after: subscribers deserialising the flow would compete for the CPU
        if pubs["flow"].get_subscription_count():
            pubs["flow"].publish(self._out_flow.stamped(header))
        if want_mag:
            pubs["magnitude"].publish(self._out_mag.stamped(header))
        if want_color:
            pubs["color"].publish(self._out_color.stamped(header))
        if pubs["previous_stamp"].get_subscription_count():
            pubs["previous_stamp"].publish(
                TimeReference(header=header, time_ref=job.prev_stamp, source="previous_frame")
            )
        info = self._scaled_camera_info(height, width, out_h, out_w)
        if info is not None and pubs["camera_info"].get_subscription_count():
            info.header = header
            pubs["camera_info"].publish(info)
        t2 = time.perf_counter()
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        self.stats.frame_published(
            latency_s=(now_ns - stamp_ns) * 1e-9, backend_s=t1 - t0, overhead_s=job.callback_s + (t2 - t1)
        )

    def _scaled_camera_info(self, height: int, width: int, out_h: int, out_w: int) -> CameraInfo | None:
        """The latest camera_info scaled to the output grid (cached until it or the size changes)."""
        with self._info_lock:
            src = self._camera_info
            if src is None:
                return None
            cached = self._scaled_info
            if cached is not None and cached[0] is src and cached[1] == (out_h, out_w):
                return cached[2]
            in_w = src.width or width
            in_h = src.height or height
            scaled = scale_camera_info(src, out_w / in_w, out_h / in_h)
            scaled.width, scaled.height = out_w, out_h
            self._scaled_info = (src, (out_h, out_w), scaled)
            return scaled

    # --------------------------------------------------------------------------------- diagnostics

    def publish_diagnostics(self) -> None:
        """Publish the node's status on ``/diagnostics`` (the timer does this every period)."""
        s = self.settings
        try:
            if self._estimator is not None:  # the network size is known once the first pair ran
                self._backend_info = self._safe_info() or self._backend_info
            snap = self.stats.snapshot(recent_s=max(5.0, 2.0 * s.diagnostics_period_s))
            status = build_status(
                snap,
                name=f"{self.get_name()}: optical flow",
                state=self.lifecycle_state,
                input_topic=self.input_topic,
                input_timeout_s=s.input_timeout_s,
                backend=self._backend_info,
                backend_reason=self._backend_reason,
                failure=self.failure,
            )
            self._diag_pub.publish(
                DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status])
            )
        except Exception as exc:
            self.get_logger().error(f"diagnostics failed: {type(exc).__name__}: {exc}")


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
