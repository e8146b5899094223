"""Learning-rate schedules of the paper (Fig. 3) and the Adam optimiser settings.

- ``S_short`` (FlowNet 1.0's): 600k iterations, lr 1e-4, halved at 300k, 400k, 500k.
- ``S_long``: 1.2M iterations, lr 1e-4, halved at 400k, 600k, 800k, 1M (FlyingChairs).
- ``S_fine``: 500k iterations, lr 1e-5, halved at 200k, 300k, 400k (fine-tuning on FlyingThings3D).
- ``constant``: the base lr throughout (1e-4 unless given), as many iterations as asked for.

``"NAME@SCALE"`` shrinks (or stretches) the iteration count and every milestone by ``SCALE`` for short runs,
e.g. ``S_long@0.001`` = 1200 iterations halved at 400, 600, 800, 1000. The lr at step ``s`` (iterations
completed, from 0) is ``base · 0.5^(number of milestones ≤ s)``, i.e. it halves when a milestone is reached.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

ADAM_BETAS = (0.9, 0.999)
"""The paper's Adam β1, β2."""
PAPER_BATCH_SIZE = 8

_PAPER: dict[str, tuple[float, int, tuple[int, ...]]] = {
    "S_short": (1e-4, 600_000, (300_000, 400_000, 500_000)),
    "S_long": (1e-4, 1_200_000, (400_000, 600_000, 800_000, 1_000_000)),
    "S_fine": (1e-5, 500_000, (200_000, 300_000, 400_000)),
}
SCHEDULE_NAMES = (*_PAPER, "constant")


@dataclass(frozen=True)
class LRSchedule:
    """A step schedule: ``base_lr`` multiplied by ``gamma`` at each milestone; ``iterations`` in total."""

    name: str
    base_lr: float
    iterations: int
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5

    def lr_at(self, step: int) -> float:
        """Learning rate for the iteration that starts after ``step`` completed iterations."""
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, step)

    def describe(self) -> str:
        marks = ", ".join(str(m) for m in self.milestones) or "none"
        return f"{self.name}: lr {self.base_lr:g}, ×{self.gamma:g} at {marks}; {self.iterations} iterations"


def get_schedule(spec: str, lr: float | None = None, iterations: int | None = None) -> LRSchedule:
    """Parse ``"S_long"``, ``"S_long@0.001"``, ``"constant"`` … into an ``LRSchedule``.

    ``lr`` replaces the base learning rate (the halvings keep their ratios); ``iterations`` replaces the
    run length (milestones beyond it simply never happen). ``constant`` needs ``iterations``.
    """
    name, _, scale_text = spec.partition("@")
    name = name.strip()
    lookup = {n.lower(): n for n in SCHEDULE_NAMES}
    if name.lower() not in lookup:
        raise ValueError(f"unknown schedule {spec!r}; expected one of {', '.join(SCHEDULE_NAMES)} [@SCALE]")
    name = lookup[name.lower()]
    scale = 1.0
    if scale_text:
        try:
            scale = float(scale_text)
        except ValueError:
            raise ValueError(f"schedule scale must be a number, got {scale_text!r} in {spec!r}") from None
        if not scale > 0:
            raise ValueError(f"schedule scale must be > 0, got {scale_text!r}")
    if lr is not None and not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if iterations is not None and iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if name == "constant":
        if iterations is None:
            raise ValueError("the constant schedule needs an iteration count")
        return LRSchedule("constant", lr if lr is not None else 1e-4, iterations)
    base, total, milestones = _PAPER[name]
    scaled = tuple(max(1, round(m * scale)) for m in milestones)
    total = max(1, round(total * scale))
    label = name if scale == 1.0 else f"{name}@{scale:g}"
    return LRSchedule(label, lr if lr is not None else base, iterations or total, scaled)


def make_optimizer(
    parameters: Iterable[nn.Parameter],
    lr: float,
    betas: tuple[float, float] = ADAM_BETAS,
    weight_decay: float = 0.0,
) -> torch.optim.Adam:
    """Adam with the paper's betas (0.9, 0.999)."""
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
