"""Conditional multi-scale PatchGAN discriminators D_1, D_2, D_3 of Pix2PixHD (paper Sec. 3.2, Eq. 1-3, 8).

Each scale sees the radiograph and a (real or generated) DRR concatenated: [B, 2, H, W]. Between scales
the pair is downsampled by a 3x3 average pool with stride 2. Every discriminator returns the list of its
intermediate feature maps (for the feature-matching loss, Eq. 2-3) followed by its patch logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .norm import group_norm

KERNEL = 4
PAD = math.ceil((KERNEL - 1) / 2)  # = 2, as Pix2PixHD


class NLayerDiscriminator(nn.Module):
    """PatchGAN: 4x4 convs, LeakyReLU(0.2), GroupNorm (none on the first layer).

    Layers: conv(s2) ndf; ``n_layers - 1`` x conv(s2) doubling channels (max 512) + GN; conv(s1) + GN;
    conv(s1) -> 1 channel (logits, no sigmoid). forward: [B, C_in, H, W] -> list of n_layers + 2 maps,
    the last being the logits map [B, 1, h, w].
    """

    def __init__(self, in_channels: int = 2, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_channels, ndf, KERNEL, 2, PAD), nn.LeakyReLU(0.2, inplace=True))]
        )
        c = ndf
        for i in range(1, n_layers + 1):
            c_next, stride = min(c * 2, 512), (2 if i < n_layers else 1)
            self.layers.append(
                nn.Sequential(
                    nn.Conv2d(c, c_next, KERNEL, stride, PAD, bias=False),
                    group_norm(c_next),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
            c = c_next
        self.layers.append(nn.Conv2d(c, 1, KERNEL, 1, PAD))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """``num_scales`` NLayerDiscriminators on the input pair at full, 1/2, 1/4 resolution.

    forward(radiograph [B, 1, H, W], drr [B, 1, H, W]) -> list over scales (finest first) of the
    feature lists of :class:`NLayerDiscriminator`.
    """

    def __init__(self, in_channels: int = 2, ndf: int = 64, n_layers: int = 3, num_scales: int = 3):
        super().__init__()
        self.discriminators = nn.ModuleList(NLayerDiscriminator(in_channels, ndf, n_layers) for _ in range(num_scales))

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        """3x3 average pool, stride 2, padding ignored in the average (Pix2PixHD)."""
        return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)

    def forward(self, radiograph: torch.Tensor, drr: torch.Tensor) -> list[list[torch.Tensor]]:
        x = torch.cat([radiograph, drr], dim=1)
        outputs = []
        for i, discriminator in enumerate(self.discriminators):
            if i:
                x = self.downsample(x)
            outputs.append(discriminator(x))
        return outputs
