"""Bad input never kills the flow node: a hypothesis-driven stream of malformed and odd messages.

One running node (real rclpy, real DDS) receives, per example, a random mix of good frames (rgb8 and the
other supported encodings) and broken ones (wrong step, short data, zero size, huge images, unknown or
unconvertible encodings with drawn names, YUV 4:2:2 of odd width, NV12 of odd height, short rgb16, NV21
with too small a step), size changes, time jumps and backend exceptions.  After each example the node
must still be alive, must have counted every problem under its kind, and must publish flow for the next
good frame pair.  Then four cameras in one node, raw and compressed (JPEG frames; PNG bombs, truncated
PNG, garbage...): the two cameras fed bad messages count each one under their own name, the two fed good
frames publish flow for every pair.  The message catalogue is the one of
``python -m flownet2_ros.bench.node_robustness``, which sends 10,000 of them to a node in another process.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_flow_node import NodeHarness, image_msg

from flownet2_ros.backends.fixed import FixedFlowEstimator
from flownet2_ros.bench.node_robustness import (
    COMPRESSED_CASES,
    RAW_CASES,
    UNSUPPORTED_NAMES,
    VALID_ENCODINGS,
    jpeg_frame,
    malformed_compressed,
    malformed_image,
    raw_frame,
)
from flownet2_ros.ros.image_convert import IMAGE_ENCODINGS, KIND_UNSUPPORTED_ENCODING

pytestmark = pytest.mark.ros

MAX_PIXELS = 200 * 200


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def next(self, dt: float = 0.05) -> float:
        self.t += dt
        return self.t


@pytest.fixture(scope="module")
def harness() -> Iterator[NodeHarness]:
    failing = {"on": False}
    estimator = FixedFlowEstimator(fail=lambda call: failing["on"])
    h = NodeHarness(
        estimator=estimator,
        params={"max_image_pixels": MAX_PIXELS, "max_pair_gap_s": 1.0, "error_log_period_s": 0.5},
        outputs=("flow", "flow/previous_stamp"),
    )
    h.failing = failing  # type: ignore[attr-defined]
    h.clock = Clock()  # type: ignore[attr-defined]
    yield h
    h.close()


def broken(case: str, stamp: float, height: int = 48, width: int = 64, encoding: str | None = None) -> Any:
    """A message that must be rejected with error kind ``RAW_CASES[case]``."""
    return malformed_image(
        case, stamp, height=height, width=width, max_pixels=MAX_PIXELS, encoding=encoding, frame_id="cam"
    )


#: encoding names the node must refuse: a fixed list (empty, wrong case, 200 characters...) and drawn ones
unsupported_names = st.one_of(
    st.sampled_from(UNSUPPORTED_NAMES),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", max_size=80).filter(
        lambda name: name not in IMAGE_ENCODINGS
    ),
)

events = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(sorted(RAW_CASES)),
            st.integers(2, 40),  # height and width where the case takes them (made odd where needed)
            st.integers(2, 40),
            unsupported_names,
        ).map(lambda t: ("broken", t)),
        st.sampled_from([(48, 64), (40, 80), (96, 128)]).map(lambda s: ("good", s)),
        st.sampled_from(VALID_ENCODINGS).map(lambda e: ("good_encoded", e)),
        st.sampled_from(["backwards", "jump"]).map(lambda k: ("time", k)),
        st.just(("backend_fails", None)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=events)
def test_node_survives_any_stream(harness: NodeHarness, stream: list[tuple[str, object]]) -> None:
    h = harness
    clock: Clock = h.clock  # type: ignore[attr-defined]
    node = h.node
    errors_before = Counter(node.stats.errors)
    expected: Counter[str] = Counter()
    size = (48, 64)
    for what, arg in stream:
        if what == "broken":
            assert isinstance(arg, tuple)
            case, height, width, name = arg
            h.send(broken(case, clock.next(), height, width, encoding=name))
            expected[RAW_CASES[case]] += 1
        elif what == "good":
            assert isinstance(arg, tuple)
            size = arg
            h.send(image_msg(clock.next(), *size))
        elif what == "good_encoded":  # valid, of another encoding: a format change, no error
            assert isinstance(arg, str)
            h.send(raw_frame(clock.next(), 48, 64, arg, seed=len(expected)))
        elif what == "time":
            clock.next(-5.0 if arg == "backwards" else 30.0)
        elif what == "backend_fails":
            flows = node.stats.published
            h.failing["on"] = True  # type: ignore[attr-defined]
            try:
                before = node.stats.errors["backend_error"]
                h.send(image_msg(clock.next(), *size))
                h.send(image_msg(clock.next(), *size))
                h.wait_for(
                    functools.partial(lambda b: node.stats.errors["backend_error"] > b, before),
                    what="backend error",
                )
                expected["backend_error"] += node.stats.errors["backend_error"] - before
                assert node.stats.published == flows
            finally:
                h.settle()
                h.failing["on"] = False  # type: ignore[attr-defined]
    h.settle()
    got = Counter(node.stats.errors)
    got.subtract(errors_before)
    assert +got == +expected
    # and good frames still make flow
    published = h.count("flow/previous_stamp")
    first = clock.next()
    h.send(image_msg(first, 48, 64))
    h.send(image_msg(clock.next(), 48, 64, seed=1))
    h.wait_for(lambda: h.count("flow/previous_stamp") > published, what="flow after the stream")
    last = h.messages("flow/previous_stamp")[-1]
    assert last.time_ref.sec + last.time_ref.nanosec * 1e-9 == pytest.approx(first)
    assert node.lifecycle_state == "active" and h.thread.is_alive()
    assert node._worker is not None and node._worker.is_alive()


def test_errors_are_in_the_diagnostics(harness: NodeHarness) -> None:
    h = harness
    h.send(broken("bad_step", h.clock.next()))  # type: ignore[attr-defined]
    h.node.publish_diagnostics()
    from flownet2_ros.ros.diagnostics import build_status

    snap = h.node.stats.snapshot(recent_s=5.0)
    status = build_status(
        snap, name="x", state="active", input_topic="image", input_timeout_s=10.0, backend=None
    )
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["errors.bad_step"]) >= 1
    assert status.level in (b"\x01", b"\x02")  # recent bad input: at least WARN
    assert "bad_step" in status.message


CAMERAS = ("c0", "c1", "c2", "c3")
GOOD, BAD = ("c0", "c1"), ("c2", "c3")


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_bad_cameras_do_not_disturb_good_ones(
    harness_factory: Callable[..., NodeHarness], transport: str
) -> None:
    """c0/c1 get only good frames, c2/c3 every malformed case twice with a good frame every third message.

    Bad messages are refused before pairing: a bad camera's good frames still pair across them, and the
    good cameras publish flow for every pair (each pair is waited for, so none is replaced while pending).
    """
    compressed = transport == "compressed"
    params: dict[str, Any] = {
        "cameras": list(CAMERAS),
        "max_image_pixels": MAX_PIXELS,
        "max_pair_gap_s": 1.0,
        "error_log_period_s": 1.0,
    }
    if compressed:
        params["image_transport"] = "compressed"
    h = harness_factory(params=params, outputs=("flow", "flow/previous_stamp"), start=not compressed)
    if compressed:
        assert h.node.start(), h.node.failure
        h.wait_connected(transport="compressed")
    node = h.node
    cases = sorted(COMPRESSED_CASES if compressed else RAW_CASES)
    kinds = COMPRESSED_CASES if compressed else RAW_CASES
    streams = {"c2": cases * 2, "c3": list(reversed(cases)) * 2}
    names = iter(UNSUPPORTED_NAMES * 4)
    clocks = dict.fromkeys(CAMERAS, 50.0)
    good_frames: Counter[str] = Counter()
    expected_errors: dict[str, Counter[str]] = {c: Counter() for c in CAMERAS}
    refused_names: Counter[str] = Counter()

    def good(camera: str) -> None:
        clocks[camera] += 0.05
        seed = good_frames[camera] % 3
        msg = jpeg_frame(clocks[camera], seed=seed) if compressed else image_msg(clocks[camera], seed=seed)
        h.send(msg, camera=camera)
        good_frames[camera] += 1
        pairs = good_frames[camera] - 1
        stats = node.camera(camera).stats
        h.wait_for(lambda: stats.published >= pairs, what=f"{camera}: flow of pair {pairs}")

    def bad(camera: str, case: str) -> None:
        clocks[camera] += 0.01
        if compressed:
            msg = malformed_compressed(case, clocks[camera], seed=len(refused_names))
        else:
            name = next(names) if case == "unsupported_encoding" else None
            if name is not None:
                refused_names[name[:64] or "?"] += 1
            msg = broken(case, clocks[camera], encoding=name)
        h.send(msg, camera=camera)
        expected_errors[camera][kinds[case]] += 1

    for i in range(len(cases) * 2):
        good("c0")
        if i % 3 == 0:
            good("c2")
        bad("c2", streams["c2"][i])
        good("c1")
        if i % 3 == 1:
            good("c3")
        bad("c3", streams["c3"][i])
    h.settle()

    def flows_are(topic: str, n: int) -> bool:
        return h.count(topic) == n

    for camera in CAMERAS:
        stats = node.camera(camera).stats
        pairs = good_frames[camera] - 1
        assert Counter(stats.errors) == expected_errors[camera], camera
        assert stats.received == good_frames[camera] + sum(expected_errors[camera].values())
        assert stats.published == pairs and stats.dropped == 0, camera
        assert stats.resets == {} and stats.idle_frames == 0, camera
        h.wait_for(functools.partial(flows_are, f"{camera}/flow", pairs), what=f"{camera}/flow messages")
    for camera in GOOD:
        assert node.camera(camera).stats.errors == {}
    assert all(expected_errors[c][k] == 2 * n for c in BAD for k, n in Counter(kinds.values()).items())
    if not compressed:
        assert node.camera("c2").stats.unsupported_encodings + node.camera(
            "c3"
        ).stats.unsupported_encodings == (
            refused_names + Counter({"32FC1": 4})  # the unconvertible case: a float image
        )
    # the per-camera diagnostics say the same
    for status in node.diagnostic_statuses():
        camera = status.name.rsplit("(", 1)[1].rstrip(")")
        values = {kv.key: kv.value for kv in status.values}
        for kind in set(kinds.values()):
            assert int(values[f"errors.{kind}"]) == expected_errors[camera][kind], (camera, kind)
        if camera in GOOD:
            assert f"errors.{KIND_UNSUPPORTED_ENCODING}" in values and status.level == b"\x00", status.message
    assert node.lifecycle_state == "active" and h.thread.is_alive()
    assert node._worker is not None and node._worker.is_alive()
