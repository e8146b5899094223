"""Per-frame cost of the flow node apart from the backend (``python -m flownet2_ros.bench.node_overhead``).

Runs a real :class:`~flownet2_ros.ros.flow_node.FlowNode` in this process with real rclpy and DDS, fed
by a publisher node and read by a subscriber node in a second process (so that publishing pays the
real middleware cost of a remote subscriber, and subscribers exist for every output).  Two backends:

* :class:`~flownet2_ros.backends.fixed.FixedFlowEstimator`, which does no work (it writes a precomputed flow into ``out``): the
  node's overhead alone — message → array, pairing (one copy), hand-off to the worker, magnitude,
  colour, building and publishing all outputs;
* the thin FlowNet2S with random weights on this machine's CPU (``--torch``): the backend's time.

Reported per frame (median over the frames): overhead measured inside the node (callback + worker
outside ``estimate``) and split by stage with the same code the node runs, backend time, and their
ratio.  Everything runs at 640x480 rgb8 by default.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from ..backends import FlowEstimator
from ..backends.fixed import FixedFlowEstimator, default_flow, fixed_factory

__all__ = ["main", "run_benchmark"]


# ------------------------------------------------------------------------------------------ benchmark

_SUBSCRIBER = """
import sys, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, TimeReference
rclpy.init()
node = rclpy.create_node("node_benchmark_sink", namespace=sys.argv[1])
qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
count = [0]
def seen(msg):
    count[0] += 1
for topic in ("flow", "flow/magnitude", "flow/color"):
    node.create_subscription(Image, topic, seen, qos)
node.create_subscription(TimeReference, "flow/previous_stamp", seen, qos)
print("ready", flush=True)
try:
    rclpy.spin(node)
except BaseException:
    pass
"""


def _stage_times(flow: np.ndarray, frames: int) -> dict[str, float]:
    """Median ms of the node's compute stages (same functions, same buffers) without ROS."""
    from ..flowio.visualize import flow_magnitude, flow_to_color
    from .flow_node import _ImageOutput
    from .image_convert import image_msg_to_array, rgb_to_image_msg
    from .pairing import FrameInfo, FramePairer

    height, width = flow.shape[:2]
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    msg = rgb_to_image_msg(rgb)
    pairer = FramePairer()
    out_mag = _ImageOutput("32FC1", np.float32, 1)
    out_color = _ImageOutput("rgb8", np.uint8, 3)
    out_flow = _ImageOutput("32FC2", np.float32, 2)
    keys = ("to_array", "pair_copy", "flow_write", "magnitude_alone_exact", "color_with_magnitude")
    stages: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(frames):
        t0 = time.perf_counter()
        array, _ = image_msg_to_array(msg)
        t1 = time.perf_counter()
        decision = pairer.push(FrameInfo(float(i + 1), height, width, "rgb8", "cam"), array)
        t2 = time.perf_counter()
        np.copyto(out_flow.view(height, width), flow)  # what a backend's device->host copy costs here
        t3 = time.perf_counter()
        flow_magnitude(flow, out=out_mag.view(height, width))  # the node's path when only it is wanted
        t4 = time.perf_counter()
        flow_to_color(
            flow, 20.0, out=out_color.view(height, width), magnitude_out=out_mag.view(height, width)
        )
        t5 = time.perf_counter()
        decision.release()
        for key, value in zip(keys, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            stages[key].append(value * 1000.0)
    return {k: statistics.median(v) for k, v in stages.items()}


def _color_speed(height: int, width: int, repeats: int = 10) -> dict[str, float]:
    from ..flowio.visualize import flow_to_color

    flow = default_flow(height, width)
    out = np.empty((height, width, 3), np.uint8)
    result = {}
    for label, exact in (("lut", False), ("exact_formula", True)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            flow_to_color(flow, 20.0, out=out, exact=exact)
            times.append((time.perf_counter() - t0) * 1000.0)
        result[label] = statistics.median(times)
    return result


def run_benchmark(
    width: int = 640,
    height: int = 480,
    frames: int = 60,
    rate_hz: float = 15.0,
    torch_backend: bool = False,
    checkpoint: str = "",
) -> dict[str, object]:
    """Run the node with the chosen backend and return the measurements (see the module docstring)."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(120, 229)))
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from .flow_node import FlowNode
    from .image_convert import rgb_to_image_msg

    namespace = f"/node_bench_{os.getpid()}"
    sink = subprocess.Popen(
        [sys.executable, "-c", _SUBSCRIBER, namespace],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert sink.stdout is not None
    sink.stdout.readline()
    context = rclpy.Context()
    rclpy.init(context=context)
    factory = None
    estimator: FlowEstimator | None = None
    overrides = []
    if not torch_backend:
        estimator = FixedFlowEstimator()
        factory = fixed_factory(estimator)
    else:
        from rclpy.parameter import Parameter

        overrides = [
            Parameter("max_pair_gap_s", value=0.0),
            Parameter("backend", value="torch"),
            Parameter("checkpoint", value=checkpoint),
            Parameter("device", value="cpu"),
        ]
    node = FlowNode(
        "flownet2",
        namespace=namespace,
        context=context,
        estimator_factory=factory,
        parameter_overrides=overrides,
    )
    source = rclpy.create_node("node_benchmark_source", namespace=namespace, context=context)
    from .flow_node import input_qos

    pub = source.create_publisher(Image, "image", input_qos(2))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(source)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    try:
        if not node.start():
            raise RuntimeError(f"the node did not start: {node.failure}")
        spinner.start()
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and (
            pub.get_subscription_count() == 0 or node.cameras[0].pubs["color"].get_subscription_count() == 0
        ):
            time.sleep(0.05)
        rng = np.random.default_rng(1)
        base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        overheads: list[float] = []
        backends: list[float] = []
        original = node.stats.frame_published

        def record(latency_s: float, backend_s: float, overhead_s: float) -> None:
            overheads.append(overhead_s * 1000.0)
            backends.append(backend_s * 1000.0)
            original(latency_s, backend_s, overhead_s)

        node.stats.frame_published = record
        period = 1.0 / rate_hz
        warm = 1 if torch_backend else 5
        deadline = time.monotonic() + (180.0 if torch_backend else 60.0)
        sent = 0
        # with the no-work backend every pair is published; with the model, the slot drops pairs while
        # it is busy, so frames keep coming until enough pairs were computed
        while len(backends) < frames + warm and time.monotonic() < deadline:
            frame = np.roll(base, sent, axis=1)
            msg = rgb_to_image_msg(frame)
            msg.header.frame_id = "camera"
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            sent += 1
            time.sleep(period)
        time.sleep(0.3)
        overheads, backends = overheads[warm:], backends[warm:]
        if not overheads:
            raise RuntimeError("no flow was published")
        dropped = node.stats.dropped
    finally:
        executor.shutdown()
        node.destroy_node()
        source.destroy_node()
        rclpy.try_shutdown(context=context)
        sink.terminate()
        sink.wait(10)
    overhead = statistics.median(overheads)
    backend = statistics.median(backends)
    flow = default_flow(height, width)
    return {
        "size": f"{width}x{height}",
        "backend": "thin FlowNet2S (random weights), torch CPU"
        if torch_backend
        else "FixedFlowEstimator (no work)",
        "frames_measured": len(overheads),
        "frames_dropped": dropped,
        "node_overhead_ms_median": round(overhead, 3),
        "node_overhead_ms_p90": round(float(np.percentile(overheads, 90)), 3),
        "backend_ms_median": round(backend, 3),
        "overhead_to_backend_ratio": round(overhead / backend, 4) if backend > 0 else None,
        "stages_ms_median": {k: round(v, 3) for k, v in _stage_times(flow, 30).items()},
        "color_ms_median": {k: round(v, 3) for k, v in _color_speed(height, width).items()},
    }


def _thin_checkpoint(directory: str) -> str:
    import torch

    from ..models import build

    path = os.path.join(directory, "thin_flownet2s.pth")
    torch.save({"state_dict": build("FlowNet2S", thin=True).state_dict()}, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flownet2_ros.bench.node_overhead", description=__doc__)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=60, help="frames measured with the no-work backend")
    parser.add_argument("--torch-frames", type=int, default=8, help="frames measured with the thin model")
    parser.add_argument("--no-torch", action="store_true", help="skip the thin-model run (overhead only)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)

    results = {"overhead": run_benchmark(args.width, args.height, args.frames)}
    if not args.no_torch:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = _thin_checkpoint(tmp)
            results["torch"] = run_benchmark(
                args.width,
                args.height,
                args.torch_frames,
                rate_hz=2.0,
                torch_backend=True,
                checkpoint=checkpoint,
            )
        over = results["overhead"]["node_overhead_ms_median"]
        back = results["torch"]["backend_ms_median"]
        assert isinstance(over, float) and isinstance(back, float)
        results["summary"] = {
            "node_overhead_ms": over,
            "thin_flownet2s_cpu_backend_ms": back,
            "overhead_over_backend": round(over / back, 4),
        }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, result in results.items():
            print(f"== {name}")
            for key, value in result.items():
                print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
