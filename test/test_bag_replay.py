"""The player's replay of a bag into the node gives the same pairs as flownet2-bag on that bag.

One recording with the cases that decide pairing (regular frames, a stamp going backwards, a size
change, a long gap), replayed by ``image_sequence_player`` (bag mode) into a :class:`FlowNode` and run
through :func:`process_bag`; both use the stand-in backend, and the pairs are compared through
``flow/previous_stamp`` (each pair's two stamps) and the flow messages' headers.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(100, 199)))

import pytest
from rclpy.parameter import Parameter
from test_bag import PERIOD, T0, info_msg, raw_frame, read_bag, run, texture, write_bag
from test_flow_node import NodeHarness

from flownet2_ros.ros.sequence_player import SequencePlayer

pytestmark = pytest.mark.ros


def _ns(stamp: object) -> int:
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)  # type: ignore[attr-defined]


def _recording(path: Path) -> tuple[Path, int]:
    """/cam/image_raw + /cam/camera_info at 10 Hz bag time; header stamps jump back once, the size
    changes once, and one gap is 3 s long."""
    stamps = [T0 + i * PERIOD for i in range(4)]  # 4 regular frames
    stamps += [T0 - 5 * 10**9 + i * PERIOD for i in range(3)]  # the clock jumped back 5 s
    stamps += [stamps[-1] + 3 * 10**9 + i * PERIOD for i in range(3)]  # a 3 s gap (still pairs: no limit)
    sizes = [(48, 64)] * 8 + [(40, 56)] * 2  # the last two frames change size
    messages = []
    for i, (stamp, (height, width)) in enumerate(zip(stamps, sizes, strict=True)):
        ns = T0 + i * PERIOD  # bag time always increases
        rgb = texture(height, width, i)
        messages.append(("/cam/image_raw", "sensor_msgs/msg/Image", ns, raw_frame(stamp, rgb)))
        messages.append(
            ("/cam/camera_info", "sensor_msgs/msg/CameraInfo", ns, info_msg(stamp, width, height))
        )
    return write_bag(path, messages), len(stamps)


def test_player_replay_into_the_node_pairs_like_the_bag_tool(tmp_path: Path) -> None:
    bag, frames = _recording(tmp_path / "rec")
    summary = run(bag, tmp_path / "out.mcap")
    out = read_bag(tmp_path / "out.mcap")
    tool_pairs = [(_ns(m.time_ref), _ns(m.header.stamp)) for _, m in out["/cam/flow/previous_stamp"]]
    assert len(tool_pairs) == summary.pairs == frames - 1 - 2  # the jump back and the size change reset

    h = NodeHarness(params={"input_reliability": "reliable"}, outputs=("flow", "flow/previous_stamp"))
    player = SequencePlayer(
        namespace=h.namespace,
        context=h.context,
        parameter_overrides=[
            Parameter("bag", value=str(bag)),
            Parameter("rate", value=2.0),
            Parameter("loop", value=False),
        ],
    )
    try:
        h.executor.add_node(player)
        h.wait_for(lambda: player.finished, timeout=20.0, what="the player to finish")
        h.wait_for(lambda: h.count("flow/previous_stamp") >= len(tool_pairs), timeout=10.0, what="all pairs")
        node_pairs = [(_ns(m.time_ref), _ns(m.header.stamp)) for m in h.messages("flow/previous_stamp")]
        assert player.frames_published == frames
        assert node_pairs == tool_pairs
        assert [m.header for m in h.messages("flow")] == [m.header for _, m in out["/cam/flow"]]
    finally:
        h.executor.remove_node(player)
        player.destroy_node()
        h.close()
