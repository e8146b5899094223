"""One node serving N cameras against one node serving 1 (``python -m flownet2_ros.bench.multicamera``).

For each camera count: the flow node runs as its own process (the real ``flow_node`` with the real backend
chosen by its parameters: the embedded model by default), a second process publishes synthetic 640x480
``rgb8`` frames on every camera's ``<name>/image`` at ``--rate`` (reliable, as camera drivers publish),
and this process counts each camera's flows on ``<name>/flow/previous_stamp`` (a small message published
with every flow, so counting does not load the middleware) and their latency (receipt time minus the
frame's stamp).  After ``--warmup`` seconds, flows are counted for ``--duration`` seconds.  The node's
own ``/diagnostics`` give frames received, batch sizes and backend time.

Prints one block per camera count and the ratio of aggregate flows per second; the machine is printed
first.  Exit code 0 always (a benchmark reports, it does not judge), 2 when a process failed.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["main"]


@dataclass
class _Camera:
    name: str
    stamps: list[float] = field(default_factory=list)  # receipt times (monotonic) in the window
    latencies: list[float] = field(default_factory=list)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"
    )


def _run(count: int, args: argparse.Namespace) -> dict[str, Any]:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import TimeReference

    names = [f"c{i}" for i in range(count)]
    ns = f"/bench_{os.getpid()}_{count}"
    node_cmd = [
        sys.executable,
        "-m",
        "flownet2_ros.ros.flow_node",
        "--ros-args",
        "-r",
        f"__ns:={ns}",
        "-p",
        f"cameras:=[{','.join(names)}]",
        "-p",
        f"input_reliability:={args.reliability}",
        "-p",
        "diagnostics_period_s:=1.0",
        "-p",
        f"device:={args.device}",
        "-p",
        f"precision:={args.precision}",
        "--log-level",
        "warn",
    ]
    if args.network_size != "auto":
        width, height = (int(v) for v in args.network_size.lower().split("x"))
        node_cmd += ["-p", f"network_width:={width}", "-p", f"network_height:={height}"]
    if args.checkpoint:
        node_cmd += ["-p", f"checkpoint:={args.checkpoint}"]
    if args.torch_threads:
        node_cmd += ["-p", f"torch_threads:={args.torch_threads}"]
    total = args.warmup + args.duration
    pub_cmd = [
        sys.executable,
        "-m",
        "flownet2_ros.bench.camera_publisher",
        "--namespace",
        ns,
        "--topics",
        *[f"{n}/image" for n in names],
        "--rate",
        str(args.rate),
        "--duration",
        str(total + 2.0),
        "--reliability",
        "reliable",
    ]
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("multicamera_probe", namespace=ns, context=context)
    cameras = {n: _Camera(n) for n in names}
    lock = threading.Lock()
    window = {"start": float("inf"), "end": float("inf")}
    diag: dict[str, dict[str, str]] = {}

    def on_flow(camera: _Camera, msg: Any) -> None:
        now = time.monotonic()
        latency = time.time() - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        with lock:
            if window["start"] <= now < window["end"]:
                camera.stamps.append(now)
                camera.latencies.append(latency)

    def on_diag(msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith("flownet2: optical flow"):
                diag[status.name] = {kv.key: kv.value for kv in status.values}

    qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    for camera in cameras.values():
        probe.create_subscription(
            TimeReference, f"{camera.name}/flow/previous_stamp", functools.partial(on_flow, camera), qos
        )
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diag, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    node_proc = subprocess.Popen(node_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pub_proc: subprocess.Popen[str] | None = None
    try:
        # wait until the node subscribes to every camera (it loads the model first)
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and node_proc.poll() is None:
            topics = dict(probe.get_topic_names_and_types())
            if all(probe.count_subscribers(f"{ns}/{n}/image") > 0 for n in names) and topics:
                break
            time.sleep(0.2)
        if node_proc.poll() is not None:
            raise RuntimeError(f"the node exited: {node_proc.stdout.read() if node_proc.stdout else ''}")
        pub_proc = subprocess.Popen(pub_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)  # publisher start-up (imports), then the warm-up window
        with lock:
            window["start"] = time.monotonic() + args.warmup
            window["end"] = window["start"] + args.duration
        time.sleep(args.warmup + args.duration + 1.5)
        published = pub_proc.communicate(timeout=60)[0]
    finally:
        if pub_proc is not None and pub_proc.poll() is None:
            pub_proc.kill()
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        executor.shutdown(timeout_sec=2.0)
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
    rates = {n: len(c.stamps) / args.duration for n, c in cameras.items()}
    latencies = [v for c in cameras.values() for v in c.latencies]
    return {
        "cameras": count,
        "aggregate_hz": sum(rates.values()),
        "per_camera_hz": rates,
        "latency_ms": {
            n: (1000 * statistics.median(c.latencies) if c.latencies else float("nan"))
            for n, c in cameras.items()
        },
        "latency_p90_ms": 1000 * sorted(latencies)[int(0.9 * (len(latencies) - 1))]
        if latencies
        else float("nan"),
        "diagnostics": diag,
        "published": published.strip(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flownet2_ros.bench.multicamera",
        description="Aggregate flow rate of one node serving N cameras against N=1 (real node, real DDS).",
    )
    parser.add_argument(
        "--cameras", type=int, nargs="+", default=[1, 4], help="camera counts to run (default: 1 4)"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second per camera (default 10)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds counted per run (default 20)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds before counting starts (default 5)"
    )
    parser.add_argument(
        "--network-size",
        default="auto",
        help="network WIDTHxHEIGHT for the node (e.g. 320x256), or auto: from the frame size (default)",
    )
    parser.add_argument("--checkpoint", default="", help="weights for the node; empty: the embedded model")
    parser.add_argument("--device", default="auto", help="the node's device parameter (default auto)")
    parser.add_argument("--precision", default="fp32", help="the node's precision parameter (default fp32)")
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="the node's torch_threads (0: its default, cores - 1)"
    )
    parser.add_argument(
        "--reliability",
        choices=("reliable", "best_effort"),
        default="reliable",
        help="the node's input_reliability (the publisher is reliable; default reliable)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    print(f"machine: {_machine()}")
    print(
        f"frames: 640x480 rgb8 at {args.rate:g} Hz per camera; network {args.network_size}; "
        f"input {args.reliability}; {args.duration:g} s counted after {args.warmup:g} s"
    )
    results = []
    for count in args.cameras:
        try:
            result = _run(count, args)
        except Exception as exc:
            print(f"multicamera: run with {count} camera(s) failed: {exc}", file=sys.stderr)
            return 2
        results.append(result)
        per_camera = ", ".join(
            f"{n} {hz:.2f} Hz / {result['latency_ms'][n]:.0f} ms" for n, hz in result["per_camera_hz"].items()
        )
        print(
            f"cameras {count}: aggregate {result['aggregate_hz']:.2f} flows/s; per camera (rate / median latency): {per_camera}"
        )
        print(
            f"cameras {count}: latency p90 {result['latency_p90_ms']:.0f} ms; publisher: {result['published'].replace(chr(10), '; ')}"
        )
        for name, values in sorted(result["diagnostics"].items()):
            print(
                f"cameras {count}: {name}: received {values.get('frames_received')}, published "
                f"{values.get('frames_published')}, dropped {values.get('frames_dropped')}, lost (estimate) "
                f"{values.get('frames_lost_estimate')}, backend {values.get('backend_ms_mean')} ms, batch "
                f"{values.get('batch_size_mean')}, network {values.get('backend_network_size')}"
            )
    if len(results) >= 2 and results[0]["aggregate_hz"] > 0:
        for result in results[1:]:
            ratio = result["aggregate_hz"] / results[0]["aggregate_hz"]
            print(
                f"ratio {result['cameras']} cameras / {results[0]['cameras']}: {ratio:.2f}x aggregate flows/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
