# Source to work in the project's environment: activates the venv and, without a system ROS, the kit's
# ament paths. Usage: source scripts/env.sh
_fn2_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
source "${FLOWNET2_VENV:-$_fn2_root/.venv}/bin/activate"
if [ -z "${ROS_DISTRO:-}" ] && [ -f "$_fn2_root/../shared/ros/env.sh" ]; then
  # shellcheck disable=SC1091
  source "$_fn2_root/../shared/ros/env.sh"
fi
unset _fn2_root
