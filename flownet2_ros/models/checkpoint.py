"""The one weight loader: official flownet2-pytorch checkpoints and bare state dicts, safely.

``torch.load`` always runs with ``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .registry import STACK_NAMES, build

_SUBNET_PREFIXES = ("flownetc.", "flownets_1.", "flownets_2.", "flownets_d.", "flownetfusion.")
_MAX_LISTED = 8


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, of another stack, or its keys/shapes do not fit."""


def read_state_dict(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Tensor], dict]:
    """Read a checkpoint file. Returns ``(state_dict, metadata)``; metadata holds the other entries of an
    official checkpoint dict (``epoch``, ``best_EPE``, ...) that are plain values."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason[:200]})") from None
    return split_checkpoint(raw, str(path))


def split_checkpoint(raw: Any, source: str = "checkpoint") -> tuple[dict[str, Tensor], dict]:
    """Separate the state dict from metadata; strip a DataParallel ``module.`` prefix."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{source}: expected a dict, found {type(raw).__name__}")
    metadata: dict = {}
    if "state_dict" in raw:
        state = raw["state_dict"]
        metadata = {k: v for k, v in raw.items() if k != "state_dict" and isinstance(v, (int, float, str))}
    else:
        state = raw
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source}: no state_dict in it")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source}: state_dict entries that are not tensors: {_listing(map(str, bad))}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state), metadata


def infer_stack_name(keys: set[str] | list[str]) -> str:
    """The stack whose state_dict has these keys, judged by the sub-network prefixes and marker layers."""
    keys = set(keys)
    prefixes = {p for p in _SUBNET_PREFIXES if any(k.startswith(p) for k in keys)}
    if prefixes:
        by_prefixes = {
            frozenset({"flownetc.", "flownets_1."}): "FlowNet2CS",
            frozenset({"flownetc.", "flownets_1.", "flownets_2."}): "FlowNet2CSS",
            frozenset(_SUBNET_PREFIXES): "FlowNet2",
        }
        name = by_prefixes.get(frozenset(prefixes))
        if name is None:
            raise CheckpointError(f"sub-networks {sorted(p[:-1] for p in prefixes)} form no known stack")
        return name
    if "conv_redir.0.weight" in keys:
        return "FlowNet2C"
    if "conv0.0.weight" in keys and "inter_conv2.0.weight" in keys:
        return "FlowNet2SD"
    if "conv1.0.weight" in keys and "predict_flow2.weight" in keys:
        return "FlowNet2S"
    raise CheckpointError(f"keys match no FlowNet 2.0 stack (first keys: {_listing(sorted(keys))})")


def infer_width(state: Mapping[str, Tensor]) -> float:
    """Channel-width multiplier from the first convolution (64 output channels at full width)."""
    for key in ("conv1.0.weight", "flownetc.conv1.0.weight", "conv0.0.weight"):
        if key in state:
            return state[key].shape[0] / 64
    return 1.0


def load_checkpoint(
    path: str | Path, name: str | None = None, map_location: str | torch.device = "cpu", **options: Any
) -> nn.Module:
    """Build the stack stored in ``path`` and load its weights; returns the model in eval mode.

    Accepts the official ``.pth.tar`` dicts (``state_dict`` inside, optional ``module.`` prefix) and bare
    state dicts. ``name`` None → inferred from the keys; given → must agree with them. Thin variants are
    recognised by their widths. Extra ``options`` (``div_flow``, ``rgb_max``) go to ``build``. Any missing,
    unexpected or mis-shaped key raises one ``CheckpointError`` that names them.
    """
    state, metadata = read_state_dict(path, map_location)
    model = model_from_state_dict(state, name, source=str(path), **options)
    model.checkpoint_metadata = metadata  # type: ignore[assignment]
    return model


def model_from_state_dict(
    state: Mapping[str, Tensor], name: str | None = None, source: str = "checkpoint", **options: Any
) -> nn.Module:
    """``load_checkpoint`` for a state dict already in memory."""
    try:
        found = infer_stack_name(list(state))
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    if name is not None:
        if name not in STACK_NAMES:
            raise CheckpointError(f"unknown stack {name!r}; expected one of {', '.join(STACK_NAMES)}")
        if name != found:
            raise CheckpointError(f"{source} holds {found} weights, not {name}")
    width = infer_width(state)
    options.setdefault("width", width)
    with torch.device("meta"):
        template = build(found, **options)
    check_state_dict(template, state, found, source)
    model = build(found, **options)
    model.load_state_dict(state, strict=True)
    return model.eval()


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], name: str, source: str) -> None:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} != {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    nonfloat = [k for k in expected if k in state and not state[k].is_floating_point()]
    if missing or unexpected or misshaped or nonfloat:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_listing(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
        if misshaped:
            parts.append(f"{len(misshaped)} mis-shaped ({_listing(misshaped)})")
        if nonfloat:
            parts.append(f"{len(nonfloat)} not floating point ({_listing(nonfloat)})")
        raise CheckpointError(f"{source} does not fit {name}: " + "; ".join(parts))
    nonfinite = [k for k in expected if not bool(torch.isfinite(state[k]).all())]
    if nonfinite:
        raise CheckpointError(f"{source}: non-finite weights in {_listing(nonfinite)}")


def save_checkpoint(path: str | Path, model: nn.Module, **metadata: Any) -> None:
    """Write ``model`` in the official layout: ``{"state_dict": ..., **metadata}`` (e.g. epoch, best_EPE)."""
    for key, value in metadata.items():
        if not isinstance(value, (int, float, str)) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise ValueError(f"metadata {key!r} must be a finite int, float or str")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, **metadata}, Path(path))


def _listing(items: Any) -> str:
    items = list(items)
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", … {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")
