"""Frame pairing for the flow node, and a latest-only hand-off slot for a busy backend.

No ROS imports here: the node converts messages to RGB arrays and :class:`FrameInfo` first.

Pairing rules (:class:`FramePairer`)
------------------------------------
Every received frame becomes the new *previous* frame.  It is paired with the frame received
before it (flow is computed from previous → current) unless the stream is reset, in which case no
pair is emitted:

* ``RESET_FORMAT_CHANGE``: height, width, encoding or ``frame_id`` differ from the previous frame;
* ``RESET_TIME_BACKWARDS``: the stamp is not strictly later than the previous one (a rosbag loop,
  a restarted driver, a duplicated message);
* ``RESET_GAP``: the stamp is more than ``max_pair_gap_s`` after the previous one (frames dropped
  upstream; flow across a long gap is meaningless).  ``None``/``0`` disables the check.

The checks are made in that order; the first that applies is the reason.

Why the pairer copies frames
----------------------------
The array the node passes to :meth:`FramePairer.push` is usually a view on the incoming message's
buffer (zero-copy conversion) or a conversion buffer that the node reuses for the next frame.
Keeping a reference to the former would pin the whole message (and keep a strided, possibly
read-only, padded layout); keeping the latter would be wrong, since the next conversion overwrites
it.  So each frame is copied once, with ``np.copyto``, into a contiguous RGB ``uint8`` buffer that
the pairer owns.  Buffers are pooled and reused across frames; a new one is allocated only when the
frame size changes or when all pooled buffers are still in use.

Buffer ownership
----------------
A paired :class:`PairDecision` references two pooled buffers (previous and current frame) that
must stay untouched while a worker thread computes flow on them, even though the callback thread
keeps pushing frames.  Buffers are therefore reference counted: the pairer holds its previous
frame, and each paired decision holds both of its frames until :meth:`PairDecision.release` is
called (by the worker when done, or by :class:`LatestOnlySlot`'s ``on_drop`` when the decision is
replaced before being taken).  A buffer is only reused after every holder has let go.  Forgetting
to release is safe (buffers are then simply garbage collected and new ones allocated), only slower.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

__all__ = [
    "FrameInfo",
    "FrameLossEstimator",
    "FramePairer",
    "LatestOnlySlot",
    "LatestPerKey",
    "PairDecision",
    "PairReason",
    "StampMatcher",
]


class PairReason(enum.Enum):
    """Outcome of :meth:`FramePairer.push`."""

    PAIRED = "paired"
    FIRST_FRAME = "first_frame"
    RESET_TIME_BACKWARDS = "reset_time_backwards"
    RESET_GAP = "reset_gap"
    RESET_FORMAT_CHANGE = "reset_format_change"


@dataclass(frozen=True)
class FrameInfo:
    """What the pairer needs to know about a frame (taken from the message header and fields)."""

    stamp: float
    height: int
    width: int
    encoding: str
    frame_id: str

    def same_format(self, other: FrameInfo) -> bool:
        """True when size, encoding and frame id are equal."""
        return (self.height, self.width, self.encoding, self.frame_id) == (
            other.height,
            other.width,
            other.encoding,
            other.frame_id,
        )


class _Buffer:
    """A pooled ``(H, W, 3)`` uint8 frame buffer with a reference count (guarded by the pool lock)."""

    __slots__ = ("array", "refs")

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.array = np.empty(shape, dtype=np.uint8)
        self.refs = 0


@dataclass(eq=False)
class PairDecision:
    """Result of :meth:`FramePairer.push`.

    For ``PAIRED`` decisions ``prev_image``/``image`` are the pairer's contiguous copies of the
    previous and current frames, valid until :meth:`release` is called; ``prev_info`` is the
    previous frame's info.  For the other reasons ``prev_image``/``image`` are ``None``;
    ``prev_info`` is the frame that was discarded by a reset (``None`` for the first frame).
    """

    reason: PairReason
    info: FrameInfo
    prev_info: FrameInfo | None = None
    prev_image: np.ndarray | None = None
    image: np.ndarray | None = None
    _release: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def paired(self) -> bool:
        """True when this decision carries a frame pair to compute flow on."""
        return self.reason is PairReason.PAIRED

    @property
    def dt(self) -> float | None:
        """Seconds between the previous and current frames (``None`` without a previous frame)."""
        return None if self.prev_info is None else self.info.stamp - self.prev_info.stamp

    @property
    def released(self) -> bool:
        """True once :meth:`release` was called (always True for unpaired decisions)."""
        return self._release is None

    def release(self) -> None:
        """Give the frame buffers back to the pairer's pool.  Idempotent and thread-safe.

        The arrays must not be used afterwards.
        """
        release, self._release = self._release, None
        if release is not None:
            release()


class FramePairer:
    """Pairs each frame with the previously received one; see the module docstring for the rules.

    ``push`` is meant to be called from one thread (the subscription callback); decisions may be
    released from any thread.
    """

    def __init__(self, max_pair_gap_s: float | None = None, pool_size: int = 4) -> None:
        """``max_pair_gap_s``: largest accepted stamp difference (``None``/``0``: no limit).

        ``pool_size``: how many free buffers to keep for reuse.
        """
        self.max_pair_gap_s = max_pair_gap_s
        self._pool_size = max(0, int(pool_size))
        self._lock = threading.Lock()
        self._free: list[_Buffer] = []
        self._shape: tuple[int, int, int] | None = None
        self._prev_info: FrameInfo | None = None
        self._prev: _Buffer | None = None
        self.allocations = 0  #: number of frame buffers allocated so far

    @property
    def max_pair_gap_s(self) -> float | None:
        """Largest stamp gap that still pairs; ``None`` means unlimited."""
        return self._max_gap

    @max_pair_gap_s.setter
    def max_pair_gap_s(self, value: float | None) -> None:
        if value is not None and (math.isnan(value) or value < 0):
            raise ValueError(f"max_pair_gap_s must be >= 0 or None, got {value}")
        self._max_gap = value if value else None

    @property
    def previous_info(self) -> FrameInfo | None:
        """Info of the frame the next one will be paired with."""
        return self._prev_info

    @property
    def previous_image(self) -> np.ndarray | None:
        """The pairer's copy of the previous frame (read-only use; valid until the next push)."""
        return None if self._prev is None else self._prev.array

    def reset(self) -> None:
        """Forget the previous frame; the next push reports ``FIRST_FRAME``."""
        with self._lock:
            if self._prev is not None:
                self._unref(self._prev)
            self._prev = None
            self._prev_info = None

    def classify(self, info: FrameInfo) -> PairReason:
        """The reason :meth:`push` would report for ``info`` (no state change)."""
        prev = self._prev_info
        if prev is None:
            return PairReason.FIRST_FRAME
        if not info.same_format(prev):
            return PairReason.RESET_FORMAT_CHANGE
        if not info.stamp > prev.stamp:
            return PairReason.RESET_TIME_BACKWARDS
        if self._max_gap is not None and info.stamp - prev.stamp > self._max_gap:
            return PairReason.RESET_GAP
        return PairReason.PAIRED

    def push(self, info: FrameInfo, image: np.ndarray) -> PairDecision:
        """Register a new frame (``(H, W, 3)`` uint8 RGB, any strides) and decide whether it pairs.

        The image is copied (once) into a pooled buffer, so the caller may reuse or drop ``image``
        as soon as this returns.  A ``PAIRED`` decision must be :meth:`~PairDecision.release`\\ d
        when its images are no longer needed.
        """
        shape = (int(info.height), int(info.width), 3)
        if image.shape != shape or image.dtype != np.uint8:
            raise ValueError(f"image {image.shape} {image.dtype} does not match {shape} uint8 for {info}")
        reason = self.classify(info)
        prev_info = self._prev_info
        with self._lock:
            current = self._acquire(shape)
        np.copyto(current.array, image)
        with self._lock:
            previous = self._prev
            self._prev, self._prev_info = current, info
            if reason is not PairReason.PAIRED:
                if previous is not None:
                    self._unref(previous)
                return PairDecision(reason, info, prev_info)
            assert previous is not None
            # The decision takes over the pairer's reference to `previous`, and adds one to `current`.
            current.refs += 1
        return PairDecision(
            reason,
            info,
            prev_info,
            prev_image=previous.array,
            image=current.array,
            _release=lambda: self._release_pair(previous, current),
        )

    # -- pool (callers hold self._lock) -------------------------------------------------------

    def _acquire(self, shape: tuple[int, int, int]) -> _Buffer:
        if shape != self._shape:
            self._shape = shape
            self._free.clear()  # buffers of the old size are dropped, not reused
        buf = self._free.pop() if self._free else None
        if buf is None:
            buf = _Buffer(shape)
            self.allocations += 1
        buf.refs = 1
        return buf

    def _unref(self, buf: _Buffer) -> None:
        buf.refs -= 1
        if buf.refs == 0 and buf.array.shape == self._shape and len(self._free) < self._pool_size:
            self._free.append(buf)

    def _release_pair(self, previous: _Buffer, current: _Buffer) -> None:
        with self._lock:
            self._unref(previous)
            self._unref(current)


T = TypeVar("T")
K = TypeVar("K")


class LatestPerKey(Generic[K, T]):
    """A hand-off between producers and one worker that keeps only the newest item per key (per camera).

    ``offer(key, item)`` replaces that key's pending item (the old one is counted in ``dropped`` and passed
    to ``on_drop`` outside the lock, e.g. to release its buffers).  ``take_all`` waits for at least one
    item and returns every pending item at once, oldest key first: the pairs that are ready together,
    which the worker runs as one batch.  ``close`` wakes the worker; afterwards ``take_all`` returns an
    empty list at once and ``offer`` drops its item.
    """

    def __init__(self, on_drop: Callable[[T], None] | None = None) -> None:
        """``on_drop``: called with each item that is replaced or discarded without being taken."""
        self._cond = threading.Condition(threading.Lock())
        self._items: dict[K, T] = {}
        self._closed = False
        self._on_drop = on_drop
        self.offered = 0  #: items passed to offer()
        self.dropped = 0  #: items replaced or discarded before being taken
        self.taken = 0  #: items returned by take_all()

    @property
    def pending(self) -> bool:
        """True when an item is waiting to be taken."""
        with self._cond:
            return bool(self._items)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def offer(self, key: K, item: T) -> bool:
        """Make ``item`` the pending item of ``key``; True when an older pending item was dropped."""
        dropped: list[T] = []
        replaced = False
        with self._cond:
            self.offered += 1
            if self._closed:
                self.dropped += 1
                dropped.append(item)
            else:
                replaced = key in self._items
                if replaced:
                    self.dropped += 1
                    dropped.append(self._items.pop(key))
                self._items[key] = item  # (re-)inserted: its place in the order is now the newest
                self._cond.notify()
        self._drop(dropped)
        return replaced

    def take_all(self, timeout: float | None = None) -> list[T]:
        """Remove and return every pending item, waiting up to ``timeout`` s for one (``None``: forever).

        Returns an empty list on timeout or once the slot is closed.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items) or self._closed, timeout):
                return []
            if self._closed:
                return []
            items = list(self._items.values())
            self._items.clear()
            self.taken += len(items)
            return items

    def clear(self) -> int:
        """Discard every pending item (counted as dropped); returns how many there were."""
        with self._cond:
            dropped = list(self._items.values())
            self._items.clear()
            self.dropped += len(dropped)
        self._drop(dropped)
        return len(dropped)

    def close(self) -> None:
        """Discard the pending items and wake the waiting worker."""
        self.clear()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _drop(self, items: list[T]) -> None:
        if self._on_drop is not None:
            for item in items:
                self._on_drop(item)


class LatestOnlySlot(LatestPerKey[None, T]):
    """:class:`LatestPerKey` with a single key: one pending item, replaced by a newer one."""

    def offer(self, item: T) -> bool:  # type: ignore[override]
        """Make ``item`` the pending item; returns True when an older pending item was dropped."""
        return super().offer(None, item)

    def take(self, timeout: float | None = None) -> T | None:
        """Remove and return the pending item, waiting up to ``timeout`` s (``None``: forever).

        Returns ``None`` on timeout or once the slot is closed.
        """
        items = self.take_all(timeout)
        return items[0] if items else None

    def clear(self) -> bool:
        """Discard the pending item (counted as dropped); True when there was one."""
        return super().clear() > 0


class StampMatcher(Generic[T]):
    """The newest few stamped items (camera_info messages), matched to a frame by stamp.  Thread-safe.

    :meth:`match` returns the item with exactly the frame's stamp, else the newest one stamped at most
    ``period`` seconds before the frame (a camera_info published once per frame, slightly early or
    late, or a driver that stamps its info with the previous frame's time), else ``None``.
    """

    def __init__(self, keep: int = 8, tolerance_s: float = 1e-6) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[float, T]] = []
        self._keep = max(1, keep)
        self._tolerance = tolerance_s

    def add(self, stamp: float, item: T) -> None:
        """Remember ``item`` stamped ``stamp`` (the oldest is forgotten beyond ``keep``)."""
        with self._lock:
            self._items.append((stamp, item))
            self._items.sort(key=lambda entry: entry[0])
            del self._items[: -self._keep]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def match(self, stamp: float, period: float | None) -> T | None:
        """The item for a frame stamped ``stamp``; ``period``: the frame period (s), None if unknown."""
        with self._lock:
            best: tuple[float, T] | None = None
            for entry in self._items:
                if abs(entry[0] - stamp) <= self._tolerance:
                    return entry[1]
                if entry[0] < stamp and (best is None or entry[0] > best[0]):
                    best = entry
        if best is None or period is None or stamp - best[0] > period + self._tolerance:
            return None
        return best[1]


class FrameLossEstimator:
    """Estimates frames lost on the way in from the spacing of the stamps that did arrive.

    The frame period is a low quantile (the 10th percentile) of the last ``window`` positive stamp steps,
    normalised by the frames each step is estimated to span: under heavy loss most steps span several
    periods, so a median would mistake two periods for one.  A step of about ``k``
    periods means ``k - 1`` frames were lost (published by the camera, never received: DDS lost them or
    the subscriber's queue overflowed).  Steps longer than ``max_periods`` periods are a pause of the
    stream, not losses; steps back in time restart the estimate.
    """

    def __init__(self, window: int = 31, max_periods: float = 20.0) -> None:
        self._window = window
        self._max_periods = max_periods
        self._steps: list[float] = []
        self._last: float | None = None
        self.received = 0  #: frames observed
        self.lost = 0  #: frames estimated lost so far

    @property
    def period(self) -> float | None:
        """The estimated frame period (s), once a few steps were seen."""
        if len(self._steps) < 3:
            return None
        ordered = sorted(self._steps)
        return ordered[len(ordered) // 10]

    def observe(self, stamp: float) -> int:
        """Register a received frame's stamp; returns the frames estimated lost just before it."""
        self.received += 1
        last, self._last = self._last, stamp
        if last is None or not stamp > last:
            if last is not None:
                self._steps.clear()  # time went backwards (bag loop, restarted driver): start again
            return 0
        step = stamp - last
        period = self.period
        missing = 0
        if period is not None and period > 0:
            ratio = step / period
            if 1.5 <= ratio <= self._max_periods:
                missing = round(ratio) - 1
                self.lost += missing
        if period is None or step / max(period, 1e-12) <= self._max_periods:
            self._steps.append(step if not missing else step / (missing + 1))
            del self._steps[: -self._window]
        return missing

    @property
    def loss_fraction(self) -> float:
        """lost / (received + lost): the estimated share of the camera's frames that never arrived."""
        total = self.received + self.lost
        return self.lost / total if total else 0.0
