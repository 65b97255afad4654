"""HRFormer / HRNet backbones: published configurations and sizes, branch shapes, normalisation layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bmdgan.models import (
    HRFORMER_CONFIGS,
    HRFormerBlock,
    HRFormerClassifier,
    count_parameters,
    hrformer_backbone,
    hrnet_backbone,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# HRFormer paper, ImageNet classification table (params of the whole classifier, head included).
PUBLISHED_MILLIONS = {"t": 8.0, "s": 13.5, "b": 50.3}


@pytest.mark.parametrize("size", ["t", "s", "b"])
def test_parameter_count_matches_published_size(size):
    # Counted: HRFormerClassifier = backbone (3-channel stem, stage 1, stages 2-4 with fusion) + the official
    # ImageNet head (depthwise incre bottlenecks, separable downsampling, 1x1 conv to 2048, Linear 2048->1000),
    # i.e. all learnable parameters, as the published figures (relative-position indices are buffers, not counted).
    model = HRFormerClassifier(size, in_channels=3, num_classes=1000)
    millions = count_parameters(model) / 1e6
    assert abs(millions - PUBLISHED_MILLIONS[size]) / PUBLISHED_MILLIONS[size] < 0.10, millions
    # the head alone is ~5.5-6.3M: the backbone without it is clearly smaller than the published figure
    assert count_parameters(model.backbone) / 1e6 < PUBLISHED_MILLIONS[size] - 5.0


def test_hrnet_w18_small_v2_size():
    # HRNet-Semantic-Segmentation README: HRNetV2-W18-Small-v2 3.9M params, of which ~0.08M are the 1x1-conv
    # segmentation head (not built here); the backbone with a 3-channel stem must be within 10%.
    millions = count_parameters(hrnet_backbone(in_channels=3)) / 1e6
    assert abs(millions - 3.9) / 3.9 < 0.10, millions


def test_published_configurations():
    t, s, b = HRFORMER_CONFIGS["t"], HRFORMER_CONFIGS["s"], HRFORMER_CONFIGS["b"]
    assert (t.channels, s.channels, b.channels) == ((18, 36, 72, 144), (32, 64, 128, 256), (78, 156, 312, 624))
    assert (t.heads, s.heads, b.heads) == ((1, 2, 4, 8), (1, 2, 4, 8), (2, 4, 8, 16))
    assert (t.modules, s.modules, b.modules) == ((1, 3, 2), (1, 4, 2), (1, 4, 2))
    for cfg in (t, s, b):
        assert cfg.blocks == 2 and cfg.mlp_ratios == (4, 4, 4, 4) and cfg.window_size == 7
        assert (cfg.stem_channels, cfg.stage1_planes, cfg.stage1_blocks) == (64, 64, 2)


def test_tiny_cpu_backbone_is_small():
    assert count_parameters(hrformer_backbone("tiny-cpu")) < 1_000_000


@pytest.mark.parametrize("height, width", [(64, 96), (100, 60)])
def test_branch_shapes(height, width):
    backbone = hrformer_backbone("tiny-cpu")
    with torch.no_grad():
        branches = backbone(torch.randn(2, 1, height, width))
    channels = HRFORMER_CONFIGS["tiny-cpu"].channels
    for i, (feat, c) in enumerate(zip(branches, channels)):
        h, w = height, width
        for _ in range(i + 2):  # stride-2 convs with padding 1: ceil division
            h, w = (h + 1) // 2, (w + 1) // 2
        assert feat.shape == (2, c, h, w)


def test_hrformer_branches_use_transformer_blocks_and_modules_per_stage():
    backbone = hrformer_backbone("t")
    assert [len(stage) for stage in backbone.stages] == [1, 3, 2]
    blocks = [m for m in backbone.modules() if isinstance(m, HRFormerBlock)]
    # stage 2: 2 branches x 2 blocks x 1 module; stage 3: 3 x 2 x 3; stage 4: 4 x 2 x 2
    assert len(blocks) == 4 + 18 + 16
    assert blocks[0].attn.rel_bias.table.shape == (13 * 13, 1)


def test_hrnet_w18_small_shapes():
    backbone = hrnet_backbone()
    with torch.no_grad():
        branches = backbone(torch.randn(1, 1, 64, 64))
    assert [tuple(f.shape[1:]) for f in branches] == [(18, 16, 16), (36, 8, 8), (72, 4, 4), (144, 2, 2)]


@pytest.mark.parametrize("factory", [lambda: hrformer_backbone("t"), hrnet_backbone])
def test_only_group_norm_and_transformer_layer_norm(factory):
    model = factory()
    forbidden = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.SyncBatchNorm)
    assert not any(isinstance(m, forbidden) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    layer_norms = {id(m) for m in model.modules() if isinstance(m, nn.LayerNorm)}
    in_transformer = {id(m) for blk in model.modules() if isinstance(blk, HRFormerBlock) for m in blk.modules()}
    assert layer_norms <= in_transformer
