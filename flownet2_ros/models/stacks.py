"""The FlowNet 2.0 stacks: the modules whose state_dicts are the published checkpoints.

Every stack takes two frames ``image1, image2`` (B, 3, H, W), RGB in 0..``rgb_max``, H and W multiples
of 64, and in eval mode returns the flow from image1 to image2, (B, 2, H, W) in pixels (u right, v down).

Training mode returns the multi-scale predictions of the *last* network of the stack (the one a stacked
schedule trains; earlier ones are frozen by the trainer), finest first. Multiplying them by
``train_flow_scale`` gives flow in input-resolution pixels: ``div_flow`` for the C/S/SD heads, 1 for the
fusion network.

The standalone stacks (FlowNet2C/S/SD) *are* their network (subclasses), because their checkpoints store
its layers without a prefix; the composite stacks hold sub-networks under ``flownetc.``, ``flownets_1.``,
``flownets_2.``, ``flownets_d.`` and ``flownetfusion.``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import channel_norm, warp
from .networks import FlowNetC, FlowNetFusion, FlowNetS, FlowNetSD

Prediction = Tensor | tuple[Tensor, ...]


def normalize_pair(image1: Tensor, image2: Tensor, rgb_max: float) -> tuple[Tensor, Tensor]:
    """Subtract the per-sample, per-channel mean over both frames and all pixels, divide by rgb_max.

    image1, image2: (B, 3, H, W) with H, W multiples of 64 → two (B, 3, H, W) tensors.
    """
    if image1.shape != image2.shape or image1.dim() != 4 or image1.shape[1] != 3:
        raise ValueError(
            f"expected two (B, 3, H, W) images of one shape, got {tuple(image1.shape)} and {tuple(image2.shape)}"
        )
    if image1.shape[2] % 64 or image1.shape[3] % 64 or image1.shape[2] == 0 or image1.shape[3] == 0:
        raise ValueError(
            f"H and W must be positive multiples of 64, got {image1.shape[2]}x{image1.shape[3]} "
            "(use flownet2_ros.models.FlowInference for other sizes)"
        )
    mean = 0.5 * (image1.mean(dim=(2, 3), keepdim=True) + image2.mean(dim=(2, 3), keepdim=True))
    return (image1 - mean) / rgb_max, (image2 - mean) / rgb_max


def upsample4(flow: Tensor, mode: str) -> Tensor:
    """×4 upsampling of a 1/4-resolution flow (values unchanged); bilinear uses align_corners=False."""
    if mode == "nearest":
        return F.interpolate(flow, scale_factor=4, mode="nearest")
    return F.interpolate(flow, scale_factor=4, mode="bilinear", align_corners=False)


def finest(prediction: Prediction) -> Tensor:
    """The finest flow of a sub-network, whether it returned the training tuple or the eval tensor."""
    return prediction[0] if isinstance(prediction, tuple) else prediction


class StackConfig:
    """Options common to every stack; mixed into the nn.Module stacks after ``nn.Module.__init__``."""

    div_flow: float
    rgb_max: float
    width: float
    train_flow_scale: float

    def _set_config(self, div_flow: float, rgb_max: float, width: float) -> None:
        if div_flow <= 0 or rgb_max <= 0:
            raise ValueError(f"div_flow and rgb_max must be > 0, got {div_flow} and {rgb_max}")
        self.div_flow = float(div_flow)
        self.rgb_max = float(rgb_max)
        self.width = float(width)
        self.train_flow_scale = self.div_flow

    def _standalone_forward(
        self, network: Callable[[Tensor], Prediction], image1: Tensor, image2: Tensor
    ) -> Prediction:
        """A single-network stack: the network on the stacked normalised frames, flow2 upsampled ×4."""
        x1, x2 = normalize_pair(image1, image2, self.rgb_max)
        flows = network(torch.cat((x1, x2), dim=1))
        training = isinstance(self, nn.Module) and self.training
        return flows if training else upsample4(finest(flows) * self.div_flow, "bilinear")


class FlowNet2C(FlowNetC, StackConfig):
    """FlowNetC alone (checkpoint ``FlowNet2-C``): flow = bilinear×4(flownetc · div_flow)."""

    def __init__(self, div_flow: float = 20.0, rgb_max: float = 255.0, width: float = 1.0) -> None:
        super().__init__(width)
        self._set_config(div_flow, rgb_max, width)

    def forward(self, image1: Tensor, image2: Tensor) -> Prediction:  # type: ignore[override]
        return self._standalone_forward(super().forward, image1, image2)


class FlowNet2S(FlowNetS, StackConfig):
    """FlowNetS alone on the two frames (6 input channels; checkpoint ``FlowNet2-S``)."""

    def __init__(self, div_flow: float = 20.0, rgb_max: float = 255.0, width: float = 1.0) -> None:
        super().__init__(input_channels=6, width=width)
        self._set_config(div_flow, rgb_max, width)

    def forward(self, image1: Tensor, image2: Tensor) -> Prediction:  # type: ignore[override]
        return self._standalone_forward(super().forward, image1, image2)


class FlowNet2SD(FlowNetSD, StackConfig):
    """FlowNetSD alone (checkpoint ``FlowNet2-SD``)."""

    def __init__(self, div_flow: float = 20.0, rgb_max: float = 255.0, width: float = 1.0) -> None:
        super().__init__(width)
        self._set_config(div_flow, rgb_max, width)

    def forward(self, image1: Tensor, image2: Tensor) -> Prediction:  # type: ignore[override]
        return self._standalone_forward(super().forward, image1, image2)


class _CompositeStack(nn.Module, StackConfig):
    """FlowNetC followed by ``len(refiners)`` FlowNetS refinement stages (CS, CSS, and FlowNet2's front)."""

    def __init__(self, div_flow: float, rgb_max: float, width: float, refiners: int) -> None:
        super().__init__()
        self._set_config(div_flow, rgb_max, width)
        self.flownetc = FlowNetC(width)
        self.flownets_1 = FlowNetS(input_channels=12, width=width)
        self._refiner_names = ["flownets_1"]
        if refiners == 2:
            self.flownets_2 = FlowNetS(input_channels=12, width=width)
            self._refiner_names.append("flownets_2")

    def refine_input(self, x1: Tensor, x2: Tensor, flow: Tensor) -> Tensor:
        """Stacked FlowNetS input, (B, 12, H, W): x1, x2, x2 warped by flow, flow / div_flow, |x1 − warped|."""
        warped = warp(x2, flow)
        return torch.cat((x1, x2, warped, flow / self.div_flow, channel_norm(x1 - warped)), dim=1)

    def run_c_s(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Prediction]:
        """Run C and the S stages. Returns the last stage's input-resolution flow (eval semantics: the
        final CSS stage upsamples by nearest, CS by bilinear) and its raw prediction."""
        x = torch.cat((x1, x2), dim=1)
        flow = upsample4(finest(self.flownetc(x)) * self.div_flow, "bilinear")
        prediction: Prediction = flow
        for index, name in enumerate(self._refiner_names):
            prediction = self._modules[name](self.refine_input(x1, x2, flow))  # type: ignore[misc]
            # The reference upsamples flownets_1 bilinearly and flownets_2 with nearest neighbours.
            flow = upsample4(finest(prediction) * self.div_flow, "bilinear" if index == 0 else "nearest")
        return flow, prediction

    def forward(self, image1: Tensor, image2: Tensor) -> Prediction:
        x1, x2 = normalize_pair(image1, image2, self.rgb_max)
        flow, prediction = self.run_c_s(x1, x2)
        return prediction if self.training else flow


class FlowNet2CS(_CompositeStack):
    """FlowNetC → FlowNetS with warping (checkpoint ``FlowNet2-CS``)."""

    def __init__(self, div_flow: float = 20.0, rgb_max: float = 255.0, width: float = 1.0) -> None:
        super().__init__(div_flow, rgb_max, width, refiners=1)


class FlowNet2CSS(_CompositeStack):
    """FlowNetC → FlowNetS → FlowNetS (checkpoints ``FlowNet2-CSS``, ``FlowNet2-CSS-ft-sd``)."""

    def __init__(self, div_flow: float = 20.0, rgb_max: float = 255.0, width: float = 1.0) -> None:
        super().__init__(div_flow, rgb_max, width, refiners=2)


class FlowNet2(_CompositeStack):
    """Full FlowNet 2.0: FlowNet2-CSS and FlowNetSD merged by the fusion network (checkpoint ``FlowNet2``)."""

    def __init__(self, div_flow: float = 20.0, rgb_max: float = 255.0, width: float = 1.0) -> None:
        super().__init__(div_flow, rgb_max, width, refiners=2)
        self.flownets_d = FlowNetSD(width)
        self.flownetfusion = FlowNetFusion(width)
        self.train_flow_scale = 1.0

    def forward(self, image1: Tensor, image2: Tensor) -> Prediction:
        x1, x2 = normalize_pair(image1, image2, self.rgb_max)
        flow_css, _ = self.run_c_s(x1, x2)
        # The reference divides the SD flow by div_flow here (instead of multiplying); its checkpoints
        # were trained that way, so the fusion net expects it.
        flow_sd = upsample4(finest(self.flownets_d(torch.cat((x1, x2), dim=1))) / self.div_flow, "nearest")
        fusion_in = torch.cat(
            (
                x1,
                flow_sd,
                flow_css,
                channel_norm(flow_sd),
                channel_norm(flow_css),
                channel_norm(x1 - warp(x2, flow_sd)),
                channel_norm(x1 - warp(x2, flow_css)),
            ),
            dim=1,
        )
        return self.flownetfusion(fusion_in)
