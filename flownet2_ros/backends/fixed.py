"""A stand-in backend that computes nothing: known flow, optional delay and injected failures.

For tests and benchmarks of everything around a backend (the node, the bag tool): it honours the
:class:`~flownet2_ros.backends.base.FlowEstimator` contract (shapes, ``out`` buffers, batches, keys), and
reports the network size by the inference core's rule.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from ..models.inference import network_size_for
from .base import BackendInfo, FlowEstimator, FlowRequest
from .factory import BackendConfig

__all__ = ["FixedFlowEstimator", "default_flow", "fixed_factory"]


class FixedFlowEstimator(FlowEstimator):
    """A stand-in backend that returns a known flow without computing anything.

    ``flow_fn(height, width)`` gives the flow on the *output* grid (default: a smooth field with every
    direction and magnitudes up to ~10 px); it is computed once per output size and copied into ``out``.
    ``delay_s`` makes each call take that long (a busy backend); ``fail`` (a callable returning True for
    the call number) makes a call raise :class:`RuntimeError`.  Calls are recorded in ``calls`` as
    ``(input shape, output size, key1, key2)``.  ``network_size`` (height, width) is reported by ``info``;
    ``None`` reports the nearest multiples of 64 of the last input, as the real backends do.
    """

    def __init__(
        self,
        flow_fn: Callable[[int, int], np.ndarray] | None = None,
        *,
        delay_s: float = 0.0,
        fail: Callable[[int], bool] | None = None,
        network_size: tuple[int, int] | None = None,
    ) -> None:
        self.flow_fn = flow_fn or default_flow
        self.delay_s = delay_s
        self.fail = fail
        self.fixed_size = network_size
        self._network_size = network_size
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self.calls: list[tuple[tuple[int, ...], tuple[int, int], int | None, int | None]] = []
        self.batch_sizes: list[int] = []  #: pairs per estimate_batch call
        self.closed = False
        self._lock = threading.Lock()

    @property
    def info(self) -> BackendInfo:
        return BackendInfo("fixed", "cpu", "fp32", "FixedFlowEstimator", self._network_size)

    def flow_for(self, height: int, width: int) -> np.ndarray:
        """The flow this estimator returns for an output of this size."""
        with self._lock:
            flow = self._cache.get((height, width))
            if flow is None:
                flow = np.ascontiguousarray(self.flow_fn(height, width), dtype=np.float32)
                self._cache[(height, width)] = flow
            return flow

    def estimate(
        self,
        rgb1: np.ndarray,
        rgb2: np.ndarray,
        *,
        key1: int | None = None,
        key2: int | None = None,
        output_size: tuple[int, int] | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        return self._one(FlowRequest(rgb1, rgb2, key1=key1, key2=key2, output_size=output_size, out=out))

    def estimate_batch(self, requests: Sequence[FlowRequest]) -> list[np.ndarray]:
        """Records the batch size in ``batch_sizes``; ``delay_s`` once per batch, as a batching backend."""
        self.batch_sizes.append(len(requests))
        if self.delay_s:
            time.sleep(self.delay_s)
        return [self._one(r) for r in requests]

    def _one(self, r: FlowRequest) -> np.ndarray:
        if self.closed:
            raise RuntimeError("estimator was closed")
        if r.rgb1.shape != r.rgb2.shape or r.rgb1.ndim != 3 or r.rgb1.shape[2] != 3:
            raise ValueError(f"bad input pair {r.rgb1.shape} {r.rgb2.shape}")
        height, width = r.rgb1.shape[:2]
        if self.fixed_size is None:
            self._network_size = network_size_for(height, width)
        out_h, out_w = r.output_size or (height, width)
        call = len(self.calls)
        self.calls.append((r.rgb1.shape, (out_h, out_w), r.key1, r.key2))
        if self.fail is not None and self.fail(call):
            raise RuntimeError(f"injected backend failure on call {call}")
        flow = self.flow_for(out_h, out_w)
        if r.out is None:
            return flow.copy()
        np.copyto(r.out, flow)
        return r.out

    def warmup(self, height: int, width: int) -> None:
        if self.fixed_size is None:
            self._network_size = network_size_for(height, width)

    def close(self) -> None:
        self.closed = True


def default_flow(height: int, width: int) -> np.ndarray:
    """A smooth flow field with every direction, up to ~10 px (rotation + zoom about the centre)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x = (x - width / 2) / max(width, 1) * 2
    y = (y - height / 2) / max(height, 1) * 2
    return np.stack([6 * x - 4 * y, 4 * x + 6 * y], axis=-1).astype(np.float32)


def fixed_factory(estimator: FlowEstimator) -> Callable[[str, BackendConfig], tuple[FlowEstimator, str]]:
    """An ``estimator_factory`` for the flow node (``FlowNode(estimator_factory=...)``) returning ``estimator``."""

    def factory(name: str, config: BackendConfig) -> tuple[FlowEstimator, str]:
        return estimator, f"{type(estimator).__name__} (injected)"

    return factory
