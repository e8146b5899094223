#!/usr/bin/env bash
# The main job, on any machine: the flow node on the bundled image sequence with the embedded default
# model, started with `ros2 launch` exactly as on a robot (demo:=true plays the sequence into the node's
# image topic). Saves colour-coded flow images a person can look at in out/demo/ and prints what ran.
# Usage: bash scripts/demo.sh [extra launch arguments, e.g. backend:=torch checkpoint:=/path/x.pth.tar]
#        bash scripts/demo.sh cameras:=front,rear     # one node, two cameras: out/demo/front, out/demo/rear
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup_env.sh
set +u
# shellcheck disable=SC1091
source scripts/env.sh
set -u
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 100 + 100))}
frames=${DEMO_FRAMES:-10}
out=$root/out/demo

echo "== building the ROS 2 package (colcon)"
mkdir -p .colcon && colcon build --paths . --build-base .colcon/build --install-base .colcon/install > .colcon/build.log 2>&1 \
  || { mkdir -p .colcon; tail -30 .colcon/build.log; echo "demo: colcon build failed" >&2; exit 1; }
set +u
# shellcheck disable=SC1091
source .colcon/install/setup.bash
set -u

cameras=""
for arg in "$@"; do
  case $arg in cameras:=*) cameras=${arg#cameras:=} ;; esac
done
rm -rf "$out"; mkdir -p "$out"
# The demo's motions are a few px per frame: saturate the colour wheel at 12 px so they show strongly.
echo "== ros2 launch flownet2_ros flownet2.launch.py demo:=true color_max_flow:=12.0 $*"
env --default-signal=INT ros2 launch flownet2_ros flownet2.launch.py demo:=true color_max_flow:=12.0 "$@" \
  > "$out/launch.log" 2>&1 &
launch_pid=$!
stop() { kill -INT "$launch_pid" 2>/dev/null; wait "$launch_pid" 2>/dev/null || true; }
trap stop EXIT

status=0
if [ -z "$cameras" ]; then
  flow_recorder --output "$out" --count "$frames" --timeout 180 || status=$?
else
  pids=()
  for camera in ${cameras//,/ }; do
    flow_recorder --output "$out/$camera" --namespace "$camera" --count "$frames" --timeout 180 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
fi
grep -E "backend|configured|error|Error" "$out/launch.log" | head -8 || true
if [ $status -ne 0 ]; then
  echo "demo: no flow received; the node's log is $out/launch.log" >&2
  exit $status
fi
where=$out; [ -n "$cameras" ] && where="$out/{${cameras}}"
echo "== done: colour-coded flow in $where/flow_*.png (.flo next to them), node log in $out/launch.log"
