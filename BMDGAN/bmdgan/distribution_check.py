"""Is a radiograph like the ones the model was trained on? Each check gives a reason instead of a trusted number.

Four checks on what the model itself sees of one hip, with limits stored with the model:

* appearance: the encoder's global-average-pooled representation, as a per-feature z-score RMS distance from the
  training mean (the representation is what the decoder reads, so an unfamiliar one is a warning sign: a child,
  another body part, another view);
* PF region: the area (pixels >= threshold) of the predicted PF-DRR; the input region is fixed in mm
  (:mod:`bmdgan.datasets.normalise`), so an adult proximal femur covers a known area and an empty, malformed or
  metal-shadowed decomposition does not;
* dense material: a PF-DRR peak (g/cm2) above any plausible bone suggests metal (an implant);
* agreement: the decomposition's and the stage-3 regression's aBMD (g/cm2) disagree by more than on familiar
  images (the paper's section 5.3: failure shows in the decomposition);
* appearance and area together (:func:`joint_score`): an image both somewhat unfamiliar and with a somewhat small PF
  region. Screws across the neck do both (appearance 1.27-1.52, PF area 484-553 pixels) where each alone stays
  within a familiar range (unseen CTs reach 1.32, small familiar femurs 542 pixels).

Training fits first limits on the training fold (:func:`fit_distribution`, generous margins); ``bmdgan
calibrate-confidence`` then sets them from held-out in-distribution images (:func:`held_out_limits`): new virtual
patients of the training CTs and CTs the model never saw, each limit at the held-out range widened by
:data:`HELD_OUT_MARGIN`. Measured for the shipped model (model card), with each source CT's limits fitted on the
other CTs' images: at a 5 % margin 5.9 % of the images lost their trust, most of them example_ct's (its scan ends
inside the proximal femur, so its femurs look small and unfamiliar to limits fitted without it); at 10 %, 3.3 %. No
hip with screws in the neck got a trusted number with the dense-material limit at 5 % (:data:`HELD_OUT_PEAK_MARGIN`);
at 10 % one of 5 found through the detector passed. For the model shipped
before it, quantiles inside the range (0.5 %) lost 10.6 %, a 10 % margin let 1 of 12 screw hips through where 5 %
let none, and without the joint check 1 of 20 passed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # estimate checks inputs before torch is loaded
    import torch

APPEARANCE_MARGIN = 1.5
AREA_MARGIN = 0.5
PEAK_MARGIN = 1.5
HELD_OUT_MARGIN = 0.10
"""Held-out limits are widened by this fraction beyond the held-out images' range (module docstring)."""
HELD_OUT_PEAK_MARGIN = 0.05
"""The dense-material limit's own, tighter margin: metal lies far above any bone, so a tight limit refuses no
familiar image (measured) and still catches screws that the input region only half covers."""


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
    disagreement_limit_g_cm2: float | None = None
    """Largest |decomposition - regression| aBMD (g/cm2) of a familiar image; None until calibrated on held-out."""
    joint_limit: float | None = None
    """Largest :func:`joint_score` of a familiar image; None until calibrated on held-out images."""
    calibrated_on: str = "training fold"
    """What set the limits: the training fold, or the held-out images named by ``bmdgan calibrate-confidence``."""

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> TrainingDistribution:
        return TrainingDistribution(**{**data, "area_range_pixels": tuple(data["area_range_pixels"])})

    def appearance_distance(self, features: np.ndarray) -> float:
        z = (np.asarray(features, float) - self.feature_mean) / np.asarray(self.feature_std)
        return float(np.sqrt(np.mean(z**2)))

    def area_pixels(self, pf_drr_g_cm2: np.ndarray) -> float:
        """Pixels of the predicted PF-DRR at or above the model's threshold: the PF region's area."""
        return float((np.asarray(pf_drr_g_cm2) >= self.threshold_g_cm2).sum())


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


@dataclass(frozen=True)
class HipScores:
    """What the checks measure on one hip: appearance distance, PF area (pixels), PF-DRR peak (g/cm2) and
    |decomposition - regression| aBMD (g/cm2; None without stage-3 regression)."""

    appearance: float
    area_pixels: float
    peak_g_cm2: float
    disagreement_g_cm2: float | None


def scores(
    distribution: TrainingDistribution, features: np.ndarray, pf_drr_g_cm2: np.ndarray, disagreement_g_cm2=None
) -> HipScores:
    return HipScores(
        distribution.appearance_distance(features),
        distribution.area_pixels(pf_drr_g_cm2),
        float(np.max(pf_drr_g_cm2)),
        None if disagreement_g_cm2 is None else float(disagreement_g_cm2),
    )


def decomposition_regression_gap(decomposed: dict[str, float], regressed: dict[str, float]) -> float | None:
    """|decomposition - regression| aBMD (g/cm2) of one hip, from each method's BMD per target; None when either
    has no finite ``ct_abmd_g_cm2``."""
    gap = abs(decomposed.get("ct_abmd_g_cm2", math.nan) - regressed.get("ct_abmd_g_cm2", math.nan))
    return gap if math.isfinite(gap) else None


def joint_score(distribution: TrainingDistribution, hip: HipScores) -> float:
    """Appearance over its limit plus the PF area's lower limit over the area: each term reaches 1 at its own limit,
    so the sum grows when a hip is near both limits at once."""
    return hip.appearance / distribution.appearance_limit + distribution.area_range_pixels[0] / max(
        hip.area_pixels, 1.0
    )


def held_out_limits(distribution: TrainingDistribution, held_out: list[HipScores], named: str) -> TrainingDistribution:
    """``distribution`` with every limit set from held-out in-distribution images (module docstring); ``named``
    says which images (stored with the model)."""
    wider, narrower = 1.0 + HELD_OUT_MARGIN, 1.0 - HELD_OUT_MARGIN
    areas = [s.area_pixels for s in held_out]
    disagreements = [s.disagreement_g_cm2 for s in held_out if s.disagreement_g_cm2 is not None]
    single = replace(
        distribution,
        appearance_limit=float(max(s.appearance for s in held_out) * wider),
        area_range_pixels=(float(min(areas) * narrower), float(max(areas) * wider)),
        peak_limit_g_cm2=float(max(s.peak_g_cm2 for s in held_out) * (1.0 + HELD_OUT_PEAK_MARGIN)),
        disagreement_limit_g_cm2=float(max(disagreements) * wider) if disagreements else None,
        calibrated_on=named,
    )
    return replace(single, joint_limit=float(max(joint_score(single, s) for s in held_out) * wider))


def check(distribution: TrainingDistribution, hip: HipScores) -> list[str]:
    """Why one hip's result is not to be trusted (empty list: it looks like the images the limits came from)."""
    warnings = []
    if hip.appearance > distribution.appearance_limit:
        warnings.append(
            f"out of distribution: the hip looks unlike the radiographs the model knows (distance "
            f"{hip.appearance:.2f} > {distribution.appearance_limit:.2f}): is it an adult AP hip radiograph, not a "
            "child, another body part or another view?"
        )
    low, high = distribution.area_range_pixels
    if not low <= hip.area_pixels <= high:
        warnings.append(
            f"out of distribution: the decomposed proximal-femur region has {hip.area_pixels:.0f} pixels, outside "
            f"{low:.0f}-{high:.0f} for an adult proximal femur (empty, malformed or shadowed by metal?): check that "
            "the region shows the whole proximal femur of an adult without an implant"
        )
    if hip.peak_g_cm2 > distribution.peak_limit_g_cm2:
        warnings.append(
            f"out of distribution: very dense material in the proximal femur (PF-DRR peak {hip.peak_g_cm2:.2f} "
            f"g/cm2 > {distribution.peak_limit_g_cm2:.2f}): a metal implant? BMD cannot be measured through metal"
        )
    limit = distribution.disagreement_limit_g_cm2
    if limit is not None and hip.disagreement_g_cm2 is not None and hip.disagreement_g_cm2 > limit:
        warnings.append(
            f"out of distribution: the decomposition and the regression disagree by {hip.disagreement_g_cm2:.3f} "
            f"g/cm2 (> {limit:.3f} on familiar images): the decomposition is unreliable for this image; look at "
            "the PF-DRR"
        )
    if (
        distribution.joint_limit is not None
        and not warnings
        and joint_score(distribution, hip) > distribution.joint_limit
    ):
        warnings.append(
            f"out of distribution: the hip looks unfamiliar (distance {hip.appearance:.2f}) and its decomposed "
            f"proximal-femur region is small ({hip.area_pixels:.0f} pixels) at the same time, unlike any familiar "
            "image (an implant, or a femur unlike the training ones?): check the radiograph and the PF-DRR"
        )
    return warnings
