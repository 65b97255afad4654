"""Pairs of (radiograph, target DRR) from a dataset folder, as network tensors.

Network scaling, stored with every model:
* input: the radiograph mapped to [-1, 1] by its own 0.5th and 99.5th percentiles (robust to detector
  gain and processing, which differ between machines);
* target: the DRR in g/cm2 divided by :data:`DRR_SCALE_G_CM2`, so that bone is about 0..1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..datasets.format import CaseRecord, load_image
from .augment import augment_sample, sample_generator
from .config import Augmentation

DRR_SCALE_G_CM2 = 2.0
STAGE_TARGETS = {"stage1": "drr_stage1", "stage2": "drr_pf"}


def normalise_radiograph(pixels: np.ndarray) -> np.ndarray:
    """Radiograph (any unit) -> float32 in [-1, 1] by its 0.5 and 99.5 percentiles."""
    low, high = np.percentile(pixels, [0.5, 99.5])
    scaled = (pixels - low) / max(float(high - low), 1e-6)
    return np.clip(scaled * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of a 2D image (intensive values, e.g. g/cm2, keep their unit)."""
    if image.shape == tuple(shape):
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(
        tensor, size=tuple(shape), mode="bilinear", align_corners=False, antialias=True
    )[0, 0].numpy()


class PairDataset(torch.utils.data.Dataset):
    """Item i: (index, radiograph [1, H, W] in [-1, 1], target [1, H, W] = DRR / DRR_SCALE_G_CM2)."""

    def __init__(
        self,
        folder: str | Path,
        records: list[CaseRecord],
        stage: str,
        image_shape: tuple[int, int],
        augmentation: Augmentation | None = None,
        seed: int = 0,
    ):
        self.folder, self.records, self.channel = Path(folder), records, STAGE_TARGETS[stage]
        self.image_shape, self.augmentation, self.seed = tuple(image_shape), augmentation, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def radiograph(self, index: int) -> torch.Tensor:
        """The network input [1, H, W] in [-1, 1] of item ``index``, before augmentation."""
        image = resize_to(load_image(self.folder, self.records[index], "radiograph"), self.image_shape)
        return torch.from_numpy(normalise_radiograph(image))[None]

    def __getitem__(self, index: int):
        target = resize_to(load_image(self.folder, self.records[index], self.channel), self.image_shape)
        x, y = self.radiograph(index), torch.from_numpy(np.asarray(target / DRR_SCALE_G_CM2, np.float32))[None]
        if self.augmentation is not None:
            x, y = augment_sample(x, y, sample_generator(self.seed, self.epoch, index), self.augmentation)
        return index, x, y
