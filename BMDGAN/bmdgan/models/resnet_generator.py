"""Encoder of the ResNet generator of Pix2PixHD / CycleGAN (Johnson et al. 2016), the paper's ablation baseline.

c7s1-64, d128, d256, then 9 residual blocks at 1/4 resolution: [B, C_in, H, W] -> [B, 256, H/4, W/4].
With :class:`~.decoder.Pix2PixHDDecoder` (u128, u64, c7s1-out) this is the 9-block ResNet generator.
GroupNorm replaces InstanceNorm (paper Sec. 4.2.7).
"""

from __future__ import annotations

import torch
from torch import nn

from .norm import group_norm


class ResnetBlock(nn.Module):
    """x + [reflect-pad, 3x3 conv, GN, ReLU, reflect-pad, 3x3 conv, GN](x). [B, C, h, w] -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            group_norm(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            group_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetEncoder(nn.Module):
    """Encoder M_E of the ResNet generator; ``out_channels`` = 4 * ngf at 1/4 resolution."""

    def __init__(self, in_channels: int = 1, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        layers = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=False),
            group_norm(ngf),
            nn.ReLU(inplace=True),
        ]
        for mult in (1, 2):
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=False),
                group_norm(ngf * mult * 2),
                nn.ReLU(inplace=True),
            ]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        self.body = nn.Sequential(*layers)
        self.out_channels = ngf * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
