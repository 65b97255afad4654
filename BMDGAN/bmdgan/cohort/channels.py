"""One projection per pose, any bone density afterwards.

Every quantity the simulator and the ground truth need is linear in the bone mineral, so a pose is projected
once into :data:`CHANNELS` (areal densities, g/cm2) and each virtual patient's images are weighted sums:

* mineral = k_trab * HA_trab + k_cort * HA_cort (trabecular/cortical split of the CT's calibrated density at
  :data:`CORTICAL_THRESHOLD_MG_CM3`);
* soft tissue = soft_base - (1060 / 3160) * mineral: mineral displaces soft tissue by its volume, exactly as
  :func:`bmdgan.projection.materials.decompose_hu` models it for bone voxels;
* adipose = adipose_base + extra fat (BMI) over the body;
* ground truth: the same mineral sums restricted to the labelled pelvis+femur (stage 1) and to the PF region
  (stage 2): the DRRs the network must learn, in g/cm2, from the very CT that made the radiograph.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from ..io import VolumeGeometry
from ..projection.materials import MaterialModel, decompose_hu

SOFT_TISSUE_PAD_MM = 80.0
"""How far the CT's boundary soft tissue is continued outward (mm) across the beam (see :func:`pad_across_beam`)."""
SOFT_TISSUE_CAP_HU = 60.0
"""Boundary voxels are continued with at most this HU: tissue continues beyond the scan, bone is not invented."""
CHANNELS = ("adipose", "soft_base", "ha_trab", "ha_cort", "bone_trab", "bone_cort", "pf_trab", "pf_cort")
CORTICAL_THRESHOLD_MG_CM3 = 450.0
"""Calibrated HA density above which a bone voxel counts as cortical (cortical bone is 800-1200 mg/cm3 HA,
trabecular 50-300; partial-volume voxels in between are split at this midpoint)."""
ADIPOSE_G_CM3 = 0.95


def channel_volumes(
    hu: np.ndarray,
    density_mg_cm3: np.ndarray,
    bone_mask: np.ndarray,
    pf_mask: np.ndarray,
    model: MaterialModel = MaterialModel(),
) -> np.ndarray:
    """(8, K, J, I) float32 partial densities in mg/cm3, in :data:`CHANNELS` order."""
    volumes = np.empty((len(CHANNELS),) + hu.shape, np.float32)  # filled one channel at a time: memory
    volumes[:2] = decompose_hu(hu, np.zeros_like(density_mg_cm3), model)[:2]  # adipose, mineral-free soft tissue
    mineral = np.where(hu > model.soft_hu, np.clip(density_mg_cm3, 0.0, model.mineral_crystal_mg_per_cm3), 0.0)
    cortical = mineral > CORTICAL_THRESHOLD_MG_CM3
    volumes[2] = np.where(cortical, 0.0, mineral)
    volumes[3] = np.where(cortical, mineral, 0.0)
    for index, mask in ((4, bone_mask), (6, pf_mask)):
        volumes[index] = volumes[2] * mask
        volumes[index + 1] = volumes[3] * mask
    return volumes


def combine(
    projected: dict[str, np.ndarray],
    trabecular_factor: float,
    cortical_factor: float,
    extra_fat_mm: float,
    pixel_spacing_mm: float,
    model: MaterialModel = MaterialModel(),
) -> dict[str, np.ndarray]:
    """Areal densities (g/cm2) of one virtual patient: the simulator's three materials and the two targets."""
    mineral = trabecular_factor * projected["ha_trab"] + cortical_factor * projected["ha_cort"]
    soft = np.maximum(
        projected["soft_base"] - model.soft_tissue_mg_per_cm3 / model.mineral_crystal_mg_per_cm3 * mineral, 0.0
    )
    body = gaussian_filter(
        (projected["soft_base"] + projected["adipose"] > 0.5).astype(np.float32), 10.0 / pixel_spacing_mm
    )
    adipose = np.maximum(projected["adipose"] + ADIPOSE_G_CM3 * extra_fat_mm / 10.0 * body, 0.0)
    return {
        "materials": np.stack([adipose, soft, mineral]).astype(np.float32),
        "drr_stage1": (trabecular_factor * projected["bone_trab"] + cortical_factor * projected["bone_cort"]).astype(
            np.float32
        ),
        "drr_pf": (trabecular_factor * projected["pf_trab"] + cortical_factor * projected["pf_cort"]).astype(
            np.float32
        ),
    }


def pad_across_beam(hu: np.ndarray, masks: list[np.ndarray], geometry, margin_mm: float = SOFT_TISSUE_PAD_MM):
    """Continue a cropped CT's boundary tissue outward along the two index axes across an AP beam.

    The shared CTs are crops around a tumour: their soft tissue ends at the box, which a radiograph would show as
    a hard rectangle. The boundary slices are repeated outward (capped at soft tissue, so no bone is made up) for
    ``margin_mm``; the axis closest to the AP (LPS y) direction is left alone, since the beam integrates along
    it. Masks are padded with zeros. Returns (hu, masks, geometry) on the larger grid.
    """

    direction = np.asarray(geometry.direction)
    beam_axis_ijk = int(np.argmax(np.abs(direction[1])))  # index axis (i, j, k) most aligned with LPS y
    pads_ijk = [
        0 if axis == beam_axis_ijk else int(np.ceil(margin_mm / geometry.spacing_mm[axis])) for axis in range(3)
    ]
    pad_kji = [(pads_ijk[2],) * 2, (pads_ijk[1],) * 2, (pads_ijk[0],) * 2]
    capped = np.minimum(hu, SOFT_TISSUE_CAP_HU)
    padded = np.pad(capped, pad_kji, mode="edge")
    core = tuple(slice(p[0], p[0] + n) for p, n in zip(pad_kji, hu.shape))
    padded[core] = hu
    origin = np.asarray(geometry.origin_mm) - direction @ (np.array(pads_ijk) * np.asarray(geometry.spacing_mm))
    new_geometry = VolumeGeometry(geometry.spacing_mm, tuple(origin), direction)
    return padded, [np.pad(m, pad_kji) for m in masks], new_geometry


PELVIS_COMMON_CHANNELS = ("adipose", "soft_base", "ha_trab", "ha_cort", "bone_trab", "bone_cort")
"""Channels an AP pelvis view shares between the hips; then ``pf_trab_<side>``, ``pf_cort_<side>`` per hip."""


def pelvis_channel_volumes(
    hu: np.ndarray,
    density_mg_cm3: np.ndarray,
    bone_mask: np.ndarray,
    pf_parts: dict[str, tuple[np.ndarray, np.ndarray]],
    model: MaterialModel = MaterialModel(),
) -> tuple[list[str], np.ndarray]:
    """(names, (C, K, J, I) float32 mg/cm3) of a CT with several hips: :data:`PELVIS_COMMON_CHANNELS` (the bone
    channels over every labelled bone: pelvis and both femurs) and, per side, the trabecular and cortical mineral
    of that hip's PF region from ``pf_parts[side] = (pf_mask, that side's calibrated density)``."""
    names = list(PELVIS_COMMON_CHANNELS) + [f"pf_{part}_{side}" for side in pf_parts for part in ("trab", "cort")]
    volumes = np.empty((len(names),) + hu.shape, dtype=np.float32)
    volumes[:6] = channel_volumes(hu, density_mg_cm3, bone_mask, np.zeros_like(bone_mask), model)[:6]
    bone_like = hu > model.soft_hu
    for index, (pf_mask, density) in enumerate(pf_parts.values()):
        mineral = np.where(bone_like & pf_mask, np.clip(density, 0.0, model.mineral_crystal_mg_per_cm3), 0.0)
        cortical = mineral > CORTICAL_THRESHOLD_MG_CM3
        volumes[6 + 2 * index] = np.where(cortical, 0.0, mineral)
        volumes[7 + 2 * index] = np.where(cortical, mineral, 0.0)
    return names, volumes


def side_channels(projected: dict[str, np.ndarray], side: str) -> dict[str, np.ndarray]:
    """The projected channels of an AP pelvis view as :func:`combine` reads them for one hip (its PF region)."""
    return {**projected, "pf_trab": projected[f"pf_trab_{side}"], "pf_cort": projected[f"pf_cort_{side}"]}
