"""The interface between the node and whatever computes flow: two RGB frames in, a flow field out.

The node knows nothing of models: it hands frames to a ``FlowEstimator`` chosen by name and gets flow
back. Implementations own their device buffers, preallocated and reused across frames, and copy each
frame to the device once: a frame that was the second image of the previous pair is passed again as the
first image of the next one with the same ``key``, and its device copy (already resized to the network
size) is reused.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class BackendError(RuntimeError):
    """A backend cannot be created or cannot run (missing weights/engine, no device, wrong version)."""


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is running: shown in logs and diagnostics."""

    name: str  # "torch", "tensorrt"
    device: str  # "cpu", "cuda:0", or the GPU's name
    precision: str  # "fp32", "fp16"
    model: str  # stack name and where its weights came from
    network_size: tuple[int, int] | None  # (height, width) the network runs at, once known


@dataclass
class FlowRequest:
    """One pair for :meth:`FlowEstimator.estimate_batch`; the fields mean what ``estimate``'s arguments mean.

    The arrays are borrowed: the caller keeps them unchanged until the call returns, and the backend keeps
    no reference to them afterwards (only its own device copies, by key).
    """

    rgb1: np.ndarray
    rgb2: np.ndarray
    key1: int | None = None
    key2: int | None = None
    output_size: tuple[int, int] | None = None
    out: np.ndarray | None = None


class FlowEstimator(ABC):
    """Flow between two RGB frames.

    ``estimate(rgb1, rgb2)``: two (H, W, 3) uint8 RGB arrays of one size → (H_out, W_out, 2) float32 flow
    in pixels of the output grid, u right, v down, from rgb1 to rgb2. ``output_size`` (height, width)
    defaults to the input size; vectors are scaled to the output grid.
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.estimate is FlowEstimator.estimate and cls.estimate_batch is FlowEstimator.estimate_batch:
            raise TypeError(
                f"{cls.__name__} must implement estimate or estimate_batch (each defaults to the other)"
            )

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
        """Flow from ``rgb1`` to ``rgb2``.

        ``key1``/``key2``: identities of the frames (e.g. a frame counter); a frame seen before under the
        same key is not copied to the device again. ``out``: a (H_out, W_out, 2) float32 C-contiguous array
        to write into (no allocation per frame); returned when given. Without ``out`` a GPU backend may
        return a view of a reused page-locked buffer, valid until its next call. This default is a batch of
        one (:meth:`estimate_batch`).
        """
        return self.estimate_batch([FlowRequest(rgb1, rgb2, key1, key2, output_size, out)])[0]

    def estimate_batch(self, requests: Sequence[FlowRequest]) -> list[np.ndarray]:
        """Flow for several pairs in one call (e.g. one pair per camera), in the order given.

        Pairs may differ in size; a backend that batches runs pairs of one input size through the network
        together. Keys are unique across all callers (a frame of one camera never shares a key with a frame
        of another). This default runs the pairs one by one through :meth:`estimate`.
        """
        return [
            self.estimate(r.rgb1, r.rgb2, key1=r.key1, key2=r.key2, output_size=r.output_size, out=r.out)
            for r in requests
        ]

    @property
    @abstractmethod
    def info(self) -> BackendInfo:
        """Name, device, precision, model and network size."""

    def warmup(self, height: int, width: int) -> None:
        """Run once on blank frames of this size so the first real frame is not slow (allocations, autotune)."""
        blank = np.zeros((height, width, 3), np.uint8)
        self.estimate(blank, blank)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release device memory; the estimator is unusable afterwards."""
