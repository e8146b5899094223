#!/usr/bin/env bash
# The project's test command: sets up the environment (idempotent), then lint, type check and the suite.
# Usage: bash scripts/test.sh [pytest args...]     e.g. bash scripts/test.sh -k parity -x
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup_env.sh
set +u
# shellcheck disable=SC1091
source scripts/env.sh
set -u
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 100 + 100))}   # parallel runs on one machine stay apart
echo "== ruff"; ruff check flownet2_ros test launch scripts setup.py
echo "== ruff format"; ruff format --check flownet2_ros test launch scripts setup.py
echo "== mypy"; mypy flownet2_ros
echo "== pytest"; python -m pytest "$@"
