#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment and installs everything the demo and the
# tests need. Idempotent: a second run with nothing changed returns in about a second.
#   - uses a sourced system ROS 2 (ROS_DISTRO set and `ros2` on PATH) when there is one: the venv then
#     sees the system's rclpy and message packages (--system-site-packages);
#   - otherwise installs ROS 2 Jazzy's Python runtime from PyPI plus the tooling kit in ../shared/ros;
#   - installs PyTorch first (torch==2.13.0, the CPU build this project's CI machines carry) unless a
#     torch >= 2.1 is already importable (a Jetson's NVIDIA wheel, a CUDA build), then the package itself.
# Usage: bash scripts/setup_env.sh            (venv: $FLOWNET2_VENV or ./.venv)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${FLOWNET2_VENV:-$root/.venv}
torch_pin=${FLOWNET2_TORCH_SPEC:-torch==2.13.0}
kit=$root/../shared/ros

system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && command -v ros2 >/dev/null 2>&1; then system_ros=1; fi

stamp=$venv/.flownet2_setup_stamp
want=$(cat "$root/setup.py" "$root/scripts/setup_env.sh" | sha256sum | cut -c1-16)-ros$system_ros
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi

py=${PYTHON:-python3}
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "setup_env: Python >= 3.10 needed" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  if [ $system_ros -eq 1 ]; then
    echo "setup_env: using the sourced ROS 2 $ROS_DISTRO (venv with system site-packages)"
    "$py" -m venv --system-site-packages "$venv"
  else
    "$py" -m venv "$venv"
  fi
fi
vpy=$venv/bin/python
pipi() { "$vpy" -m pip install --disable-pip-version-check -q "$@"; }

if "$vpy" -c 'import torch, sys; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 1))' 2>/dev/null; then
  echo "setup_env: keeping the installed torch $("$vpy" -c 'import torch; print(torch.__version__)')"
else
  echo "setup_env: installing $torch_pin"
  pipi "$torch_pin"
fi

if [ $system_ros -eq 0 ]; then
  if [ -f "$kit/install.sh" ]; then
    bash "$kit/install.sh" "$venv"
  else
    echo "setup_env: no sourced ROS 2 and no kit at $kit: installing rclpy and messages from PyPI only" >&2
    echo "           (ros2 launch / launch_testing will be unavailable; their tests skip)" >&2
    pipi "ros-jazzy-rclpy[fastrtps]" ros-jazzy-std-msgs ros-jazzy-sensor-msgs ros-jazzy-diagnostic-msgs \
         ros-jazzy-lifecycle-msgs ros-jazzy-rcl-interfaces ros-jazzy-builtin-interfaces ros-jazzy-ament-index-python
  fi
fi

# The package and its test tools; ranges, so the torch installed above satisfies them.
pipi -e "$root[dev]" --config-settings editable_mode=compat
echo "$want" > "$stamp"
echo "setup_env: ready ($venv)"
