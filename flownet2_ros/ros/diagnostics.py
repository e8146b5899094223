"""Counters, timings, throttled error logging and the ``/diagnostics`` status of the flow node.

There is no ``diagnostic_updater`` for Python without a ROS distribution, so the node publishes
``diagnostic_msgs/DiagnosticArray`` itself; this module builds the status from a :class:`FlowStats`
snapshot.  :class:`FlowStats` is updated from the subscription callback and from the inference worker
thread, so every method takes its lock; the per-frame methods only increment counters.

Levels
------
* ``ERROR``: the node is unconfigured because configuring failed (backend or parameters), or the
  backend raised within the last ``recent_s`` seconds;
* ``WARN``: bad input (any :data:`~flownet2_ros.ros.image_convert.ERROR_KINDS`) within the last
  ``recent_s`` seconds, or the node is active and no image arrived for ``input_timeout_s``;
* ``OK`` otherwise (also while inactive, with the state in the message).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from ..backends import BackendInfo
from .image_convert import ERROR_KINDS
from .pairing import FrameLossEstimator

__all__ = [
    "BACKEND_ERROR",
    "INTERNAL_ERROR",
    "ErrorThrottle",
    "FlowStats",
    "StatsSnapshot",
    "build_status",
]

#: Error kind counted when the backend's ``estimate`` raises.
BACKEND_ERROR = "backend_error"
#: Error kind for anything else unexpected in the per-frame path (a bug; the node keeps running).
INTERNAL_ERROR = "internal_error"
#: Error kinds that make the status ERROR (the others, bad input, make it WARN).
_SEVERE = frozenset({BACKEND_ERROR, INTERNAL_ERROR})


class ErrorThrottle:
    """At most one log line per key per ``period`` seconds; counts what it held back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def allow(self, key: str, period: float, now: float | None = None) -> tuple[bool, int]:
        """``(log_now, held_back)``: whether to log this occurrence, and how many were not logged since."""
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._last.get(key)
            if last is not None and period > 0 and now - last < period:
                self._held[key] += 1
                return False, 0
            self._last[key] = now
            held = self._held.pop(key, 0)
            return True, held


@dataclass
class StatsSnapshot:
    """Totals since start and averages over the last window (see :meth:`FlowStats.snapshot`)."""

    window_s: float
    received: int
    published: int
    dropped: int
    resets: dict[str, int]
    errors: dict[str, int]
    window_received: int
    window_published: int
    latency_mean_s: float | None
    latency_max_s: float | None
    backend_mean_s: float | None
    backend_max_s: float | None
    overhead_mean_s: float | None
    since_input_s: float | None
    recent_errors: dict[str, int] = field(default_factory=dict)
    lost_estimate: int = 0
    loss_fraction: float = 0.0
    frame_period_s: float | None = None
    unsupported_encodings: dict[str, int] = field(default_factory=dict)
    idle_frames: int = 0

    @property
    def input_rate_hz(self) -> float:
        return self.window_received / self.window_s if self.window_s > 0 else 0.0

    @property
    def output_rate_hz(self) -> float:
        return self.window_published / self.window_s if self.window_s > 0 else 0.0


class FlowStats:
    """Thread-safe counters of the node, with a window that :meth:`snapshot` restarts."""

    def __init__(self, now: float | None = None) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.published = 0
        self.dropped = 0
        self.resets: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._error_times: dict[str, list[float]] = {}
        self._last_input: float | None = None
        self.loss = FrameLossEstimator()
        self.unsupported_encodings: Counter[str] = Counter()
        self.idle_frames = 0  #: frames received while no output had a subscriber (not processed)
        self._window_start = time.monotonic() if now is None else now
        self._reset_window()

    def _reset_window(self) -> None:
        self._w_received = 0
        self._w_published = 0
        self._w_latency: list[float] = []
        self._w_backend: list[float] = []
        self._w_overhead: list[float] = []

    def frame_received(self, now: float | None = None) -> None:
        """A message arrived (well-formed or not)."""
        with self._lock:
            self.received += 1
            self._w_received += 1
            self._last_input = time.monotonic() if now is None else now

    def frame_stamp(self, stamp: float) -> None:
        """The stamp (s) of a well-formed frame: feeds the lost-frame estimate."""
        with self._lock:
            self.loss.observe(stamp)

    def frame_idle(self) -> None:
        """A frame was received but not processed: no output has a subscriber."""
        with self._lock:
            self.idle_frames += 1

    def encoding_refused(self, encoding: str) -> None:
        """Count an encoding name that was refused (bounded: at most 32 distinct names are kept)."""
        with self._lock:
            if encoding in self.unsupported_encodings or len(self.unsupported_encodings) < 32:
                self.unsupported_encodings[encoding] += 1

    def frame_dropped(self, count: int = 1) -> None:
        with self._lock:
            self.dropped += count

    def pair_reset(self, reason: str) -> None:
        with self._lock:
            self.resets[reason] += 1

    def error(self, kind: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.errors[kind] += 1
            times = self._error_times.setdefault(kind, [])
            times.append(now)
            if len(times) > 1000:  # bounded: only recent ones matter
                del times[:500]

    def frame_published(self, latency_s: float, backend_s: float, overhead_s: float) -> None:
        with self._lock:
            self.published += 1
            self._w_published += 1
            self._w_latency.append(latency_s)
            self._w_backend.append(backend_s)
            self._w_overhead.append(overhead_s)

    def snapshot(self, recent_s: float, now: float | None = None) -> StatsSnapshot:
        """Totals, the window's averages (the window then restarts) and errors of the last ``recent_s``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent: dict[str, int] = {}
            for kind, times in self._error_times.items():
                times[:] = [t for t in times if now - t <= recent_s]
                if times:
                    recent[kind] = len(times)
            snap = StatsSnapshot(
                window_s=max(0.0, now - self._window_start),
                received=self.received,
                published=self.published,
                dropped=self.dropped,
                resets=dict(self.resets),
                errors=dict(self.errors),
                window_received=self._w_received,
                window_published=self._w_published,
                latency_mean_s=_mean(self._w_latency),
                latency_max_s=max(self._w_latency) if self._w_latency else None,
                backend_mean_s=_mean(self._w_backend),
                backend_max_s=max(self._w_backend) if self._w_backend else None,
                overhead_mean_s=_mean(self._w_overhead),
                since_input_s=None if self._last_input is None else now - self._last_input,
                recent_errors=recent,
                lost_estimate=self.loss.lost,
                loss_fraction=self.loss.loss_fraction,
                frame_period_s=self.loss.period,
                unsupported_encodings=dict(self.unsupported_encodings),
                idle_frames=self.idle_frames,
            )
            self._window_start = now
            self._reset_window()
        return snap


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000.0:.2f}"


def build_status(
    snap: StatsSnapshot,
    *,
    name: str,
    state: str,
    input_topic: str,
    input_timeout_s: float,
    backend: BackendInfo | None,
    backend_reason: str = "",
    failure: str | None = None,
    camera: str = "",
    idle: bool = False,
    extra: list[tuple[str, str]] | None = None,
) -> DiagnosticStatus:
    """One camera's ``DiagnosticStatus`` (level and message per the module docstring, values as text).

    ``idle``: no output of this camera has a subscriber, so its frames are not processed.
    """
    level = DiagnosticStatus.OK
    problems: list[str] = []
    if state == "unconfigured" and failure:
        level = DiagnosticStatus.ERROR
        problems.append(f"configure failed: {failure}")
    severe = {k: n for k, n in snap.recent_errors.items() if k in _SEVERE}
    bad_input = {k: n for k, n in snap.recent_errors.items() if k not in _SEVERE}
    if severe:
        level = DiagnosticStatus.ERROR
        problems.append("errors: " + ", ".join(f"{k} x{n}" for k, n in sorted(severe.items())))
    if bad_input:
        level = max(level, DiagnosticStatus.WARN)
        problems.append("bad input: " + ", ".join(f"{k} x{n}" for k, n in sorted(bad_input.items())))
    if state == "active" and (snap.since_input_s is None or snap.since_input_s > input_timeout_s):
        level = max(level, DiagnosticStatus.WARN)
        waited = "ever" if snap.since_input_s is None else f"{snap.since_input_s:.1f} s"
        problems.append(f"no input on {input_topic} for {waited}")
    if snap.unsupported_encodings:
        problems_text = ", ".join(f"{enc} x{n}" for enc, n in sorted(snap.unsupported_encodings.items()))
        if "unsupported_encoding" in bad_input:
            problems.append(f"unsupported encodings: {problems_text}")
    if problems:
        message = "; ".join(problems)
    elif state == "active" and idle:
        message = "idle (no subscribers)"
    elif state == "active":
        message = f"ok: {snap.output_rate_hz:.1f} Hz flow from {snap.input_rate_hz:.1f} Hz input"
    else:
        message = state
    if state == "active" and snap.loss_fraction >= 0.05 and snap.lost_estimate >= 3:
        message += (
            f"; ~{100 * snap.loss_fraction:.0f} % of input frames lost before the node "
            "(see input_reliability and the DDS profile)"
        )

    values: list[tuple[str, str]] = [
        ("state", "idle (no subscribers)" if state == "active" and idle else state),
        *([("camera", camera)] if camera else []),
        ("input_topic", input_topic),
        ("input_rate_hz", f"{snap.input_rate_hz:.2f}"),
        ("output_rate_hz", f"{snap.output_rate_hz:.2f}"),
        ("latency_ms_mean", _ms(snap.latency_mean_s)),
        ("latency_ms_max", _ms(snap.latency_max_s)),
        ("backend_ms_mean", _ms(snap.backend_mean_s)),
        ("backend_ms_max", _ms(snap.backend_max_s)),
        ("node_overhead_ms_mean", _ms(snap.overhead_mean_s)),
        ("frames_received", str(snap.received)),
        ("frames_published", str(snap.published)),
        ("frames_dropped", str(snap.dropped)),
        ("frames_idle", str(snap.idle_frames)),
        ("frames_lost_estimate", str(snap.lost_estimate)),
        ("input_loss_percent", f"{100 * snap.loss_fraction:.1f}"),
        ("input_period_ms", _ms(snap.frame_period_s)),
    ]
    for reason in ("reset_time_backwards", "reset_gap", "reset_format_change"):
        values.append((f"pair_resets.{reason}", str(snap.resets.get(reason, 0))))
    for kind in (*ERROR_KINDS, BACKEND_ERROR, INTERNAL_ERROR):
        values.append((f"errors.{kind}", str(snap.errors.get(kind, 0))))
    if backend is not None:
        size = backend.network_size
        values += [
            ("backend", backend.name),
            ("backend_device", backend.device),
            ("backend_precision", backend.precision),
            ("backend_model", backend.model),
            ("backend_network_size", "auto" if size is None else f"{size[1]}x{size[0]}"),
        ]
    else:
        values.append(("backend", "none"))
    for enc, n in sorted(snap.unsupported_encodings.items()):
        values.append((f"unsupported_encoding.{enc}", str(n)))
    values += extra or []
    if backend_reason:
        values.append(("backend_choice", backend_reason))
    if failure:
        values.append(("configure_failure", failure))
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=backend.device if backend is not None else "",
        values=[KeyValue(key=k, value=v) for k, v in values],
    )
