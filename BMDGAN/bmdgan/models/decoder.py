"""Decoder M_D: the upsampling part of Pix2PixHD's GlobalGenerator (Wang et al., 2018; paper Sec. 4.2.7).

[B, C_repr, H/4, W/4] -> [B, out_channels, H, W]:
1x1 conv + GN + ReLU to ``width`` (skipped when C_repr == width, e.g. the ResNet encoder),
two 3x3 stride-2 transpose convs (width -> width/2 -> width/4) with GN + ReLU,
reflection pad 3 + 7x7 conv to the output channels.

Output scaling: linear (no activation) by default. The DRR is a quantitative density map whose mean over
the proximal femur is mapped *linearly* to BMD (paper Sec. 3.2), so the decoder should not bend it: tanh
compresses values near its ends, i.e. exactly the dense-bone pixels that decide BMD, and its gradient
vanishes there. Targets are expected on a fixed (dataset-wide, never per-image) scale, e.g. DRR / scale
so that bone lies roughly in [0, 1]. ``output_activation='tanh'`` gives Pix2PixHD's original output for
targets normalised to [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from .norm import group_norm

OUTPUT_ACTIVATIONS = ("linear", "tanh")


class Pix2PixHDDecoder(nn.Module):
    """Upsample the 1/4 representation x4 to a full-resolution image (see module docstring for shapes)."""

    def __init__(self, in_channels: int, width: int = 256, out_channels: int = 1, output_activation: str = "linear"):
        super().__init__()
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}")
        if width % 4:
            raise ValueError(f"decoder width must be a multiple of 4, got {width}")
        self.project = (
            nn.Identity()
            if in_channels == width
            else nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False), group_norm(width), nn.ReLU(inplace=True))
        )
        ups = []
        for c_in, c_out in ((width, width // 2), (width // 2, width // 4)):
            ups += [
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=False),
                group_norm(c_out),
                nn.ReLU(inplace=True),
            ]
        self.upsample = nn.Sequential(*ups)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(width // 4, out_channels, 7))
        self.output_activation = output_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.upsample(self.project(x)))
        return torch.tanh(y) if self.output_activation == "tanh" else y
