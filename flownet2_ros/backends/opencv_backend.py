"""Classical optical flow from OpenCV behind the same interface: DIS (ultrafast/fast/medium) and Farneback.

Used as the baseline the learned models are measured against, and usable by the node on machines where
no trained weights are wanted (``backend: opencv`` is not offered by the node on purpose: this module is
a reference point, not a FlowNet backend).
"""

from __future__ import annotations

import numpy as np

from .base import BackendError, BackendInfo, FlowEstimator

CLASSICAL_METHODS = ("dis_ultrafast", "dis_fast", "dis_medium", "farneback")


class OpenCVFlowEstimator(FlowEstimator):
    """OpenCV's DIS or Farneback flow on the grey images, at the input resolution."""

    def __init__(self, method: str = "dis_medium") -> None:
        import cv2

        if method not in CLASSICAL_METHODS:
            raise BackendError(
                f"unknown classical method {method!r}; expected one of {', '.join(CLASSICAL_METHODS)}"
            )
        self._cv2 = cv2
        self._method = method
        if method.startswith("dis_"):
            # OpenCV's preset numbers (ULTRAFAST 0, FAST 1, MEDIUM 2), stable across 4.x and 5.x.
            preset = {"dis_ultrafast": 0, "dis_fast": 1, "dis_medium": 2}[method]
            self._dis = cv2.DISOpticalFlow.create(preset)
        self._grey: dict[int, np.ndarray] = {}

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            name="opencv", device="cpu", precision="fp32", model=self._method, network_size=None
        )

    def _to_grey(self, rgb: np.ndarray, key: int | None) -> np.ndarray:
        if key is not None and key in self._grey:
            return self._grey[key]
        return self._cv2.cvtColor(rgb, self._cv2.COLOR_RGB2GRAY)

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
        cv2 = self._cv2
        if rgb1.shape != rgb2.shape or rgb1.ndim != 3 or rgb1.dtype != np.uint8:
            raise ValueError(
                f"expected two (H, W, 3) uint8 images of one size, got {rgb1.shape} and {rgb2.shape}"
            )
        grey1, grey2 = self._to_grey(rgb1, key1), self._to_grey(rgb2, key2)
        self._grey = {key2: grey2} if key2 is not None else {}
        if self._method == "farneback":
            flow = cv2.calcOpticalFlowFarneback(grey1, grey2, None, 0.5, 4, 15, 3, 5, 1.2, 0)
        else:
            flow = self._dis.calc(grey1, grey2, None)  # type: ignore[call-overload]  # stubs lack the None overload
        height, width = rgb1.shape[:2]
        if output_size is not None and tuple(output_size) != (height, width):
            out_h, out_w = output_size
            flow = cv2.resize(flow, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
            flow *= np.array([out_w / width, out_h / height], np.float32)
        if out is not None:
            np.copyto(out, flow)
            return out
        return np.ascontiguousarray(flow, dtype=np.float32)
