"""Optical flow over recorded ROS 2 bags: the library behind ``flownet2-bag`` (no argument parsing here).

A bag (a directory with ``metadata.yaml``, or a single ``.mcap`` / ``.db3`` file; MCAP or SQLite3 storage)
is read with the pure-Python ``rosbags`` package.  Every image topic asked for (``sensor_msgs/Image`` or
``sensor_msgs/CompressedImage``) goes through exactly what the flow node does with a camera: the message
is deserialised into the ``sensor_msgs`` class rclpy uses, converted by :func:`image_msg_to_rgb` /
:func:`compressed_msg_to_rgb`, paired by a :class:`FramePairer` (the node's reset rules), and the pairs run
through the backend the node's parameters choose (:class:`FlowNodeSettings` → the node's
``backend_config``) in batches of ``batch`` pairs (pairs of several topics and consecutive pairs of one
topic alike).

Output topics
-------------
For an image topic ``T`` (for a CompressedImage topic ``T/compressed``, ``T`` itself), the outputs are
the node's, as siblings of ``T`` — what the node publishes with its ``image`` remapped to ``T`` and its
namespace the one of ``T``: ``/cam/image_raw`` → ``/cam/flow`` (32FC2), ``/cam/flow/magnitude`` (32FC1),
``/cam/flow/color`` (rgb8), ``/cam/flow/previous_stamp`` (TimeReference) and, when the bag holds
``/cam/camera_info``, ``/cam/flow/camera_info`` (matched by stamp like the node: the same stamp, else the
newest at most one frame period older; scaled to the output grid).  Each output carries the header (stamp,
frame_id) of the current frame and is logged in the bag at the current frame's own bag time.

Copying, order, interruption
----------------------------
Unless ``copy`` is off, every message of the input in the time range is copied unchanged (with its
definition, hash and offered QoS), except input topics named like one of the outputs, which are
replaced.  Messages are written in bag-time order: inputs read while pairs wait for their batch are held
until the batch has run.  Serialising and writing happen on a writer thread, which also closes the bag;
the output is written under a temporary name beside ``output`` and renamed when closed, so an existing
output is replaced (``overwrite``) only by a complete, closed bag.  A stop request (``should_stop``) or
``KeyboardInterrupt`` ends the run early with a closed, readable bag holding everything read and computed
so far; pairs still waiting for their batch are not run.

Errors: :class:`BagError` (one line) for what the user must fix: a missing topic (naming the bag's image
topics), an unreadable, corrupt or truncated bag, an existing output.  Bad messages are counted by kind
in :attr:`BagSummary.skipped` and skipped, as the node does.
"""

from __future__ import annotations

import os
import queue
import shutil
import struct
import sys
import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, TimeReference
from std_msgs.msg import Header

from ..backends import BackendConfig, FlowEstimator, FlowRequest, create_estimator
from ..flowio.visualize import flow_magnitude, flow_to_color
from .flow_node import OUTPUTS, FlowNode, ScaledInfoCache, sibling_topic
from .flow_recorder import save_flow_frame
from .image_convert import (
    KIND_CONVERSION_FAILED,
    KIND_UNSUPPORTED_ENCODING,
    ImageConversionError,
    RgbScratch,
    compressed_msg_to_rgb,
    header_stamp_seconds,
    image_msg_to_rgb,
)
from .pairing import FrameInfo, FramePairer, PairDecision, PairReason, StampMatcher
from .parameters import FlowNodeSettings

__all__ = [
    "IMAGE_TYPE",
    "INFO_TYPE",
    "OUTPUT_KEYS",
    "STORAGES",
    "BagError",
    "BagFlowOptions",
    "BagSummary",
    "backend_config",
    "bag_image_topics",
    "image_base_topic",
    "open_bag",
    "output_topics",
    "process_bag",
]

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
_MSG_CLASSES: dict[str, type] = {IMAGE_TYPE: Image, COMPRESSED_TYPE: CompressedImage, INFO_TYPE: CameraInfo}
#: The node's outputs (keys of ``flow_node.OUTPUTS``) with their rosbag2 type names.
OUTPUT_TYPES: dict[str, str] = {
    "flow": IMAGE_TYPE,
    "magnitude": IMAGE_TYPE,
    "color": IMAGE_TYPE,
    "camera_info": INFO_TYPE,
    "previous_stamp": "sensor_msgs/msg/TimeReference",
}
OUTPUT_KEYS: tuple[str, ...] = tuple(OUTPUT_TYPES)
STORAGES = ("mcap", "sqlite3")
_SINGLE_FILE = {".mcap": "mcap", ".db3": "sqlite3"}
KIND_DESERIALIZE = "deserialize_failed"
KIND_BACKEND = "backend_error"


def _cdr_string(text: str, offset: int) -> bytes:
    """A CDR string at payload ``offset`` (4-aligned): padding, uint32 length with the NUL, bytes, NUL."""
    data = text.encode() + b"\0"
    return bytes(-offset % 4) + struct.pack("<I", len(data)) + data


def image_cdr(header: Header, encoding: str, pixels: np.ndarray) -> bytes:
    """``sensor_msgs/Image`` as little-endian CDR (what ``serialize_message`` gives), with one copy of the pixels.

    ``pixels``: C-contiguous (H, W[, C]) array in native byte order; ``step`` = W x C x itemsize.  The
    flow outputs are megabytes each: building the message and serialising it would copy them twice.
    """
    parts = [b"\x00\x01\x00\x00", struct.pack("<iI", header.stamp.sec, header.stamp.nanosec)]
    offset = 8
    for part in (_cdr_string(str(header.frame_id), offset),):
        parts.append(part)
        offset += len(part)
    height, width = pixels.shape[:2]
    pad = bytes(-offset % 4)
    parts.append(pad + struct.pack("<II", height, width))
    offset += len(pad) + 8
    part = _cdr_string(encoding, offset)
    parts.append(part)
    offset += len(part)
    step = pixels.strides[0]
    big = int(pixels.dtype.itemsize > 1 and sys.byteorder == "big")
    tail = struct.pack("<B", big)
    offset += 1
    tail += bytes(-offset % 4) + struct.pack("<II", step, pixels.nbytes)
    parts.append(tail)
    parts.append(memoryview(np.ascontiguousarray(pixels)).cast("B"))  # type: ignore[arg-type]
    return b"".join(parts)


class BagError(Exception):
    """A failure to report as one line (missing topic, unreadable bag, existing output, ...)."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ------------------------------------------------------------------------------------------- reading


def open_bag(path: Path) -> Any:
    """An open ``rosbags`` reader for a bag directory or a single ``.mcap``/``.db3`` file (BagError if not)."""
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise BagError(f"{path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is a folder without metadata.yaml, not a ROS 2 bag")
    if path.is_file() and path.suffix not in _SINGLE_FILE:
        raise BagError(f"{path}: a single-file bag must end in .mcap or .db3")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags' ReaderError, and whatever a damaged file makes its parsers raise
        raise BagError(f"cannot read {path} (corrupt or truncated bag?): {_one_line(exc)}") from None
    return reader


def bag_image_topics(reader: Any) -> dict[str, str]:
    """``{topic: type}`` of the bag's Image and CompressedImage topics, sorted by name."""
    found = {c.topic: c.msgtype for c in reader.connections if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE)}
    return dict(sorted(found.items()))


def image_base_topic(topic: str, msgtype: str) -> str:
    """The image topic a transport topic belongs to: ``/cam/image_raw/compressed`` → ``/cam/image_raw``."""
    if msgtype == COMPRESSED_TYPE and topic.endswith("/compressed") and topic.count("/") > 1:
        return topic[: -len("/compressed")]
    return topic


def output_topics(image_topic: str) -> dict[str, str]:
    """The node's outputs for an image topic, as its siblings: ``/cam/image_raw`` → ``/cam/flow``, ..."""
    return {key: sibling_topic(image_topic, relative) for key, (_, relative) in OUTPUTS.items()}


def backend_config(settings: FlowNodeSettings) -> BackendConfig:
    """The :class:`BackendConfig` the flow node builds from these parameter values (its own method)."""

    class _Holder:
        def __init__(self, s: FlowNodeSettings) -> None:
            self.settings = s

    # FlowNode.backend_config reads nothing but ``self.settings``: one source of truth for the mapping.
    return FlowNode.backend_config(cast(FlowNode, _Holder(settings)))


# ------------------------------------------------------------------------------------------- options


@dataclass
class BagFlowOptions:
    """What to do with a bag; ``settings`` are the node's parameters (backend, pairing, colours, limits)."""

    topics: list[str]
    settings: FlowNodeSettings = field(default_factory=FlowNodeSettings)
    batch: int = 4
    start_s: float | None = None  #: seconds after the bag's first message (None: from the start)
    end_s: float | None = None  #: seconds after the bag's first message (None: to the end)
    copy: bool = True
    outputs: tuple[str, ...] = OUTPUT_KEYS
    storage: str | None = None  #: output storage (mcap|sqlite3); None: from the name, else mcap
    overwrite: bool = False
    export_dir: Path | None = None


@dataclass
class TopicSummary:
    frames: int = 0
    pairs: int = 0
    camera_info: int = 0  #: flow/camera_info messages written
    resets: Counter[str] = field(default_factory=Counter)


@dataclass
class BagSummary:
    """What a run did (also while it runs: ``frames``, ``pairs``)."""

    output: Path
    storage: str = "mcap"
    topics: dict[str, TopicSummary] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)  #: skipped messages by kind
    refused_encodings: Counter[str] = field(default_factory=Counter)
    copied: int = 0
    replaced_topics: list[str] = field(
        default_factory=list
    )  #: input topics not copied (outputs replace them)
    uncopyable: list[str] = field(default_factory=list)  #: input topics without a definition to write
    written: int = 0  #: messages in the output bag
    exported: int = 0
    batches: int = 0
    backend: str = ""
    elapsed_s: float = 0.0  #: time of the read-compute-write loop (backend creation excluded)
    interrupted: bool = False
    error: str | None = None  #: why a run ended early on a damaged input (the output holds what came before)

    @property
    def frames(self) -> int:
        return sum(t.frames for t in self.topics.values())

    @property
    def pairs(self) -> int:
        return sum(t.pairs for t in self.topics.values())

    @property
    def resets(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for t in self.topics.values():
            total.update(t.resets)
        return total

    def lines(self) -> list[str]:
        """The summary as a few human-readable lines."""
        rate = self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0
        mean_batch = self.pairs / self.batches if self.batches else 0.0
        out = [
            f"{'interrupted: ' if self.interrupted else ''}{self.frames} frames, {self.pairs} pairs in "
            f"{self.elapsed_s:.1f} s ({rate:.1f} frames/s, {self.batches} batches, {mean_batch:.1f} pairs "
            f"each); backend {self.backend}",
        ]
        for topic, t in self.topics.items():
            resets = ", ".join(f"{k} {v}" for k, v in sorted(t.resets.items())) or "none"
            out.append(
                f"  {topic}: {t.frames} frames, {t.pairs} pairs, camera_info {t.camera_info}, resets: {resets}"
            )
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        if self.refused_encodings:
            skipped += (
                " (encodings: " + ", ".join(f"{k} {v}" for k, v in self.refused_encodings.items()) + ")"
            )
        out.append(f"  skipped messages: {skipped}")
        copied = f"{self.copied} input messages copied" if self.copied else "inputs not copied"
        if self.replaced_topics:
            copied += f"; replaced: {', '.join(self.replaced_topics)}"
        if self.uncopyable:
            copied += f"; not copied (no message definition): {', '.join(self.uncopyable)}"
        out.append(f"  {copied}; {self.written} messages written to {self.output} ({self.storage})")
        if self.exported:
            out.append(f"  exported {self.exported} flow frames (PNG + .flo)")
        if self.error:
            out.append(f"  stopped early: {self.error}")
        return out


# ------------------------------------------------------------------------------------------- streams


class _InfoTrack:
    """One camera's camera_info messages (read up front), fed in stamp order to the node's StampMatcher."""

    def __init__(self, infos: list[tuple[float, CameraInfo]]) -> None:
        self.items = sorted(infos, key=lambda entry: entry[0])
        self.stamps = [stamp for stamp, _ in self.items]
        self.matcher: StampMatcher[CameraInfo] = StampMatcher()
        self.fed = 0  # items[:fed] went into the matcher
        self.last: float | None = None
        self.scaled_info = ScaledInfoCache()

    def match(self, stamp: float, period: float | None) -> CameraInfo | None:
        """As the node: the info stamped ``stamp``, else the newest at most ``period`` s older."""
        if self.last is not None and stamp < self.last:  # time went back (a looped recording): start again
            self.matcher.clear()
            self.fed = max(0, bisect_right(self.stamps, stamp) - 8)
        self.last = stamp
        limit = bisect_right(self.stamps, stamp + 1e-6)
        for index in range(max(self.fed, limit - 8), limit):  # the matcher keeps the newest 8 anyway
            self.matcher.add(*self.items[index])
        self.fed = max(self.fed, limit)
        return self.matcher.match(stamp, period)

    def scaled(self, frame: FrameInfo, period: float | None, out_h: int, out_w: int) -> CameraInfo | None:
        """The matching info scaled to the output grid, as ``FlowNode._scaled_camera_info`` makes it."""
        src = self.match(frame.stamp, period)
        if src is None:
            return None
        return self.scaled_info.get(src, frame, out_h, out_w)


@dataclass(eq=False)
class _Stream:
    """One image topic: the node's per-camera state (pairer, conversion buffer, previous header)."""

    topic: str
    msgtype: str
    base: str
    outputs: dict[str, str]
    pairer: FramePairer
    summary: TopicSummary
    infos: _InfoTrack | None = None
    scratch: RgbScratch = field(default_factory=RgbScratch)
    prev_header: Header | None = None
    prev_key: int = 0
    export_dir: Path | None = None
    exported: int = 0


@dataclass(eq=False)
class _Pending:
    stream: _Stream
    decision: PairDecision
    header: Header
    prev_stamp: Any
    key1: int
    key2: int
    bag_ns: int


@dataclass(eq=False)
class _FlowItem:
    """A computed pair on its way to the writer thread."""

    stream: _Stream
    header: Header
    prev_stamp: Any
    flow: np.ndarray
    info: CameraInfo | None
    bag_ns: int


# ------------------------------------------------------------------------------------------- writing


@dataclass
class _OutputPlan:
    final: Path
    storage: str
    single_file: bool
    temp_root: Path
    writer_path: Path


def _plan_output(output: Path, storage: str | None, overwrite: bool, source: Path) -> _OutputPlan:
    suffix_storage = _SINGLE_FILE.get(output.suffix)
    if storage is not None and storage not in STORAGES:
        raise BagError(f"unknown storage {storage!r}; expected one of {', '.join(STORAGES)}")
    if suffix_storage is not None and storage is not None and storage != suffix_storage:
        raise BagError(f"{output.name} names a {suffix_storage} file but --storage is {storage}")
    chosen = suffix_storage or storage or "mcap"
    src, dst = source.resolve(), output.resolve()
    if dst == src or src.is_relative_to(dst) or dst.is_relative_to(src):
        raise BagError(f"the output {output} would overwrite or sit inside the input {source}")
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise BagError(f"{output} exists; pass --overwrite to replace it")
    temp_root = output.parent / f".{output.name}.partial-{os.getpid()}"  # (created with its parents)
    name = output.stem if suffix_storage else output.name
    return _OutputPlan(output, chosen, suffix_storage is not None, temp_root, temp_root / name)


def _output_qos(depth: int) -> list[Any]:
    """The node's output QoS (reliable, keep-last ``depth``, volatile) as rosbags writes offered profiles."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    return [
        Qos(
            QosHistory.KEEP_LAST,
            depth,
            QosReliability.RELIABLE,
            QosDurability.VOLATILE,
            zero,
            zero,
            QosLiveliness.AUTOMATIC,
            zero,
            False,
        )
    ]


class _BagWriter(threading.Thread):
    """Owns the rosbags writer: serialises and writes what the main thread queues, then closes the bag.

    Items: ``("raw", key, ns, bytes)`` (a copied input message), ``("flow", _FlowItem)``, then ``"close"``
    (close the bag and rename it to its final name) or ``"abort"`` (leave no output).  Runs as a non-daemon thread, so that an output bag
    is closed even when the main thread leaves with an exception.
    """

    def __init__(self, plan: _OutputPlan, settings: FlowNodeSettings, outputs: tuple[str, ...]) -> None:
        super().__init__(name="flownet2_bag_writer")
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.plan = plan
        self.settings = settings
        self.outputs = outputs
        self.typestore = get_typestore(Stores.ROS2_JAZZY)
        self._writer_class = Writer
        self._plugin = StoragePlugin.MCAP if plan.storage == "mcap" else StoragePlugin.SQLITE3
        self.writer: Any = None  # created in the thread: SQLite connections belong to their thread
        self._specs: list[tuple[Any, str, str, dict[str, Any]]] = []  # (key, topic, type, add_connection kw)
        self.connections: dict[Any, Any] = {}
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=64)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.written = 0
        self.exported = 0
        self.finished = False  #: the bag is closed and at its final path
        self._color: dict[tuple[int, int], np.ndarray] = {}
        self._mag: dict[tuple[int, int], np.ndarray] = {}
        self._pool: dict[tuple[int, ...], list[np.ndarray]] = {}  # flow buffers to reuse (no page faults)
        self._pool_lock = threading.Lock()

    # main thread, before start() ---------------------------------------------------------------

    def add_copy(self, key: Any, conn: Any) -> bool:
        """Register a connection for copying input connection ``conn``; False when its definition is unknown."""
        msgdef, digest = conn.msgdef.data, conn.digest
        if not (msgdef and digest):
            try:
                msgdef, _ = self.typestore.generate_msgdef(conn.msgtype, ros_version=2)
                digest = self.typestore.hash_rihs01(conn.msgtype)
            except Exception:
                return False
        qos = list(getattr(conn.ext, "offered_qos_profiles", []) or [])
        kw = {"msgdef": msgdef, "rihs01": digest, "offered_qos_profiles": qos}
        self._specs.append((key, conn.topic, conn.msgtype, kw))
        return True

    def add_output(self, key: Any, topic: str, msgtype: str) -> None:
        kw = {"typestore": self.typestore, "offered_qos_profiles": _output_qos(self.settings.qos_depth)}
        self._specs.append((key, topic, msgtype, kw))

    def start_writing(self) -> None:
        """Start the thread; returns once the bag is open with every connection (BagError if it cannot be)."""
        self.start()
        self.ready.wait()
        if self.error is not None:
            self.join()
            raise BagError(f"cannot write {self.plan.final}: {_one_line(self.error)}")

    def _open(self) -> None:
        plan = self.plan
        if plan.temp_root.exists():
            shutil.rmtree(plan.temp_root)
        plan.temp_root.mkdir(parents=True)
        self.writer = self._writer_class(plan.writer_path, version=9, storage_plugin=self._plugin)
        self.writer.open()
        for key, topic, msgtype, kw in self._specs:
            self.connections[key] = self.writer.add_connection(topic, msgtype, **kw)

    # main thread, while running ----------------------------------------------------------------

    def put(self, item: Any) -> None:
        while True:
            if self.error is not None:
                raise BagError(f"writing {self.plan.final} failed: {_one_line(self.error)}")
            if not self.is_alive():
                raise BagError(f"writing {self.plan.final} failed: the writer stopped")
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    # writer thread -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._open()
        except BaseException as exc:
            self.error = exc
            try:
                if self.writer is not None:
                    self.writer.abort()
            finally:
                self.ready.set()
            return
        self.ready.set()
        finish = "abort"
        try:
            while True:
                item = self.queue.get()
                if isinstance(item, str):  # "close" or "abort"
                    finish = item
                    break
                if item[0] == "raw":
                    _, key, ns, data = item
                    self._write(key, ns, data)
                else:
                    self._write_flow(item[1])
        except BaseException as exc:
            self.error = exc
            self._drain()
        if finish == "close" and self.error is None:  # (also after an error: no half-written bag is kept)
            try:
                self.writer.close()
                self._finalize()
                return
            except BaseException as exc:
                self.error = exc
        try:
            self.writer.abort()
        except Exception:
            pass

    def _drain(self) -> None:
        """After an error: keep taking items (so that the main thread never blocks) until the end."""
        while not isinstance(self.queue.get(), str):
            pass

    def _write(self, key: Any, ns: int, data: bytes | memoryview) -> None:
        self.writer.write(self.connections[key], ns, data)
        self.written += 1

    def _buffers(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        color = self._color.get((height, width))
        if color is None:
            color = self._color[(height, width)] = np.empty((height, width, 3), np.uint8)
            self._mag[(height, width)] = np.empty((height, width), np.float32)
        return color, self._mag[(height, width)]

    def _write_flow(self, item: _FlowItem) -> None:
        stream, header, flow, ns = item.stream, item.header, item.flow, item.bag_ns
        outputs, s = self.outputs, self.settings
        height, width = flow.shape[:2]
        want_color = "color" in outputs or stream.export_dir is not None
        color, mag = self._buffers(height, width)
        if want_color:  # the magnitude comes out of the colour coding for free, as in the node
            flow_to_color(flow, s.color_max_flow or None, out=color, magnitude_out=mag)
        elif "magnitude" in outputs:
            flow_magnitude(flow, out=mag)
        key = stream.topic
        # (what flow_to_image_msg / scalar_to_image_msg / rgb_to_image_msg + serialize_message give)
        if "flow" in outputs:
            self._write((key, "flow"), ns, image_cdr(header, "32FC2", flow))
        if "magnitude" in outputs:
            self._write((key, "magnitude"), ns, image_cdr(header, "32FC1", mag))
        if "color" in outputs:
            self._write((key, "color"), ns, image_cdr(header, "rgb8", color))
        if "previous_stamp" in outputs:
            ref = TimeReference(header=header, time_ref=item.prev_stamp, source="previous_frame")
            self._write((key, "previous_stamp"), ns, serialize_message(ref))
        if item.info is not None and (key, "camera_info") in self.connections:
            info = item.info
            info.header = header
            self._write((key, "camera_info"), ns, serialize_message(info))
        if stream.export_dir is not None:
            save_flow_frame(stream.export_dir, stream.exported, color, flow)
            with (stream.export_dir / "stamps.txt").open("a") as stamps:
                prev = item.prev_stamp
                stamps.write(
                    f"flow_{stream.exported:04d} {header.stamp.sec}.{header.stamp.nanosec:09d} "
                    f"{prev.sec}.{prev.nanosec:09d}\n"
                )
            stream.exported += 1
            self.exported += 1
        self._recycle(flow)

    def flow_buffer(self, height: int, width: int) -> np.ndarray:
        """An (H, W, 2) float32 buffer for a pair's flow: a recycled one when the writer is done with it."""
        with self._pool_lock:
            free = self._pool.get((height, width))
            if free:
                return free.pop()
        return np.empty((height, width, 2), np.float32)

    def _recycle(self, flow: np.ndarray) -> None:
        with self._pool_lock:
            free = self._pool.setdefault(flow.shape[:2], [])
            if len(free) < 16:
                free.append(flow)

    def _finalize(self) -> None:
        plan = self.plan
        built = plan.writer_path
        if plan.single_file:
            built = plan.writer_path / f"{plan.writer_path.name}{plan.final.suffix}"
        final = plan.final
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.exists():
            shutil.rmtree(final)
        os.replace(built, final)
        shutil.rmtree(plan.temp_root, ignore_errors=True)
        self.finished = True


# ---------------------------------------------------------------------------------------------- run


class _Run:
    """One bag → bag run (see :func:`process_bag`)."""

    def __init__(
        self,
        reader: Any,
        source: Path,
        options: BagFlowOptions,
        estimator: FlowEstimator,
        summary: BagSummary,
        progress: Callable[[int], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.reader = reader
        self.source = source
        self.options = options
        self.settings = options.settings
        self.estimator = estimator
        self.summary = summary
        self.progress = progress
        self.should_stop = should_stop
        self.streams: dict[str, _Stream] = {}
        self.pending: list[_Pending] = []
        self.held: list[tuple[int, int, Any]] = []  # (bag ns, order, writer item) while pairs wait
        self.order = 0
        self.seq = 0
        self.frames_done = 0  # image frames whose processing is complete (for progress)
        self.frames_read = 0
        self.network_sizes: dict[tuple[int, int], tuple[int, int]] = {}
        self.writer: _BagWriter | None = None
        self.claimed: dict[str, str] = {}  #: output topic -> the image topic writing it

    # setup ---------------------------------------------------------------------------------------

    def plan_streams(self) -> None:
        images = bag_image_topics(self.reader)
        wanted = list(dict.fromkeys(self.options.topics))
        if not wanted:
            raise BagError(f"no --topic given; the bag's image topics: {', '.join(images) or 'none'}")
        missing = [t for t in wanted if t not in images]
        if missing:
            raise BagError(
                f"{', '.join(missing)} not in {self.source} as an Image or CompressedImage topic; the bag's "
                f"image topics: {', '.join(images) or 'none'}"
            )
        claimed: dict[str, str] = {}
        for topic in wanted:
            base = image_base_topic(topic, images[topic])
            outputs = output_topics(base)
            for out_topic in outputs.values():
                if out_topic in claimed:
                    raise BagError(
                        f"{topic} and {claimed[out_topic]} would both write {out_topic} (outputs are siblings "
                        "of the image topic); process them in separate runs"
                    )
                claimed[out_topic] = topic
            pairer = FramePairer(self.settings.max_pair_gap_s or None)
            stream = _Stream(topic, images[topic], base, outputs, pairer, TopicSummary())
            self.summary.topics[topic] = stream.summary
            self.streams[topic] = stream
        self.claimed = claimed

    def read_infos(self) -> None:
        """Read every stream's camera_info (the image topic's sibling ``camera_info``) before the frames."""
        by_topic: dict[str, list[_Stream]] = {}
        for stream in self.streams.values():
            by_topic.setdefault(sibling_topic(stream.base, "camera_info"), []).append(stream)
        conns = [c for c in self.reader.connections if c.topic in by_topic and c.msgtype == INFO_TYPE]
        if not conns or "camera_info" not in self.options.outputs:
            return
        found: dict[str, list[tuple[float, CameraInfo]]] = {}
        for conn, _, data in self._messages(conns, None, None):
            try:
                info = deserialize_message(data, CameraInfo)
                found.setdefault(conn.topic, []).append((header_stamp_seconds(info.header), info))
            except Exception:
                self.summary.skipped["camera_info_" + KIND_DESERIALIZE] += 1
        for topic, infos in found.items():
            for stream in by_topic[topic]:
                stream.infos = _InfoTrack(infos)

    def open_writer(self, plan: _OutputPlan) -> _BagWriter:
        writer = _BagWriter(plan, self.settings, self.options.outputs)
        self.writer = writer
        if self.options.copy:
            done: set[tuple[str, str]] = set()
            for conn in self.reader.connections:
                if conn.topic in self.claimed:
                    if conn.topic not in self.summary.replaced_topics:
                        self.summary.replaced_topics.append(conn.topic)
                    continue
                if (conn.topic, conn.msgtype) in done:
                    continue
                done.add((conn.topic, conn.msgtype))
                if not writer.add_copy((conn.topic, conn.msgtype), conn):
                    self.summary.uncopyable.append(f"{conn.topic} ({conn.msgtype})")
        for stream in self.streams.values():
            for key in self.options.outputs:
                if key == "camera_info" and stream.infos is None:
                    continue
                writer.add_output((stream.topic, key), stream.outputs[key], OUTPUT_TYPES[key])
            if self.options.export_dir is not None:
                name = stream.base.strip("/").replace("/", "_") or "image"
                stream.export_dir = self.options.export_dir / name
                try:
                    stream.export_dir.mkdir(parents=True, exist_ok=True)
                    (stream.export_dir / "stamps.txt").write_text("# file stamp previous_stamp\n")
                except OSError as exc:
                    raise BagError(f"cannot write to {stream.export_dir}: {_one_line(exc)}") from None
        writer.start_writing()
        return writer

    # reading -------------------------------------------------------------------------------------

    def _messages(
        self, conns: list[Any], start: int | None, stop: int | None
    ) -> Iterator[tuple[Any, int, bytes]]:
        """The reader's messages; a failure of the reader itself (damaged file) becomes BagError."""
        try:
            iterator = iter(self.reader.messages(connections=conns, start=start, stop=stop))
        except Exception as exc:
            raise BagError(
                f"cannot read {self.source} (corrupt or truncated bag?): {_one_line(exc)}"
            ) from None
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                raise BagError(f"{self.source} is damaged: {_one_line(exc)}") from None
            yield item

    def time_range(self) -> tuple[int | None, int | None]:
        start_ns = int(self.reader.start_time)
        s, e = self.options.start_s, self.options.end_s
        start = None if s is None else start_ns + round(s * 1e9)
        stop = None if e is None else start_ns + round(e * 1e9)
        if start is not None and stop is not None and stop <= start:
            raise BagError(f"--end ({e} s) must be after --start ({s} s)")
        return start, stop

    def run(self) -> None:
        start, stop = self.time_range()
        image_conns = [c for c in self.reader.connections if c.topic in self.streams]
        conns = list(self.reader.connections) if self.options.copy else image_conns
        writer = self.writer
        assert writer is not None
        for conn, ns, data in self._messages(conns, start, stop):
            if self.should_stop is not None and self.should_stop():
                self.summary.interrupted = True
                break
            stream = self.streams.get(conn.topic)
            if stream is not None and conn.msgtype == stream.msgtype:
                self._frame(stream, ns, data)
            if self.options.copy and conn.topic not in self.claimed:
                key = (conn.topic, conn.msgtype)
                if key in writer.connections:
                    self._emit(ns, ("raw", key, ns, data))
                    self.summary.copied += 1
            if len(self.pending) >= self.options.batch:
                self.flush()
            elif not self.pending:
                self._report_progress()
        if not self.summary.interrupted:
            self.flush()

    def _emit(self, ns: int, item: Any) -> None:
        """Write now, or hold while pairs wait for their batch (keeps the output in bag-time order)."""
        assert self.writer is not None
        if self.pending or self.held:
            self.order += 1
            self.held.append((ns, self.order, item))
        else:
            self.writer.put(item)

    def release_held(self) -> None:
        assert self.writer is not None
        held, self.held = sorted(self.held, key=lambda entry: (entry[0], entry[1])), []
        for _, _, item in held:
            self.writer.put(item)

    def _report_progress(self) -> None:
        done = self.frames_read - self.frames_done
        if done and self.progress is not None:
            self.progress(done)
        self.frames_done = self.frames_read

    # per frame: what FlowNode._on_image / _on_compressed / _push do ------------------------------

    def _skip(self, exc: Exception) -> None:
        if isinstance(exc, ImageConversionError):
            if exc.kind == KIND_UNSUPPORTED_ENCODING:
                self.summary.refused_encodings[str(exc.encoding or "?")] += 1
            self.summary.skipped[exc.kind] += 1
        else:
            self.summary.skipped[KIND_CONVERSION_FAILED] += 1

    def _frame(self, stream: _Stream, ns: int, data: bytes) -> None:
        self.frames_read += 1
        stream.summary.frames += 1
        max_pixels = self.settings.max_image_pixels
        try:
            msg = deserialize_message(data, _MSG_CLASSES[stream.msgtype])
        except Exception:
            self.summary.skipped[KIND_DESERIALIZE] += 1
            return
        try:
            if stream.msgtype == COMPRESSED_TYPE:
                rgb = compressed_msg_to_rgb(msg, max_pixels)
                encoding = f"compressed:{msg.format}"
            else:
                rgb, encoding = image_msg_to_rgb(msg, max_pixels, stream.scratch)
            info = FrameInfo(
                stamp=header_stamp_seconds(msg.header),
                height=int(rgb.shape[0]),
                width=int(rgb.shape[1]),
                encoding=encoding,
                frame_id=str(msg.header.frame_id),
            )
            decision = stream.pairer.push(info, rgb)
        except Exception as exc:
            self._skip(exc)
            return
        self.seq += 1
        prev_key, stream.prev_key = stream.prev_key, self.seq
        prev_header, stream.prev_header = stream.prev_header, msg.header
        if not decision.paired:
            if decision.reason is not PairReason.FIRST_FRAME:
                stream.summary.resets[decision.reason.value] += 1
            return
        assert prev_header is not None
        self.pending.append(_Pending(stream, decision, msg.header, prev_header.stamp, prev_key, self.seq, ns))

    def _output_size(self, height: int, width: int) -> tuple[int, int]:
        """As ``FlowNode._output_size``: the input grid, or the network's."""
        if self.settings.output_resolution == "input":
            return height, width
        fixed = self.settings.network_size
        if fixed is not None:
            return fixed
        size = self.network_sizes.get((height, width))
        if size is None:
            self.estimator.warmup(height, width)
            size = self.estimator.info.network_size or (height, width)
            self.network_sizes[(height, width)] = size
        return size

    def flush(self) -> None:
        """Run the waiting pairs in one ``estimate_batch`` call and hand their outputs to the writer."""
        jobs, self.pending = self.pending, []
        assert self.writer is not None
        try:
            if jobs:
                requests = []
                for job in jobs:
                    d = job.decision
                    assert d.prev_image is not None and d.image is not None
                    out_h, out_w = self._output_size(d.info.height, d.info.width)
                    requests.append(
                        FlowRequest(
                            d.prev_image,
                            d.image,
                            key1=job.key1,
                            key2=job.key2,
                            output_size=(out_h, out_w),
                            out=self.writer.flow_buffer(out_h, out_w),
                        )
                    )
                try:
                    flows = self.estimator.estimate_batch(requests)
                except Exception:
                    self.summary.skipped[KIND_BACKEND] += len(jobs)
                    flows = []
                else:
                    self.summary.batches += 1
                for job, request, flow in zip(jobs, requests, flows, strict=False):
                    assert request.out is not None
                    if flow is not request.out:
                        np.copyto(request.out, flow)
                    stream = job.stream
                    info = None
                    if stream.infos is not None:
                        out_h, out_w = request.out.shape[:2]
                        info = stream.infos.scaled(job.decision.info, job.decision.dt, out_h, out_w)
                        if info is not None:
                            stream.summary.camera_info += 1
                    stream.summary.pairs += 1
                    item = _FlowItem(stream, job.header, job.prev_stamp, request.out, info, job.bag_ns)
                    self.order += 1
                    self.held.append((job.bag_ns, self.order, ("flow", item)))
        finally:
            for job in jobs:
                job.decision.release()
        self.release_held()
        self._report_progress()


def process_bag(
    source: Path,
    output: Path,
    options: BagFlowOptions,
    *,
    estimator_factory: Callable[[str, BackendConfig], tuple[FlowEstimator, str]] | None = None,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_start: Callable[[int | None], None] | None = None,
) -> BagSummary:
    """Compute flow over the image topics of bag ``source`` and write the bag ``output``; see the module doc.

    ``estimator_factory``: how the backend is made (default :func:`create_estimator`, as in the node).
    ``progress(n)``: called with the number of image frames completed since the last call.
    ``should_stop()``: polled between messages; True ends the run early (the output is still closed).
    ``on_start(total)``: called once the backend is ready, with the number of image frames to process
    (None when a time range makes it unknown).  Raises :class:`BagError`; bad messages are only counted.
    """
    source, output = Path(source), Path(output)
    if options.batch < 1:
        raise BagError(f"batch must be at least 1, got {options.batch}")
    unknown = [key for key in options.outputs if key not in OUTPUT_TYPES]
    if unknown:
        raise BagError(f"unknown outputs {', '.join(unknown)}; choose from {', '.join(OUTPUT_TYPES)}")
    plan = _plan_output(output, options.storage, options.overwrite, source)
    summary = BagSummary(output=output, storage=plan.storage)
    reader = open_bag(source)
    run: _Run | None = None
    try:
        factory = estimator_factory or create_estimator
        run = _Run(reader, source, options, cast(FlowEstimator, None), summary, progress, should_stop)
        run.plan_streams()
        run.time_range()  # a bad range fails before the backend loads
        try:
            estimator, why = factory(options.settings.backend, backend_config(options.settings))
        except Exception as exc:
            raise BagError(
                f"cannot create the '{options.settings.backend}' backend: {_one_line(exc)}"
            ) from None
        run.estimator = estimator
        try:
            info = estimator.info
            summary.backend = f"{why}; {info.model} on {info.device}, {info.precision}"
        except Exception:
            summary.backend = why
        run.read_infos()
        total = None
        if options.start_s is None and options.end_s is None:
            total = sum(c.msgcount for c in reader.connections if c.topic in run.streams)
        if on_start is not None:
            on_start(total)
        writer = run.open_writer(plan)
        started = time.perf_counter()
        keep = False  # close the output and move it into place (else leave none)
        try:
            run.run()
            keep = True
        except KeyboardInterrupt:
            summary.interrupted = keep = True
        except BagError as exc:
            if writer.error is not None or "is damaged" not in str(exc):
                raise
            summary.error = str(exc)  # a damaged record mid-way: keep (and close) what came before it
            keep = True
        finally:
            for job in run.pending:
                job.decision.release()
            run.pending = []
            if keep:
                try:
                    run.release_held()
                except BagError:
                    keep = False
            writer.queue.put("close" if keep else "abort")
            writer.join()
            summary.elapsed_s = time.perf_counter() - started
            summary.written = writer.written
            summary.exported = writer.exported
            try:
                estimator.close()
            except Exception:
                pass
        if writer.error is not None:
            raise BagError(f"writing {output} failed: {_one_line(writer.error)}")
        if summary.error is not None:
            raise BagError(f"{summary.error}; {output} holds the {summary.pairs} pairs before it")
        return summary
    finally:
        try:
            reader.close()
        except Exception:
            pass
        writer_left = None if run is None else run.writer
        if writer_left is None or (not writer_left.finished and not writer_left.is_alive()):
            shutil.rmtree(plan.temp_root, ignore_errors=True)  # (a live writer still closes and moves it)
