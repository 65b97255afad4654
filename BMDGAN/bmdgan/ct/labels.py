"""The project's label convention for CT label maps (one hip: the measured side).

==== ============================================================================
 0   background
 1   pelvis (hip bone) of the measured side
 2   femur of the measured side (outside the PF region)
 3   proximal-femur (PF) region: part of the femur, overrides 2 where present
==== ============================================================================

The femur is therefore ``labels == 2 | labels == 3``. Metal (implants) is not a label: it is a separate
0/1 mask (``metal.nii.gz``) because a screw inside the femoral neck is still part of the femur for the
geometry, only its CT numbers are excluded from the density.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = 0
PELVIS = 1
FEMUR = 2
PF_REGION = 3

NAMES = {BACKGROUND: "background", PELVIS: "pelvis", FEMUR: "femur", PF_REGION: "proximal femur region"}


def femur_mask(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the whole femur (labels 2 and 3)."""
    return (labels == FEMUR) | (labels == PF_REGION)


def compose(pelvis: np.ndarray | None, femur: np.ndarray, pf_region: np.ndarray | None = None) -> np.ndarray:
    """Label map (uint8) from boolean masks; the femur wins over the pelvis where they overlap."""
    labels = np.zeros(femur.shape, np.uint8)
    if pelvis is not None:
        labels[pelvis] = PELVIS
    labels[femur] = FEMUR
    if pf_region is not None:
        labels[pf_region & femur] = PF_REGION
    return labels
