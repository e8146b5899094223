"""Malformed and odd messages against a running flow node (``python -m flownet2_ros.bench.node_robustness``).

Target: 10,000 malformed or odd messages spread over 4 cameras: 0 crashes, every one counted under its
camera and kind, the well-formed cameras keep publishing flow at their rate, and the node's resident
memory grows by less than 100 MB over the run.

Processes
---------
The node runs in a child process: this module with ``--node``, which builds the real
:class:`~flownet2_ros.ros.flow_node.FlowNode` from its ``--ros-args`` (as ``flow_node`` does) with the
stand-in :class:`~flownet2_ros.backends.fixed.FixedFlowEstimator` backend injected through
``estimator_factory``: instant and deterministic, so that the numbers measure the node's handling of bad
input, not a network.  This process publishes every camera's input and subscribes to the outputs and to
``/diagnostics`` (on a random ``ROS_DOMAIN_ID`` unless one is set, and in a namespace of its own).

Traffic
-------
Cameras ``c0``..``c3``.  ``c0`` and ``c1`` are the well-formed cameras: valid ``--width`` x ``--height``
frames at ``--good-rate`` Hz each, from start to end.  The ``--messages`` malformed or odd messages go
round-robin to all four cameras (so the good cameras get bad messages interleaved with their frames; a
malformed message is refused before pairing and must not disturb their flow).  Odd but valid messages
(other encodings, other sizes, stamps going backwards or jumping) change the pairing of a stream, so they
go to ``c2``/``c3`` only.  Two phases, each with a fresh node:

* ``raw`` (``image_transport: raw``): :data:`RAW_CASES` (wrong step, short data, zero size, huge claims,
  unknown and unconvertible encodings, odd width for ``yuv422``/``yuyv``, odd height for ``nv12``, short
  ``rgb16``, too small a step for ``nv21``) and :data:`ODD_CASES`;
* ``compressed`` (``image_transport: compressed``, good frames are JPEG): :data:`COMPRESSED_CASES`
  (PNG decompression bombs declaring 30000 x 30000, a JPEG declaring 65535 x 65535, truncated PNG, garbage
  and empty data, a JPEG without a frame header, unsupported formats) — ``--compressed-share`` of the
  messages.

Backend failures (part of the in-suite robustness test) are left out: the backend serves all cameras in
one batch, so an injected failure is also counted on the good cameras' pairs.

Delivery: inputs are reliable with a queue of ``--qos-depth`` on both sides, and this process keeps at most
``--window`` messages per camera that the node has not yet counted (``frames_received`` in its
diagnostics, every 0.1 s), so nothing is lost between the processes and sent must equal counted.  The
compressed phase keeps fewer in flight (``--compressed-window``): measured here, the node's resident
memory then grows with the number of messages queued in the middleware at once, each leaving a buffer as
large as the largest message seen (0.9 MB bombs: ~145 MB with 40 per camera, ~45 MB with 10, flat after
the first few hundred bombs), not with the number of messages sent.

Report
------
Plain text, one number per line, per phase: messages sent per case; per camera and error kind, sent
and counted (the node's ``errors.<kind>`` diagnostics values); frames received, pair resets and flows of
the odd cameras; the good cameras' flows and pairs dropped by the node's latest-only hand-off, and their
flow rate (``<cam>/flow`` messages received here) before the bad traffic and during it; the node's
resident memory (``VmRSS``) when the bad traffic starts, after each quarter of it, its peak and at the
end; whether the node was alive at the end and its exit code after SIGINT.  Targets: node alive and exit
code 0, counted == sent for every camera and kind (and frames, resets and pairs as expected), no frame
left unprocessed, flow rate during >= ``--min-rate-ratio`` x before, growth < ``--max-growth-mb``.  Exit code 1 when a target is
missed, 2 when the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ros.image_convert import (
    DEFAULT_MAX_PIXELS,
    KIND_BAD_SHAPE,
    KIND_BAD_STEP,
    KIND_DECODE_FAILED,
    KIND_SHORT_DATA,
    KIND_TOO_LARGE,
    KIND_UNSUPPORTED_ENCODING,
    KIND_ZERO_SIZE,
)
from .compressed_bomb import build_bomb_png

__all__ = [
    "COMPRESSED_CASES",
    "ODD_CASES",
    "RAW_CASES",
    "UNSUPPORTED_NAMES",
    "VALID_ENCODINGS",
    "bomb_png",
    "jpeg_frame",
    "main",
    "malformed_compressed",
    "malformed_image",
    "raw_frame",
]

# ------------------------------------------------------------------------------- message catalogue

#: Malformed ``sensor_msgs/Image`` cases -> the error kind the node must count them under.
RAW_CASES: dict[str, str] = {
    "too_large": KIND_TOO_LARGE,  # claims more than max_pixels, with next to no data
    "huge_claim": KIND_TOO_LARGE,  # 2**30 x 2**30, no data: refused before anything is allocated
    "bad_step": KIND_BAD_STEP,
    "short_data": KIND_SHORT_DATA,
    "zero_size": KIND_ZERO_SIZE,
    "unsupported_encoding": KIND_UNSUPPORTED_ENCODING,
    "unconvertible": KIND_UNSUPPORTED_ENCODING,  # a valid 32FC1 image: no RGB form
    "yuv422_odd_width": KIND_BAD_SHAPE,
    "yuyv_odd_width": KIND_BAD_SHAPE,
    "nv12_odd_height": KIND_BAD_SHAPE,
    "rgb16_short_data": KIND_SHORT_DATA,
    "nv21_small_step": KIND_BAD_STEP,
}

#: Malformed ``sensor_msgs/CompressedImage`` cases -> the error kind the node must count them under.
COMPRESSED_CASES: dict[str, str] = {
    "png_bomb": KIND_TOO_LARGE,  # a real deflate bomb declaring 30000 x 30000
    "jpeg_too_large": KIND_TOO_LARGE,  # a real JPEG whose frame header is patched to 65535 x 65535
    "truncated_png": KIND_DECODE_FAILED,  # header intact, image data cut in half
    "garbage_png": KIND_DECODE_FAILED,  # random bytes, format "png"
    "empty": KIND_DECODE_FAILED,
    "jpeg_no_frame_header": KIND_DECODE_FAILED,  # SOI and tables only: its size cannot be read
    "unsupported_format": KIND_UNSUPPORTED_ENCODING,  # format "bmp"
    "compressed_depth": KIND_UNSUPPORTED_ENCODING,  # a depth payload: not an image for the network
}

#: Odd but valid messages (raw): what they do to the camera's frame pairing.
ODD_CASES: tuple[str, ...] = ("odd_encoding", "odd_size", "time_backwards", "time_gap")

#: Encodings of valid odd frames (any bytes of the right length are a valid image).
VALID_ENCODINGS: tuple[str, ...] = (
    "bgr8",
    "mono8",
    "rgba8",
    "mono16",
    "rgb16",
    "bgra16",
    "bayer_grbg8",
    "bayer_rggb16",
    "uyvy",
    "yuyv",
    "yuv422",
    "yuv422_yuy2",
    "nv12",
    "nv21",
)

#: Encoding names the node does not support (cycled by the benchmark).
UNSUPPORTED_NAMES: tuple[str, ...] = (
    "yuv422_weird",
    "",
    "RGB8",
    "yuv420",
    "bayer_rggb32",
    "8UC3",
    "nv16",
    "h264",
    "x" * 200,
)

#: bytes per pixel and rows-per-height of the encodings used in valid frames
_BYTES_PER_PIXEL = {"mono8": 1, "bayer_grbg8": 1, "bgr8": 3, "rgb8": 3, "rgba8": 4, "mono16": 2}
_BYTES_PER_PIXEL.update({"rgb16": 6, "bgra16": 8, "bayer_rggb16": 2, "nv12": 1, "nv21": 1})
_BYTES_PER_PIXEL.update({"uyvy": 2, "yuyv": 2, "yuv422": 2, "yuv422_yuy2": 2})


def _stamped(msg: Any, stamp: float, frame_id: str) -> Any:
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = int(stamp)
    msg.header.stamp.nanosec = min(999_999_999, round((stamp - int(stamp)) * 1e9))
    return msg


def _image(encoding: str, height: int, width: int, step: int, size: int, seed: int = 0) -> Any:
    from sensor_msgs.msg import Image

    msg = Image(height=height, width=width, encoding=encoding, step=step)
    if size:
        msg.data.frombytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return msg


def raw_frame(
    stamp: float,
    height: int = 48,
    width: int = 64,
    encoding: str = "rgb8",
    *,
    seed: int = 0,
    frame_id: str = "cam",
) -> Any:
    """A valid ``sensor_msgs/Image`` of random pixels (``nv12``/``nv21``/YUV 4:2:2 need even sizes)."""
    bpp = _BYTES_PER_PIXEL[encoding]
    rows = height * 3 // 2 if encoding in ("nv12", "nv21") else height
    msg = _image(encoding, height, width, width * bpp, width * bpp * rows, seed)
    return _stamped(msg, stamp, frame_id)


def malformed_image(
    case: str,
    stamp: float,
    *,
    height: int = 48,
    width: int = 64,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    encoding: str | None = None,
    seed: int = 0,
    frame_id: str = "cam",
) -> Any:
    """A ``sensor_msgs/Image`` the node must refuse with error kind ``RAW_CASES[case]``.

    ``height``/``width``: the size the message claims where the case allows it (made odd where the case
    needs an odd side); ``encoding``: the name used by ``unsupported_encoding`` (default ``yuv422_weird``).
    """
    h, w = max(2, height), max(2, width)
    if case == "too_large":
        side = int(max_pixels**0.5) + 1
        msg = _image("rgb8", side, side, 3 * side, 10)
    elif case == "huge_claim":
        msg = _image("mono8", 1 << 30, 1 << 30, 1 << 30, 0)
    elif case == "bad_step":
        msg = _image("rgb8", h, w, 3 * w - 1, 3 * w * h, seed)
    elif case == "short_data":
        msg = _image("rgb8", h, w, 3 * w, 3 * w * h - 7, seed)
    elif case == "zero_size":
        msg = _image("rgb8", 0, w, 3 * w, 0)
    elif case == "unsupported_encoding":
        name = "yuv422_weird" if encoding is None else encoding
        msg = _image(name, h, w, 3 * w, 3 * w * h, seed)
    elif case == "unconvertible":
        msg = _image("32FC1", 4, 4, 16, 64)
    elif case in ("yuv422_odd_width", "yuyv_odd_width"):
        w |= 1
        msg = _image(case.split("_odd")[0], h, w, 2 * w, 2 * w * h, seed)
    elif case == "nv12_odd_height":
        h |= 1
        w += w % 2
        msg = _image("nv12", h, w, w, w * (h * 3 // 2 + 1), seed)
    elif case == "rgb16_short_data":
        msg = _image("rgb16", h, w, 6 * w, 6 * w * h - 1, seed)
    elif case == "nv21_small_step":
        h += h % 2
        w += w % 2
        msg = _image("nv21", h, w, w - 1, w * h * 3 // 2, seed)
    else:
        raise ValueError(f"unknown raw case {case!r}; known: {sorted(RAW_CASES)}")
    return _stamped(msg, stamp, frame_id)


@functools.lru_cache(maxsize=2)
def bomb_png(side: int = 30000) -> bytes:
    """A real PNG decompression bomb declaring ``side`` x ``side`` pixels (built once per side)."""
    return build_bomb_png(side)


def _encoded(ext: str, height: int, width: int, seed: int) -> bytes:
    import cv2

    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(ext, rgb)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {ext}")
    return bytes(data.tobytes())


def _compressed(fmt: str, data: bytes) -> Any:
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt)
    msg.data.frombytes(data)
    return msg


def jpeg_frame(
    stamp: float, height: int = 48, width: int = 64, *, seed: int = 0, frame_id: str = "cam"
) -> Any:
    """A valid JPEG ``sensor_msgs/CompressedImage`` of random pixels."""
    return _stamped(_compressed("jpeg", _encoded(".jpg", height, width, seed)), stamp, frame_id)


def _jpeg_sof(data: bytes) -> int:
    """Offset of the first baseline start-of-frame marker (``FF C0``) of a JPEG OpenCV wrote."""
    at = data.find(b"\xff\xc0")
    if at < 0:
        raise RuntimeError("no SOF0 marker in the JPEG")
    return at


def malformed_compressed(
    case: str,
    stamp: float,
    *,
    height: int = 48,
    width: int = 64,
    seed: int = 0,
    bomb_side: int = 30000,
    frame_id: str = "cam",
) -> Any:
    """A ``sensor_msgs/CompressedImage`` the node must refuse with error kind ``COMPRESSED_CASES[case]``.

    ``png_bomb`` declares ``bomb_side`` x ``bomb_side`` (too large for any ``max_image_pixels`` the node
    accepts from 16384 up); ``jpeg_too_large`` declares 65535 x 65535.
    """
    if case == "png_bomb":
        msg = _compressed("png", bomb_png(bomb_side))
    elif case == "jpeg_too_large":
        data = bytearray(_encoded(".jpg", height, width, seed))
        at = _jpeg_sof(bytes(data))
        data[at + 5 : at + 9] = b"\xff\xff\xff\xff"  # marker, length, precision, then height and width
        msg = _compressed("jpeg", bytes(data))
    elif case == "truncated_png":
        png = _encoded(".png", height, width, seed)
        msg = _compressed("png", png[: len(png) // 2])
    elif case == "garbage_png":
        msg = _compressed("png", np.random.default_rng(seed).integers(0, 256, 512, np.uint8).tobytes())
    elif case == "empty":
        msg = _compressed("jpeg", b"")
    elif case == "jpeg_no_frame_header":
        jpeg = _encoded(".jpg", height, width, seed)
        msg = _compressed("jpeg", jpeg[: _jpeg_sof(jpeg)])
    elif case == "unsupported_format":
        msg = _compressed("bmp", _encoded(".bmp", height, width, seed))
    elif case == "compressed_depth":
        msg = _compressed("16UC1; compressedDepth png", _encoded(".png", height, width, seed))
    else:
        raise ValueError(f"unknown compressed case {case!r}; known: {sorted(COMPRESSED_CASES)}")
    return _stamped(msg, stamp, frame_id)


# ----------------------------------------------------------------------------------- node process

CAMERAS = ("c0", "c1", "c2", "c3")
GOOD = ("c0", "c1")
ODD_CAMERAS = ("c2", "c3")
_DIAG_PERIOD_S = 0.1
_MAX_PAIR_GAP_S = 1.0


def _serve_node(ros_args: list[str]) -> int:
    """The node process: a FlowNode with the FixedFlowEstimator, configured by ``ros_args``."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from ..backends.fixed import FixedFlowEstimator, fixed_factory
    from ..ros.flow_node import FlowNode

    rclpy.init(args=[sys.argv[0], *ros_args])
    estimator = FixedFlowEstimator()
    node: FlowNode | None = None
    code = 0
    try:
        node = FlowNode(estimator_factory=fixed_factory(estimator))

        def forget_calls() -> None:  # the stand-in records every call: not the node's memory
            estimator.calls.clear()
            estimator.batch_sizes.clear()

        node.create_timer(1.0, forget_calls)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if not node.start():
            print(f"node did not start: {node.failure}", file=sys.stderr, flush=True)
            code = 3
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return None
    return None


class _RssSampler(threading.Thread):
    """Samples a process's VmRSS every 0.1 s; ``peak`` since the last :meth:`mark`."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self._stop_event = threading.Event()

    def mark(self) -> float:
        now = _rss_mb(self.pid) or 0.0
        self.peak = now
        return now

    def run(self) -> None:
        while not self._stop_event.wait(0.1):
            now = _rss_mb(self.pid)
            if now is None:
                return
            self.peak = max(self.peak, now)

    def stop(self) -> None:
        self._stop_event.set()


# ------------------------------------------------------------------------------------------ phases


@dataclass
class _Plan:
    """What one phase sends after the warm-up: ``(camera, case)`` in order."""

    transport: str
    messages: list[tuple[str, str]]


@dataclass
class _Phase:
    transport: str
    sent_cases: Counter[str] = field(default_factory=Counter)
    sent: dict[str, Counter[str]] = field(default_factory=dict)  # camera -> error kind -> sent
    counted: dict[str, Counter[str]] = field(default_factory=dict)  # camera -> error kind -> counted
    frames_sent: Counter[str] = field(default_factory=Counter)  # camera -> every message after warm-up
    frames_counted: Counter[str] = field(default_factory=Counter)
    resets_expected: dict[str, Counter[str]] = field(default_factory=dict)
    resets_counted: dict[str, Counter[str]] = field(default_factory=dict)
    pairs_expected: Counter[str] = field(default_factory=Counter)
    pairs_counted: Counter[str] = field(default_factory=Counter)  # published + dropped
    idle_frames: Counter[str] = field(default_factory=Counter)
    rate_before: dict[str, float] = field(default_factory=dict)
    rate_during: dict[str, float] = field(default_factory=dict)
    good_pairs_sent: Counter[str] = field(default_factory=Counter)
    good_published: Counter[str] = field(default_factory=Counter)
    bad_seconds: float = 0.0
    rss_ready: float = 0.0
    rss_start: float = 0.0
    rss_quarters: list[float] = field(default_factory=list)  # after 1/4, 1/2, 3/4 of the bad traffic
    rss_peak: float = 0.0
    rss_end: float = 0.0
    alive_at_end: bool = False
    exit_code: int | None = None
    problems: list[str] = field(default_factory=list)
    log_tail: str = ""


def make_plan(transport: str, count: int, odd_share: float, rng: random.Random) -> _Plan:
    """``count`` messages round-robin over the cameras; on c2/c3 ``odd_share`` of them odd (raw only)."""
    cases = sorted(RAW_CASES if transport == "raw" else COMPRESSED_CASES)
    per_camera = {camera: 0 for camera in CAMERAS}
    messages: list[tuple[str, str]] = []
    for i in range(count):
        camera = CAMERAS[i % len(CAMERAS)]
        if transport == "raw" and camera in ODD_CAMERAS and rng.random() < odd_share:
            messages.append((camera, rng.choice(ODD_CASES)))
            continue
        messages.append((camera, cases[per_camera[camera] % len(cases)]))
        per_camera[camera] += 1
    return _Plan(transport, messages)


def _status_values(status: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def _run_phase(plan: _Plan, args: argparse.Namespace, seed: int) -> _Phase:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image, TimeReference

    from ..ros.pairing import FrameInfo, FramePairer, PairReason

    transport = plan.transport
    phase = _Phase(transport)
    ns = f"/robustness_{os.getpid()}_{transport}"
    compressed = transport == "compressed"
    log = tempfile.NamedTemporaryFile(prefix=f"node_robustness_{transport}_", suffix=".log", delete=False)
    node_cmd = [
        sys.executable,
        "-m",
        "flownet2_ros.bench.node_robustness",
        "--node",
        "--ros-args",
        "--log-level",
        "warn",
        "-r",
        f"__ns:={ns}",
        "-p",
        f"cameras:=[{','.join(CAMERAS)}]",
        "-p",
        f"image_transport:={transport}",
        "-p",
        "input_reliability:=reliable",
        "-p",
        f"qos_depth:={args.qos_depth}",
        "-p",
        f"diagnostics_period_s:={_DIAG_PERIOD_S}",
        "-p",
        f"max_pair_gap_s:={_MAX_PAIR_GAP_S}",
        "-p",
        f"max_image_pixels:={args.max_image_pixels}",
        "-p",
        "error_log_period_s:=10.0",
    ]
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("robustness_bench", namespace=ns, context=context)
    lock = threading.Lock()
    flow_times: dict[str, list[float]] = {camera: [] for camera in CAMERAS}
    diag: dict[str, tuple[float, dict[str, str]]] = {}

    def on_flow(camera: str, msg: Any) -> None:
        now = time.monotonic()
        with lock:
            flow_times[camera].append(now)

    def on_diag(msg: Any) -> None:
        now = time.monotonic()
        for status in msg.status:
            values = _status_values(status)
            if values.get("input_topic", "").startswith(ns + "/") and values.get("camera") in CAMERAS:
                with lock:
                    diag[values["camera"]] = (now, values)

    reliable = QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=args.qos_depth, reliability=ReliabilityPolicy.RELIABLE
    )
    msg_type = CompressedImage if compressed else Image
    suffix = "image/compressed" if compressed else "image"
    pubs = {camera: probe.create_publisher(msg_type, f"{camera}/{suffix}", reliable) for camera in CAMERAS}
    for camera in CAMERAS:
        if camera in GOOD:  # the flow itself, as a consumer of the good cameras would
            probe.create_subscription(Image, f"{camera}/flow", functools.partial(on_flow, camera), reliable)
        else:  # a small output, so that the node does not idle these cameras
            probe.create_subscription(
                TimeReference, f"{camera}/flow/previous_stamp", functools.partial(on_flow, camera), reliable
            )
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=20))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    rng = random.Random(seed)
    width, height = args.width, args.height
    frames: list[Any] = []
    for s in range(4):
        frames.append(
            jpeg_frame(0.0, height, width, seed=s) if compressed else raw_frame(0.0, height, width, seed=s)
        )
    templates: dict[str, Any] = {}
    names = itertools.cycle(UNSUPPORTED_NAMES)

    def bad_message(case: str, stamp: float) -> Any:
        if compressed:
            if case not in templates:
                templates[case] = malformed_compressed(case, 0.0, bomb_side=args.bomb_side, seed=seed)
            return _stamped(templates[case], stamp, "cam")
        if case == "unsupported_encoding":
            return malformed_image(case, stamp, encoding=next(names), seed=seed)
        if case not in templates:
            templates[case] = malformed_image(case, 0.0, max_pixels=args.max_image_pixels, seed=seed)
        return _stamped(templates[case], stamp, "cam")

    clocks = {camera: 100.0 for camera in CAMERAS}
    pairers = {camera: FramePairer(_MAX_PAIR_GAP_S, pool_size=0) for camera in CAMERAS}
    scratch: dict[tuple[int, int], np.ndarray] = {}
    sent_total: Counter[str] = Counter()
    counting = {"on": False}
    base: dict[str, dict[str, str]] = {}

    def expect_frame(camera: str, height: int, width: int, encoding: str) -> None:
        """Feed the local pairer what the node's pairer will see (after the warm-up)."""
        info = FrameInfo(clocks[camera], height, width, encoding, "cam")
        image = scratch.setdefault((height, width), np.zeros((height, width, 3), np.uint8))
        decision = pairers[camera].push(info, image)
        decision.release()
        if not counting["on"]:
            return
        if decision.paired:
            phase.pairs_expected[camera] += 1
        elif decision.reason is not PairReason.FIRST_FRAME:
            phase.resets_expected.setdefault(camera, Counter())[decision.reason.value] += 1

    def publish(camera: str, msg: Any) -> None:
        pubs[camera].publish(msg)
        sent_total[camera] += 1
        if counting["on"]:
            phase.frames_sent[camera] += 1

    good_index = {"i": 0}

    def send_good(cameras: tuple[str, ...]) -> None:
        good_index["i"] += 1
        msg = frames[good_index["i"] % len(frames)]
        for camera in cameras:
            clocks[camera] += 1.0 / args.good_rate
            expect_frame(camera, height, width, "compressed:jpeg" if compressed else "rgb8")
            publish(camera, _stamped(msg, clocks[camera], "cam"))
            if counting["on"] and camera in GOOD:
                phase.good_pairs_sent[camera] += 1

    def send_odd(camera: str, case: str) -> None:
        clocks[camera] += {"time_backwards": -5.0, "time_gap": 30.0}.get(case, 0.05)
        h, w, enc = 48, 64, "rgb8"
        if case == "odd_encoding":
            enc = rng.choice(VALID_ENCODINGS)
        elif case == "odd_size":
            h, w = rng.choice([(48, 64), (40, 80), (96, 128), (height, width)])
        expect_frame(camera, h, w, enc)
        publish(camera, raw_frame(clocks[camera], h, w, enc, seed=rng.randrange(4)))

    def latest(camera: str) -> tuple[float, dict[str, str]]:
        with lock:
            return diag.get(camera, (0.0, {}))

    def counted_received(camera: str) -> int:
        return int(latest(camera)[1].get("frames_received", "0"))

    def wait_until(predicate: Callable[[], bool], timeout: float, good_frames: bool) -> bool:
        """Wait (sending the good cameras' frames on time when asked); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if node_proc.poll() is not None:
                return False
            if good_frames:
                good_due()
            time.sleep(0.002)
        return predicate()

    next_good = {"t": 0.0}

    def good_due() -> bool:
        """Send the good cameras' next frames if they are due (one schedule for the whole phase)."""
        now = time.monotonic()
        if now < next_good["t"]:
            return False
        send_good(GOOD)
        period = 1.0 / args.good_rate
        next_good["t"] = max(next_good["t"] + period, now + period / 2)  # catch up, but never in a burst
        return True

    def all_counted() -> bool:
        return all(counted_received(c) >= sent_total[c] for c in CAMERAS)

    def fresh_diag_after(t: float) -> bool:
        return all(latest(c)[0] > t for c in CAMERAS) and all_counted()

    node_proc = subprocess.Popen([*node_cmd], stdout=log, stderr=subprocess.STDOUT)
    sampler = _RssSampler(node_proc.pid)
    sampler.start()
    try:
        # 1. discovery: the node subscribes to every camera and reports every camera's status
        def discovered() -> bool:
            return all(pubs[c].get_subscription_count() > 0 for c in CAMERAS) and all(
                latest(c)[1].get("state") == "active" for c in CAMERAS
            )

        if not wait_until(discovered, 60.0, good_frames=False):
            raise RuntimeError("the node did not come up (discovery or configure failed)")
        phase.rss_ready = _rss_mb(node_proc.pid) or 0.0

        # 2. warm-up: every camera pairs frames until flow comes back (the node has seen our subscribers)
        def flowing() -> bool:
            with lock:
                return all(len(flow_times[c]) >= 3 for c in CAMERAS)

        deadline = time.monotonic() + 30.0
        while not flowing() and time.monotonic() < deadline and node_proc.poll() is None:
            send_good(CAMERAS)
            time.sleep(1.0 / args.good_rate)
        if not flowing():
            raise RuntimeError("no flow during the warm-up")
        now = time.monotonic()
        if not wait_until(lambda: fresh_diag_after(now), 30.0, good_frames=True):
            raise RuntimeError("the node did not count the warm-up frames")
        base = {c: dict(latest(c)[1]) for c in CAMERAS}
        counting["on"] = True
        # 3. the good cameras alone, for the rate before the bad traffic
        before_start = time.monotonic()
        wait_until(lambda: False, args.baseline, good_frames=True)
        before_end = time.monotonic()
        with lock:
            for c in GOOD:
                phase.rate_before[c] = sum(before_start <= t < before_end for t in flow_times[c]) / (
                    before_end - before_start
                )
        phase.rss_start = sampler.mark()
        # 4. the bad traffic, with the good cameras' frames on time
        bad_start = time.monotonic()
        gap = 1.0 / args.rate if args.rate > 0 else 0.0
        next_bad = bad_start
        window = args.compressed_window if compressed else args.window
        queues: dict[str, deque[str]] = {c: deque() for c in CAMERAS}
        for camera, case in plan.messages:
            queues[camera].append(case)
        total = len(plan.messages)
        marks = [round(total * q / 4) for q in (1, 2, 3)]
        done = 0
        turn = itertools.cycle(CAMERAS)
        last_progress = time.monotonic()
        while done < total:
            if good_due():
                continue
            now = time.monotonic()
            if node_proc.poll() is not None:
                raise RuntimeError(f"the node exited with {node_proc.returncode} during the bad traffic")
            camera = ""
            if now >= next_bad:
                for _ in CAMERAS:  # the next camera with room in its window
                    candidate = next(turn)
                    if queues[candidate] and sent_total[candidate] - counted_received(candidate) < window:
                        camera = candidate
                        break
            if not camera:
                if now - last_progress > 60.0:
                    raise RuntimeError(f"the node stopped counting: {done} of {total} sent in 60 s")
                time.sleep(0.0005)
                continue
            last_progress = now
            case = queues[camera].popleft()
            if case in ODD_CASES:
                send_odd(camera, case)
            else:
                clocks[camera] += 0.001
                kind = (RAW_CASES if not compressed else COMPRESSED_CASES)[case]
                publish(camera, bad_message(case, clocks[camera]))
                phase.sent.setdefault(camera, Counter())[kind] += 1
            phase.sent_cases[case] += 1
            done += 1
            if done in marks:
                phase.rss_quarters.append(_rss_mb(node_proc.pid) or 0.0)
            next_bad = max(next_bad + gap, now) if gap else now
        bad_end = time.monotonic()
        phase.bad_seconds = bad_end - bad_start
        # a short burst is measured over --baseline seconds at least (the good frames go on meanwhile)
        wait_until(lambda: False, bad_start + args.baseline - time.monotonic(), good_frames=True)
        bad_end = max(bad_end, time.monotonic())
        with lock:
            for c in GOOD:
                phase.rate_during[c] = sum(bad_start <= t < bad_end for t in flow_times[c]) / (
                    bad_end - bad_start
                )
        # 5. drain: everything counted, the good cameras' last pairs published
        now = time.monotonic()
        if not wait_until(lambda: fresh_diag_after(now), 60.0, good_frames=False):
            phase.problems.append("not every message was counted within 60 s of the last one")
        time.sleep(3 * _DIAG_PERIOD_S)
        now = time.monotonic()
        wait_until(lambda: fresh_diag_after(now), 10.0, good_frames=False)
        phase.rss_end = _rss_mb(node_proc.pid) or 0.0
        phase.rss_peak = max(sampler.peak, phase.rss_end)
        phase.alive_at_end = node_proc.poll() is None
        final = {c: latest(c)[1] for c in CAMERAS}
        for c in CAMERAS:

            def delta(key: str, c: str = c) -> int:
                return int(final[c].get(key, "0")) - int(base[c].get(key, "0"))

            phase.frames_counted[c] = delta("frames_received")
            phase.idle_frames[c] = delta("frames_idle")
            phase.counted[c] = Counter(
                {
                    key.split(".", 1)[1]: delta(key)
                    for key in final[c]
                    if key.startswith("errors.") and delta(key)
                }
            )
            phase.resets_counted[c] = Counter(
                {
                    key.split(".", 1)[1]: delta(key)
                    for key in final[c]
                    if key.startswith("pair_resets.") and delta(key)
                }
            )
            phase.pairs_counted[c] = delta("frames_published") + delta("frames_dropped")
            if c in GOOD:
                phase.good_published[c] = delta("frames_published")
    except RuntimeError as exc:
        phase.problems.append(str(exc))
        phase.alive_at_end = node_proc.poll() is None
    finally:
        sampler.stop()
        if node_proc.poll() is None:
            node_proc.send_signal(signal.SIGINT)
            try:
                node_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node_proc.kill()
                node_proc.wait()
                phase.problems.append("the node did not stop within 30 s of SIGINT")
        phase.exit_code = node_proc.returncode
        executor.shutdown(timeout_sec=2.0)
        spinner.join(5.0)
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
        log.close()
        with open(log.name, encoding="utf-8", errors="replace") as f:
            phase.log_tail = f.read()[-3000:]
        os.unlink(log.name)
    return phase


# ----------------------------------------------------------------------------------------- report


def _check(phase: _Phase, args: argparse.Namespace) -> list[str]:
    """The targets this phase missed (empty: all met)."""
    missed = list(phase.problems)
    if not phase.alive_at_end:
        missed.append("the node was not alive at the end")
    if phase.exit_code != 0:
        missed.append(f"exit code {phase.exit_code} after SIGINT")
    for c in CAMERAS:
        sent, counted = phase.sent.get(c, Counter()), phase.counted.get(c, Counter())
        if +sent != +counted:
            missed.append(f"{c}: errors sent {dict(+sent)} != counted {dict(+counted)}")
        if phase.frames_sent[c] != phase.frames_counted[c]:
            missed.append(f"{c}: {phase.frames_sent[c]} messages sent, {phase.frames_counted[c]} received")
        if phase.idle_frames[c]:
            missed.append(f"{c}: {phase.idle_frames[c]} frames idle (not processed)")
        resets_expected = +phase.resets_expected.get(c, Counter())
        if resets_expected != +phase.resets_counted.get(c, Counter()):
            missed.append(f"{c}: resets expected {dict(resets_expected)} != {dict(phase.resets_counted[c])}")
        if phase.pairs_expected[c] != phase.pairs_counted[c]:
            missed.append(
                f"{c}: {phase.pairs_expected[c]} pairs expected, {phase.pairs_counted[c]} published or dropped"
            )
    for c in GOOD:
        before, during = phase.rate_before.get(c, 0.0), phase.rate_during.get(c, 0.0)
        if during < args.min_rate_ratio * before or before <= 0:
            missed.append(f"{c}: flow {during:.2f} Hz during the bad traffic, {before:.2f} Hz before")
    growth = phase.rss_end - phase.rss_start
    if growth >= args.max_growth_mb:
        missed.append(f"resident memory grew {growth:.1f} MB (limit {args.max_growth_mb} MB)")
    return missed


def _report(phase: _Phase, args: argparse.Namespace) -> list[str]:
    p = phase.transport
    lines = [f"{p}: malformed or odd messages sent: {sum(phase.sent_cases.values())}"]
    lines += [f"{p}: sent case {case}: {n}" for case, n in sorted(phase.sent_cases.items())]
    lines.append(f"{p}: seconds of bad traffic: {phase.bad_seconds:.1f}")
    lines.append(
        f"{p}: bad messages per second: {sum(phase.sent_cases.values()) / max(phase.bad_seconds, 1e-9):.0f}"
    )
    for c in CAMERAS:
        sent, counted = phase.sent.get(c, Counter()), phase.counted.get(c, Counter())
        for kind in sorted(set(sent) | set(counted)):
            lines.append(f"{p}: {c} errors.{kind} sent: {sent[kind]}")
            lines.append(f"{p}: {c} errors.{kind} counted: {counted[kind]}")
        lines.append(f"{p}: {c} messages sent: {phase.frames_sent[c]}")
        lines.append(f"{p}: {c} frames_received counted: {phase.frames_counted[c]}")
        for reason in sorted(set(phase.resets_expected.get(c, {})) | set(phase.resets_counted.get(c, {}))):
            lines.append(
                f"{p}: {c} pair_resets.{reason} expected: {phase.resets_expected.get(c, Counter())[reason]}"
            )
            lines.append(
                f"{p}: {c} pair_resets.{reason} counted: {phase.resets_counted.get(c, Counter())[reason]}"
            )
        lines.append(f"{p}: {c} pairs expected: {phase.pairs_expected[c]}")
        lines.append(f"{p}: {c} flows published or dropped: {phase.pairs_counted[c]}")
    for c in GOOD:
        lines.append(f"{p}: {c} flows published: {phase.good_published[c]}")
        lines.append(
            f"{p}: {c} pairs dropped (newer pair arrived first): {phase.pairs_counted[c] - phase.good_published[c]}"
        )
        lines.append(f"{p}: {c} flow Hz before the bad traffic: {phase.rate_before.get(c, 0.0):.2f}")
        lines.append(f"{p}: {c} flow Hz during the bad traffic: {phase.rate_during.get(c, 0.0):.2f}")
    lines.append(f"{p}: node rss MB when ready: {phase.rss_ready:.1f}")
    lines.append(f"{p}: node rss MB at the start of the bad traffic: {phase.rss_start:.1f}")
    for q, value in zip((25, 50, 75), phase.rss_quarters, strict=False):
        lines.append(f"{p}: node rss MB after {q} % of the bad traffic: {value:.1f}")
    lines.append(f"{p}: node rss MB peak: {phase.rss_peak:.1f}")
    lines.append(f"{p}: node rss MB at the end: {phase.rss_end:.1f}")
    lines.append(f"{p}: node rss growth MB: {phase.rss_end - phase.rss_start:.1f}")
    if len(phase.rss_quarters) >= 2:
        lines.append(
            f"{p}: node rss growth MB over the second half: {phase.rss_end - phase.rss_quarters[1]:.1f}"
        )
    lines.append(f"{p}: node alive at the end: {'yes' if phase.alive_at_end else 'no'}")
    lines.append(f"{p}: node exit code after SIGINT: {phase.exit_code}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flownet2_ros.bench.node_robustness",
        description="Send malformed and odd messages to a flow node with 4 cameras (c0, c1 well-formed at "
        "--good-rate, bad messages on all four, odd ones on c2/c3) in a raw and a compressed phase; check "
        "that the node survives, counts every message under its camera and kind, keeps the good cameras' "
        "flow rate and does not grow its resident memory. One number per line; exit code 1 when a target "
        "is missed.",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=10000,
        help="malformed or odd messages in all, over both phases (default 10000)",
    )
    parser.add_argument(
        "--compressed-share",
        type=float,
        default=0.2,
        help="fraction of --messages sent in the compressed phase (bombs, truncated PNG, garbage...); "
        "the rest goes to the raw phase; 0 or 1 skips a phase (default 0.2)",
    )
    parser.add_argument(
        "--odd-share",
        type=float,
        default=0.15,
        help="fraction of c2/c3's raw messages that are odd but valid (other encodings and sizes, stamps "
        "going backwards or jumping) instead of malformed (default 0.15)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="at most this many bad messages per second, all cameras together; 0: as fast as the node "
        "counts them, within --window (default 0)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=40,
        help="at most this many messages per camera sent but not yet counted by the node (its diagnostics "
        "every 0.1 s); must stay below --qos-depth so that the reliable queues never overflow (default 40)",
    )
    parser.add_argument(
        "--compressed-window",
        type=int,
        default=10,
        help="--window of the compressed phase: each message queued in DDS may leave a payload buffer the "
        "size of the largest one seen (a 0.9 MB bomb) in the middleware's pools, so fewer are kept in "
        "flight there (default 10)",
    )
    parser.add_argument(
        "--qos-depth",
        type=int,
        default=100,
        help="depth of the reliable input queues, the node's qos_depth and the publishers' (1-100, default 100)",
    )
    parser.add_argument(
        "--good-rate", type=float, default=20.0, help="frames per second of each good camera (default 20)"
    )
    parser.add_argument("--width", type=int, default=160, help="width of the good frames in px (default 160)")
    parser.add_argument(
        "--height", type=int, default=120, help="height of the good frames in px (default 120)"
    )
    parser.add_argument(
        "--baseline",
        type=float,
        default=5.0,
        help="seconds of good frames alone before the bad traffic, for the rate before; also the shortest "
        "window the rate during the bad traffic is measured over (default 5)",
    )
    parser.add_argument(
        "--bomb-side",
        type=int,
        default=30000,
        help="width and height the PNG bombs declare (a real deflate stream of that size; default 30000: "
        "~0.9 MB per message, 2.7 GB if decoded)",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=4096 * 4096,
        help="the node's max_image_pixels parameter (default 4096*4096, the node's default)",
    )
    parser.add_argument(
        "--min-rate-ratio",
        type=float,
        default=0.9,
        help="target: good cameras' flow rate during the bad traffic / before it (default 0.9)",
    )
    parser.add_argument(
        "--max-growth-mb",
        type=float,
        default=100.0,
        help="target: the node's resident memory growth from the start to the end of the bad traffic "
        "(default 100)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the message order (default 0)")
    parser.add_argument(
        "--node",
        nargs=argparse.REMAINDER,
        metavar="ROS_ARGS",
        help="internal: run the node process (FlowNode with the FixedFlowEstimator backend) with the "
        "ROS arguments that follow, instead of the benchmark",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.node is not None:
        return _serve_node(list(args.node))
    if args.messages < 0 or not 0.0 <= args.compressed_share <= 1.0 or not 0.0 <= args.odd_share <= 1.0:
        print("--messages must be >= 0, --compressed-share and --odd-share in [0, 1]", file=sys.stderr)
        return 2
    if not (1 <= args.window < args.qos_depth <= 100 and 1 <= args.compressed_window < args.qos_depth):
        print("need 1 <= --window, --compressed-window < --qos-depth <= 100", file=sys.stderr)
        return 2
    if args.good_rate <= 0 or args.width < 2 or args.height < 2:
        print("--good-rate, --width and --height must be positive", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(200, 230)))
    rng = random.Random(args.seed)
    compressed_count = round(args.messages * args.compressed_share)
    plans = [
        make_plan("raw", args.messages - compressed_count, args.odd_share, rng),
        make_plan("compressed", compressed_count, args.odd_share, rng),
    ]
    if any(c == "png_bomb" for p in plans for _, c in p.messages):
        bomb_png(args.bomb_side)  # built once, before any timing
    print(
        f"cameras: {', '.join(CAMERAS)} (good: {', '.join(GOOD)} at {args.good_rate:g} Hz, "
        f"{args.width}x{args.height})"
    )
    print("backend: FixedFlowEstimator (instant stand-in) in a FlowNode process of its own")
    missed: list[str] = []
    total_sent = 0
    for plan in plans:
        if not plan.messages:
            continue
        start = time.monotonic()
        phase = _run_phase(plan, args, args.seed)
        for line in _report(phase, args):
            print(line, flush=True)
        print(f"{plan.transport}: phase seconds: {time.monotonic() - start:.1f}")
        total_sent += sum(phase.sent_cases.values())
        phase_missed = _check(phase, args)
        for problem in phase_missed:
            print(f"{plan.transport}: MISSED: {problem}")
        if phase_missed and phase.log_tail:
            print(f"{plan.transport}: node log tail:\n{phase.log_tail}", file=sys.stderr)
        missed += phase_missed
    print(f"malformed or odd messages sent in all: {total_sent}")
    print(f"targets met: {'yes' if not missed else 'no'}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
