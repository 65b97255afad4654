"""Every proximal femur (hip) in a CT, each femoral head paired with its own shaft, and its side.

Why: a whole-pelvis CT holds two femurs; a thigh crop one. Each is found the same way:

1. Shafts: the straight bony tubes of the whole CT, one per thigh (:func:`.shaft.find_shafts`).
2. Each shaft's head: the best plausible sphere (:mod:`.head`) that sits where a femoral head sits
   relative to that shaft (:func:`.head.fits_shaft`); the Hough candidates are refined once and shared.
3. Fewer than two hips so far: heads whose neck leaves them downwards (header z, as on every pelvic
   scan), at least ``MIN_HIP_SEPARATION_MM`` from the heads already found. Each gets its own shaft,
   looked for in a box below it (thighs on a knee rest are not parallel, and their shared votes may not
   stand out in the whole CT); without one the head is centred in its socket (:mod:`.socket`). Where the
   CT shows a shaft, a second head must have its own (a thigh crop's look-alike, cut by the scan, has not);
   where it shows none, a head must lie ``MIN_HEAD_MIDLINE_OFFSET_MM`` from the body's midline (a
   vertebral body or the symphysis is round too).

Side: the head lies medial of its shaft, so with a shaft the side is read as in :mod:`.landmarks`
(the direction from the shaft axis to the head points to the patient's right, -x in LPS, for a left
femur). Without a shaft the head lies lateral of the body's midline (:mod:`.midline`): +x is the
patient's left. Both read the header's left-right axis, which axial scans get right (the IBSI crops'
unreliable slice order flips superior-inferior, not left-right; see :mod:`.landmarks` for the check by
the bone's handedness). Two hips read as the same side contradict each other: the weaker is dropped.

Metal: the CT numbers above ``METAL_HU`` within ``HIP_RADIUS_MM`` of a head are counted per hip, so
that ``auto`` takes an implant-free hip first (:func:`select_hips`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..io.volume import Volume, VolumeGeometry
from . import grid
from .head import (
    HEAD_BEYOND_SHAFT_END_MM,
    HEAD_OFF_SHAFT_AXIS_MM,
    MAX_REFINE_SHIFT_MM,
    MIN_IN_VIEW,
    RAY_COUNT,
    FemoralHead,
    fibonacci_directions,
    fits_shaft,
    head_score,
    hough_candidates,
    hu_gradient,
    is_plausible_head,
    neck_direction,
    neck_points_down,
    refine_head,
    seeds_near_shaft_ends,
    smoothed_hu,
)
from .segmentation import METAL_HU
from .shaft import Shaft, find_shaft, find_shafts
from .socket import centre_in_socket

SIDES = ("left", "right")
"""Hip sides in the order they are reported."""
SIDE_CHOICES = ("left", "right", "both", "auto")
"""What a user may ask for: one side, every side present, or the best implant-free one."""
HIP_RADIUS_MM = 80.0
"""Metal within this distance (mm) of a femoral head centre belongs to that hip (neck, trochanters, socket)."""
MIN_HIP_SEPARATION_MM = 100.0
"""Two femoral heads of one patient are 150-220 mm apart; closer candidates are one hip's look-alikes."""
LOCAL_SHAFT_BOX_MM = ((-80.0, 80.0), (-80.0, 80.0), (-250.0, 20.0))
"""Box (LPS mm from the head centre, x, y, z) in which a head's own shaft is looked for: below it."""
MIN_HEAD_MIDLINE_OFFSET_MM = 50.0
"""Two femoral heads are 150-220 mm apart, so each lies 75-110 mm from the body's midline (:mod:`.midline`); a
sphere nearer than this to it, without a femoral shaft of its own, is a vertebral body or the pubic symphysis (a
pelvic scan that cuts the real heads, such as the Visible Human pelvis, has such look-alikes)."""
MIN_IMPLANT_CM3 = 0.05
"""Metal above this volume (cm3; ~17 voxels of 1 x 1 x 3 mm) is an implant: a few bright voxels (a
calcification, a skin marker's bloom) are not."""
SEARCH_MAX_VOXELS = 16_000_000
"""CTs larger than this (a 512 x 512 x 150 whole-pelvis CT has 39 M voxels) are searched for shafts and
head candidates on every other row and column (still finer than the 2 mm vote cells); the heads are then
fitted on the full grid. Thigh crops (up to ~6 M voxels) are searched on the full grid."""


@dataclass
class Hip:
    """One proximal femur: its side, fitted head, shaft (None when out of view) and nearby metal (cm3).

    Without a shaft the head sphere alone drifts into the acetabular roof: :func:`fitted_head` centres it in
    its socket (:mod:`.socket`), once, when the hip is analysed (it costs seconds per hip)."""

    side: str
    head: FemoralHead
    shaft: Shaft | None
    metal_near_cm3: float = 0.0
    notes: list[str] = field(default_factory=list)
    centred: bool = False
    """True once the head is final (with a shaft it always is)."""

    @property
    def score(self) -> float:
        return head_score(self.head)


def fitted_head(ct: Volume, hip: Hip) -> FemoralHead:
    """The hip's head as used for its labels and landmarks (centred in its socket when no shaft is in view)."""
    if not hip.centred:
        hip.head = centre_in_socket(ct, hip.head) if hip.shaft is None else hip.head
        hip.centred = True
    return hip.head


def side_of(head: FemoralHead, shaft: Shaft | None) -> str:
    """'left' or 'right' from the anatomy (see the module docstring)."""
    if shaft is not None:
        offset = head.centre_lps - shaft.point_lps
        medial = offset - (offset @ shaft.direction) * shaft.direction
        return "left" if medial[0] < 0 else "right"
    lateral = head.lateral if np.any(head.lateral) else neck_direction(head, None)
    return "left" if lateral[0] > 0 else "right"


class _Candidates:
    """Head spheres refined (on the full grid) from starting points (LPS mm), each start refined once."""

    def __init__(self, ct: Volume, smooth: np.ndarray, hough: list[np.ndarray]):
        self.ct, self.smooth = ct, smooth
        self.directions = fibonacci_directions(RAY_COUNT)
        self.hough = hough
        self._refined: dict[tuple, FemoralHead | None] = {}

    def heads(self, starts: list[np.ndarray]) -> list[FemoralHead]:
        found = []
        for start in starts:
            key = tuple(np.round(start, 3))
            if key not in self._refined:
                head = refine_head(self.ct, self.smooth, start, self.directions)
                self._refined[key] = head if head is not None and is_plausible_head(head) else None
            if self._refined[key] is not None:
                found.append(self._refined[key])
        return sorted(found, key=lambda h: -head_score(h))


def _far_from(head: FemoralHead, others: list[FemoralHead], distance_mm: float) -> bool:
    return all(np.linalg.norm(head.centre_lps - other.centre_lps) >= distance_mm for other in others)


def _may_fit(start: np.ndarray, shaft: Shaft) -> bool:
    """Whether a head refined from ``start`` could fit ``shaft``: the refinement moves a centre by at most
    ``MAX_REFINE_SHIFT_MM``, so starts beyond the :func:`.head.fits_shaft` limits plus that are not refined."""
    offset = float(shaft.distance_to_axis(start))
    position = float(shaft.position(start))
    beyond_end = max(position - shaft.t_max, shaft.t_min - position)
    slack = MAX_REFINE_SHIFT_MM
    low_end, high_end = HEAD_BEYOND_SHAFT_END_MM
    return offset <= HEAD_OFF_SHAFT_AXIS_MM[1] + slack and low_end - slack <= beyond_end <= high_end + slack


def _off_midline(head: FemoralHead) -> bool:
    """Whether a head without a shaft lies where a hip can: :data:`MIN_HEAD_MIDLINE_OFFSET_MM` from the midline."""
    offset = head.midline_offset_lps
    return offset is not None and float(np.linalg.norm(offset)) >= MIN_HEAD_MIDLINE_OFFSET_MM


def _local_shaft(ct: Volume, smooth: np.ndarray, head: FemoralHead) -> Shaft | None:
    """The shaft in a box below ``head`` (``LOCAL_SHAFT_BOX_MM``), if the head fits it."""
    corners = np.array(np.meshgrid(*LOCAL_SHAFT_BOX_MM, indexing="ij")).reshape(3, -1).T + head.centre_lps
    box = grid.box_around(ct.array.shape, ct.geometry, corners, 0.0)
    if any(b.stop - b.start < 8 for b in box):
        return None
    shaft = find_shaft(grid.crop(ct, box), smooth[box])
    return shaft if shaft is not None and fits_shaft(head, shaft) else None


def _search_grid(ct: Volume, smooth: np.ndarray) -> tuple[Volume, np.ndarray]:
    """The CT (and its smoothed copy) on the grid the shafts and head candidates are searched on
    (``SEARCH_MAX_VOXELS``): every other row and column of large CTs, as it is otherwise."""
    if ct.array.size <= SEARCH_MAX_VOXELS:
        return ct, smooth
    g = ct.geometry
    geometry = VolumeGeometry((2 * g.spacing_mm[0], 2 * g.spacing_mm[1], g.spacing_mm[2]), g.origin_mm, g.direction)
    return Volume(ct.array[:, ::2, ::2], geometry, ct.unit, ct.source), np.ascontiguousarray(smooth[:, ::2, ::2])


def find_hips(ct: Volume, smooth: np.ndarray | None = None) -> list[Hip]:
    """Every hip in the CT (at most two), implant-free first, then the best-seen head first."""
    if smooth is None:
        smooth = smoothed_hu(ct)
    coarse, coarse_smooth = _search_grid(ct, smooth)
    gradient = hu_gradient(coarse, coarse_smooth)  # shared by the shaft and head searches
    candidates = _Candidates(ct, smooth, hough_candidates(coarse, coarse_smooth, gradient=gradient))
    shafts = find_shafts(coarse, coarse_smooth, gradient=gradient)
    del gradient
    pairs: list[tuple[FemoralHead, Shaft | None]] = []
    for shaft in shafts:
        starts = [start for start in candidates.hough + seeds_near_shaft_ends(shaft) if _may_fit(start, shaft)]
        heads = [
            h
            for h in candidates.heads(starts)
            if fits_shaft(h, shaft) and _far_from(h, [p[0] for p in pairs], MIN_HIP_SEPARATION_MM)
        ]
        if heads:
            pairs.append((heads[0], shaft))
    if len(pairs) < 2:
        for head in candidates.heads(candidates.hough):
            if len(pairs) == 2:
                break
            if neck_points_down(head) and _far_from(head, [p[0] for p in pairs], MIN_HIP_SEPARATION_MM):
                shaft = _local_shaft(ct, smooth, head)
                if shaft is not None or (not shafts and _off_midline(head)):
                    pairs.append((head, shaft))  # next to a shaft found in the CT, only a femur with its own
    metal = grid.index_to_lps(ct.geometry, np.argwhere(ct.array > METAL_HU))
    voxel_cm3 = ct.voxel_volume_mm3() / 1000.0
    hips: list[Hip] = []
    for head, shaft in pairs:
        side = side_of(head, shaft)
        near = float((np.linalg.norm(metal - head.centre_lps, axis=1) < HIP_RADIUS_MM).sum() * voxel_cm3)
        if any(hip.side == side for hip in hips):
            hips[0].notes.append(
                f"a second femoral head ({np.round(head.centre_lps, 1).tolist()} LPS mm) also read as {side}: not used"
            )
            continue
        hips.append(Hip(side, head, shaft, near, centred=shaft is not None))
    return sorted(hips, key=lambda hip: (hip.metal_near_cm3 > MIN_IMPLANT_CM3, -hip.score))


def no_head_error(ct: Volume) -> InputError:
    """The refusal when no femoral head is in view."""
    return InputError(
        ct.source or None,
        "no femoral head was found in the field of view (a head more than "
        f"{100 - int(100 * MIN_IN_VIEW)} % outside the scan, or not in its socket, is not used)",
        "give a CT that covers the whole hip joint, or a femur segmentation and the landmarks",
    )


def present_sides(hips: list[Hip]) -> list[str]:
    """Sides of ``hips`` in ``SIDES`` order."""
    return [side for side in SIDES if any(hip.side == side for hip in hips)]


def select_hips(hips: list[Hip], side: str, ct: Volume) -> list[Hip]:
    """The hips a ``side`` request means: 'left'/'right' that one (InputError naming the sides present if
    absent), 'both' every hip in ``SIDES`` order, 'auto' every hip in order of preference (implant-free,
    then best seen: the caller takes the first it can measure)."""
    if side not in SIDE_CHOICES:
        raise InputError(None, f"unknown side {side!r}", f"use one of {', '.join(SIDE_CHOICES)}")
    if not hips:
        raise no_head_error(ct)
    if side == "auto":
        return list(hips)
    if side == "both":
        return sorted(hips, key=lambda hip: SIDES.index(hip.side))
    chosen = [hip for hip in hips if hip.side == side]
    if not chosen:
        present = present_sides(hips)
        raise InputError(
            ct.source or None,
            f"no {side} hip in this CT: the femoral head in view is the "
            f"{' and '.join(present)} one (sides present: {', '.join(present)})",
            f"ask for --side {present[0]}, or give a CT that holds the {side} hip",
        )
    return chosen


@dataclass
class HipSearch:
    """Per-CT work shared by its hips: the smoothed CT (HU), the hips found, and, once made, the metal mask,
    the body mask, the phantomless calibration, each hip's femur segmentation (by side) and the hip-bone
    labels (:mod:`.pipeline` fills them in)."""

    smooth: np.ndarray
    hips: list[Hip]
    metal: np.ndarray | None = None
    body: np.ndarray | None = None
    calibration: object | None = None
    segmentations: dict = field(default_factory=dict)
    pelvis: object | None = None


_searches: dict[int, HipSearch] = {}


def hip_search(ct: Volume) -> HipSearch:
    """:func:`find_hips` on ``ct``, done once per Volume object (kept while that object lives and is the
    latest searched): asking for its sides, then for each side, finds the heads once."""
    key = id(ct)
    if key not in _searches:
        _searches.clear()  # one CT at a time: the smoothed copy is as large as the CT
        smooth = smoothed_hu(ct)
        _searches[key] = HipSearch(smooth, find_hips(ct, smooth))
        weakref.finalize(ct, _searches.pop, key, None)
    return _searches[key]
