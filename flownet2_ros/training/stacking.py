"""Stacked training: one network of a stack at a time, the earlier ones loaded from checkpoints and frozen.

The paper trains FlowNet2-CSS as C, then CS with C fixed, then CSS with C and S fixed; FlowNet2-SD on its
own; the fusion network last with everything else fixed. ``initialise_from`` copies the weights of earlier
stages from checkpoints of any stack; ``prepare_stack_for_training`` freezes every sub-network but the
trained one(s) and keeps the frozen ones in eval mode, even across ``model.train()``.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Sequence
from pathlib import Path

from torch import nn

from ..models.checkpoint import CheckpointError, _listing, infer_stack_name, read_state_dict

# Components of each stack (stable names) and their state_dict prefixes in that stack.
_COMPONENTS: dict[str, dict[str, str]] = {
    "FlowNet2C": {"C": ""},
    "FlowNet2S": {"S": ""},
    "FlowNet2SD": {"SD": ""},
    "FlowNet2CS": {"C": "flownetc.", "S1": "flownets_1."},
    "FlowNet2CSS": {"C": "flownetc.", "S1": "flownets_1.", "S2": "flownets_2."},
    "FlowNet2": {
        "C": "flownetc.",
        "S1": "flownets_1.",
        "S2": "flownets_2.",
        "SD": "flownets_d.",
        "F": "flownetfusion.",
    },
}
_COMPONENT_LABELS = {
    "C": "FlowNetC",
    "S": "FlowNetS (6-channel)",
    "S1": "FlowNetS 1",
    "S2": "FlowNetS 2",
    "SD": "FlowNetSD",
    "F": "fusion",
}
DEFAULT_STAGE = {
    "FlowNet2C": "all",
    "FlowNet2S": "all",
    "FlowNet2SD": "all",
    "FlowNet2CS": "flownets_1",
    "FlowNet2CSS": "flownets_2",
    "FlowNet2": "flownetfusion",
}
"""The network a stacked schedule trains in each stack: the last one (its output is the training output)."""

_FROZEN_ATTR = "_flownet2_frozen"


def stack_name(model: nn.Module) -> str:
    name = type(model).__name__
    if name not in _COMPONENTS:
        raise ValueError(f"{name} is not a FlowNet 2.0 stack")
    return name


def subnetworks(model: nn.Module) -> list[str]:
    """Names of the sub-networks of a composite stack (``[]`` for FlowNet2C/S/SD)."""
    return [prefix[:-1] for prefix in _COMPONENTS[stack_name(model)].values() if prefix]


def _freeze_eval_train(self: nn.Module, mode: bool = True) -> nn.Module:
    """``train`` of a frozen sub-network: always eval, whatever the parent asks."""
    return nn.Module.train(self, False)


def prepare_stack_for_training(
    model: nn.Module, train: str | Sequence[str] | None = None
) -> list[nn.Parameter]:
    """Freeze every sub-network except ``train``; returns the trainable parameters.

    ``train``: a sub-network name (``flownetc``, ``flownets_1``, ``flownets_2``, ``flownets_d``,
    ``flownetfusion``), several (list or comma-separated), ``"all"``, or None for the stack's default
    (``DEFAULT_STAGE``: the last network; everything for FlowNet2C/S/SD). Frozen sub-networks get
    ``requires_grad=False`` and stay in eval mode: their ``train()`` is replaced by one that keeps eval, so
    ``model.train()`` does not undo it. Calling again re-decides (earlier freezing is undone first).
    The model is left in training mode.
    """
    name = stack_name(model)
    names = subnetworks(model)
    if train is None:
        train = DEFAULT_STAGE[name]
    wanted = [t.strip() for t in train.split(",")] if isinstance(train, str) else [t.strip() for t in train]
    wanted = [t for t in wanted if t]
    if not wanted:
        raise ValueError("no sub-network named to train")
    if wanted == ["all"] or not names:
        if wanted not in (["all"], [name]) and not names:
            raise ValueError(f"{name} has no sub-networks; train 'all' (got {', '.join(wanted)})")
        wanted = names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise ValueError(
            f"{name} has no sub-network {', '.join(unknown)}; expected 'all' or some of {', '.join(names)}"
        )
    for sub in names:
        module = model.get_submodule(sub)
        if _FROZEN_ATTR in module.__dict__:  # undo an earlier call
            del module.__dict__["train"]
            del module.__dict__[_FROZEN_ATTR]
    for param in model.parameters():
        param.requires_grad_(True)
    model.train()
    for sub in names:
        if sub in wanted:
            continue
        module = model.get_submodule(sub)
        for param in module.parameters():
            param.requires_grad_(False)
        module.train = types.MethodType(_freeze_eval_train, module)  # type: ignore[method-assign]
        module.__dict__[_FROZEN_ATTR] = True
        module.eval()
    return [p for p in model.parameters() if p.requires_grad]


def frozen_subnetworks(model: nn.Module) -> list[str]:
    """Sub-networks that ``prepare_stack_for_training`` froze."""
    return [s for s in subnetworks(model) if _FROZEN_ATTR in model.get_submodule(s).__dict__]


def initialise_from(model: nn.Module, *checkpoints: str | Path) -> list[str]:
    """Load earlier-stage weights from checkpoints of any stack into the matching parts of ``model``.

    Parts are matched by network: FlowNetC (``FlowNet2C`` or the ``flownetc.`` of CS/CSS/FlowNet2), the
    first and second FlowNetS (``flownets_1.``, ``flownets_2.``), FlowNetSD (``FlowNet2SD`` or
    ``flownets_d.``), the fusion net, and the standalone 6-channel FlowNet2S (only into a FlowNet2S). E.g. a
    FlowNet2C checkpoint fills FlowNet2CS.flownetc; a FlowNet2CSS one fills FlowNet2's C, S1 and S2; a
    FlowNet2SD one fills flownets_d. Later checkpoints override earlier ones. Returns one line per copied
    part. Raises CheckpointError when a checkpoint shares no network with the model or when a copied
    tensor's shape differs (e.g. a thin checkpoint into a full-width stack).
    """
    target_name = stack_name(model)
    target_parts = _COMPONENTS[target_name]
    state = model.state_dict()
    loaded: list[str] = []
    for path in checkpoints:
        source, _ = read_state_dict(path)
        try:
            source_name = infer_stack_name(list(source))
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        source_parts = _COMPONENTS[source_name]
        common = [c for c in source_parts if c in target_parts]
        if not common:
            raise CheckpointError(
                f"{path} holds {source_name} ({', '.join(_COMPONENT_LABELS[c] for c in source_parts)}), which "
                f"shares no network with {target_name} "
                f"({', '.join(_COMPONENT_LABELS[c] for c in target_parts)})"
            )
        update = {}
        misshaped, missing = [], []
        for component in common:
            src_prefix, dst_prefix = source_parts[component], target_parts[component]
            src_keys = [k for k in source if k.startswith(src_prefix) and _owned(k, src_prefix, source_parts)]
            dst_keys = {k for k in state if k.startswith(dst_prefix) and _owned(k, dst_prefix, target_parts)}
            mapped = {dst_prefix + k[len(src_prefix) :]: source[k] for k in src_keys}
            missing += sorted(dst_keys - set(mapped))
            extra = sorted(set(mapped) - dst_keys)
            missing += [f"unexpected {k}" for k in extra]
            for key, tensor in mapped.items():
                if key in dst_keys:
                    if tuple(tensor.shape) != tuple(state[key].shape):
                        misshaped.append(f"{key} {tuple(tensor.shape)} != {tuple(state[key].shape)}")
                    update[key] = tensor
        if missing or misshaped:
            parts = []
            if missing:
                parts.append(f"key mismatch ({_listing(missing)})")
            if misshaped:
                parts.append(f"{len(misshaped)} mis-shaped ({_listing(misshaped)}; different width?)")
            raise CheckpointError(f"{path} ({source_name}) does not fit {target_name}: " + "; ".join(parts))
        model.load_state_dict(update, strict=False)
        state = model.state_dict()
        for component in common:
            where = target_parts[component][:-1] or target_name
            loaded.append(f"{_COMPONENT_LABELS[component]} → {where} from {Path(path).name} ({source_name})")
    return loaded


def _owned(key: str, prefix: str, parts: dict[str, str]) -> bool:
    """Whether ``key`` belongs to the component with ``prefix`` (the empty prefix owns everything)."""
    if prefix:
        return True
    return not any(p and key.startswith(p) for p in parts.values())


def trainable_summary(model: nn.Module, params: Iterable[nn.Parameter]) -> str:
    """``"trains flownets_1 (1.2M of 3.4M parameters); frozen: flownetc"``-style line."""
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in model.parameters())
    frozen = frozen_subnetworks(model)
    text = f"{trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters trainable"
    return text + (f"; frozen (eval mode): {', '.join(frozen)}" if frozen else "")
