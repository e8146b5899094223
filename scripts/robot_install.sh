#!/usr/bin/env bash
# Installs flownet2_ros in a colcon workspace on a machine whose ROS 2 comes from apt (Ubuntu 24.04 with
# ROS 2 Jazzy), where the system Python is "externally managed" (PEP 668): `pip install` into it is
# refused, so PyTorch goes into a virtual environment instead.
#   1. rosdep installs what package.xml declares, from apt (NumPy, OpenCV, PyYAML, tqdm, ROS packages);
#   2. a virtual environment made from the system's python3 with --system-site-packages (it sees apt's
#      Python packages and, through the sourced ROS, rclpy) receives PyTorch from pip;
#   3. colcon, run by that environment's Python (`python -m colcon`), builds the package: the executables
#      it installs start with that Python, so `ros2 run` and `ros2 launch` find torch without the
#      environment being activated.
#
# Usage, with ROS sourced (source /opt/ros/jazzy/setup.bash):
#   bash src/flownet2_ros/scripts/robot_install.sh [WORKSPACE]
# WORKSPACE defaults to the workspace that holds this package (the folder above its src/).
# Environment:
#   FLOWNET2_VENV         the virtual environment (default ~/flownet2_venv; reused when it exists)
#   FLOWNET2_TORCH_SPEC   what pip installs for PyTorch (default "torch>=2.1"; on a Jetson, NVIDIA's wheel)
#   FLOWNET2_PIP_ARGS     more pip arguments (an index URL, --no-index --find-links DIR, ...)
#   FLOWNET2_COLCON_ARGS  more `colcon build` arguments (default --packages-select flownet2_ros)
#   FLOWNET2_SKIP_ROSDEP  1: the apt dependencies are installed already, do not run rosdep
#   PYTHON                the interpreter ROS was built for (default python3)
set -euo pipefail

say() { echo "robot_install: $*"; }
die() {
  echo "robot_install: error: $*" >&2
  exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pkg=$(cd "$here/.." && pwd)
if [ $# -ge 1 ]; then
  ws=$(cd "$1" && pwd)
elif [ "$(basename "$(dirname "$pkg")")" = src ]; then
  ws=$(dirname "$(dirname "$pkg")")
else
  die "$pkg is not in a workspace's src/: give the workspace folder as the argument"
fi
[ -d "$ws/src" ] || die "$ws has no src/ folder (a colcon workspace keeps its packages in src/)"

venv=${FLOWNET2_VENV:-$HOME/flownet2_venv}
torch_spec=${FLOWNET2_TORCH_SPEC:-torch>=2.1}
py=${PYTHON:-python3}
read -r -a pip_args <<<"${FLOWNET2_PIP_ARGS:-}"
read -r -a colcon_args <<<"${FLOWNET2_COLCON_ARGS:---packages-select flownet2_ros}"

# -- ROS, and the interpreter it was built for
if [ -z "${ROS_DISTRO:-}" ] || ! command -v ros2 >/dev/null 2>&1; then
  die "no sourced ROS 2: run 'source /opt/ros/jazzy/setup.bash' first"
fi
command -v "$py" >/dev/null 2>&1 || die "no $py on PATH"
"$py" -c 'import rclpy' 2>/dev/null ||
  die "$py cannot import rclpy: use the interpreter ROS $ROS_DISTRO was built for (PYTHON=...)"
"$py" -c 'import venv, ensurepip' 2>/dev/null || die "$py has no venv module: sudo apt install python3-venv"
say "ROS $ROS_DISTRO, $("$py" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

# -- 1. apt dependencies through rosdep
if [ "${FLOWNET2_SKIP_ROSDEP:-0}" != 1 ]; then
  command -v rosdep >/dev/null 2>&1 ||
    die "no rosdep: sudo apt install python3-rosdep && sudo rosdep init && rosdep update (or FLOWNET2_SKIP_ROSDEP=1)"
  say "rosdep: installing the dependencies declared in package.xml"
  rosdep install --from-paths "$pkg" --ignore-src -y --rosdistro "$ROS_DISTRO"
fi

# -- 2. the virtual environment, and PyTorch in it
if [ -x "$venv/bin/python" ]; then
  grep -qi '^include-system-site-packages *= *true' "$venv/pyvenv.cfg" ||
    die "$venv exists without --system-site-packages: remove it or choose FLOWNET2_VENV"
  say "reusing $venv"
else
  say "creating $venv (--system-site-packages)"
  "$py" -m venv --system-site-packages "$venv"
fi
touch "$venv/COLCON_IGNORE" # colcon must not take the environment for packages if it lies in the workspace
vpy=$venv/bin/python
"$vpy" -c 'import rclpy' 2>/dev/null || die "$vpy cannot import rclpy (was ROS sourced when $venv was made?)"

have_torch='import sys, torch; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 1))'
if "$vpy" -c "$have_torch" 2>/dev/null; then
  say "keeping torch $("$vpy" -c 'import torch; print(torch.__version__)')"
  want=()
else
  want=("$torch_spec")
fi
# rosbags (pure Python, no rosdep key): flownet2-bag and the player's bag mode.
"$vpy" -c 'import rosbags' 2>/dev/null || want+=("rosbags>=0.11")
# setuptools < 80: colcon-core requires it, and a recent torch pulls a newer one into the environment.
say "pip install ${want[*]} setuptools<80 (into $venv)"
"$vpy" -m pip install --disable-pip-version-check -q "${pip_args[@]}" "${want[@]}" "setuptools<80"
"$vpy" -c 'import colcon_core' 2>/dev/null || die "no colcon: sudo apt install python3-colcon-common-extensions"

# -- 3. build with the environment's Python
say "python -m colcon build ${colcon_args[*]} (in $ws)"
(cd "$ws" && "$vpy" -m colcon build "${colcon_args[@]}")

# -- check what `ros2 run` will do: the installed executables start the environment's Python, which
#    imports ROS, OpenCV, PyTorch and the package together
set +u
# shellcheck disable=SC1091
source "$ws/install/setup.bash"
set -u
prefix=$(ros2 pkg prefix flownet2_ros)
node_script=$prefix/lib/flownet2_ros/flow_node
[ -f "$node_script" ] || die "$node_script was not installed"
interpreter=$(head -n 1 "$node_script")
interpreter=${interpreter#\#!}
[ "$(realpath -s "$interpreter")" = "$(realpath -s "$vpy")" ] ||
  die "flow_node starts '$interpreter', not $vpy: was colcon run by another Python?"
"$interpreter" -c 'import cv2, numpy, rclpy, torch, flownet2_ros.ros.flow_node' ||
  die "the installed node cannot import its dependencies"
ros2 pkg executables flownet2_ros
say "ok. In a new shell: source /opt/ros/$ROS_DISTRO/setup.bash && source $ws/install/setup.bash"
say "then: ros2 launch flownet2_ros flownet2.launch.py demo:=true   (no need to activate $venv)"
