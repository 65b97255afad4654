"""Which way is lateral at the hip: away from the body's midline, in the axial slice through the femoral head.

Why: when no femoral shaft is in view (pelvic CTs end at the femoral neck) nothing in the femur itself says
which way the neck leaves the head; bone rays alone confuse the neck with the acetabulum, which on coarse
(3 mm) scans is joined to the head by partial volume. The body does say it: the neck runs from the head
away from the midline (laterally) and downwards. The midline is the centroid of the body (CT number above
``BODY_HU``) in the slice through the head centre. Only used without a shaft, i.e. on pelvic scans, whose
slice axis is the body axis (the no-shaft head search already assumes that).
"""

from __future__ import annotations

import numpy as np

from ..io.volume import Volume
from . import grid

BODY_HU = -300.0
"""CT number (HU) above which a voxel is body (soft tissue, bone) rather than air or the table's foam."""
MIN_OFFSET_MM = 20.0
"""A head centre closer than this to the midline (mm) has no side: no lateral direction is given."""


def midline_offset_lps(volume: Volume, centre_lps: np.ndarray) -> np.ndarray | None:
    """LPS vector (mm, axial plane) from the body's midline to ``centre_lps``; None where the slice has no body."""
    k = int(round(float(grid.lps_to_index(volume.geometry, np.asarray(centre_lps, float))[0][0])))
    if not 0 <= k < volume.array.shape[0]:
        return None
    body = np.argwhere(volume.array[k] > BODY_HU)
    if len(body) == 0:
        return None
    centroid_kji = np.concatenate([[k], body.mean(axis=0)])
    offset = np.asarray(centre_lps, float) - grid.index_to_lps(volume.geometry, centroid_kji[None])[0]
    offset[2] = 0.0
    return offset


def lateral_of(offset: np.ndarray | None) -> np.ndarray:
    """Unit LPS vector in the axial (x, y) plane along a :func:`midline_offset_lps` (from the midline outward); zeros
    if the offset is unknown or shorter than :data:`MIN_OFFSET_MM`."""
    length = 0.0 if offset is None else float(np.linalg.norm(offset))
    return offset / length if length >= MIN_OFFSET_MM else np.zeros(3)
