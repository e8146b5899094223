"""The package's layering (README folder map, ../shared/docs/ARCHITECTURE.md), checked on every import
statement of every module, including the ones inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flownet2_ros"

#: folder -> sub-packages of flownet2_ros it must never import (directly or lazily).
FORBIDDEN = {
    "ops": {"models", "backends", "export", "data", "training", "ros", "cli", "bench"},
    "models": {"backends", "export", "data", "training", "ros", "cli", "bench"},
    "flowio": {"ops", "models", "backends", "export", "data", "training", "ros", "cli", "bench"},
    "export": {"backends", "training", "ros", "cli", "bench"},
    "backends": {"training", "ros", "cli", "bench"},
    "data": {"models", "backends", "export", "training", "ros", "cli", "bench"},
    "training": {"backends", "export", "ros", "cli", "bench"},
    "ros": {"models", "ops", "export", "data", "training", "cli", "bench"},
}
#: folders that must not import ROS at all (the library runs without a ROS install).
NO_ROS = {"ops", "models", "flowio", "export", "backends", "data", "training"}
ROS_MODULES = {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "lifecycle_msgs", "rcl_interfaces"}


def imported_subpackages(source: str, depth: int) -> set[tuple[str, int]]:
    """(name, line) of every import in ``source``, a module ``depth`` folders below flownet2_ros/:
    ``flownet2_ros.X`` and ``..X`` give ``X``; anything outside the package gives ``<top-level name>``."""
    tree = ast.parse(source)
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "flownet2_ros" and len(parts) > 1:
                    found.add((parts[1], node.lineno))
                else:
                    found.add((f"<{parts[0]}>", node.lineno))
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")
            if node.level == 0:
                if module[0] == "flownet2_ros" and len(module) > 1:
                    found.add((module[1], node.lineno))
                else:
                    found.add((f"<{module[0]}>", node.lineno))
            elif node.level == depth + 1 and module[0]:  # ``from ..X`` from flownet2_ros/<folder>/
                found.add((module[0], node.lineno))
            elif node.level == depth + 1:  # ``from .. import X``
                found.update((alias.name, node.lineno) for alias in node.names)
    return found


def modules_of(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_import_only_downwards(folder: str) -> None:
    assert modules_of(folder), f"no modules in {folder}/"
    bad = []
    for path in modules_of(folder):
        depth = len(path.relative_to(PACKAGE).parts) - 1
        for name, line in imported_subpackages(path.read_text(), depth):
            if name in FORBIDDEN[folder]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}/")
            if folder in NO_ROS and name.strip("<>") in ROS_MODULES:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports ROS ({name.strip('<>')})")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_relative_absolute_and_lazy_imports() -> None:
    source = "from ..models import build\nfrom . import pairing\n\ndef f():\n    import flownet2_ros.bench.timing\n    import rclpy\n"
    names = {name for name, _ in imported_subpackages(source, depth=1)}
    assert names == {"models", "bench", "<rclpy>"}
