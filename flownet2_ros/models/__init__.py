"""The FlowNet 2.0 family in PyTorch, checkpoint-compatible with NVIDIA's flownet2-pytorch.

- ``build(name, **options)``: a stack by name (``STACK_NAMES``), random weights, eval mode.
- ``load_checkpoint(path, name=None)``: the official ``.pth.tar`` files or bare state dicts.
- ``FlowInference``: frames of any size in, flow at the input resolution out.
"""

from .checkpoint import (
    CheckpointError,
    infer_stack_name,
    load_checkpoint,
    model_from_state_dict,
    read_state_dict,
    save_checkpoint,
)
from .embedded import default_checkpoint, resolve_checkpoint
from .inference import FlowInference, network_size_for, resize_flow
from .layers import THIN_WIDTH
from .networks import FlowNetC, FlowNetFusion, FlowNetS, FlowNetSD
from .registry import STACK_NAMES, STACKS, build
from .stacks import FlowNet2, FlowNet2C, FlowNet2CS, FlowNet2CSS, FlowNet2S, FlowNet2SD

__all__ = [
    "STACKS",
    "STACK_NAMES",
    "THIN_WIDTH",
    "CheckpointError",
    "FlowInference",
    "FlowNet2",
    "FlowNet2C",
    "FlowNet2CS",
    "FlowNet2CSS",
    "FlowNet2S",
    "FlowNet2SD",
    "FlowNetC",
    "FlowNetFusion",
    "FlowNetS",
    "FlowNetSD",
    "build",
    "default_checkpoint",
    "infer_stack_name",
    "load_checkpoint",
    "model_from_state_dict",
    "network_size_for",
    "read_state_dict",
    "resize_flow",
    "resolve_checkpoint",
    "save_checkpoint",
]
