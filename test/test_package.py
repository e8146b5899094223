"""The ament_python package: package.xml is valid, and `colcon build` accepts and installs the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_package_xml_is_format_3_with_real_dependencies():
    from catkin_pkg.package import parse_package

    package = parse_package(str(REPO / "package.xml"))
    assert package.name == "flownet2_ros" and package.package_format == 3
    assert package.get_build_type() == "ament_python"
    exec_deps = {d.name for d in package.exec_depends}
    assert {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "python3-numpy"} <= exec_deps
    assert all("@" in m.email for m in package.maintainers)


@pytest.mark.slow
def test_colcon_build_installs_the_package(tmp_path):
    colcon = shutil.which("colcon") or str(Path(sys.executable).with_name("colcon"))
    assert Path(colcon).exists(), "colcon not installed (scripts/setup_env.sh installs it)"
    source = tmp_path / "src" / "flownet2_ros"
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "build", "install", "log", "__pycache__", "*.egg-info", ".*cache"
    )
    shutil.copytree(REPO, source, ignore=ignore)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [colcon, "build", "--base-paths", "src"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Finished <<< flownet2_ros" in result.stdout
    install = tmp_path / "install" / "flownet2_ros"
    assert (install / "share" / "flownet2_ros" / "package.xml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "flownet2_ros").is_file()
    for script in ("flownet2-infer", "flownet2-benchmark"):
        assert (install / "lib" / "flownet2_ros" / script).is_file(), f"{script} not where ros2 run looks"
    installed_packages = list(install.glob("lib/python3*/site-packages/flownet2_ros/models/stacks.py"))
    assert installed_packages, "the Python package was not installed"
