"""Choose and create a backend by name: ``torch``, ``tensorrt`` or ``auto``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .base import BackendError, FlowEstimator

BACKEND_NAMES = ("auto", "torch", "tensorrt")
#: auto: fp16 on CUDA, fp32 on the CPU; fp32 is true fp32 (no TF32); fp16 needs CUDA.
PRECISIONS = ("auto", "fp32", "fp16")
log = logging.getLogger(__name__)


@dataclass
class BackendConfig:
    """Everything a backend needs; the node fills it from its parameters.

    ``checkpoint``: weights for the torch backend (official .pth.tar or a flownet2-train checkpoint);
    ``engine``: a TensorRT engine file; ``model``: stack name the weights must hold (optional check);
    ``device``: auto | cpu | cuda | cuda:N; ``precision``: auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16;
    ``network_size``: (height, width), multiples of 64, or None for the nearest multiples of the input, capped
    at ``max_network_pixels``; ``threads``: CPU threads for inference (0: the library's default).
    TensorRT only: ``onnx`` + ``allow_rebuild`` rebuild an engine that does not match this machine
    (TensorRT version, GPU) into ``engine_cache_dir``. Both: ``cuda_graph`` captures execution in CUDA graphs.
    """

    checkpoint: str = ""
    engine: str = ""
    model: str = ""
    device: str = "auto"
    precision: str = "auto"
    network_size: tuple[int, int] | None = None
    onnx: str = ""
    engine_cache_dir: str = ""
    allow_rebuild: bool = False
    cuda_graph: bool = False
    compile: bool = False  # torch: torch.compile the network (CUDA only; the first frame takes minutes)
    max_network_pixels: int | None = None  # cap on the automatic network size (None/0: the model's own)
    threads: int = 0  # CPU threads for inference (torch.set_num_threads); 0: leave torch's default


def create_torch(config: BackendConfig) -> FlowEstimator:
    from ..models import CheckpointError, load_checkpoint, resolve_checkpoint
    from ..models.inference import MODEL_CAP
    from .torch_backend import TorchFlowEstimator

    if config.precision not in PRECISIONS:
        raise BackendError(f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    try:
        path = resolve_checkpoint(config.checkpoint)  # empty: the embedded default model
        model = load_checkpoint(path, name=config.model or None)
    except CheckpointError as exc:
        raise BackendError(str(exc)) from None
    label = f"{type(model).__name__} from {path.name if config.checkpoint else 'the embedded default model'}"
    return TorchFlowEstimator(
        model,
        config.device,
        network_size=config.network_size,
        label=label,
        threads=config.threads,
        precision=config.precision,
        cuda_graph=config.cuda_graph,
        compile=config.compile,
        max_network_pixels=config.max_network_pixels or MODEL_CAP,
    )


def tensorrt_unusable_reason(config: BackendConfig) -> str | None:
    """Why the TensorRT backend cannot run with this config here, or None when it can."""
    if not config.engine:
        return "no engine file configured"
    try:
        from . import tensorrt_backend
    except ImportError as exc:  # the module itself imports TensorRT lazily; this is a packaging problem
        return f"TensorRT backend unavailable ({exc})"
    return tensorrt_backend.unusable_reason(config)


def create_estimator(name: str, config: BackendConfig) -> tuple[FlowEstimator, str]:
    """Create backend ``name``; returns the estimator and a sentence saying what was chosen and why."""
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)}")
    if name == "tensorrt" or (name == "auto" and config.engine):
        reason = tensorrt_unusable_reason(config)
        if reason is None:
            from .tensorrt_backend import create_tensorrt

            return create_tensorrt(config), "tensorrt: engine usable on this machine"
        if name == "tensorrt":
            raise BackendError(f"tensorrt backend requested but unusable: {reason}")
        estimator = create_torch(config)
        return estimator, f"torch (auto: TensorRT not usable: {reason})"
    estimator = create_torch(config)
    why = "requested" if name == "torch" else "auto: no TensorRT engine configured"
    return estimator, f"torch ({why})"
