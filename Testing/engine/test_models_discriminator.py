"""Multi-scale conditional PatchGAN discriminators: feature lists per scale, downsampling, conditioning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bmdgan.models import MultiscaleDiscriminator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_feature_lists_at_three_scales_for_256x512():
    torch.manual_seed(0)
    discriminator = MultiscaleDiscriminator(in_channels=2, ndf=64, n_layers=3, num_scales=3)
    x, drr = torch.randn(1, 1, 512, 256), torch.rand(1, 1, 512, 256)
    with torch.no_grad():
        outputs = discriminator(x, drr)
    assert len(outputs) == 3
    # 4x4 convs with padding 2: stride 2 gives floor(n / 2) + 1, stride 1 gives n + 1
    expected_first = [(64, 257, 129), (128, 129, 65), (256, 65, 33), (512, 66, 34), (1, 67, 35)]
    assert [tuple(f.shape[1:]) for f in outputs[0]] == expected_first
    # each scale sees the pair average-pooled by 2 (3x3, stride 2): 512x256 -> 256x128 -> 128x64
    assert tuple(outputs[1][0].shape[-2:]) == (129, 65) and tuple(outputs[2][0].shape[-2:]) == (65, 33)
    for scale in outputs:
        assert len(scale) == 5 and scale[-1].shape[1] == 1


def test_downsampling_between_scales_is_an_average_ignoring_padding():
    x = torch.full((1, 2, 9, 7), 3.0)
    pooled = MultiscaleDiscriminator.downsample(x)
    assert pooled.shape == (1, 2, 5, 4) and torch.allclose(pooled, torch.full_like(pooled, 3.0))


def test_discriminator_is_conditioned_on_the_radiograph():
    torch.manual_seed(0)
    discriminator = MultiscaleDiscriminator(ndf=8)
    drr = torch.rand(1, 1, 64, 32)
    with torch.no_grad():
        a = discriminator(torch.zeros(1, 1, 64, 32), drr)
        b = discriminator(torch.ones(1, 1, 64, 32), drr)
    assert all(not torch.allclose(fa[-1], fb[-1]) for fa, fb in zip(a, b))


def test_first_layer_unnormalised_others_group_norm():
    discriminator = MultiscaleDiscriminator(ndf=16)
    d0 = discriminator.discriminators[0]
    assert not any(isinstance(m, nn.GroupNorm) for m in d0.layers[0].modules())
    assert all(any(isinstance(m, nn.GroupNorm) for m in layer.modules()) for layer in d0.layers[1:-1])
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in discriminator.modules())
