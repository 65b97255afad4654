"""Decomposition generator G = {M_E, M_D} (paper Sec. 3.2) and the backbone registry.

Input: radiograph [B, 1, H, W] normalised to [-1, 1] (H, W multiples of 4; the paper uses H=512, W=256).
Output: DRR [B, 1, H, W] on the training targets' fixed scale (linear output, see :mod:`.decoder`).
``encode(x)`` gives the representation [B, C_repr, H/4, W/4] that the stage-3 regressor reuses.

Every backbone is an *encoder*: a module mapping [B, C_in, H, W] to [B, C_repr, H/4, W/4] with an
``out_channels`` attribute (= C_repr). Register new ones with :func:`register_backbone`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from .decoder import Pix2PixHDDecoder
from .hrformer import hrformer_backbone
from .hrnet import HighResolutionEncoder, hrnet_backbone
from .resnet_generator import ResNetEncoder


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one encoder: ``build(in_channels)``; ``decoder_width`` is the decoder's width at 1/4."""

    name: str
    build: Callable[[int], nn.Module]
    decoder_width: int
    description: str


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(name: str, decoder_width: int, description: str):
    """Decorator registering ``build(in_channels) -> encoder`` under ``name``."""

    def wrap(build: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        _BACKBONES[name] = BackboneSpec(name, build, decoder_width, description)
        return build

    return wrap


def available_backbones() -> list[str]:
    """Registered backbone names."""
    return sorted(_BACKBONES)


def backbone_spec(name: str) -> BackboneSpec:
    """The registry entry of ``name``; InputError naming the choices when unknown."""
    if name not in _BACKBONES:
        raise InputError(
            None, f"unknown generator backbone {name!r}", f"choose one of {', '.join(available_backbones())}"
        )
    return _BACKBONES[name]


def _register_hrformer(size: str, width: int) -> None:
    register_backbone(f"hrformer-{size}", width, f"HRFormer-{size.upper()} (HRNetV2-style concat at 1/4)")(
        lambda in_channels: HighResolutionEncoder(hrformer_backbone(size, in_channels))
    )


for _size in ("t", "s", "b"):
    _register_hrformer(_size, 256)
_register_hrformer("tiny-cpu", 32)
register_backbone("hrnet-w18-small", 256, "HRNetV2-W18-Small-v2 (basic blocks, concat at 1/4)")(
    lambda in_channels: HighResolutionEncoder(hrnet_backbone(in_channels=in_channels))
)
register_backbone("resnet", 256, "Pix2PixHD/CycleGAN ResNet generator, 9 residual blocks")(
    lambda in_channels: ResNetEncoder(in_channels, ngf=64, n_blocks=9)
)


class DecompositionGenerator(nn.Module):
    """G = {M_E (``encoder``), M_D (``decoder``)}: radiograph [B, C_in, H, W] -> DRR [B, C_out, H, W]."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, backbone: str = "", in_channels: int = 1):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.backbone, self.in_channels = backbone, in_channels

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % 4 or x.shape[3] % 4:
            raise InputError(
                None,
                f"generator input has shape {tuple(x.shape)}",
                f"expected [B, {self.in_channels}, H, W] with H and W multiples of 4",
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Representation of M_E: [B, C_in, H, W] -> [B, encoder.out_channels, H/4, W/4]."""
        self._check(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))


def build_generator(
    backbone: str = "hrformer-b",
    in_channels: int = 1,
    out_channels: int = 1,
    decoder_width: int | None = None,
    output_activation: str = "linear",
) -> DecompositionGenerator:
    """Generator with a registered backbone (paper: 'hrformer-b'); ``decoder_width`` overrides the default."""
    spec = backbone_spec(backbone)
    encoder = spec.build(in_channels)
    decoder = Pix2PixHDDecoder(
        encoder.out_channels, decoder_width or spec.decoder_width, out_channels, output_activation
    )
    return DecompositionGenerator(encoder, decoder, backbone, in_channels)
