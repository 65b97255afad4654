"""The conventional baseline (paper sections 4.2-4.3, after Hsieh et al. 2021): BMD regressed directly from the
hip crop of the radiograph by a standard CNN, here a ResNet-18 layout (He et al. 2016) with GroupNorm.

Like :class:`~.regressor.BMDRegressor`, it predicts a standardised value and returns it in the target's unit.
"""

from __future__ import annotations

import torch
from torch import nn

from .norm import group_norm


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            group_norm(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            group_norm(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), group_norm(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class DirectRegressionCNN(nn.Module):
    """radiograph [B, 1, H, W] in [-1, 1] -> BMD [B, 1] in the target's unit. ``width`` = 64 is ResNet-18."""

    def __init__(self, width: int = 64, target_mean: float = 0.0, target_std: float = 1.0):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = [
            nn.Conv2d(1, width, 7, 2, 3, bias=False),
            group_norm(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        c_in = width
        for index, c_out in enumerate(widths):
            layers += [_BasicBlock(c_in, c_out, 1 if index == 0 else 2), _BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.output = nn.Linear(c_in, 1)
        self.register_buffer("target_mean", torch.tensor([float(target_mean)]))
        self.register_buffer("target_std", torch.tensor([float(target_std)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(x).mean(dim=(-2, -1))) * self.target_std + self.target_mean
