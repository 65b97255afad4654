"""HU -> material decomposition: partial densities (mg/cm3) of adipose, soft tissue and bone mineral.

Each voxel is a mixture of adipose tissue, soft tissue (ICRU-44) and bone mineral (hydroxyapatite, HA).
Piecewise-linear in HU and continuous (the defaults are in :class:`MaterialModel`):

* HU <= -1000: air (all zero; air attenuation is negligible at radiographic energies);
* -1000 .. fat_hu (-100): air/adipose mixture, adipose rising linearly to its density (950 mg/cm3);
* fat_hu .. soft_hu (40): adipose/soft-tissue mixture (soft tissue 1060 mg/cm3 at soft_hu);
* above soft_hu: soft tissue plus bone mineral ``HA = hu_to_mineral_mg_per_cm3_per_hu * (HU - soft_hu)``;
  the mineral displaces soft tissue by its volume (HA crystal density 3160 mg/cm3).

The default slope 0.75 mg/cm3 HA per HU is typical of 120 kVp QCT calibrations (HA phantoms give
1.2-1.4 HU per mg/cm3); it is a fallback for uncalibrated CT. For quantitative work pass the calibrated
bone density (mg/cm3 HA) of the team's CT calibration: it then replaces the HU-derived mineral in bone voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .attenuation import mass_attenuation

MATERIAL_CHANNELS = ("adipose", "soft_tissue", "hydroxyapatite")
"""Order of the material channels (names match :mod:`bmdgan.projection.attenuation`)."""


@dataclass(frozen=True)
class MaterialModel:
    """Parameters of the HU -> material mapping (HU and mg/cm3)."""

    fat_hu: float = -100.0
    soft_hu: float = 40.0
    adipose_mg_per_cm3: float = 950.0
    soft_tissue_mg_per_cm3: float = 1060.0
    hu_to_mineral_mg_per_cm3_per_hu: float = 0.75
    mineral_crystal_mg_per_cm3: float = 3160.0


def decompose_hu(
    hu: np.ndarray, bone_density_mg_per_cm3: np.ndarray | None = None, model: MaterialModel = MaterialModel()
) -> np.ndarray:
    """Partial densities (3, K, J, I) float32 in mg/cm3 for :data:`MATERIAL_CHANNELS` from a CT in HU.

    bone_density_mg_per_cm3: optional calibrated HA density (mg/cm3) on the same grid; used as the
    mineral wherever HU > soft_hu (negative values count as 0).
    """
    hu = np.asarray(hu, dtype=np.float32)
    m = model
    air_to_fat = np.clip((hu + 1000.0) / (m.fat_hu + 1000.0), 0.0, 1.0)
    fat_to_soft = np.clip((hu - m.fat_hu) / (m.soft_hu - m.fat_hu), 0.0, 1.0)
    adipose = m.adipose_mg_per_cm3 * air_to_fat * (1.0 - fat_to_soft)
    bone_like = hu > m.soft_hu
    if bone_density_mg_per_cm3 is None:
        mineral = m.hu_to_mineral_mg_per_cm3_per_hu * np.maximum(hu - m.soft_hu, 0.0)
    else:
        density = np.asarray(bone_density_mg_per_cm3, dtype=np.float32)
        if density.shape != hu.shape:
            raise ValueError(f"bone density grid {density.shape} differs from the CT grid {hu.shape}")
        mineral = np.where(bone_like, np.maximum(density, 0.0), 0.0)
    mineral = np.minimum(mineral, m.mineral_crystal_mg_per_cm3)
    soft = m.soft_tissue_mg_per_cm3 * fat_to_soft * (1.0 - mineral / m.mineral_crystal_mg_per_cm3)
    return np.stack([adipose, soft, mineral]).astype(np.float32)


def material_attenuation(
    hu: np.ndarray,
    energy_kev: float,
    bone_density_mg_per_cm3: np.ndarray | None = None,
    model: MaterialModel = MaterialModel(),
) -> np.ndarray:
    """Linear attenuation (1/mm, float32) at ``energy_kev`` from the material decomposition:
    ``mu = sum_m mu/rho_m(E) * rho_m / 10`` (NIST mu/rho in cm2/g, partial densities in g/cm3).

    Unlike the water-only HU scaling, bone mineral keeps its own energy dependence, so bone contrast
    matches a radiograph taken at that effective energy."""

    partial = decompose_hu(hu, bone_density_mg_per_cm3, model)
    mu = np.zeros(partial.shape[1:], dtype=np.float32)
    for channel, material in enumerate(MATERIAL_CHANNELS):
        # mg/cm3 -> g/cm3 (1e-3), then cm2/g * g/cm3 = 1/cm -> 1/mm (0.1)
        mu += np.float32(float(mass_attenuation(material, energy_kev)) * 1e-4) * partial[channel]
    return mu
