#!/usr/bin/env bash
# Soak run of the flow node (not part of the test suite): one node serving two cameras (front, rear), each
# fed the bundled demo bag in a loop at 30 Hz (the 10 Hz recording played at demo_bag_rate:=3), for MINUTES
# (default 10). A monitor subscribes to both cameras' flow/color (the node does no work without
# subscribers) and /diagnostics; every 30 s it prints the node process's resident memory and, per camera,
# the output rate, frames dropped, pair resets and errors; at the end the slope of resident memory in
# MB/min (least squares over the samples after the first minute; RSS is sampled every 5 s).
#
# Usage: bash scripts/soak.sh [MINUTES] [extra launch arguments, e.g. backend:=torch device:=cpu]
# Environment: SOAK_OUT (log folder, default out/soak), ROS_DOMAIN_ID (default: random 100-199).
# Exit status: 0 when the node ran to the end, 1 when it died or never published, 2 for bad arguments.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
minutes=${1:-10}
[ $# -gt 0 ] && shift
if ! [[ $minutes =~ ^[0-9]+([.][0-9]+)?$ ]] || [ "$(awk -v m="$minutes" 'BEGIN { print (m >= 1) }')" != 1 ]; then
  echo "soak: error: MINUTES must be a number >= 1, got '$minutes'" >&2
  exit 2
fi
set +u
# shellcheck disable=SC1091
source scripts/env.sh
set -u
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 100 + 100))}
out=${SOAK_OUT:-$root/out/soak}
mkdir -p "$out" .colcon

echo "== building the ROS 2 package (colcon)"
colcon build --paths . --build-base .colcon/soak_build --install-base .colcon/soak_install > .colcon/soak_build.log 2>&1 \
  || { tail -30 .colcon/soak_build.log; echo "soak: error: colcon build failed" >&2; exit 1; }
set +u
# shellcheck disable=SC1091
source .colcon/soak_install/setup.bash
set -u

args=("cameras:=front,rear" demo:=true demo_source:=bag demo_bag_rate:=3.0 "$@")
echo "== ros2 launch flownet2_ros flownet2.launch.py ${args[*]}  (log: $out/launch.log)"
env --default-signal=INT ros2 launch flownet2_ros flownet2.launch.py "${args[@]}" > "$out/launch.log" 2>&1 &
launch_pid=$!
stop() { kill -INT "$launch_pid" 2>/dev/null || true; wait "$launch_pid" 2>/dev/null || true; }
trap stop EXIT

# The flow node: the process under this launch whose command line runs flow_node.
# shellcheck disable=SC2013  # (pids are words)
descendants() { local p; for p in $(cat /proc/"$1"/task/*/children 2>/dev/null); do echo "$p"; descendants "$p"; done; }
node_pid=""
for _ in $(seq 1 120); do
  for pid in $(descendants "$launch_pid"); do
    if tr '\0' ' ' < /proc/"$pid"/cmdline 2>/dev/null | grep -q "flow_node"; then node_pid=$pid; break; fi
  done
  [ -n "$node_pid" ] && break
  kill -0 "$launch_pid" 2>/dev/null || { tail -20 "$out/launch.log"; echo "soak: error: launch exited" >&2; exit 1; }
  sleep 0.5
done
[ -n "$node_pid" ] || { echo "soak: error: no flow_node process under the launch" >&2; exit 1; }
echo "== flow_node pid $node_pid; soaking for $minutes min"

python - "$minutes" "$node_pid" <<'PY'
"""The soak monitor: RSS of the node, per-camera rates, drops and errors from /diagnostics."""
import sys
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

minutes, pid = float(sys.argv[1]), int(sys.argv[2])
CAMERAS = ("front", "rear")


def rss_mb() -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


rclpy.init()
node = rclpy.create_node("soak_monitor")
latest: dict[str, dict[str, str]] = {}
received = dict.fromkeys(CAMERAS, 0)


def on_diagnostics(msg: DiagnosticArray) -> None:
    for status in msg.status:
        for camera in CAMERAS:
            if status.name.endswith(f"({camera})"):
                latest[camera] = {kv.key: kv.value for kv in status.values} | {"_message": status.message}


def counter(camera: str):
    def count(_: Image) -> None:
        received[camera] += 1

    return count


reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, reliable)
for camera in CAMERAS:
    node.create_subscription(Image, f"/{camera}/flow/color", counter(camera), QoSProfile(depth=2))

start = time.monotonic()
samples: list[tuple[float, float]] = []
next_sample, last_report = 0.0, 0.0
last_received = dict(received)
code = 0


def report(elapsed: float) -> None:
    global last_report, last_received
    parts = [f"t={elapsed:5.0f} s  rss={samples[-1][1]:7.1f} MB"]
    for camera in CAMERAS:
        d = latest.get(camera, {})
        errors = sum(int(v) for k, v in d.items() if k.startswith("errors."))
        resets = sum(int(v) for k, v in d.items() if k.startswith("pair_resets."))
        got = (received[camera] - last_received[camera]) / max(1e-9, elapsed - last_report)
        parts.append(
            f"{camera}: out {d.get('output_rate_hz', '?')} Hz (received {got:.1f}/s) in "
            f"{d.get('input_rate_hz', '?')} Hz, published {d.get('frames_published', '?')}, "
            f"dropped {d.get('frames_dropped', '?')}, resets {resets}, errors {errors}"
        )
    print(" | ".join(parts), flush=True)
    last_received, last_report = dict(received), elapsed


try:
    while (elapsed := time.monotonic() - start) < minutes * 60:
        rclpy.spin_once(node, timeout_sec=0.1)
        if elapsed >= next_sample:
            rss = rss_mb()
            if rss is None:
                print(f"soak: error: the node (pid {pid}) exited after {elapsed:.0f} s", flush=True)
                code = 1
                break
            samples.append((elapsed, rss))
            next_sample += 5.0
        if elapsed - last_report >= 30.0:
            report(elapsed)
    else:
        rss = rss_mb()
        if rss is not None:
            samples.append((elapsed, rss))
            report(elapsed)
finally:
    node.destroy_node()
    rclpy.try_shutdown()

late = [(t, r) for t, r in samples if t >= 60.0]
if len(late) >= 2:
    t, r = np.array(late).T
    slope = np.polyfit(t / 60.0, r, 1)[0]
    print(
        f"soak: resident memory slope {slope:+.2f} MB/min over {len(late)} samples after the first minute "
        f"({late[0][1]:.1f} -> {late[-1][1]:.1f} MB); start {samples[0][1]:.1f} MB",
        flush=True,
    )
else:
    print("soak: too short for a slope (needs samples after the first minute)", flush=True)
if not any(received.values()):
    print("soak: error: no flow received from the node", flush=True)
    code = 1
sys.exit(code)
PY
