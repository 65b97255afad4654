"""The eight proximal-femur landmarks of Uemura et al. (Arch Osteoporos 2022) from a femur label.

Landmarks (LPS mm), by the names used in files:

* ``femoral_head_centre``: centre of the sphere fitted to the head surface (:mod:`.head`).
* ``neck_centre``: centroid of the narrowest cross-section of the neck, perpendicular to the neck axis
  (the line from the head centre through the neck, found by iterating centroid -> axis).
* ``head_neck_superior``/``inferior``/``anterior``/``posterior``: where the femur's surface leaves the
  head sphere (by more than ``JUNCTION_DEVIATION_MM``) walking from the head along the neck axis, in
  the four directions around the neck axis.
* ``shaft_2cm``/``shaft_5cm``: centres of the shaft cross-sections 20 and 50 mm distal to the lesser
  trochanter, along the shaft axis.

Anatomical directions come from the bone, not from the file header: ``proximal`` runs along the shaft
towards the head, ``medial`` from the shaft axis towards the head centre, ``posterior`` towards the
lesser trochanter (which sits postero-medially). The lesser trochanter is the first clear medial
bulge (> 7 mm beyond the shaft's own outline) met walking up the shaft.

Side: the head is medial, i.e. towards the patient's midline; ``side`` is "left" when that direction
points to the patient's right (-x in LPS). This trusts the header's left-right axis, which axial scans
get right even when their slice order (feet-first/head-first) is wrong. As a check, the bone's own
handedness is used too (in LPS, ``medial x posterior`` points superior for a right femur):
``side_from_handedness``; a disagreement is noted (a mirrored volume, or a misread lesser trochanter).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..io.volume import VolumeGeometry
from . import grid
from .head import FemoralHead, neck_direction
from .sections import plane_basis, radial_extent, section
from .shaft import Shaft

LANDMARK_NAMES = (
    "femoral_head_centre",
    "neck_centre",
    "head_neck_superior",
    "head_neck_inferior",
    "head_neck_anterior",
    "head_neck_posterior",
    "shaft_2cm",
    "shaft_5cm",
)
JUNCTION_DEVIATION_MM = 1.5
"""The head-neck junction is where the surface first lies this far (mm) outside the head sphere."""
LESSER_TROCHANTER_BUMP_MM = 7.0
"""A medial bulge of the outline at least this far (mm) beyond the shaft outline marks the lesser trochanter."""
LT_SMOOTHING_MM = 3.0
"""The lesser trochanter's bulge is smoothed along the shaft by a Gaussian of this sigma (mm) before its top is
taken: the middle of a flat top, not its first level."""


@dataclass
class FemurFrame:
    """Anatomical unit vectors (LPS) of one femur and its side."""

    proximal: np.ndarray
    medial: np.ndarray
    posterior: np.ndarray | None
    side: str
    side_from_handedness: str | None


@dataclass
class Landmarks:
    """Landmark points (LPS mm) by name, with the axes and notes of how they were found."""

    points: dict[str, np.ndarray]
    head_radius_mm: float
    frame: FemurFrame
    shaft_point_lps: np.ndarray | None = None
    lesser_trochanter_lps: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    source: str = "automatic"

    def missing(self) -> list[str]:
        return [name for name in LANDMARK_NAMES if name not in self.points]

    def neck_axis(self) -> np.ndarray:
        """Unit vector from the head centre to the neck centre."""
        vector = self.points["neck_centre"] - self.points["femoral_head_centre"]
        return vector / np.linalg.norm(vector)

    def shaft_axis(self) -> np.ndarray:
        """Unit vector along the shaft, pointing proximally (from the 5 cm to the 2 cm point if present)."""
        if "shaft_2cm" in self.points and "shaft_5cm" in self.points:
            vector = self.points["shaft_2cm"] - self.points["shaft_5cm"]
            return vector / np.linalg.norm(vector)
        return self.frame.proximal


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def refine_shaft_axis(
    femur: np.ndarray, geometry: VolumeGeometry, shaft: Shaft, head_centre: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Axis point and unit direction (pointing to the head) from centroids of shaft sections (mm)."""
    direction = shaft.direction if shaft.position(head_centre) > (shaft.t_min + shaft.t_max) / 2 else -shaft.direction
    head_t = float((head_centre - shaft.point_lps) @ direction)
    ends = [float((shaft.at(t) - shaft.point_lps) @ direction) for t in (shaft.t_min, shaft.t_max)]
    far_t, end_t = min(ends), max(ends)
    # sections along the tube, up to 40 mm below the head level (above that the trochanters start)
    stop = min(end_t, head_t - 40.0)
    levels = np.arange(far_t + 5.0, stop, 5.0)
    centroids = []
    for level in levels:
        cut = section(femur, geometry, shaft.point_lps + level * direction, direction)
        if cut.found and 150.0 < cut.area_mm2 < 2500.0:
            centroids.append(cut.centroid_lps)
    if len(centroids) < 3:
        return shaft.point_lps, direction
    centroids = np.array(centroids)
    middle = centroids.mean(axis=0)
    _, _, vt = np.linalg.svd(centroids - middle)
    axis = vt[0] if vt[0] @ direction > 0 else -vt[0]
    return middle, axis


def _neck(
    femur: np.ndarray, geometry: VolumeGeometry, centre: np.ndarray, radius: float, start_direction: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Neck axis (unit), neck centre (LPS mm) and its section area (mm2), iterating centroid -> axis."""
    axis = _unit(start_direction)
    neck_centre, area = centre + 1.5 * radius * axis, np.inf
    for _ in range(4):
        distances = np.arange(1.0 * radius, 2.2 * radius, 1.0)
        cuts = [section(femur, geometry, centre + d * axis, axis) for d in distances]
        areas = np.array([c.area_mm2 if c.found and not c.clipped else np.inf for c in cuts])
        if not np.isfinite(areas).any():  # every section touches the edge of the scan: use them as they are
            areas = np.array([c.area_mm2 if c.found else np.inf for c in cuts])
        if not np.isfinite(areas).any():
            raise InputError(
                None,
                "no femoral neck was found next to the head",
                "give the neck centre as a landmark, or check the femur label",
            )
        best = int(np.argmin(areas))
        neck_centre, area = cuts[best].centroid_lps, float(areas[best])
        axis = _unit(neck_centre - centre)
    return axis, neck_centre, area


def _junction(
    femur: np.ndarray,
    geometry: VolumeGeometry,
    centre: np.ndarray,
    radius: float,
    axis: np.ndarray,
    direction: np.ndarray,
) -> np.ndarray | None:
    """Point (LPS mm) where the surface leaves the head sphere, walking along the neck axis on one side.

    The sphere is the label's own: its radius on this side is measured near the centre (the first third
    of the walk), so a label drawn a little larger or smaller than the fitted CT edge does not matter.
    """
    steps = np.arange(0.0, radius + 0.25, 0.5)
    bases = centre + steps[:, None] * axis
    extents = np.array(
        [float(radial_extent(femur, geometry, base, direction[None, :], max_mm=radius + 15.0)[0]) for base in bases]
    )
    near_centre = steps <= radius / 3
    side_radius = float(np.median(np.sqrt(extents[near_centre] ** 2 + steps[near_centre] ** 2)))
    sphere = np.sqrt(np.clip(side_radius**2 - steps**2, 0.0, None))
    leaving = np.nonzero((extents - sphere > JUNCTION_DEVIATION_MM) & ~near_centre)[0]
    if len(leaving) == 0:
        return None
    first = leaving[0]
    return bases[first] + extents[first] * direction


def _lesser_trochanter(
    femur: np.ndarray,
    geometry: VolumeGeometry,
    axis_point: np.ndarray,
    proximal: np.ndarray,
    medial: np.ndarray,
    head_level: float,
    shaft_low_level: float,
) -> tuple[float, np.ndarray, np.ndarray] | None:
    """Level (mm along the axis), LPS point of the lesser trochanter's tip and its unit direction from the
    axis, or None if not seen.

    The outline of the femur around the axis is measured every 1 mm of level and 5 degrees of angle on
    the medial side (within 120 degrees of medial), smoothed (5 mm x 15 degrees median) and compared with
    the shaft's own outline (the lowest 20 mm). Walking up, the lesser trochanter starts where the
    outline bulges more than ``LESSER_TROCHANTER_BUMP_MM`` and keeps bulging for 6 mm; its tip is the
    largest bulge, smoothed along the shaft (``LT_SMOOTHING_MM``), in the 25 mm above that.
    """
    first, second = plane_basis(proximal, hint=medial)
    angles = np.radians(np.arange(-120, 121, 5))
    directions = np.cos(angles)[:, None] * first + np.sin(angles)[:, None] * second
    levels = np.arange(max(shaft_low_level, head_level - 120.0), head_level - 20.0, 1.0)
    if len(levels) < 40:
        return None
    extents = np.array([radial_extent(femur, geometry, axis_point + level * proximal, directions) for level in levels])
    extents = ndimage.median_filter(extents, size=(5, 3), mode="nearest")
    baseline = np.median(extents[levels < levels[0] + 20.0], axis=0)
    bump = extents - baseline[None, :]
    strongest = bump.max(axis=1)
    above = strongest > LESSER_TROCHANTER_BUMP_MM
    lasting = np.array([above[n : n + 6].all() for n in range(len(levels))])
    starts = np.nonzero(lasting)[0]
    if len(starts) == 0 or starts[0] == 0:
        return None
    onset = starts[0]
    window = np.arange(onset, min(onset + 25, len(levels)))
    # the tip's level: the largest bulge of the outline smoothed along the levels (LT_SMOOTHING_MM): the bulge
    # is often flat over 10 mm, and its first maximum moved the tip, and the distal cut, by 5 mm
    # (within the window only: above it the outline widens into the intertrochanteric region)
    smoothed = ndimage.gaussian_filter1d(strongest[window], LT_SMOOTHING_MM, mode="nearest")  # levels 1 mm apart
    peak = window[int(np.argmax(smoothed))]
    angle_index = int(np.argmax(bump[peak]))
    level = float(levels[peak])
    tip = axis_point + level * proximal + extents[peak, angle_index] * directions[angle_index]
    # the bulge's direction: bump-weighted mean over the angles where it exceeds half its peak
    weights = np.where(bump[peak] > 0.5 * bump[peak].max(), bump[peak], 0.0)
    bulge = (weights[:, None] * directions).sum(axis=0)
    return level, tip, bulge / np.linalg.norm(bulge)


def estimate_landmarks(
    femur: np.ndarray, geometry: VolumeGeometry, head: FemoralHead, shaft: Shaft | None
) -> Landmarks:
    """All landmarks that can be found; missing ones are listed in ``notes`` (see :meth:`Landmarks.missing`)."""
    femur = np.asarray(femur, np.float32)
    centre, radius = head.centre_lps, head.radius_mm
    notes: list[str] = []
    points: dict[str, np.ndarray] = {"femoral_head_centre": centre}
    if shaft is not None:
        axis_point, proximal = refine_shaft_axis(femur, geometry, shaft, centre)
    else:
        axis_point, proximal = None, np.array([0.0, 0.0, 1.0])
        notes.append("no femoral shaft in view: the header's superior axis stands in for the shaft axis")
    # medial: from the shaft axis to the head centre (or, without a shaft, opposite the neck)
    if axis_point is not None:
        offset = centre - axis_point
        medial = _unit(offset - (offset @ proximal) * proximal)
    neck_start = neck_direction(head, shaft)
    if axis_point is None:
        # no shaft: the femur beyond the head (neck, trochanters) lies lateral and distal of the head
        beyond = grid.voxel_points_lps(femur > 0.5, geometry) - centre
        beyond = beyond[np.linalg.norm(beyond, axis=1) > radius + 5.0]
        if len(beyond) >= 20:
            neck_start = _unit(beyond.mean(axis=0))
        if not np.any(neck_start):
            neck_start = -proximal
        medial = _unit(-(neck_start - (neck_start @ proximal) * proximal))
    neck_axis, neck_centre, _ = _neck(femur, geometry, centre, radius, neck_start)
    points["neck_centre"] = neck_centre
    if axis_point is not None:
        lt = _lesser_trochanter(
            femur,
            geometry,
            axis_point,
            proximal,
            medial,
            float((centre - axis_point) @ proximal),
            _lowest_level(femur, geometry, axis_point, proximal),
        )
    else:
        lt = None
    posterior = None
    lt_point = None
    if lt is not None:
        level, lt_point, bulge = lt
        toward = bulge - (bulge @ proximal) * proximal - (bulge @ medial) * medial
        if np.linalg.norm(toward) > 0.1:
            posterior = _unit(toward)
        for name, distance in (("shaft_2cm", 20.0), ("shaft_5cm", 50.0)):
            where = axis_point + (level - distance) * proximal
            cut = section(femur, geometry, where, proximal)
            if cut.found and 150.0 < cut.area_mm2 < 2500.0 and grid.inside_grid(femur.shape, geometry, where[None])[0]:
                points[name] = cut.centroid_lps
            else:
                notes.append(
                    f"{name}: the shaft {distance:.0f} mm below the lesser trochanter is outside the field of view"
                )
    elif axis_point is not None:
        notes.append("lesser trochanter not found: the shaft points cannot be placed")
    # head-neck junction: superior = towards proximal, anterior = away from the lesser trochanter
    superior = _unit(proximal - (proximal @ neck_axis) * neck_axis)
    other = np.cross(neck_axis, superior)
    if posterior is not None:
        anterior = other if other @ posterior < 0 else -other
    else:
        anterior = other
        notes.append(
            "anterior/posterior not known from anatomy (no lesser trochanter): head-neck points "
            "'anterior'/'posterior' may be swapped"
        )
    for name, direction in (
        ("head_neck_superior", superior),
        ("head_neck_inferior", -superior),
        ("head_neck_anterior", anterior),
        ("head_neck_posterior", -anterior),
    ):
        point = _junction(femur, geometry, centre, radius, neck_axis, direction)
        if point is None:
            notes.append(f"{name}: the surface never leaves the head sphere on that side")
        else:
            points[name] = point
    side = "left" if medial[0] < 0 else "right"
    side_from_handedness = None
    if posterior is not None:
        side_from_handedness = "right" if np.cross(medial, posterior) @ proximal > 0 else "left"
        if side_from_handedness != side:
            notes.append(
                f"side: the header's left-right axis says {side}, the handedness of the bone "
                f"(lesser trochanter) says {side_from_handedness}: the volume may be stored mirrored, "
                "or the lesser trochanter was misread"
            )
    frame = FemurFrame(proximal, medial, posterior, side, side_from_handedness)
    return Landmarks(points, radius, frame, axis_point, lt_point, notes)


def _lowest_level(femur: np.ndarray, geometry: VolumeGeometry, axis_point: np.ndarray, proximal: np.ndarray) -> float:
    """Most distal level (mm along the axis from ``axis_point``) at which the femur is still in view."""
    for level in np.arange(-300.0, 0.0, 2.0):
        where = axis_point + level * proximal
        if grid.inside_grid(femur.shape, geometry, where[None])[0] and section(femur, geometry, where, proximal).found:
            return float(level + 4.0)
    return -300.0
