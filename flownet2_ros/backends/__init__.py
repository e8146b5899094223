"""Flow backends behind one interface (``FlowEstimator``), chosen by name with ``create_estimator``."""

from .base import BackendError, BackendInfo, FlowEstimator
from .factory import BACKEND_NAMES, BackendConfig, create_estimator, create_torch
from .torch_backend import TorchFlowEstimator

__all__ = [
    "BACKEND_NAMES",
    "BackendConfig",
    "BackendError",
    "BackendInfo",
    "FlowEstimator",
    "TorchFlowEstimator",
    "create_estimator",
    "create_torch",
]
