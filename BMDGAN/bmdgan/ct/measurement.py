"""QCT vBMD (mg/cm3) and CT-aBMD (g/cm2) of the proximal-femur region.

* vBMD: mean calibrated density (mg/cm3) over the PF region's voxels, metal excluded.
* CT-aBMD: the PF density is resampled (trilinear) into the femur's neutral frame: shaft axis
  vertical, neck axis horizontal and parallel to the projection plane (the frontal plane is the plane of
  shaft and neck axes, as a DXA hip scan aims at with the leg rotated inwards). It is summed along the
  anterior-posterior axis (density x step), and averaged over the projected region (pixels whose PF
  path is at least ``MIN_PATH_MM`` long). Units: mg/cm3 x mm = 0.1 mg/cm2 = 1e-4 g/cm2.

Metal voxels (implants) carry no bone density: they are left out of the vBMD mean and, in the
projection, given the mean bone density of the rest of the region, so that a screw neither adds
mass nor leaves a hole; their volume is reported.

Because the frame comes from the landmarks, not from the voxel grid, the numbers do not depend on how
the CT was stored or rotated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..io.volume import Volume
from . import grid
from .calibration import Calibration
from .landmarks import Landmarks
from .pf_region import PFRegion, mask_box

MG_CM3_MM_TO_G_CM2 = 1e-4
"""1 mg/cm3 x 1 mm = 1 mg/cm3 x 0.1 cm = 0.1 mg/cm2 = 1e-4 g/cm2."""
PROJECTION_PIXEL_MM = 0.75
LABEL_SMOOTHING_VOXELS = 0.6
"""The label is smoothed by this Gaussian (voxels) before its 0.5 surface is taken: a voxel staircase
grazing the rays would otherwise fray the projected outline differently for every grid orientation."""
MIN_PATH_MM = 1.0
"""A projected pixel belongs to the region when its ray runs at least this far (mm) inside the PF region."""


@dataclass
class NeutralFrame:
    """Orthonormal LPS unit vectors: ``lateral`` (along the neck, horizontal), ``ap`` (projection), ``up`` (shaft)."""

    origin: np.ndarray
    lateral: np.ndarray
    ap: np.ndarray
    up: np.ndarray

    def matrix(self) -> np.ndarray:
        """Rows are the frame axes: frame coordinates = matrix @ (point - origin)."""
        return np.stack([self.lateral, self.ap, self.up])


@dataclass
class PFMeasurement:
    """Numbers of one PF region (units in the names) and the projected image (g/cm2)."""

    qct_vbmd_mg_cm3: float
    ct_abmd_g_cm2: float
    pf_volume_cm3: float
    pf_projected_area_cm2: float
    bone_mineral_content_g: float
    metal_volume_cm3: float
    projection_g_cm2: np.ndarray = field(repr=False)
    projection_pixel_mm: float = PROJECTION_PIXEL_MM


def neutral_frame(landmarks: Landmarks) -> NeutralFrame:
    """Neutral-position frame from the shaft axis and the neck axis (see the module docstring)."""
    up = landmarks.shaft_axis()
    neck = landmarks.neck_axis()
    lateral = neck - (neck @ up) * up
    lateral /= np.linalg.norm(lateral)
    ap = np.cross(up, lateral)
    return NeutralFrame(landmarks.points["femoral_head_centre"], lateral, ap, up)


def _frame_axes(ct: Volume, frame: NeutralFrame, region: PFRegion, step_mm: float) -> list[np.ndarray]:
    """Sample positions (mm) along the frame's lateral, ap and up axes: the region plus 3 mm."""
    box = mask_box(region.mask, 0)
    points = grid.index_to_lps(ct.geometry, np.argwhere(region.mask[box]) + [b.start for b in box])
    local = (points - frame.origin) @ frame.matrix().T
    low = local.min(axis=0) - 3.0
    high = local.max(axis=0) + 3.0
    return [np.arange(lo, hi + step_mm / 2, step_mm) for lo, hi in zip(low, high)]


def _sampling_box(ct: Volume, frame: NeutralFrame, axes: list[np.ndarray]) -> tuple[slice, ...]:
    """Array box holding every frame sample (its eight corners) plus 4 voxels for interpolation and smoothing."""
    corners = np.array([[u, v, w] for u in axes[0][[0, -1]] for v in axes[1][[0, -1]] for w in axes[2][[0, -1]]])
    lps = frame.origin + corners @ frame.matrix()
    kji = grid.lps_to_index(ct.geometry, lps)
    low = np.maximum(np.floor(kji.min(axis=0)).astype(int) - 4, 0)
    high = np.minimum(np.ceil(kji.max(axis=0)).astype(int) + 5, ct.array.shape)
    return tuple(slice(int(a), int(max(b, a + 1))) for a, b in zip(low, high))


def _resample_to_frame(
    values: np.ndarray, ct: Volume, frame: NeutralFrame, femur: np.ndarray, region: PFRegion, axes: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Density and PF-region weight (0..1) on a frame-aligned grid (axes lateral, ap, up) around the region.

    The femur label is interpolated and multiplied by the exact cut planes, so the projected outline
    follows the planes, not their voxel staircase. ``values``, ``femur`` and ``ct`` may be cropped to
    :func:`_sampling_box` (same result: every sample lies inside it).
    """
    u, v, w = np.meshgrid(*[a.astype(np.float32) for a in axes], indexing="ij")  # lateral, ap, up
    points = (
        frame.origin.astype(np.float32)
        + u[..., None] * frame.lateral.astype(np.float32)
        + v[..., None] * frame.ap.astype(np.float32)
        + w[..., None] * frame.up.astype(np.float32)
    )
    cuts = region.inside_cuts(points).astype(np.float32)
    kji = grid.lps_to_index(ct.geometry, points.reshape(-1, 3)).T
    sampled = ndimage.map_coordinates(values, kji, order=1, mode="constant", cval=0.0).reshape(u.shape)
    smooth_label = ndimage.gaussian_filter(femur.astype(np.float32), LABEL_SMOOTHING_VOXELS)
    weight = ndimage.map_coordinates(smooth_label, kji, order=1, mode="constant", cval=0.0).reshape(u.shape)
    return sampled * cuts, weight * cuts


def measure_pf(
    ct: Volume,
    femur: np.ndarray,
    region: PFRegion,
    landmarks: Landmarks,
    calibration: Calibration,
    metal: np.ndarray | None = None,
) -> PFMeasurement:
    """vBMD, CT-aBMD, volume and projected area of the PF region of ``femur`` (see the module docstring)."""
    frame = neutral_frame(landmarks)
    step = PROJECTION_PIXEL_MM
    axes = _frame_axes(ct, frame, region, step)
    box = _sampling_box(ct, frame, axes)  # the work is done in the box the projection samples
    femur = np.asarray(femur[box], bool)
    mask = region.mask[box]
    metal = np.zeros_like(mask) if metal is None else np.asarray(metal[box], bool)
    density = calibration.density(ct.array[box])
    voxel_mm3 = ct.voxel_volume_mm3()
    vbmd = float(density[mask & ~metal].mean())
    filled_density = np.where(metal, vbmd, density).astype(np.float32)
    sampled, weight = _resample_to_frame(filled_density * femur, grid.crop(ct, box), frame, femur, region, axes)
    path_mm = (weight >= 0.5).sum(axis=1) * step  # the label surface is where its interpolation crosses 0.5
    areal_mg_cm3_mm = sampled.sum(axis=1) * step
    projected = path_mm >= MIN_PATH_MM
    abmd = float(areal_mg_cm3_mm[projected].mean() * MG_CM3_MM_TO_G_CM2)
    image = np.where(projected, areal_mg_cm3_mm * MG_CM3_MM_TO_G_CM2, 0.0)
    volume_cm3 = float(mask.sum() * voxel_mm3 / 1000.0)
    return PFMeasurement(
        qct_vbmd_mg_cm3=vbmd,
        ct_abmd_g_cm2=abmd,
        pf_volume_cm3=volume_cm3,
        pf_projected_area_cm2=float(projected.sum() * step * step / 100.0),
        bone_mineral_content_g=float(vbmd * volume_cm3 / 1000.0),
        metal_volume_cm3=float((mask & metal).sum() * voxel_mm3 / 1000.0),
        projection_g_cm2=image.T[::-1],  # rows: up (top = proximal), columns: lateral
    )
