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
    materials = decompose_hu(hu, np.zeros_like(density_mg_cm3), model)  # adipose and mineral-free soft tissue
    bone_like = hu > model.soft_hu
    mineral = np.where(bone_like, np.clip(density_mg_cm3, 0.0, model.mineral_crystal_mg_per_cm3), 0.0)
    cortical = mineral > CORTICAL_THRESHOLD_MG_CM3
    trab, cort = np.where(cortical, 0.0, mineral), np.where(cortical, mineral, 0.0)
    return np.stack(
        [materials[0], materials[1], trab, cort, trab * bone_mask, cort * bone_mask, trab * pf_mask, cort * pf_mask]
    ).astype(np.float32)


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


def pad_across_beam(
    hu: np.ndarray,
    density_mg_cm3: np.ndarray,
    bone_mask: np.ndarray,
    pf_mask: np.ndarray,
    geometry: VolumeGeometry,
    centre_lps: np.ndarray,
    up_lps: np.ndarray,
    reach_mm: float,
):
    """Continue a cropped CT outward across an AP beam until it reaches ``reach_mm`` from ``centre_lps`` (the PF
    centre) along both index axes across the beam, so that no edge of the scan falls inside the simulated view.

    The shared CTs are crops around a tumour: their soft tissue ends at the box, which a radiograph would show as
    a hard rectangle, and a short scan's femoral shaft would end in mid-thigh. The boundary slices are repeated
    outward: capped at soft tissue (no bone is made up) on every side but the inferior one (the side ``up_lps``
    points away from), where the shaft's section continues with its calibrated density and its bone label, as a
    femoral shaft does below a scan's last slice. The PF region is never continued. The index axis closest to the
    AP (LPS y) direction is left alone, since the beam integrates along it. Returns (hu, density, bone, pf,
    geometry) on the larger grid.
    """
    direction = np.asarray(geometry.direction, float)
    spacing = np.asarray(geometry.spacing_mm, float)
    beam_axis_ijk = int(np.argmax(np.abs(direction[1])))  # index axis (i, j, k) most aligned with LPS y
    shape_ijk = hu.shape[::-1]
    centre_ijk = np.linalg.solve(direction * spacing, np.asarray(centre_lps, float) - np.asarray(geometry.origin_mm))
    pads_ijk = []
    for axis in range(3):
        if axis == beam_axis_ijk:
            pads_ijk.append((0, 0))
            continue
        below = reach_mm - centre_ijk[axis] * spacing[axis]
        above = reach_mm - (shape_ijk[axis] - 1 - centre_ijk[axis]) * spacing[axis]
        pads_ijk.append(tuple(max(int(np.ceil(extent / spacing[axis])), 0) for extent in (below, above)))
    upward = direction.T @ np.asarray(up_lps, float)  # how far each index axis points up
    shaft_axis = int(np.argmax(np.abs(upward)))
    inferior_end = 0 if upward[shaft_axis] > 0 else 1  # the low-index end is inferior when the index runs upward
    pad_kji = pads_ijk[::-1]

    def continued(array, cap=None, shaft=True):
        padded = np.pad(array if cap is None else np.minimum(array, cap), pad_kji, mode="edge" if cap else "constant")
        core = tuple(slice(p[0], p[0] + n) for p, n in zip(pad_kji, array.shape))
        padded[core] = array
        if shaft and pads_ijk[shaft_axis][inferior_end]:
            slab = [slice(None)] * 3
            edge = [slice(None)] * 3
            kji_axis = 2 - shaft_axis
            width = pads_ijk[shaft_axis][inferior_end]
            if inferior_end == 0:
                slab[kji_axis], edge[kji_axis] = slice(0, width), slice(width, width + 1)
            else:
                n = padded.shape[kji_axis]
                slab[kji_axis], edge[kji_axis] = slice(n - width, n), slice(n - width - 1, n - width)
            padded[tuple(slab)] = padded[tuple(edge)]
        return padded

    origin = np.asarray(geometry.origin_mm) - direction @ (np.array([low for low, _ in pads_ijk]) * spacing)
    return (
        continued(hu, cap=SOFT_TISSUE_CAP_HU),
        continued(density_mg_cm3),
        continued(bone_mask),
        continued(pf_mask, shaft=False),
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
