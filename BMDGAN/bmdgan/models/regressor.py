"""Stage-3 regression network R = {M_E, M_R} (paper Sec. 3.3, Eq. 11).

M_E is inherited from a trained decomposition generator (copied, so the generator stays intact), M_R is a
:class:`~.coatnet.CoAtNetHead`. R maps a radiograph [B, 1, H, W] in [-1, 1] to BMD [B, num_outputs] in the
target's units. The head predicts a standardised value z; R returns z * target_std + target_mean, with both
stored as buffers (saved in the checkpoint), so a freshly initialised head already predicts near the mean.

One target per model: DXA aBMD (g/cm2) and QCT vBMD (mg/cm3) are independent tasks with their own sample
weights (paper Sec. 3.3), so build one regressor per target (``num_outputs`` > 1 is for experiments).
Training schedule of the paper: first freeze M_E (:meth:`BMDRegressor.freeze_encoder`), then tune R end to end.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from .coatnet import CoAtNetHead
from .generator import DecompositionGenerator

REGRESSION_HEADS: dict[str, dict] = {
    "coatnet-0": {"dims": (384, 768), "depths": (5, 2)},  # CoAtNet-0 S3 / S4 (Dai et al. 2021, Table 3)
    "tiny-cpu": {"dims": (64, 128), "depths": (1, 1)},
}
"""Named M_R sizes; head dim 32 throughout (CoAtNet)."""


class BMDRegressor(nn.Module):
    """R = {M_E (``encoder``), M_R (``head``)}. radiograph [B, C_in, H, W] -> BMD [B, num_outputs]."""

    def __init__(
        self,
        encoder: nn.Module,
        head: CoAtNetHead,
        target_mean: float | Sequence[float] = 0.0,
        target_std: float | Sequence[float] = 1.0,
    ):
        super().__init__()
        self.encoder, self.head = encoder, head
        shape = (head.num_outputs,)
        self.register_buffer("target_mean", torch.as_tensor(target_mean, dtype=torch.float32).expand(shape).clone())
        self.register_buffer("target_std", torch.as_tensor(target_std, dtype=torch.float32).expand(shape).clone())
        self.encoder_frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)) * self.target_std + self.target_mean

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Stop (or restart) training M_E: its parameters get ``requires_grad = not frozen`` and it stays in
        eval mode while frozen. Build the optimizer over ``trainable_parameters()`` after calling this."""
        self.encoder_frozen = frozen
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        self.encoder.train(self.training and not frozen)

    def train(self, mode: bool = True) -> BMDRegressor:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def build_regressor(
    generator: DecompositionGenerator,
    image_size: tuple[int, int] = (512, 256),
    head: str = "coatnet-0",
    num_outputs: int = 1,
    target_mean: float | Sequence[float] = 0.0,
    target_std: float | Sequence[float] = 1.0,
) -> BMDRegressor:
    """R from a (trained) generator: copies its encoder, adds a named CoAtNet head sized for
    ``image_size`` = (H, W) of the radiograph (the head sees (H/4, W/4))."""
    if head not in REGRESSION_HEADS:
        raise InputError(
            None, f"unknown regression head {head!r}", f"choose one of {', '.join(sorted(REGRESSION_HEADS))}"
        )
    encoder = copy.deepcopy(generator.encoder)
    in_size = (image_size[0] // 4, image_size[1] // 4)
    m_r = CoAtNetHead(encoder.out_channels, in_size, num_outputs=num_outputs, **REGRESSION_HEADS[head])
    return BMDRegressor(encoder, m_r, target_mean, target_std)
