"""Is a radiograph like the ones the model was trained on? Warnings instead of untrustworthy numbers.

Three checks, each with limits fitted on the training fold and stored with the model:

* appearance: the encoder's global-average-pooled representation, as a per-feature z-score RMS distance
  from the training mean; a limit at the training maximum x 1.5 catches non-hip images, children and
  other domains (the representation is what the decoder reads, so an unfamiliar one is a warning sign);
* PF region: the area (pixels >= threshold) of the predicted PF-DRR must lie within the training range
  widened by 50%: an empty or malformed decomposition is not a measurement;
* dense material: a PF-DRR peak far above any training peak (x 1.5) suggests metal (an implant).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

APPEARANCE_MARGIN = 1.5
AREA_MARGIN = 0.5
PEAK_MARGIN = 1.5


def pooled(representation: torch.Tensor) -> np.ndarray:
    """[B, C] global average of the encoder's 1/4-resolution representation [B, C, H/4, W/4]."""
    return representation.detach().float().mean(dim=(-2, -1)).cpu().numpy()


@dataclass
class TrainingDistribution:
    feature_mean: list[float]
    feature_std: list[float]
    appearance_limit: float
    area_range_pixels: tuple[float, float]
    peak_limit_g_cm2: float
    threshold_g_cm2: float

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> TrainingDistribution:
        return TrainingDistribution(**{**data, "area_range_pixels": tuple(data["area_range_pixels"])})

    def appearance_distance(self, features: np.ndarray) -> float:
        z = (np.asarray(features, float) - self.feature_mean) / np.asarray(self.feature_std)
        return float(np.sqrt(np.mean(z**2)))


def fit_distribution(features: np.ndarray, pf_drrs_g_cm2: np.ndarray, threshold_g_cm2: float) -> TrainingDistribution:
    """Limits from the training fold: features [N, C], predicted PF-DRRs [N, H, W] in g/cm2."""
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    distances = np.sqrt(np.mean(((features - mean) / std) ** 2, axis=1))
    areas = (pf_drrs_g_cm2 >= threshold_g_cm2).sum(axis=(1, 2)).astype(float)
    return TrainingDistribution(
        mean.tolist(),
        std.tolist(),
        float(distances.max() * APPEARANCE_MARGIN),
        (float(areas.min() * (1 - AREA_MARGIN)), float(areas.max() * (1 + AREA_MARGIN))),
        float(pf_drrs_g_cm2.max() * PEAK_MARGIN),
        float(threshold_g_cm2),
    )


def check(distribution: TrainingDistribution, features: np.ndarray, pf_drr_g_cm2: np.ndarray) -> list[str]:
    """Warnings for one radiograph (empty list: nothing unusual)."""
    warnings = []
    distance = distribution.appearance_distance(features)
    if distance > distribution.appearance_limit:
        warnings.append(
            f"out of distribution: the radiograph looks unlike the training radiographs (distance "
            f"{distance:.1f} > {distribution.appearance_limit:.1f}); not an adult AP hip radiograph "
            "(a child, another body part, another view)?"
        )
    area = float((pf_drr_g_cm2 >= distribution.threshold_g_cm2).sum())
    low, high = distribution.area_range_pixels
    if not low <= area <= high:
        warnings.append(
            f"the decomposed proximal-femur region is empty or malformed ({area:.0f} pixels, "
            f"training range {low:.0f}-{high:.0f})"
        )
    peak = float(pf_drr_g_cm2.max())
    if peak > distribution.peak_limit_g_cm2:
        warnings.append(
            f"very dense material in the proximal femur (peak {peak:.2f} g/cm2 > "
            f"{distribution.peak_limit_g_cm2:.2f}): metal implant?"
        )
    return warnings
