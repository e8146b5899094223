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


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference``: the vectors produced by the reference implementation."""
    path = _shared_dir() / "reference"
    if not (path / "vectors_ops.npz").is_file():
        pytest.fail(f"reference vectors not found at {path}; set FLOWNET2_SHARED to the shared/ folder")
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
