"""The hip detector's network: a compact U-Net with GroupNorm that maps a radiograph (one channel, [-1, 1], at
2 mm per pixel) to :data:`CHANNELS` heatmaps at the same resolution. Four stride-2 levels give it a receptive
field of ~200 mm: enough to tell a right hip from a left one by where the shaft lies against the head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CHANNELS = ("head_right", "neck_right", "head_left", "neck_left")
"""Heatmap order: per side the femoral head centre and the neck point (on the neck axis, lateral of the head)."""
WIDTHS = (8, 16, 32, 48, 64)
DOWNSAMPLING = 2 ** (len(WIDTHS) - 1)
"""Input sides must be a multiple of this (the detector pads to it)."""


def _block(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False),
        nn.GroupNorm(4, outputs),
        nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False),
        nn.GroupNorm(4, outputs),
        nn.ReLU(inplace=True),
    )


class HipHeatmapNet(nn.Module):
    """[batch, 1, H, W] -> [batch, len(CHANNELS), H, W] heatmaps (peak ~1 at a landmark, ~0 elsewhere)."""

    def __init__(self):
        super().__init__()
        self.down = nn.ModuleList(
            [_block(1, WIDTHS[0])] + [_block(WIDTHS[i - 1], WIDTHS[i], stride=2) for i in range(1, len(WIDTHS))]
        )
        self.up = nn.ModuleList(
            [_block(WIDTHS[i] + WIDTHS[i - 1], WIDTHS[i - 1]) for i in range(len(WIDTHS) - 1, 0, -1)]
        )
        self.head = nn.Conv2d(WIDTHS[0], len(CHANNELS), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = block(
                torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1)
            )
        return self.head(x)
