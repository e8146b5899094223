"""The project's own small model, shipped inside the package so that flow works without downloads.

Its weights live in ``flownet2_ros/resources/weights/`` with a model card (``MODEL_CARD.md``: data,
schedule, steps, training time, accuracy). It is loaded with the normal loader, like any checkpoint.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "resources" / "weights"
DEFAULT_CHECKPOINT_NAME = "default.pth.tar"


def default_checkpoint() -> Path | None:
    """Path of the embedded default checkpoint, or None when this installation does not carry it."""
    path = WEIGHTS_DIR / DEFAULT_CHECKPOINT_NAME
    return path if path.is_file() else None


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """``checkpoint`` itself, or the embedded default when it is empty; a clear error when there is none."""
    from .checkpoint import CheckpointError

    if checkpoint:
        return Path(checkpoint)
    default = default_checkpoint()
    if default is None:
        raise CheckpointError(
            f"no checkpoint given and the embedded default model is missing ({WEIGHTS_DIR / DEFAULT_CHECKPOINT_NAME})"
        )
    return default


def package_checkpoint(
    source: str | Path, destination: str | Path, *, half: bool = True, **metadata: object
) -> Path:
    """Write the weights of ``source`` (any checkpoint, e.g. a flownet2-train ``checkpoint_latest``) as a
    shipping checkpoint: official layout, weights only (no optimiser/resume state), float16 by default
    (half the size; the loader casts back to float32), plus plain ``metadata`` (steps, EPE, ...)."""
    import torch

    from .checkpoint import CheckpointError, model_from_state_dict, read_state_dict

    state, found = read_state_dict(source)
    model_from_state_dict(state, source=str(source))  # refuse anything that is not a loadable stack
    for key, value in metadata.items():
        if not isinstance(value, (int, float, str)):
            raise CheckpointError(f"metadata {key!r} must be an int, float or str")
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype) for k, v in state.items()}
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": tensors, **{k: v for k, v in found.items()}, **metadata}, destination)
    return destination
