"""Decomposition generator G = {M_E, M_D}: shapes at 256x512, registry, gradient flow, output scaling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bmdgan.errors import InputError
from bmdgan.models import (
    DecompositionGenerator,
    HRFormerBlock,
    available_backbones,
    build_generator,
    count_parameters,
    register_backbone,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


IMAGE = (1, 1, 512, 256)  # W x H = 256 x 512, as in the paper


def test_registry_lists_required_backbones():
    assert {"hrformer-tiny-cpu", "hrformer-t", "hrformer-s", "hrformer-b", "hrnet-w18-small", "resnet"} <= set(
        available_backbones()
    )


def test_tiny_cpu_generator_shapes_at_256x512():
    torch.manual_seed(0)
    generator = build_generator("hrformer-tiny-cpu")
    assert count_parameters(generator) < 1_000_000
    x = torch.rand(IMAGE) * 2 - 1
    with torch.no_grad():
        representation = generator.encode(x)
        drr = generator(x)
    assert representation.shape == (1, 16 + 32 + 64 + 128, 128, 64)  # the 1/4 map stage 3 reuses
    assert drr.shape == IMAGE and torch.isfinite(drr).all()


def test_hrformer_t_generator_shapes_at_256x512():
    generator = build_generator("hrformer-t")
    with torch.no_grad():
        drr = generator(torch.zeros(IMAGE))
    assert drr.shape == IMAGE
    assert generator.encoder.out_channels == 18 + 36 + 72 + 144


@pytest.mark.parametrize("name, repr_channels", [("hrnet-w18-small", 270), ("resnet", 256), ("hrformer-s", 480)])
def test_other_backbones_shapes(name, repr_channels):
    generator = build_generator(name)
    x = torch.randn(2, 1, 64, 32)
    with torch.no_grad():
        assert generator.encode(x).shape == (2, repr_channels, 16, 8)
        assert generator(x).shape == (2, 1, 64, 32)


def test_resnet_generator_has_nine_residual_blocks_and_no_projection():
    generator = build_generator("resnet")
    from bmdgan.models.resnet_generator import ResnetBlock

    assert sum(isinstance(m, ResnetBlock) for m in generator.encoder.modules()) == 9
    assert isinstance(generator.decoder.project, nn.Identity)  # 256 channels already: plain Pix2PixHD decoder


@pytest.mark.parametrize("name, size", [("hrformer-tiny-cpu", 256), ("hrformer-t", 224)])
def test_gradients_reach_every_parameter(name, size):
    # 256 (tiny, window 8) and 224 (T, window 7) make every branch cover at least one full window, so every
    # row of every relative-position table is used by some valid (query, key) pair.
    torch.manual_seed(0)
    generator = build_generator(name)
    x = torch.rand(1, 1, size, size) * 2 - 1
    loss = (generator(x) - torch.rand(1, 1, size, size)).abs().mean()
    loss.backward()
    dead = [
        n
        for n, p in generator.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().max() == 0
    ]
    assert not dead, dead
    assert any(isinstance(m, HRFormerBlock) for m in generator.modules())


def test_unknown_backbone_names_choices():
    with pytest.raises(InputError, match="hrformer-b"):
        build_generator("hrformer-xl")


def test_input_shape_is_checked():
    generator = build_generator("hrformer-tiny-cpu")
    with pytest.raises(InputError, match="multiples of 4"):
        generator(torch.zeros(1, 1, 66, 64))
    with pytest.raises(InputError):
        generator(torch.zeros(1, 3, 64, 64))


def test_output_scaling_options():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 64, 64)
    linear = build_generator("hrformer-tiny-cpu")
    with torch.no_grad():
        linear.decoder.head[1].bias.fill_(5.0)  # far outside [-1, 1]: a linear output can reach it
        assert linear(x).min() > 2.0
    tanh = build_generator("hrformer-tiny-cpu", output_activation="tanh")
    with torch.no_grad():
        tanh.decoder.head[1].bias.fill_(5.0)
        assert tanh(x).abs().max() <= 1.0
    with pytest.raises(ValueError):
        build_generator("hrformer-tiny-cpu", output_activation="sigmoid")


def test_register_a_new_backbone():
    class Quarter(nn.Module):
        def __init__(self, in_channels):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 8, 4, stride=4)
            self.out_channels = 8

        def forward(self, x):
            return self.conv(x)

    register_backbone("test-quarter", 16, "4x4 stride-4 conv")(Quarter)
    generator = build_generator("test-quarter")
    assert isinstance(generator, DecompositionGenerator) and generator.backbone == "test-quarter"
    assert generator(torch.zeros(1, 1, 32, 16)).shape == (1, 1, 32, 16)
