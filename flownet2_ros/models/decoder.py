"""The refinement decoder shared by FlowNetC, FlowNetS and FlowNetSD.

Its layers are attributes of the network itself (``deconv5``, ``predict_flow6``, ...), not of a child
module, because the published checkpoints name them that way. ``PyramidDecoderNet`` creates them and runs
the coarse-to-fine pass; subclasses build the encoder and call ``decode``.

Level L (6 → 2): ``flowL = predict(featL)``;
``concat(L-1) = cat(skip(L-1), deconv(L-1)(concatL), up(flowL))`` — encoder skip, deconvolution, upsampled
flow, in that channel order. FlowNetSD first passes ``concat`` through ``inter_conv`` before predicting.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import conv, deconv, iconv, predict_flow, scaled, upsample_flow

_DECONV_CHANNELS = (512, 256, 128, 64)  # outputs of deconv5 … deconv2 in the full-width network
_LEVELS = (5, 4, 3, 2)


class PyramidDecoderNet(nn.Module):
    """Base for the encoder–decoder nets: builds decoder layers and returns multi-scale flow.

    Output of ``forward`` in subclasses: training mode → ``(flow2, flow3, flow4, flow5, flow6)``,
    eval mode → ``flow2`` alone; flowK is (B, 2, H/2^K, W/2^K) in units of input pixels / div_flow.
    """

    def _build_encoder_tail(self, width: float) -> None:
        """conv4 … conv6_1, common to C, S and SD: 1/8 → 1/64 resolution, 256 → 1024 channels."""
        c = {n: scaled(n, width) for n in (256, 512, 1024)}
        self.conv4 = conv(c[256], c[512], stride=2)
        self.conv4_1 = conv(c[512], c[512])
        self.conv5 = conv(c[512], c[512], stride=2)
        self.conv5_1 = conv(c[512], c[512])
        self.conv6 = conv(c[512], c[1024], stride=2)
        self.conv6_1 = conv(c[1024], c[1024])

    def encode_tail(self, out_conv3: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, C3, H/8, W/8) → the conv4_1, conv5_1 and conv6_1 outputs at 1/16, 1/32 and 1/64."""
        out_conv4 = self.conv4_1(self.conv4(out_conv3))
        out_conv5 = self.conv5_1(self.conv5(out_conv4))
        return out_conv4, out_conv5, self.conv6_1(self.conv6(out_conv5))

    def _build_decoder(
        self,
        top_channels: int,
        skip_channels: tuple[int, int, int, int],
        width: float,
        *,
        upsample_bias: bool,
        inter_convs: bool,
    ) -> None:
        """Create deconv5..2, [inter_conv5..2,] predict_flow6..2 and upsampled_flow6_to_5..3_to_2.

        ``top_channels``: channels of the coarsest feature (conv6_1 output); ``skip_channels``: channels of
        the encoder outputs concatenated at levels 5, 4, 3, 2.
        """
        deconv_out = [scaled(c, width) for c in _DECONV_CHANNELS]
        concat_in: list[int] = []  # channels of concat5 … concat2
        for skip, dec in zip(skip_channels, deconv_out, strict=True):
            concat_in.append(skip + dec + 2)
        deconv_in = [top_channels, *concat_in[:-1]]
        for level, c_in, c_out in zip(_LEVELS, deconv_in, deconv_out, strict=True):
            self.add_module(f"deconv{level}", deconv(c_in, c_out))
        predict_in = [top_channels]
        if inter_convs:
            for level, c_in, c_out in zip(_LEVELS, concat_in, deconv_out, strict=True):
                self.add_module(f"inter_conv{level}", iconv(c_in, c_out))
            predict_in += deconv_out
        else:
            predict_in += concat_in
        for level, c_in in zip((6, *_LEVELS), predict_in, strict=True):
            self.add_module(f"predict_flow{level}", predict_flow(c_in))
        for level in _LEVELS:
            self.add_module(f"upsampled_flow{level + 1}_to_{level}", upsample_flow(upsample_bias))
        self._inter_convs = inter_convs

    def _layer(self, name: str) -> nn.Module:
        return self._modules[name]  # type: ignore[return-value]

    def decode(
        self, top: Tensor, skips: tuple[Tensor, Tensor, Tensor, Tensor]
    ) -> Tensor | tuple[Tensor, ...]:
        """Coarse-to-fine pass. ``top``: (B, C6, H/64, W/64); ``skips``: features at 1/32, 1/16, 1/8, 1/4."""
        flows = [self._layer("predict_flow6")(top)]
        feature = top
        for level, skip in zip(_LEVELS, skips, strict=True):
            up = self._layer(f"upsampled_flow{level + 1}_to_{level}")(flows[-1])
            feature = torch.cat((skip, self._layer(f"deconv{level}")(feature), up), dim=1)
            head_in = self._layer(f"inter_conv{level}")(feature) if self._inter_convs else feature
            flows.append(self._layer(f"predict_flow{level}")(head_in))
        if self.training:
            return tuple(reversed(flows))
        return flows[-1]
