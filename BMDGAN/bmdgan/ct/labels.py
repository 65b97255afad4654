"""The project's label convention for CT label maps: the measured hip, and optionally the rest of the pelvis.

==== ============================================================================
 0   background
 1   pelvis: hip bone (ilium, ischium, pubis) of the measured side
 2   femur of the measured side (outside the PF region)
 3   proximal-femur (PF) region: part of the femur, overrides 2 where present
 4   femur of the other side
 5   hip bone of the other side
 6   sacrum (with the coccyx)
==== ============================================================================

Values 1-3 are what one hip needs (measurement, stage-1 and PF DRRs); 4-6 are written only by code that
labels the whole pelvis (:mod:`.pelvis`, :func:`.label_import.load_segmentation` with ``bilateral``), so
a map holding only 0-3 is still a valid map. The femur of the measured side is ``labels == 2 | labels == 3``
(:func:`femur_mask`). Sides are the patient's (LPS: left is +x). Metal (implants) is not a label: it is a
separate 0/1 mask (``metal.nii.gz``) because a screw inside the femoral neck is still part of the femur for
the geometry, only its CT numbers are excluded from the density.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = 0
PELVIS = 1
FEMUR = 2
PF_REGION = 3
OTHER_FEMUR = 4
OTHER_PELVIS = 5
SACRUM = 6

NAMES = {
    BACKGROUND: "background",
    PELVIS: "pelvis",
    FEMUR: "femur",
    PF_REGION: "proximal femur region",
    OTHER_FEMUR: "femur (other side)",
    OTHER_PELVIS: "pelvis (other side)",
    SACRUM: "sacrum",
}
VALUES = frozenset(NAMES)
"""Every value a project label map may hold."""


def femur_mask(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the measured side's whole femur (labels 2 and 3)."""
    return (labels == FEMUR) | (labels == PF_REGION)


def pelvis_mask(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the whole bony pelvis present: both hip bones and the sacrum (labels 1, 5, 6)."""
    return np.isin(labels, (PELVIS, OTHER_PELVIS, SACRUM))


def compose(
    pelvis: np.ndarray | None,
    femur: np.ndarray,
    pf_region: np.ndarray | None = None,
    *,
    other_femur: np.ndarray | None = None,
    other_pelvis: np.ndarray | None = None,
    sacrum: np.ndarray | None = None,
) -> np.ndarray:
    """Label map (uint8) from boolean masks. Where masks overlap, femurs win over hip bones and the sacrum,
    the measured side over the other side, the PF region over the femur."""
    labels = np.zeros(femur.shape, np.uint8)
    for value, mask in ((SACRUM, sacrum), (OTHER_PELVIS, other_pelvis), (PELVIS, pelvis), (OTHER_FEMUR, other_femur)):
        if mask is not None:
            labels[mask] = value
    labels[femur] = FEMUR
    if pf_region is not None:
        labels[pf_region & femur] = PF_REGION
    return labels
