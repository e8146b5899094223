"""Shared fixtures: where the reference material lives, and hardware markers that skip cleanly."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("FLOWNET2_SHARED", REPO_ROOT.parent / "shared"))


def shared_material_required() -> bool:
    """True where missing ``../shared`` material must fail the tests rather than skip them: in this project's
    CI (``CI=true``) or when asked with ``FLOWNET2_REQUIRE_SHARED=1``. A user's workspace (``colcon test``
    on a checkout with no ``shared/`` beside it) skips them instead."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("FLOWNET2_REQUIRE_SHARED") == "1"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference``: the vectors produced by the reference implementation (every test that reads
    ``shared/`` gets it through this fixture)."""
    path = _shared_dir() / "reference"
    if not (path / "vectors_ops.npz").is_file():
        message = (
            f"reference vectors not found at {path} (expected in shared/reference/ beside the checkout); "
            "set FLOWNET2_SHARED to the folder that holds reference/"
        )
        if shared_material_required():
            pytest.fail(message + " (CI=true or FLOWNET2_REQUIRE_SHARED=1: missing vectors are an error)")
        pytest.skip(message)
    return path


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread: on a busy 2-core machine, 2 OpenMP threads run tiny networks ~20x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def harness_factory() -> Iterator[Callable[..., Any]]:
    """Makes flow nodes under test (``test_flow_node.NodeHarness``) and closes them all afterwards."""
    from test_flow_node import NodeHarness

    made: list[NodeHarness] = []

    def make(**kwargs: Any) -> NodeHarness:
        harness = NodeHarness(**kwargs)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if not torch.cuda.is_available():
        skip_gpu = pytest.mark.skip(reason="hardware: no CUDA GPU on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
