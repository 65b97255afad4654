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

from ..ct.midline import BODY_HU
from ..io import VolumeGeometry
from ..projection.materials import MaterialModel, decompose_hu

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


MAX_OBLIQUE_EXTRA_MM = 150.0
"""Most a padded axis's reach grows (mm) for rays that cross the body's depth obliquely (:func:`pad_across_beam`)."""


def pad_across_beam(
    hu: np.ndarray,
    density_mg_cm3: np.ndarray,
    bone_mask: np.ndarray,
    pf_mask: np.ndarray,
    geometry: VolumeGeometry,
    centre_lps: np.ndarray,
    beam_lps: np.ndarray,
    reach_mm: float,
):
    """Continue a cropped CT's tissue outward, across the body's depth, until the rays of a view within
    ``reach_mm`` (mm) of ``centre_lps`` (the PF centre) cross the body inside it; returns (hu, density, bone, pf,
    geometry) on the larger grid.

    The shared CTs are crops around a tumour: their tissue ends at the box, which a radiograph would show as a hard
    edge. The body's depth is the index axis closest to LPS y (anterior-posterior): it is left alone, the body
    ending at its skin. The two other axes are padded by repeating the boundary slices, capped at soft tissue so
    that no bone is made up (a bone the scan cuts still ends at the cut; the PF region is never continued), out to
    ``reach_mm`` plus the sideways travel of a ray along ``beam_lps`` (unit LPS vector; the cohort views each hip
    in its anatomical frame, up to ~55 deg off the scanner's axes in the thigh crops) across the body's depth, at
    most :data:`MAX_OBLIQUE_EXTRA_MM`.
    """
    direction = np.asarray(geometry.direction, float)
    spacing = np.asarray(geometry.spacing_mm, float)
    depth_axis = int(np.argmax(np.abs(direction[1])))  # index axis (i, j, k) most aligned with LPS y
    beam = direction.T @ np.asarray(beam_lps, float)  # the beam along each index axis
    shape_ijk = hu.shape[::-1]
    centre_ijk = np.linalg.solve(direction * spacing, np.asarray(centre_lps, float) - np.asarray(geometry.origin_mm))
    depth_kji = 2 - depth_axis
    body = np.nonzero((hu > BODY_HU).any(axis=tuple(a for a in range(3) if a != depth_kji)))[0]
    ends = (body[0], body[-1]) if len(body) else (centre_ijk[depth_axis],) * 2
    depth_mm = spacing[depth_axis] * max(abs(end - centre_ijk[depth_axis]) for end in ends)
    pads_ijk = [(0, 0)] * 3
    for axis in (a for a in range(3) if a != depth_axis):
        oblique = depth_mm * abs(beam[axis]) / max(abs(beam[depth_axis]), 1e-6)
        reach = reach_mm + min(oblique, MAX_OBLIQUE_EXTRA_MM)
        below = reach - centre_ijk[axis] * spacing[axis]
        above = reach - (shape_ijk[axis] - 1 - centre_ijk[axis]) * spacing[axis]
        pads_ijk[axis] = tuple(max(int(np.ceil(extent / spacing[axis])), 0) for extent in (below, above))
    pad_kji = pads_ijk[::-1]
    core = tuple(slice(p[0], p[0] + n) for p, n in zip(pad_kji, hu.shape))
    tissue = np.pad(np.minimum(hu, SOFT_TISSUE_CAP_HU), pad_kji, mode="edge")
    tissue[core] = hu
    origin = np.asarray(geometry.origin_mm) - direction @ (np.array([low for low, _ in pads_ijk]) * spacing)
    return (
        tissue,
        *(np.pad(array, pad_kji) for array in (density_mg_cm3, bone_mask, pf_mask)),
        VolumeGeometry(geometry.spacing_mm, tuple(origin), geometry.direction),
    )


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
