"""Virtual patients: what changes between the images the cohort makes from one real CT.

Each virtual patient has its own bone density (trabecular and cortical mineral scaled separately; by default its
target aBMD is drawn from the adult population, whatever the source bone's own density), soft
tissue (BMI 17-35 as extra or less fat in the beam) and several poses of the same bone; each image has its
own acquisition. Every draw comes from a generator seeded by (cohort seed, CT, patient, pose), so a case is
the same whatever order or process makes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

BONE_FACTOR_RANGE = (0.65, 1.6)
"""Overall mineral factor k (x the CT's own density). The shared CTs' PF regions measure aBMD 0.61-0.84 g/cm2
(mean ~0.68) with the phantomless calibration; with the exponents below a typical CT then spans ~0.41 to
~1.13 g/cm2 with a mean near 0.76, the paper's DXA cohort (0.759 +/- 0.151 g/cm2), from osteoporotic to
above-average bone."""
TRABECULAR_EXPONENT = 1.4
"""Trabecular bone loses mineral faster than cortical bone (Riggs et al., J Bone Miner Res 2008): k_trab =
k^1.4, k_cort = k^0.8, each with +/-5% independent variation."""
TARGET_ABMD_G_CM2 = (0.759, 0.151)
"""Mean and SD of the population a virtual patient's CT-aBMD is drawn from (g/cm2): the paper's DXA cohort
(0.759 +/- 0.151 g/cm2). Drawn independently of the source bone, so a bone's identity says nothing of its density."""
TARGET_ABMD_RANGE_G_CM2 = (0.40, 1.25)
"""The draw is truncated to this range (g/cm2): from severe osteoporosis to dense adult bone."""
BONE_DRAWS = ("population", "source")
"""``population``: target aBMD from :data:`TARGET_ABMD_G_CM2`; ``source``: a factor of the source's own density
from :data:`BONE_FACTOR_RANGE` (cohorts made before population draws)."""
BMI_RANGE = (17.0, 35.0)
FAT_MM_PER_BMI = 5.0
"""Extra (or missing) adipose path through the hip per BMI unit away from 23 kg/m2 (mm): an AP hip of a
BMI-35 adult crosses ~60 mm more fat than at BMI 23 (CT abdominal/gluteal fat thickness studies)."""
REFERENCE_BMI = 23.0

POSES = {
    # name: (rotation about the superior axis = internal/external rotation, about the AP axis = abduction/
    # adduction, both in degrees, as (low, high) ranges), after the paper's four acquisition settings.
    "standing": ((-5.0, 5.0), (-3.0, 3.0)),
    "supine": ((10.0, 20.0), (-3.0, 3.0)),
    "abduction": ((-5.0, 5.0), (8.0, 18.0)),
    "adduction": ((-5.0, 5.0), (-15.0, -5.0)),
}


def seeded_rng(*keys) -> np.random.Generator:
    """A generator that depends only on ``keys`` (stable across processes and Python runs)."""
    digest = hashlib.sha256("/".join(str(k) for k in keys).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class VirtualPatient:
    patient_id: str
    ct_id: str
    bone_factor: float
    trabecular_factor: float
    cortical_factor: float
    bmi_kg_m2: float

    @property
    def extra_fat_mm(self) -> float:
        return FAT_MM_PER_BMI * (self.bmi_kg_m2 - REFERENCE_BMI)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PoseDraw:
    name: str
    internal_rotation_deg: float
    abduction_deg: float
    detector_shift_mm: tuple[float, float]
    source_to_detector_mm: float
    object_to_detector_mm: float


def sample_patient(
    seed: int, ct_id: str, index: int, abmd_components_g_cm2: tuple[float, float] | None = None
) -> VirtualPatient:
    """The ``index``-th virtual patient of a CT. With the bone's (trabecular, cortical) CT-aBMD components
    (g/cm2 at factor 1), the overall factor k is solved so that the patient's CT-aBMD is a target drawn from the
    population (:data:`TARGET_ABMD_G_CM2`); without them k is drawn from :data:`BONE_FACTOR_RANGE` (x the source)."""
    rng = seeded_rng(seed, ct_id, index, "patient")
    drawn = rng.uniform(*BONE_FACTOR_RANGE)
    trabecular_spread, cortical_spread = rng.uniform(0.95, 1.05), rng.uniform(0.95, 1.05)
    bmi = float(rng.uniform(*BMI_RANGE))
    if abmd_components_g_cm2 is None:
        k = drawn
    else:
        target = _truncated_normal(seeded_rng(seed, ct_id, index, "target"), *TARGET_ABMD_G_CM2)
        trabecular, cortical = abmd_components_g_cm2
        k = _solve_factor(target, trabecular * trabecular_spread, cortical * cortical_spread)
    return VirtualPatient(
        patient_id=f"{ct_id}-v{index:03d}",
        ct_id=ct_id,
        bone_factor=float(k),
        trabecular_factor=float(k**TRABECULAR_EXPONENT * trabecular_spread),
        cortical_factor=float(k**0.8 * cortical_spread),
        bmi_kg_m2=bmi,
    )


def _truncated_normal(rng: np.random.Generator, mean: float, sd: float) -> float:
    low, high = TARGET_ABMD_RANGE_G_CM2
    while True:
        value = rng.normal(mean, sd)
        if low <= value <= high:
            return float(value)


def _solve_factor(target_g_cm2: float, trabecular_g_cm2: float, cortical_g_cm2: float) -> float:
    """k with trabecular * k^1.4 + cortical * k^0.8 = target (both terms grow with k: bisection on 0.05-20)."""
    low, high = 0.05, 20.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        value = trabecular_g_cm2 * middle**TRABECULAR_EXPONENT + cortical_g_cm2 * middle**0.8
        low, high = (middle, high) if value < target_g_cm2 else (low, middle)
    return 0.5 * (low + high)


def sample_pose(seed: int, patient: VirtualPatient, name: str) -> PoseDraw:
    rng = seeded_rng(seed, patient.patient_id, name, "pose")
    rotation, abduction = POSES[name]
    return PoseDraw(
        name,
        float(rng.uniform(*rotation)),
        float(rng.uniform(*abduction)),
        (float(rng.uniform(-10, 10)), float(rng.uniform(-10, 10))),
        float(rng.uniform(1000.0, 1150.0)),
        float(rng.uniform(150.0, 250.0)),
    )
