"""The hip detector's network: a compact U-Net with GroupNorm that maps a radiograph (one channel, [-1, 1], at 2 mm per
pixel) to one map of logits per landmark (:data:`CHANNELS`) at the same resolution, plus one "absent" logit per
landmark from the deepest features; a detector trained with head disks has :data:`~.layout.HEAD_DISKS` maps after
those (logits of each pixel being inside that side's femoral head, no absent logit). A softmax over every pixel and
the absent logit gives where the landmark is, or that the image does not show it (trained with cross-entropy:
:mod:`.training`). Four stride-2 levels give a receptive field of ~200 mm: enough to tell a right hip from a left
one by where the shaft lies."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .layout import CHANNELS, LEVELS

WIDTHS = (8, 16, 32, 48, 64)
"""Feature channels per resolution level (:data:`~.layout.LEVELS` of them)."""
assert len(WIDTHS) == LEVELS


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
    """[batch, 1, H, W] -> (logits [batch, maps + disks, H, W], absent logits [batch, maps]); ``maps`` is
    ``len(CHANNELS)`` for the first stage and 1 (the head centre) for the refinement (:mod:`.refinement`);
    ``disks`` is ``len(HEAD_DISKS)`` for a first stage trained with head disks, else 0."""

    def __init__(self, maps: int = len(CHANNELS), disks: int = 0):
        super().__init__()
        self.down = nn.ModuleList(
            [_block(1, WIDTHS[0])] + [_block(WIDTHS[i - 1], WIDTHS[i], stride=2) for i in range(1, len(WIDTHS))]
        )
        self.up = nn.ModuleList(
            [_block(WIDTHS[i] + WIDTHS[i - 1], WIDTHS[i - 1]) for i in range(len(WIDTHS) - 1, 0, -1)]
        )
        self.head = nn.Conv2d(WIDTHS[0], maps + disks, 1)
        self.absent = nn.Linear(WIDTHS[-1], maps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        absent = self.absent(x.mean(dim=(2, 3)))
        for block in self.up:
            skip = skips.pop()
            x = block(
                torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1)
            )
        return self.head(x), absent
