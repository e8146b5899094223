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
