"""Frame pairing rules and the latest-only slot (flownet2_ros.ros.pairing); no ROS needed."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from flownet2_ros.ros.pairing import FrameInfo, FramePairer, LatestOnlySlot, PairDecision, PairReason

H, W = 6, 8


def info(
    stamp: float, height: int = H, width: int = W, encoding: str = "rgb8", frame_id: str = "cam"
) -> FrameInfo:
    return FrameInfo(stamp=stamp, height=height, width=width, encoding=encoding, frame_id=frame_id)


def frame(value: int, height: int = H, width: int = W) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


def filled(image: np.ndarray | None, value: float) -> bool:
    """True when ``image`` exists and every element equals ``value``."""
    return image is not None and bool((image == value).all())


def push(pairer: FramePairer, stamp: float, value: int = 0, **kw: Any) -> PairDecision:
    fi = info(stamp, **kw)
    return pairer.push(fi, frame(value, fi.height, fi.width))


# ---------------------------------------------------------------------------------------------
# rules


def test_first_frame_then_pairs_with_previous_received() -> None:
    p = FramePairer()
    d0 = push(p, 1.0, 10)
    assert d0.reason is PairReason.FIRST_FRAME and not d0.paired
    assert d0.prev_image is None and d0.image is None and d0.prev_info is None and d0.dt is None
    assert d0.released
    d1 = push(p, 1.1, 11)
    assert not d1.released
    assert d1.reason is PairReason.PAIRED and d1.paired
    assert d1.prev_info == info(1.0) and d1.info == info(1.1)
    assert d1.dt == pytest.approx(0.1)
    assert d1.prev_image is not None and d1.image is not None
    assert filled(d1.prev_image, 10) and filled(d1.image, 11)
    d2 = push(p, 1.2, 12)
    assert d2.paired and filled(d2.prev_image, 11) and filled(d2.image, 12)
    # Earlier decision untouched while not released.
    assert filled(d1.prev_image, 10) and filled(d1.image, 11)


@pytest.mark.parametrize("stamp", [0.5, 1.0])
def test_time_backwards_or_equal_resets(stamp: float) -> None:
    p = FramePairer()
    push(p, 1.0, 1)
    d = push(p, stamp, 2)
    assert d.reason is PairReason.RESET_TIME_BACKWARDS and not d.paired and d.image is None
    assert d.prev_info == info(1.0)
    # The new frame became the previous one.
    d = push(p, stamp + 0.1, 3)
    assert d.paired and filled(d.prev_image, 2) and d.prev_info == info(stamp)


def test_gap_resets() -> None:
    p = FramePairer(max_pair_gap_s=0.5)
    push(p, 1.0)
    assert push(p, 1.5).reason is PairReason.PAIRED  # exactly the limit still pairs
    assert push(p, 2.01).reason is PairReason.RESET_GAP
    assert push(p, 2.2).reason is PairReason.PAIRED


@pytest.mark.parametrize("limit", [None, 0, 0.0])
def test_no_gap_limit(limit: float | None) -> None:
    p = FramePairer(max_pair_gap_s=limit)
    assert p.max_pair_gap_s is None
    push(p, 1.0)
    assert push(p, 1e6).reason is PairReason.PAIRED


def test_gap_limit_validation_and_update() -> None:
    with pytest.raises(ValueError):
        FramePairer(max_pair_gap_s=-1.0)
    with pytest.raises(ValueError):
        FramePairer(max_pair_gap_s=float("nan"))
    p = FramePairer()
    push(p, 1.0)
    p.max_pair_gap_s = 0.1
    assert push(p, 2.0).reason is PairReason.RESET_GAP


@pytest.mark.parametrize(
    "change",
    [
        {"height": H + 2},
        {"width": W - 2},
        {"encoding": "bgr8"},
        {"frame_id": "other"},
    ],
)
def test_format_change_resets(change: dict[str, Any]) -> None:
    p = FramePairer(max_pair_gap_s=10.0)
    push(p, 1.0)
    d = push(p, 1.1, **change)
    assert d.reason is PairReason.RESET_FORMAT_CHANGE and not d.paired
    assert push(p, 1.2, **change).reason is PairReason.PAIRED


def test_format_change_takes_precedence_over_time() -> None:
    p = FramePairer()
    push(p, 2.0)
    assert push(p, 1.0, frame_id="x").reason is PairReason.RESET_FORMAT_CHANGE


def test_reset_and_classify() -> None:
    p = FramePairer()
    assert p.classify(info(1.0)) is PairReason.FIRST_FRAME
    push(p, 1.0, 5)
    assert p.previous_info == info(1.0)
    assert p.previous_image is not None and (p.previous_image == 5).all()
    assert p.classify(info(2.0)) is PairReason.PAIRED
    assert p.previous_info == info(1.0)  # classify does not change state
    p.reset()
    assert p.previous_info is None and p.previous_image is None
    assert push(p, 2.0).reason is PairReason.FIRST_FRAME


def test_image_shape_must_match_info() -> None:
    p = FramePairer()
    with pytest.raises(ValueError):
        p.push(info(1.0), frame(0, H + 1, W))
    with pytest.raises(ValueError):
        p.push(info(1.0), np.zeros((H, W, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# buffers


def test_pairer_copies_the_frame() -> None:
    p = FramePairer()
    src = frame(1)
    push_info = info(1.0)
    p.push(push_info, src)
    src[:] = 99  # e.g. the conversion buffer reused for the next frame
    d = p.push(info(2.0), frame(2))
    assert filled(d.prev_image, 1)
    assert not np.shares_memory(d.image, src)


def test_strided_input_becomes_contiguous() -> None:
    p = FramePairer()
    big = np.arange(H * (W + 4) * 3, dtype=np.uint8).reshape(H, W + 4, 3)
    view = big[:, 2 : W + 2]
    p.push(info(1.0), view)
    d = p.push(info(2.0), view)
    assert d.prev_image is not None and d.prev_image.flags.c_contiguous
    np.testing.assert_array_equal(d.prev_image, view)


def test_buffers_reused_across_same_size_frames() -> None:
    p = FramePairer()
    push(p, 0.0, 0)
    seen: set[int] = set()
    for i in range(1, 20):
        d = push(p, float(i), i)
        assert d.paired and filled(d.prev_image, i - 1) and filled(d.image, i)
        assert d.prev_image is not None and d.image is not None
        seen.update({id(d.prev_image), id(d.image)})
        d.release()
        d.release()  # idempotent
    assert p.allocations == 2
    assert len(seen) == 2  # the same two buffer objects alternate


def test_reset_frames_reuse_buffers_too() -> None:
    p = FramePairer()
    for i in range(10):
        assert push(p, 10.0 - i, i).reason in (PairReason.FIRST_FRAME, PairReason.RESET_TIME_BACKWARDS)
    assert p.allocations == 2


def test_buffer_reallocated_on_size_change() -> None:
    p = FramePairer()
    push(p, 0.0)
    d = push(p, 1.0)
    d.release()
    allocated = p.allocations
    small = push(p, 2.0, height=4, width=4)
    assert small.reason is PairReason.RESET_FORMAT_CHANGE
    assert p.allocations == allocated + 1
    assert p.previous_image is not None and p.previous_image.shape == (4, 4, 3)
    d = push(p, 3.0, height=4, width=4)
    assert d.paired and d.image is not None and d.image.shape == (4, 4, 3)
    d.release()
    before = p.allocations
    for t in range(4, 10):
        push(p, float(t), height=4, width=4).release()
    assert p.allocations == before


def test_in_flight_decisions_are_never_overwritten() -> None:
    """A decision the worker still holds keeps its pixels while newer frames arrive."""
    p = FramePairer()
    push(p, 0.0, 0)
    held = push(p, 1.0, 1)  # "in the worker"
    others = []
    for i in range(2, 12):
        d = push(p, float(i), i)
        others.append(d)
        if i % 2:
            d.release()  # some decisions released (taken and done, or dropped)
    assert filled(held.prev_image, 0) and filled(held.image, 1)
    for d in others:
        if not d.released:
            assert filled(d.prev_image, d.info.stamp - 1) and filled(d.image, d.info.stamp)
    held.release()


def test_unreleased_decisions_only_cost_allocations() -> None:
    p = FramePairer()
    decisions = [push(p, float(i), i) for i in range(6)]
    for i, d in enumerate(decisions[1:], start=1):
        assert filled(d.prev_image, i - 1) and filled(d.image, i)
    assert p.allocations == 6


# ---------------------------------------------------------------------------------------------
# LatestOnlySlot


def test_slot_basic() -> None:
    slot: LatestOnlySlot[int] = LatestOnlySlot()
    assert slot.take(timeout=0) is None
    assert slot.offer(1) is False
    assert slot.pending
    assert slot.offer(2) is True  # 1 dropped
    assert slot.take(timeout=0) == 2
    assert slot.take(timeout=0.01) is None
    assert (slot.offered, slot.dropped, slot.taken) == (2, 1, 1)


def test_slot_on_drop_releases_pairs() -> None:
    p = FramePairer()
    slot: LatestOnlySlot[PairDecision] = LatestOnlySlot(on_drop=PairDecision.release)
    push(p, 0.0)
    for i in range(1, 10):
        slot.offer(push(p, float(i), i))
    d = slot.take(timeout=0)
    assert d is not None and filled(d.image, 9) and filled(d.prev_image, 8)
    d.release()
    assert slot.dropped == 8
    assert p.allocations <= 3


def test_slot_take_waits_and_close_wakes() -> None:
    slot: LatestOnlySlot[str] = LatestOnlySlot()
    results: list[str | None] = []
    t = threading.Thread(target=lambda: results.append(slot.take(timeout=5)))
    t.start()
    time.sleep(0.02)
    slot.offer("x")
    t.join(2)
    assert results == ["x"]

    t = threading.Thread(target=lambda: results.append(slot.take()))
    t.start()
    time.sleep(0.02)
    slot.close()
    t.join(2)
    assert not t.is_alive() and results[-1] is None
    dropped: list[str] = []
    closed: LatestOnlySlot[str] = LatestOnlySlot(on_drop=dropped.append)
    closed.offer("a")
    closed.close()
    assert closed.closed and dropped == ["a"]
    assert closed.offer("b") is False and dropped == ["a", "b"]
    assert closed.take(timeout=0) is None
    assert closed.clear() is False


def test_slot_thread_safety_counts_add_up() -> None:
    dropped_items: list[int] = []
    slot: LatestOnlySlot[int] = LatestOnlySlot(on_drop=dropped_items.append)
    n_producers, per_producer = 4, 2000
    taken: list[int] = []
    done = threading.Event()

    def produce(base: int) -> None:
        for i in range(per_producer):
            slot.offer(base + i)

    def consume() -> None:
        while not done.is_set() or slot.pending:
            item = slot.take(timeout=0.01)
            if item is not None:
                taken.append(item)

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(k * per_producer,)) for k in range(n_producers)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    done.set()
    consumer.join(5)
    assert not consumer.is_alive()
    total = n_producers * per_producer
    assert slot.offered == total
    assert slot.taken == len(taken)
    assert slot.dropped == len(dropped_items)
    assert slot.taken + slot.dropped == total
    assert sorted(taken + dropped_items) == list(range(total))  # every item exactly once
    # Per producer, items are taken in order.
    for k in range(n_producers):
        mine = [x for x in taken if k * per_producer <= x < (k + 1) * per_producer]
        assert mine == sorted(mine)


def test_pairer_with_worker_thread() -> None:
    """Callback thread pushes, worker takes and releases: pixels always consistent."""
    p = FramePairer()
    slot: LatestOnlySlot[PairDecision] = LatestOnlySlot(on_drop=PairDecision.release)
    errors: list[str] = []
    processed = [0]

    def worker() -> None:
        while True:
            d = slot.take(timeout=1)
            if d is None:
                return
            assert d.prev_image is not None and d.image is not None
            a, b = int(d.prev_image[0, 0, 0]), int(d.image[0, 0, 0])
            time.sleep(0.0002)  # "inference"
            if not (filled(d.prev_image, a) and filled(d.image, b) and b == (a + 1) % 256):
                errors.append(f"inconsistent pair {a} {b}")
            processed[0] += 1
            d.release()

    t = threading.Thread(target=worker)
    t.start()
    for i in range(600):
        d = p.push(info(float(i)), frame(i % 256))
        if d.paired:
            slot.offer(d)
        if i % 4 == 0:
            time.sleep(0.0005)  # camera rate: let the worker run
    slot.close()
    t.join(5)
    assert not errors and processed[0] > 0
    assert slot.taken + slot.dropped == slot.offered == 599
    assert p.allocations <= 8


# ------------------------------------------------------------------------------------------------------
# FrameLossEstimator, StampMatcher, LatestPerKey


def test_loss_estimator_counts_missing_frames_even_under_heavy_loss() -> None:
    from flownet2_ros.ros.pairing import FrameLossEstimator

    rng = np.random.default_rng(3)
    for keep in (0.9, 0.5, 0.3):
        kept = [i for i in range(400) if i < 5 or rng.random() < keep]
        est = FrameLossEstimator()
        for i in kept:
            est.observe(100.0 + i / 30.0 + rng.normal(0, 0.001))  # 30 Hz with 1 ms stamp jitter
        missing = kept[-1] + 1 - len(kept)
        assert est.period == pytest.approx(1 / 30, rel=0.1)
        assert abs(est.lost - missing) <= 0.05 * missing + 2, (keep, est.lost, missing)
        assert est.loss_fraction == pytest.approx(missing / (kept[-1] + 1), abs=0.03)


def test_loss_estimator_ignores_pauses_and_restarts() -> None:
    from flownet2_ros.ros.pairing import FrameLossEstimator

    est = FrameLossEstimator()
    for i in range(10):
        est.observe(10.0 + 0.1 * i)
    assert est.observe(60.0) == 0  # a 50 s pause: the stream stopped, nothing was lost
    assert est.observe(5.0) == 0 and est.period is None  # time went backwards: the estimate restarts
    assert est.lost == 0 and est.received == 12


def test_stamp_matcher_exact_then_within_a_period() -> None:
    from flownet2_ros.ros.pairing import StampMatcher

    matcher: StampMatcher[str] = StampMatcher(keep=3)
    for stamp, item in ((1.0, "a"), (1.1, "b"), (1.2, "c"), (1.3, "d")):
        matcher.add(stamp, item)
    assert len(matcher) == 3  # "a" forgotten
    assert matcher.match(1.2, 0.1) == "c"  # exact
    assert matcher.match(1.25, 0.1) == "c"  # newest older one within a period
    assert matcher.match(1.45, 0.1) is None  # 0.15 s old: more than a period
    assert matcher.match(1.45, None) is None  # no period known: only exact matches
    assert matcher.match(1.0, 0.5) is None  # nothing older is kept
    matcher.clear()
    assert matcher.match(1.3, 1.0) is None


def test_latest_per_key_keeps_one_item_per_key_and_hands_them_over_together() -> None:
    from flownet2_ros.ros.pairing import LatestPerKey

    dropped: list[str] = []
    slot: LatestPerKey[str, str] = LatestPerKey(on_drop=dropped.append)
    assert slot.offer("front", "f1") is False
    assert slot.offer("rear", "r1") is False
    assert slot.offer("front", "f2") is True and dropped == ["f1"]
    assert slot.take_all(timeout=0) == ["r1", "f2"]  # oldest key first
    assert slot.take_all(timeout=0.01) == []
    slot.offer("rear", "r2")
    slot.close()
    assert dropped == ["f1", "r2"] and slot.take_all() == []
    assert slot.offer("front", "f3") is False and dropped[-1] == "f3"
    assert (slot.offered, slot.taken, slot.dropped) == (5, 2, 3)
