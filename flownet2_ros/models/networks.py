"""The four FlowNet 2.0 building networks: FlowNetS, FlowNetC, FlowNetSD and the fusion network.

Layer names, widths and order follow NVIDIA's flownet2-pytorch so that checkpoints load unchanged
(see ``../shared/docs/FLOWNET2_SPEC.md``). ``width`` < 1 gives the paper's thin variants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import Correlation
from .decoder import PyramidDecoderNet
from .layers import LEAKY_SLOPE, conv, deconv, iconv, predict_flow, scaled, upsample_flow


class FlowNetS(PyramidDecoderNet):
    """FlowNetS ("simple"): one encoder on the stacked input.

    Input (B, input_channels, H, W), H and W multiples of 64: the two normalised frames (6 channels) or,
    inside the stacks, frames + warped frame + previous flow + brightness error (12 channels).
    """

    def __init__(self, input_channels: int = 12, width: float = 1.0) -> None:
        super().__init__()
        c = {n: scaled(n, width) for n in (64, 128, 256, 512, 1024)}
        self.conv1 = conv(input_channels, c[64], 7, 2)
        self.conv2 = conv(c[64], c[128], 5, 2)
        self.conv3 = conv(c[128], c[256], 5, 2)
        self.conv3_1 = conv(c[256], c[256])
        self._build_encoder_tail(width)
        self._build_decoder(
            c[1024], (c[512], c[512], c[256], c[128]), width, upsample_bias=False, inter_convs=False
        )

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        out_conv2 = self.conv2(self.conv1(x))
        out_conv3 = self.conv3_1(self.conv3(out_conv2))
        out_conv4, out_conv5, out_conv6 = self.encode_tail(out_conv3)
        return self.decode(out_conv6, (out_conv5, out_conv4, out_conv3, out_conv2))


class FlowNetC(PyramidDecoderNet):
    """FlowNetC ("correlation"): a shared-weight encoder per frame, correlated at 1/8 resolution.

    Input (B, 6, H, W): the two normalised frames stacked on channels. The correlation (max displacement
    20 px at 1/8 resolution, stride 2 → 441 channels) compares the two conv3 feature maps.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = {n: scaled(n, width) for n in (32, 64, 128, 256, 512, 1024)}
        self.conv1 = conv(3, c[64], 7, 2)
        self.conv2 = conv(c[64], c[128], 5, 2)
        self.conv3 = conv(c[128], c[256], 5, 2)
        self.conv_redir = conv(c[256], c[32], 1, 1)
        self.corr = Correlation(pad_size=20, kernel_size=1, max_displacement=20, stride1=1, stride2=2)
        self.conv3_1 = conv(c[32] + self.corr.output_channels, c[256])
        self._build_encoder_tail(width)
        self._build_decoder(
            c[1024], (c[512], c[512], c[256], c[128]), width, upsample_bias=True, inter_convs=False
        )

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        batch = x.shape[0]
        # Both frames go through conv1-3 as one batch: same weights, one kernel launch per layer.
        frames = torch.cat((x[:, :3], x[:, 3:]), dim=0)
        out_conv2 = self.conv2(self.conv1(frames))
        out_conv3 = self.conv3(out_conv2)
        out_conv3a, out_conv3b = out_conv3[:batch], out_conv3[batch:]
        out_corr = F.leaky_relu(self.corr(out_conv3a, out_conv3b), LEAKY_SLOPE)
        in_conv3_1 = torch.cat((self.conv_redir(out_conv3a), out_corr), dim=1)
        out_conv3_1 = self.conv3_1(in_conv3_1)
        out_conv4, out_conv5, out_conv6 = self.encode_tail(out_conv3_1)
        return self.decode(out_conv6, (out_conv5, out_conv4, out_conv3_1, out_conv2[:batch]))


class FlowNetSD(PyramidDecoderNet):
    """FlowNetSD ("small displacement"): stride-1 first layer, 3×3 kernels, extra inter convolutions.

    Input (B, 6, H, W): the two normalised frames stacked on channels.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = {n: scaled(n, width) for n in (64, 128, 256, 512, 1024)}
        self.conv0 = conv(6, c[64])
        self.conv1 = conv(c[64], c[64], stride=2)
        self.conv1_1 = conv(c[64], c[128])
        self.conv2 = conv(c[128], c[128], stride=2)
        self.conv2_1 = conv(c[128], c[128])
        self.conv3 = conv(c[128], c[256], stride=2)
        self.conv3_1 = conv(c[256], c[256])
        self._build_encoder_tail(width)
        self._build_decoder(
            c[1024], (c[512], c[512], c[256], c[128]), width, upsample_bias=True, inter_convs=True
        )

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        out_conv1 = self.conv1_1(self.conv1(self.conv0(x)))
        out_conv2 = self.conv2_1(self.conv2(out_conv1))
        out_conv3 = self.conv3_1(self.conv3(out_conv2))
        out_conv4, out_conv5, out_conv6 = self.encode_tail(out_conv3)
        return self.decode(out_conv6, (out_conv5, out_conv4, out_conv3, out_conv2))


class FlowNetFusion(nn.Module):
    """The fusion network of FlowNet2: merges the CSS and SD estimates at full resolution.

    Input (B, 11, H, W): frame 1 (3), SD flow (2), CSS flow (2), their magnitudes (1 + 1) and brightness
    errors (1 + 1). Output: flow (B, 2, H, W) in pixels (eval), or ``(flow0, flow1, flow2)`` at full, 1/2
    and 1/4 resolution in training mode.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = {n: scaled(n, width) for n in (16, 32, 64, 128)}
        concat1 = c[128] + c[32] + 2
        concat0 = c[64] + c[16] + 2
        self.conv0 = conv(11, c[64])
        self.conv1 = conv(c[64], c[64], stride=2)
        self.conv1_1 = conv(c[64], c[128])
        self.conv2 = conv(c[128], c[128], stride=2)
        self.conv2_1 = conv(c[128], c[128])
        self.deconv1 = deconv(c[128], c[32])
        self.deconv0 = deconv(concat1, c[16])
        self.inter_conv1 = iconv(concat1, c[32])
        self.inter_conv0 = iconv(concat0, c[16])
        self.predict_flow2 = predict_flow(c[128])
        self.predict_flow1 = predict_flow(c[32])
        self.predict_flow0 = predict_flow(c[16])
        self.upsampled_flow2_to_1 = upsample_flow(bias=True)
        self.upsampled_flow1_to_0 = upsample_flow(bias=True)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        out_conv0 = self.conv0(x)
        out_conv1 = self.conv1_1(self.conv1(out_conv0))
        out_conv2 = self.conv2_1(self.conv2(out_conv1))
        flow2 = self.predict_flow2(out_conv2)
        concat1 = torch.cat((out_conv1, self.deconv1(out_conv2), self.upsampled_flow2_to_1(flow2)), dim=1)
        flow1 = self.predict_flow1(self.inter_conv1(concat1))
        concat0 = torch.cat((out_conv0, self.deconv0(concat1), self.upsampled_flow1_to_0(flow1)), dim=1)
        flow0 = self.predict_flow0(self.inter_conv0(concat0))
        if self.training:
            return flow0, flow1, flow2
        return flow0
