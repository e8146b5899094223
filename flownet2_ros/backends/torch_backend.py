"""The PyTorch backend: any FlowNet 2.0 stack through the inference core, on CPU or CUDA."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..models.inference import MODEL_CAP, FlowInference, InferenceError
from .base import BackendError, BackendInfo, FlowEstimator, FlowRequest


class TorchFlowEstimator(FlowEstimator):
    """A :class:`~flownet2_ros.models.inference.FlowInference` core behind the ``FlowEstimator`` contract.

    The core does the work (one uint8 upload per frame, conversion and resize on the device, the network
    in batches, the flow resized back, one copy into ``out``); this class maps its errors to
    :class:`BackendError` and reports what runs.  ``precision``: auto | fp32 | fp16 (``fp16=True`` is the
    older spelling of ``precision="fp16"``).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str = "auto",
        fp16: bool = False,
        network_size: tuple[int, int] | None = None,
        label: str = "",
        max_network_pixels: int | None = MODEL_CAP,
        threads: int = 0,
        *,
        precision: str = "auto",
        cuda_graph: bool = False,
        compile: bool = False,
    ) -> None:
        try:
            self._core: FlowInference | None = FlowInference(
                model,
                network_size,
                device=device,
                precision="fp16" if fp16 else precision,
                max_network_pixels=max_network_pixels,
                cuda_graph=cuda_graph,
                compile=compile,
                threads=threads,
            )
        except InferenceError as exc:
            raise BackendError(str(exc)) from None
        self._device = self._core.device
        self._precision = self._core.precision
        self._label = label or type(model).__name__
        self.notes = list(self._core.notes)  #: options ignored on this machine, and why

    @property
    def info(self) -> BackendInfo:
        core = self._core
        return BackendInfo(
            name="torch",
            device=str(self._device)
            if self._device.type == "cpu"
            else torch.cuda.get_device_name(self._device),
            precision=self._precision,
            model=self._label,
            network_size=None if core is None else core.last_network_size,
        )

    def _live(self) -> FlowInference:
        if self._core is None:
            raise BackendError("estimator was closed")
        return self._core

    def estimate_batch(self, requests: Sequence[FlowRequest]) -> list[np.ndarray]:
        """See ``FlowEstimator.estimate_batch``: pairs of one input and output size form one batch."""
        return self._live().estimate_batch(requests)

    def close(self) -> None:
        core, self._core = self._core, None
        if core is not None:
            core.close()
