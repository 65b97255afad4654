"""Multi-resolution scaffolding shared by HRNet (Wang et al., TPAMI 2021) and HRFormer (Yuan et al., 2021).

Layout of a high-resolution backbone (input [B, C_in, H, W]):

* stem: two stride-2 3x3 convs -> [B, stem, H/4, W/4];
* stage 1: bottleneck residual blocks at 1/4 -> [B, 4 * planes, H/4, W/4];
* stages 2, 3, 4: 2, 3, 4 parallel branches at 1/4, 1/8, 1/16, 1/32. Each stage is a sequence of
  *modules*; a module runs a few blocks on each branch, then fuses the branches (every branch receives
  the sum of all branches resampled to its resolution: strided 3x3 convs down, 1x1 conv + bilinear
  upsampling up). A *transition* before each stage adds the new, coarser branch (stride-2 3x3 conv).

HRNet uses basic residual blocks in the branches and full 3x3 convs to go down in the fusion; HRFormer
uses Transformer blocks and depthwise-separable 3x3 convs (as in the official HRFormer code). The block is
passed in as a factory, so both backbones are built by :class:`HighResolutionBackbone`.
All normalisation layers are GroupNorm (paper Sec. 4.2.7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .norm import group_norm

BlockFactory = Callable[[int, int], nn.Module]
"""(branch index, channels) -> a block mapping [B, C, h, w] to [B, C, h, w]."""


def conv_norm_act(
    c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """Conv (no bias: a norm follows) + GroupNorm (+ ReLU); 'same' padding for odd kernels."""
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), group_norm(c_out)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + GN, identity shortcut, ReLU. [B, C, h, w] -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_norm_act(channels, channels), conv_norm_act(channels, channels, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3 (optionally depthwise), 1x1 expand x4, projected shortcut if needed.

    [B, c_in, h, w] -> [B, 4 * planes, h, w]. ``depthwise=True`` gives HRFormer's BottleneckDWP
    used in its ImageNet classification head.
    """

    expansion = 4

    def __init__(self, c_in: int, planes: int, depthwise: bool = False):
        super().__init__()
        c_out = planes * self.expansion
        self.body = nn.Sequential(
            conv_norm_act(c_in, planes, kernel=1),
            conv_norm_act(planes, planes, kernel=3, groups=planes if depthwise else 1),
            conv_norm_act(planes, c_out, kernel=1, act=False),
        )
        self.shortcut = nn.Identity() if c_in == c_out else conv_norm_act(c_in, c_out, kernel=1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x) + self.body(x))


def _down_step(c_in: int, c_out: int, separable: bool, act: bool) -> nn.Sequential:
    """One stride-2 step of a fusion path: full 3x3 conv (HRNet) or depthwise 3x3 + pointwise 1x1 (HRFormer)."""
    if not separable:
        return conv_norm_act(c_in, c_out, kernel=3, stride=2, act=act)
    layers = [
        conv_norm_act(c_in, c_in, kernel=3, stride=2, groups=c_in, act=False),
        conv_norm_act(c_in, c_out, kernel=1, act=act),
    ]
    return nn.Sequential(*layers)


class MultiResolutionFusion(nn.Module):
    """Exchange information between branches: out_i = ReLU(sum_j path_ij(x_j)), path_ii = identity.

    j > i (coarser source): 1x1 conv + GN, then bilinear upsampling to branch i's size.
    j < i (finer source): i - j stride-2 steps, intermediate ones keep C_j channels and have a ReLU.
    """

    def __init__(self, channels: Sequence[int], separable: bool):
        super().__init__()
        self.paths = nn.ModuleList()
        for i, c_i in enumerate(channels):
            row = nn.ModuleList()
            for j, c_j in enumerate(channels):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:
                    row.append(conv_norm_act(c_j, c_i, kernel=1, act=False))
                else:
                    steps = [_down_step(c_j, c_j, separable, act=True) for _ in range(i - j - 1)]
                    steps.append(_down_step(c_j, c_i, separable, act=False))
                    row.append(nn.Sequential(*steps))
            self.paths.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for i, target in enumerate(xs):
            y = target
            for j, x in enumerate(xs):
                if j == i:
                    continue
                z = self.paths[i][j](x)
                if j > i:
                    z = F.interpolate(z, size=target.shape[-2:], mode="bilinear", align_corners=False)
                y = y + z
            outs.append(F.relu(y))
        return outs


class MultiResolutionModule(nn.Module):
    """``blocks`` blocks on every branch, then :class:`MultiResolutionFusion`. list of [B, C_i, h_i, w_i] -> same."""

    def __init__(self, channels: Sequence[int], blocks: int, make_block: BlockFactory, separable_fuse: bool):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[make_block(i, c) for _ in range(blocks)]) for i, c in enumerate(channels)
        )
        self.fuse = MultiResolutionFusion(channels, separable_fuse)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.fuse([branch(x) for branch, x in zip(self.branches, xs)])


class Transition(nn.Module):
    """Between stages: adapt channels of existing branches (3x3 conv if they differ) and add a new
    branch by a stride-2 3x3 conv from the coarsest previous branch."""

    def __init__(self, prev_channels: Sequence[int], channels: Sequence[int]):
        super().__init__()
        self.layers = nn.ModuleList()
        for i, c in enumerate(channels):
            if i < len(prev_channels):
                same = prev_channels[i] == c
                self.layers.append(nn.Identity() if same else conv_norm_act(prev_channels[i], c))
            else:
                self.layers.append(conv_norm_act(prev_channels[-1], c, stride=2))
        self.num_prev = len(prev_channels)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [layer(xs[min(i, self.num_prev - 1)]) for i, layer in enumerate(self.layers)]


@dataclass(frozen=True)
class HighResolutionConfig:
    """Topology of a high-resolution backbone (names follow the official HRNet/HRFormer YAML files).

    channels: width C_i of branch i (1/4, 1/8, 1/16, 1/32); modules: number of modules in stages 2, 3, 4;
    blocks: blocks per branch per module; stage-1: ``stage1_blocks`` bottlenecks of ``stage1_planes``.
    """

    channels: tuple[int, int, int, int]
    modules: tuple[int, int, int]
    blocks: int = 2
    stem_channels: int = 64
    stage1_planes: int = 64
    stage1_blocks: int = 2


class HighResolutionBackbone(nn.Module):
    """Stem + stage 1 + stages 2-4. [B, C_in, H, W] -> list of 4 maps [B, C_i, H / 2^(i+2), W / 2^(i+2)]
    (ceil-divided when H, W are not multiples of 32)."""

    def __init__(
        self, config: HighResolutionConfig, make_block: BlockFactory, separable_fuse: bool, in_channels: int = 1
    ):
        super().__init__()
        self.config = config
        s = config.stem_channels
        self.stem = nn.Sequential(conv_norm_act(in_channels, s, stride=2), conv_norm_act(s, s, stride=2))
        stage1 = [Bottleneck(s, config.stage1_planes)]
        stage1 += [Bottleneck(config.stage1_planes * 4, config.stage1_planes) for _ in range(config.stage1_blocks - 1)]
        self.stage1 = nn.Sequential(*stage1)
        prev = [config.stage1_planes * Bottleneck.expansion]
        self.transitions, self.stages = nn.ModuleList(), nn.ModuleList()
        for stage, num_modules in enumerate(config.modules):
            chans = list(config.channels[: stage + 2])
            self.transitions.append(Transition(prev, chans))
            self.stages.append(
                nn.Sequential(
                    *[
                        MultiResolutionModule(chans, config.blocks, make_block, separable_fuse)
                        for _ in range(num_modules)
                    ]
                )
            )
            prev = chans
        self.out_channels = tuple(config.channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        xs = [self.stage1(self.stem(x))]
        for transition, stage in zip(self.transitions, self.stages):
            xs = stage(transition(xs))
        return xs


class HighResolutionEncoder(nn.Module):
    """Encoder M_E: a high-resolution backbone whose branches are bilinearly upsampled to 1/4 and concatenated
    (the HRNetV2 representation). [B, C_in, H, W] -> [B, sum(C_i), H/4, W/4]; ``out_channels`` = sum(C_i)."""

    def __init__(self, backbone: HighResolutionBackbone):
        super().__init__()
        self.backbone = backbone
        self.out_channels = sum(backbone.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.backbone(x)
        size = xs[0].shape[-2:]
        ups = [xs[0]] + [F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in xs[1:]]
        return torch.cat(ups, dim=1)


HRNET_W18_SMALL_V2 = HighResolutionConfig(channels=(18, 36, 72, 144), modules=(1, 3, 2), blocks=2)
"""HRNetV2-W18-Small-v2 (official ``w18_small_v2`` YAML): basic blocks, 2 per branch, modules (1, 3, 2)."""


def hrnet_backbone(config: HighResolutionConfig = HRNET_W18_SMALL_V2, in_channels: int = 1) -> HighResolutionBackbone:
    """HRNetV2 backbone: basic residual blocks in the branches, full 3x3 strided convs in the fusion."""
    return HighResolutionBackbone(config, lambda _i, c: BasicBlock(c), separable_fuse=False, in_channels=in_channels)
