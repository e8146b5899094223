"""Bad input never kills the flow node: a hypothesis-driven stream of malformed and odd messages.

One running node (real rclpy, real DDS) receives, per example, a random mix of good frames and broken
ones (wrong step, short data, zero size, unknown or unconvertible encoding, huge images, size changes,
time jumps, backend exceptions).  After each example the node must still be alive, must have counted
every problem under its kind, and must publish flow for the next good frame pair.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import Image
from test_flow_node import NodeHarness, image_msg

from flownet2_ros.ros.node_benchmark import FixedFlowEstimator

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


def broken(kind: str, stamp: float) -> Image:
    """A message that must be rejected with error kind ``kind``."""
    if kind == "too_large":  # claims 300x300 > MAX_PIXELS, with next to no data
        msg = Image(height=300, width=300, encoding="rgb8", step=900)
        msg.data.frombytes(bytes(10))
    elif kind == "huge_claim":  # absurd size, no data: too_large before anything is allocated
        msg = Image(height=1 << 30, width=1 << 30, encoding="mono8", step=1 << 30)
    else:
        msg = image_msg(stamp)
        if kind == "bad_step":
            msg.step = msg.width * 3 - 1
        elif kind == "short_data":
            msg = Image(height=msg.height, width=msg.width, encoding="rgb8", step=msg.step)
            msg.data.frombytes(bytes(msg.step * msg.height - 7))
        elif kind == "zero_size":
            msg = Image(height=0, width=64, encoding="rgb8", step=192)
        elif kind == "unsupported_encoding":
            msg.encoding = "yuv422_weird"
        elif kind == "unconvertible":  # a valid float image, but no RGB form
            msg = Image(height=4, width=4, encoding="32FC1", step=16)
            msg.data.frombytes(bytes(64))
    msg.header.frame_id = "cam"
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), round((stamp % 1) * 1e9)
    return msg


EXPECTED_KIND = {
    "too_large": "too_large",
    "huge_claim": "too_large",
    "bad_step": "bad_step",
    "short_data": "short_data",
    "zero_size": "zero_size",
    "unsupported_encoding": "unsupported_encoding",
    "unconvertible": "unsupported_encoding",
}

events = st.lists(
    st.one_of(
        st.sampled_from(sorted(EXPECTED_KIND)).map(lambda k: ("broken", k)),
        st.sampled_from([(48, 64), (40, 80), (96, 128)]).map(lambda s: ("good", s)),
        st.sampled_from(["backwards", "jump"]).map(lambda k: ("time", k)),
        st.just(("backend_fails", None)),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
            assert isinstance(arg, str)
            h.send(broken(arg, clock.next()))
            expected[EXPECTED_KIND[arg]] += 1
        elif what == "good":
            assert isinstance(arg, tuple)
            size = arg
            h.send(image_msg(clock.next(), *size))
        elif what == "time":
            clock.next(-5.0 if arg == "backwards" else 30.0)
        elif what == "backend_fails":
            flows = node.stats.published
            h.failing["on"] = True  # type: ignore[attr-defined]
            try:
                before = node.stats.errors["backend_error"]
                h.send(image_msg(clock.next(), *size))
                h.send(image_msg(clock.next(), *size))
                h.wait_for(lambda b=before: node.stats.errors["backend_error"] > b, what="backend error")
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
