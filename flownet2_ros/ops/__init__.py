"""FlowNet 2.0's special operations in plain, differentiable PyTorch (no CUDA extensions).

- :func:`correlation` / :class:`Correlation`: FlowNetC's cost volume (fast GEMM formulation), with
  :func:`correlation_naive` as the straightforward reference and :func:`correlation_output_size`.
- :func:`warp` / :class:`Warp`: Resample2d, bilinear backward warping with border clamping.
- :func:`channel_norm` / :class:`ChannelNorm`: per-pixel L2 norm over channels.
"""

from .channel_norm import ChannelNorm, channel_norm
from .correlation import Correlation, correlation, correlation_naive, correlation_output_size
from .warp import Warp, warp

__all__ = [
    "ChannelNorm",
    "Correlation",
    "Warp",
    "channel_norm",
    "correlation",
    "correlation_naive",
    "correlation_output_size",
    "warp",
]
