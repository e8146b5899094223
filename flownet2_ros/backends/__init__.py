"""Flow backends behind one interface (``FlowEstimator``), chosen by name with ``create_estimator``.

Importing this package does not import torch: the node uses it on machines where only the TensorRT
backend runs, and torch is loaded when the torch backend is created.
"""

from typing import TYPE_CHECKING, Any

from .base import BackendError, BackendInfo, FlowEstimator, FlowRequest
from .factory import BACKEND_NAMES, BackendConfig, create_estimator, create_torch

if TYPE_CHECKING:
    from .torch_backend import TorchFlowEstimator


def __getattr__(name: str) -> Any:
    if name == "TorchFlowEstimator":
        from .torch_backend import TorchFlowEstimator

        return TorchFlowEstimator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKEND_NAMES",
    "BackendConfig",
    "BackendError",
    "BackendInfo",
    "FlowEstimator",
    "FlowRequest",
    "TorchFlowEstimator",
    "create_estimator",
    "create_torch",
]
