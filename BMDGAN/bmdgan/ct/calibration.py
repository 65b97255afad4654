"""CT-number to bone-mineral density calibration: the record every later step carries.

``density_mg_cm3 = slope * HU + intercept`` (mg/cm3 of the reference material, hydroxyapatite unless
the phantom says otherwise). A calibration is made

* from a phantom scanned with the patient: mean CT number in each rod against the rods' nominal
  densities (presets in ``resources/phantoms.json``, or densities given by the user), see :mod:`.rods`;
* without a phantom, from reference tissues of the same scan, see :mod:`.phantomless`.

A fit that is not linear enough (R2 below the preset's ``min_r2``, 0.99 for phantoms), or rods and
densities of different counts, raise :class:`CalibrationError` rather than giving a bad calibration.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import InputError

PHANTOM_MIN_R2 = 0.99
"""Default minimum R2 of a phantom fit (HU against density): five rods of a sound scan give > 0.999."""
K2HPO4_WATER_DISPLACEMENT = 0.2174
"""Mindways: water displaced per unit K2HPO4 (QCT Pro User Guide v5.0): sigma_CT = sigma_ref - 0.2174."""
MINDWAYS_WATER_OFFSET = 999.6
"""Mindways: beta_CT = beta_ref + 999.6 (QCT Pro User Guide v5.0)."""


class CalibrationError(InputError):
    """The calibration cannot be trusted (rods not found, counts differ, fit not linear, tissue missing)."""


@dataclass
class Calibration:
    """A linear CT-number (HU) -> density (mg/cm3) calibration and the evidence it rests on.

    ``reference_hu`` and ``reference_density_mg_cm3`` are the fitted pairs (rods or tissues), named by
    ``reference_names``; ``r2`` is the coefficient of determination of that fit.
    """

    slope: float
    intercept: float
    r2: float
    method: str
    reference_names: list[str]
    reference_hu: list[float]
    reference_density_mg_cm3: list[float]
    material: str = "hydroxyapatite"
    units: str = "mg/cm3"
    phantom: str | None = None
    notes: list[str] = field(default_factory=list)

    def density(self, hu: np.ndarray) -> np.ndarray:
        """Density (mg/cm3) of CT numbers (HU)."""
        return self.slope * np.asarray(hu, dtype=np.float32) + self.intercept

    def to_dict(self) -> dict:
        record = asdict(self)
        record["formula"] = "density_mg_cm3 = slope * HU + intercept"
        return record

    @staticmethod
    def from_dict(record: dict) -> Calibration:
        known = {name: record[name] for name in Calibration.__dataclass_fields__ if name in record}
        missing = {"slope", "intercept", "r2", "method"} - set(known)
        if missing:
            raise InputError(
                None,
                f"calibration record lacks {', '.join(sorted(missing))}",
                "give a calibration.json written by 'bmdgan calibrate'",
            )
        known.setdefault("reference_names", [])
        known.setdefault("reference_hu", [])
        known.setdefault("reference_density_mg_cm3", [])
        return Calibration(**known)

    def save(self, path: str | Path) -> Path:
        """Write the record as JSON, atomically."""
        return write_json_atomic(self.to_dict(), path)

    @staticmethod
    def load(path: str | Path) -> Calibration:
        path = Path(path)
        if not path.exists():
            raise InputError(path, "does not exist", "give a calibration.json written by 'bmdgan calibrate'")
        try:
            record = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise InputError(
                path, f"is not valid JSON ({error})", "give a calibration.json written by 'bmdgan calibrate'"
            ) from None
        return Calibration.from_dict(record)


def write_json_atomic(record: dict, path: str | Path) -> Path:
    """Write JSON through a temporary file and a rename: a crash never leaves half a file."""
    return atomic_write_text(path, json.dumps(record, indent=2) + "\n")


@lru_cache(maxsize=1)
def phantom_presets() -> dict:
    """Phantom presets from ``resources/phantoms.json`` (name -> rods, material, fit, min_r2, reference)."""
    text = resources.files("bmdgan").joinpath("resources/phantoms.json").read_text()
    return {name: preset for name, preset in json.loads(text).items() if not name.startswith("_")}


def preset(name: str) -> dict:
    """One phantom preset by name (case-insensitive)."""
    presets = phantom_presets()
    for known, value in presets.items():
        if known.lower() == name.lower():
            return dict(value, name=known)
    raise InputError(None, f"unknown phantom '{name}'", f"use one of {', '.join(presets)} or give --densities")


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y = a x + b``: a, b and R2."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    a, b = np.polyfit(x, y, 1)
    residual = y - (a * x + b)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - float(np.sum(residual**2) / total) if total > 0 else 0.0
    return float(a), float(b), r2


def fit_phantom(
    rod_hu: list[float],
    densities_mg_cm3: list[float],
    *,
    names: list[str] | None = None,
    water_mg_cm3: list[float] | None = None,
    material: str = "hydroxyapatite",
    phantom: str | None = None,
    min_r2: float = PHANTOM_MIN_R2,
) -> Calibration:
    """Calibration from rod CT numbers (HU) and nominal rod densities (mg/cm3).

    With ``water_mg_cm3`` (Mindways-type rods of K2HPO4 dissolved in water) the water content of each rod
    is taken out first (see the constants above); otherwise HU is fitted linearly against density.
    Raises :class:`CalibrationError` for counts that differ, fewer than 2 rods, a flat or falling fit,
    or R2 below ``min_r2``.
    """
    hu = np.asarray(rod_hu, float)
    density = np.asarray(densities_mg_cm3, float)
    if len(hu) != len(density):
        raise CalibrationError(
            None,
            f"{len(hu)} rods were measured but {len(density)} densities were given",
            "give one density per rod (same order) or choose the right phantom preset",
        )
    if len(hu) < 2 or np.ptp(density) <= 0:
        raise CalibrationError(
            None, "a calibration needs at least two rods of different densities", "add rods or give their densities"
        )
    if not np.all(np.isfinite(hu)):
        raise CalibrationError(
            None, "a rod's CT number could not be measured (outside the scan?)", "check the rod positions"
        )
    if water_mg_cm3 is not None:
        water = np.asarray(water_mg_cm3, float)
        if len(water) != len(hu):
            raise CalibrationError(
                None, f"{len(water)} water densities for {len(hu)} rods", "give one water density per rod"
            )
        sigma_ref, beta_ref, r2 = linear_fit(density, hu - water)
        sigma_ct = sigma_ref - K2HPO4_WATER_DISPLACEMENT
        beta_ct = beta_ref + MINDWAYS_WATER_OFFSET
        method = "phantom (water-corrected K2HPO4 fit)"
    else:
        sigma_ct, beta_ct, r2 = linear_fit(density, hu)
        method = "phantom (linear fit)"
    if sigma_ct <= 0:
        raise CalibrationError(
            None,
            "CT number does not increase with rod density",
            "check that the densities are given in the same order as the rods",
        )
    if r2 < min_r2:
        raise CalibrationError(
            None,
            f"the rods do not fit a line: R2 = {r2:.4f} < {min_r2}",
            "check the rod positions (a rod may be missed or hit by an artefact) and densities",
        )
    return Calibration(
        slope=1.0 / sigma_ct,
        intercept=-beta_ct / sigma_ct,
        r2=r2,
        method=method,
        reference_names=names or [f"rod {n + 1}" for n in range(len(hu))],
        reference_hu=[float(v) for v in hu],
        reference_density_mg_cm3=[float(v) for v in density],
        material=material,
        phantom=phantom,
    )


def fit_preset(rod_hu: list[float], name: str) -> Calibration:
    """Calibration from rod CT numbers (HU, any order) with a preset's nominal densities.

    Rods are matched to densities by increasing CT number (for water-corrected presets, by the CT
    number each rod is expected to have), so the order in which rods were found does not matter.
    """
    chosen = preset(name)
    densities = np.asarray(chosen["rods_mg_cm3"], float)
    water = np.asarray(chosen["water_mg_cm3"], float) if "water_mg_cm3" in chosen else None
    hu = np.asarray(rod_hu, float)
    if len(hu) != len(densities):
        raise CalibrationError(
            None,
            f"{len(hu)} rods were found but the {chosen['name']} phantom has {len(densities)}",
            "give the rods as points or a label map, or choose the right phantom",
        )
    expected = densities if water is None else water + 1.2 * densities
    order = np.argsort(expected)
    matched_hu = np.sort(hu)
    densities, water = densities[order], (None if water is None else water[order])
    return fit_phantom(
        list(matched_hu),
        list(densities),
        water_mg_cm3=None if water is None else list(water),
        material=chosen["material"],
        phantom=chosen["name"],
        min_r2=chosen.get("min_r2", PHANTOM_MIN_R2),
        names=[f"rod {n + 1} ({d:g} mg/cm3)" for n, d in enumerate(densities)],
    )
