"""The paper's augmentations (section 4.2.7), one random draw per sample, identical for radiograph and target.

Each sample's draw comes from its own generator seeded by (seed, epoch, sample index), so a run gives the
same augmentations whatever the number of processes, the batch split or a resume.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import Augmentation


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + index)


def _uniform(generator: torch.Generator, half_range: float) -> float:
    return (torch.rand((), generator=generator).item() * 2.0 - 1.0) * half_range


def random_affine(generator: torch.Generator, settings: Augmentation) -> torch.Tensor:
    """2x3 matrix for ``affine_grid`` (normalised coordinates): rotation, shear, scale, translation, flips."""
    rotation = math.radians(_uniform(generator, settings.rotation_degrees))
    shear = math.radians(_uniform(generator, settings.shear_degrees))
    scale = 1.0 + _uniform(generator, settings.scale_fraction)
    tx = _uniform(generator, settings.translation_fraction) * 2.0  # fraction of the size, [-1, 1] spans 2
    ty = _uniform(generator, settings.translation_fraction) * 2.0
    flip_x = -1.0 if settings.flip_horizontal and torch.rand((), generator=generator).item() < 0.5 else 1.0
    flip_y = -1.0 if settings.flip_vertical and torch.rand((), generator=generator).item() < 0.5 else 1.0
    rotate = torch.tensor([[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation), math.cos(rotation)]])
    shear_matrix = torch.tensor([[1.0, math.tan(shear)], [0.0, 1.0]])
    linear = rotate @ shear_matrix @ torch.diag(torch.tensor([flip_x, flip_y])) / scale
    return torch.cat([linear, torch.tensor([[tx], [ty]])], dim=1)


def augment_sample(
    radiograph: torch.Tensor, target: torch.Tensor | None, generator: torch.Generator, settings: Augmentation
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """radiograph, target image: [C, H, W] (target None for scalar targets such as BMD, which these
    transforms leave unchanged). The radiograph is in [-1, 1]; outside the image it becomes -1 (no signal),
    the target 0 (no bone). Brightness/contrast act on the radiograph only."""
    theta = random_affine(generator, settings)[None]
    grid = F.affine_grid(theta, [1, 1, *radiograph.shape[-2:]], align_corners=False)
    moved_radiograph = F.grid_sample(radiograph[None] + 1.0, grid, align_corners=False)[0] - 1.0
    moved_target = None if target is None else F.grid_sample(target[None], grid, align_corners=False)[0]
    contrast = 1.0 + _uniform(generator, settings.contrast)
    brightness = _uniform(generator, settings.brightness)
    moved_radiograph = (moved_radiograph * contrast + brightness).clamp(-1.0, 1.0)
    return moved_radiograph, moved_target
