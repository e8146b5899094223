"""``build(name, **options)``: the one way to construct a FlowNet 2.0 stack by its checkpoint name."""

from __future__ import annotations

from torch import nn

from .layers import THIN_WIDTH
from .stacks import FlowNet2, FlowNet2C, FlowNet2CS, FlowNet2CSS, FlowNet2S, FlowNet2SD

STACKS: dict[str, type[nn.Module]] = {
    "FlowNet2": FlowNet2,
    "FlowNet2C": FlowNet2C,
    "FlowNet2S": FlowNet2S,
    "FlowNet2SD": FlowNet2SD,
    "FlowNet2CS": FlowNet2CS,
    "FlowNet2CSS": FlowNet2CSS,
}
STACK_NAMES: tuple[str, ...] = tuple(STACKS)


def build(
    name: str, *, width: float = 1.0, thin: bool = False, div_flow: float = 20.0, rgb_max: float = 255.0
) -> nn.Module:
    """Construct stack ``name`` (exact spelling, one of ``STACK_NAMES``) with random weights, in eval mode.

    Args:
        width: channel-width multiplier of every feature layer (1.0 = the published networks).
        thin: shorthand for the paper's thin variants (FlowNet2-s/-ss/-css): width 3/8. Exclusive with
            ``width`` != 1.
        div_flow: the networks predict flow / div_flow (20 in every published checkpoint).
        rgb_max: input range of the images (255 for 0..255 RGB).
    """
    if name not in STACKS:
        raise ValueError(f"unknown FlowNet 2.0 stack {name!r}; expected one of {', '.join(STACK_NAMES)}")
    if thin:
        if width != 1.0:
            raise ValueError("give either thin=True or a width multiplier, not both")
        width = THIN_WIDTH
    if not 0 < width <= 4:
        raise ValueError(f"width multiplier must be in (0, 4], got {width}")
    model = STACKS[name](div_flow=div_flow, rgb_max=rgb_max, width=width)
    return model.eval()
