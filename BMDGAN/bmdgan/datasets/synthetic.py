"""A tiny dataset of hip-like pairs for training tests and the BMDGANTraining self-test (not a physical simulation:
see the cohort generator for that).

Each case: a femur-like bright shape whose areal density scales with the case's BMD, on a soft-tissue
background with noise; stage-1 target = the whole bone, stage-2 target = its upper (PF) part, in g/cm2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .folds import assign_patient_folds
from .format import CaseRecord, DatasetWriter, read_manifest, rewrite_manifest


def make_pairs_dataset(folder: Path, n_patients: int = 8, poses: int = 2, shape=(64, 32), seed: int = 0) -> Path:
    """Write ``n_patients`` x ``poses`` cases of ``shape`` pixels into ``folder``, in four patient folds."""
    rng = np.random.default_rng(seed)
    rows, columns = shape
    y, x = np.mgrid[0:rows, 0:columns] / np.array([rows, columns])[:, None, None]
    writer = DatasetWriter(folder, shape, {"source": "bmdgan.datasets.synthetic"})
    for patient in range(n_patients):
        bmd = rng.uniform(0.5, 1.1)  # g/cm2
        for pose in range(poses):
            shift = rng.uniform(-0.05, 0.05)
            head = ((x - 0.55 - shift) / 0.18) ** 2 + ((y - 0.25) / 0.09) ** 2 < 1
            shaft = (np.abs(x - 0.6 - shift) < 0.12) & (y > 0.25)
            bone = (head | shaft).astype(np.float32)
            pf = bone * (y < 0.5)
            soft = 0.5 + 0.3 * rng.uniform() + 0.2 * x
            radiograph = soft + 0.9 * bmd * bone + rng.normal(0, 0.03, shape)
            record = CaseRecord(
                f"p{patient}_pose{pose}",
                f"p{patient}",
                "right",
                pose=f"pose{pose}",
                ct_abmd_g_cm2=bmd,
                qct_vbmd_mg_cm3=300 * bmd,
            )
            writer.add(
                record,
                {
                    "radiograph": radiograph.astype(np.float32),
                    "drr_stage1": (bmd * bone).astype(np.float32),
                    "drr_pf": (bmd * pf).astype(np.float32),
                },
            )
    rewrite_manifest(folder, assign_patient_folds(read_manifest(folder), n_folds=4, seed=seed))
    return folder
