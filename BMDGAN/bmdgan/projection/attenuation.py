"""Energy-dependent X-ray attenuation of body materials (NIST) and HU -> linear attenuation.

Source of the numbers: J. H. Hubbell and S. M. Seltzer, "Tables of X-Ray Mass Attenuation Coefficients and
Mass Energy-Absorption Coefficients", NIST Standard Reference Database 126 (NISTIR 5632),
https://physics.nist.gov/PhysRefData/XrayMassCoef/ : total mu/rho with coherent scattering, in cm2/g.
Table 4 (materials): "Water, Liquid", "Tissue, Soft (ICRU-44)", "Adipose Tissue (ICRU-44)",
"Bone, Cortical (ICRU-44)". Table 3 (elements) for H, O, P, Ca, combined by the mixture rule
(mu/rho = sum of mass fraction * elemental mu/rho, as NIST XCOM does) into hydroxyapatite
Ca10(PO4)6(OH)2, the bone mineral that QCT densities (mg/cm3 HA) refer to.
Between the tabulated energies mu/rho is interpolated linearly in log(mu/rho) vs log(E); no absorption
edge of these elements lies between 20 and 150 keV.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

TABLE_ENERGIES_KEV = np.array([20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0])
"""Photon energies (keV) of the tabulated coefficients."""

MASS_ATTENUATION_CM2_PER_G = {
    "water": np.array([0.8096, 0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505]),
    "soft_tissue": np.array([0.8230, 0.3790, 0.2688, 0.2264, 0.2048, 0.1823, 0.1693, 0.1492]),
    "adipose": np.array([0.5677, 0.3063, 0.2396, 0.2123, 0.1974, 0.1800, 0.1688, 0.1500]),
    "cortical_bone": np.array([4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855, 0.1480]),
}
"""NIST Table 4 mu/rho (cm2/g) at :data:`TABLE_ENERGIES_KEV`."""

ELEMENT_MASS_ATTENUATION_CM2_PER_G = {
    "H": np.array([0.3695, 0.3570, 0.3458, 0.3355, 0.3260, 0.3091, 0.2944, 0.2651]),
    "O": np.array([0.8651, 0.3779, 0.2585, 0.2132, 0.1907, 0.1678, 0.1551, 0.1361]),
    "P": np.array([5.352, 1.700, 0.8096, 0.4916, 0.3494, 0.2324, 0.1865, 0.1432]),
    "Ca": np.array([13.06, 4.080, 1.830, 1.019, 0.6578, 0.3656, 0.2571, 0.1674]),
}
"""NIST Table 3 elemental mu/rho (cm2/g) at :data:`TABLE_ENERGIES_KEV`."""

_ATOMIC_MASS = {"H": 1.008, "O": 15.999, "P": 30.974, "Ca": 40.078}
_HYDROXYAPATITE_ATOMS = {"Ca": 10, "P": 6, "O": 26, "H": 2}
HYDROXYAPATITE_MASS_FRACTIONS = {
    element: count * _ATOMIC_MASS[element] / sum(n * _ATOMIC_MASS[e] for e, n in _HYDROXYAPATITE_ATOMS.items())
    for element, count in _HYDROXYAPATITE_ATOMS.items()
}
"""Mass fractions of Ca10(PO4)6(OH)2 (Ca 0.399, P 0.185, O 0.414, H 0.002)."""
MASS_ATTENUATION_CM2_PER_G["hydroxyapatite"] = sum(
    fraction * ELEMENT_MASS_ATTENUATION_CM2_PER_G[element]
    for element, fraction in HYDROXYAPATITE_MASS_FRACTIONS.items()
)

DENSITY_G_PER_CM3 = {"water": 1.0, "soft_tissue": 1.06, "adipose": 0.95, "cortical_bone": 1.92, "hydroxyapatite": 3.16}
"""Nominal densities (g/cm3): ICRU-44 tissues (NIST Table 2); crystalline hydroxyapatite 3.16."""

MATERIALS = tuple(MASS_ATTENUATION_CM2_PER_G)


def mass_attenuation(material: str, energy_kev) -> np.ndarray:
    """mu/rho (cm2/g) of a material at energies in keV (20-150 keV, log-log interpolation)."""
    if material not in MASS_ATTENUATION_CM2_PER_G:
        raise InputError(None, f"unknown material {material!r}", f"use one of {', '.join(MATERIALS)}")
    energy = np.asarray(energy_kev, dtype=float)
    if np.any(energy < TABLE_ENERGIES_KEV[0]) or np.any(energy > TABLE_ENERGIES_KEV[-1]):
        raise InputError(
            None,
            f"effective energy {energy_kev} keV is outside the tabulated 20-150 keV",
            "choose an effective energy between 20 and 150 keV",
        )
    table = MASS_ATTENUATION_CM2_PER_G[material]
    return np.exp(np.interp(np.log(energy), np.log(TABLE_ENERGIES_KEV), np.log(table)))


def linear_attenuation_per_mm(material: str, energy_kev, density_g_per_cm3: float | None = None) -> np.ndarray:
    """mu (1/mm) of a material at its nominal (or the given) density: mu/rho * rho / 10."""
    density = DENSITY_G_PER_CM3[material] if density_g_per_cm3 is None else density_g_per_cm3
    return mass_attenuation(material, energy_kev) * density * 0.1


def hu_to_attenuation(hu: np.ndarray, energy_kev: float) -> np.ndarray:
    """Linear attenuation (1/mm, float32) from HU: ``mu = mu_water(E) * (1 + HU / 1000)``, >= 0.

    Treats every voxel as water-like: a fair single-energy DRR for registration and display;
    the radiograph simulator uses the material decomposition instead (bone mineral has its own energy law).
    """
    mu_water = float(linear_attenuation_per_mm("water", energy_kev))
    hu = np.asarray(hu, dtype=np.float32)
    return np.maximum(np.float32(mu_water) * (np.float32(1.0) + hu / np.float32(1000.0)), np.float32(0.0))


def attenuation_volume(volume, energy_kev: float):
    """A :class:`bmdgan.io.Volume` in HU -> the same grid in linear attenuation (unit "1/mm")."""
    if volume.unit != "HU":
        raise InputError(
            volume.source or None, f"expected a CT in HU, got unit {volume.unit!r}", "give the CT in Hounsfield units"
        )
    return volume.with_array(hu_to_attenuation(volume.array, energy_kev), unit="1/mm")
