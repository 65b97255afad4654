"""A virtual hip implant: three cannulated screws across the femoral neck, as fixed after a neck fracture.

For the out-of-distribution sets (issue 23): the model was trained on implant-free hips, so a radiograph of a hip
with metal must not get a trustworthy number. For the hip detector's views (``simulate-landmarks --screw-views``):
users bring hips with screws, and the detector must still find the head under them. The screws are written into a
prepared CT (:class:`PreparedCT`) as material the simulator projects: 3000 HU and hydroxyapatite at crystal density
(3.16 g/cm3), the densest material it knows. At 60 keV that attenuates 1.3 /cm (NIST), twice cortical bone
(0.6 /cm) but about a third of titanium (0.77 cm2/g x 4.5 g/cm3 = 3.5 /cm): the virtual screws are fainter than
real ones, the harder case for the checks.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np

from ..projection.materials import MaterialModel
from .prepared_ct import PreparedCT

SCREW_DIAMETER_MM = 7.3
"""Cannulated hip screws are 6.5-7.3 mm thick."""
SCREW_FROM_HEAD_MM = (-18.0, 85.0)
"""Each screw along the neck axis, from the head centre (negative: into the head, 5-6 mm under a 24 mm radius
head's surface) to the lateral cortex below the greater trochanter (positive: laterally and down)."""
NECK_SHAFT_ANGLE_DEG = 130.0
"""The screws follow the neck, inclined by the population's mean neck-shaft angle (about 130 degrees) to the
shaft."""
SCREW_OFFSETS_MM = ((0.0, 7.0), (-6.0, -5.0), (6.0, -5.0))
"""The inverted triangle of three parallel screws: (anterior-posterior, superior) offsets from the neck axis."""
METAL_HU = 3000.0


def screw_mask(prepared: PreparedCT) -> np.ndarray:
    """bool [k, j, i]: the voxels of the three screws, on the CT's grid (searched only in the box that can hold
    them around the femoral head: a whole pelvis has tens of millions of voxels)."""
    geometry = prepared.hu.geometry
    shape = prepared.hu.array.shape
    head = np.asarray(prepared.head_centre_lps, float)
    reach_mm = max(map(abs, SCREW_FROM_HEAD_MM)) + max(np.hypot(*o) for o in SCREW_OFFSETS_MM) + SCREW_DIAMETER_MM
    corners = head + reach_mm * np.array(list(itertools.product((-1.0, 1.0), repeat=3)))
    corners_ijk = (np.linalg.inv(geometry.ijk_to_lps()) @ np.c_[corners, np.ones(8)].T)[:3]
    size_ijk = np.array(shape[::-1])
    low = np.clip(np.floor(corners_ijk.min(axis=1)).astype(int), 0, size_ijk)
    high = np.clip(np.ceil(corners_ijk.max(axis=1)).astype(int) + 1, 0, size_ijk)
    mask = np.zeros(shape, bool)
    if np.any(high <= low):
        return mask
    k, j, i = np.meshgrid(*(np.arange(low[a], high[a]) for a in (2, 1, 0)), indexing="ij")
    index = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    points = (geometry.ijk_to_lps() @ index)[:3].T - head
    lateral, anterior_posterior, superior = np.asarray(prepared.frame_axes, float)
    tilt = np.radians(NECK_SHAFT_ANGLE_DEG - 90.0)
    lateral, superior = (
        np.cos(tilt) * lateral - np.sin(tilt) * superior,
        np.sin(tilt) * lateral + np.cos(tilt) * superior,
    )
    along = points @ lateral
    inside = np.zeros(len(points), bool)
    for offset_ap, offset_up in SCREW_OFFSETS_MM:
        across = points - np.outer(along, lateral) - offset_ap * anterior_posterior - offset_up * superior
        inside |= (np.linalg.norm(across, axis=1) <= SCREW_DIAMETER_MM / 2) & (
            (along >= SCREW_FROM_HEAD_MM[0]) & (along <= SCREW_FROM_HEAD_MM[1])
        )
    mask[low[2] : high[2], low[1] : high[1], low[0] : high[0]] = inside.reshape(k.shape)
    return mask


def with_neck_screws(prepared: PreparedCT, model: MaterialModel = MaterialModel()) -> PreparedCT:
    """``prepared`` with three screws across its femoral neck (module docstring); its labels, landmarks and
    ground truth are kept (an implant case is for refusal checks and the hip detector's views, never for a BMD
    model's training). Its own cache key keeps a worker from reusing the implant-free projector."""
    screws = screw_mask(prepared)
    hu = prepared.hu.array.copy()
    hu[screws] = METAL_HU
    density = prepared.density_mg_cm3.copy()
    density[screws] = model.mineral_crystal_mg_per_cm3
    return replace(
        prepared, hu=replace(prepared.hu, array=hu), density_mg_cm3=density, key=f"{prepared.cache_key}_neck_screws"
    )


def with_screws_on(hips: list[PreparedCT], side: str) -> list[PreparedCT]:
    """The prepared hips of one CT (each holding the whole CT) with virtual neck screws in the ``side`` hip, written
    into every hip's copy of the CT, so that an AP pelvis view shows them whichever hip's volume it projects."""
    screwed = [with_neck_screws(hip) for hip in hips if hip.side == side]
    if not screwed:
        raise ValueError(f"no {side} hip among the prepared hips")
    hu, density = screwed[0].hu, screwed[0].density_mg_cm3
    return [
        screwed[0]
        if hip.side == side
        else replace(hip, hu=hu, density_mg_cm3=density, key=f"{hip.cache_key}_beside_screws")
        for hip in hips
    ]
