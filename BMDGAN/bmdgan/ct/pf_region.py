"""The proximal-femur (PF) region: the femur between the head-neck junction and 2 cm below the lesser trochanter.

Definition (Uemura et al., Arch Osteoporos 2022, as used for the BMD-GAN ground truth):

* distal cut: the plane through ``shaft_2cm`` perpendicular to the shaft axis; keep the proximal side;
* head cut: the plane fitted (least squares) through the four head-neck junction points; remove the
  head's side of it, near the head (within ``HEAD_CUT_REACH`` head radii of its centre);
* the largest connected part of what is left.

When the shaft points are missing (shaft outside the field of view) there is no distal cut and the
region is marked incomplete: it ends where the scan ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..io.volume import VolumeGeometry
from . import grid
from .landmarks import Landmarks

HEAD_CUT_REACH = 1.6
"""The head cut removes only what lies within this many head radii of the head centre: a tilted
junction plane must not clip the greater trochanter far from the head."""
JUNCTION_NAMES = ("head_neck_superior", "head_neck_inferior", "head_neck_anterior", "head_neck_posterior")


@dataclass
class Plane:
    """Points x with ``(x - point) . normal > 0`` are on the kept side (LPS mm)."""

    point: np.ndarray
    normal: np.ndarray

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points) - self.point) @ self.normal


@dataclass
class PFRegion:
    """The PF region mask ``[k, j, i]``, its cut planes and whether it is complete."""

    mask: np.ndarray
    head_plane: Plane
    distal_plane: Plane | None
    complete: bool
    notes: list[str] = field(default_factory=list)
    head_centre_lps: np.ndarray | None = None
    head_cut_reach_mm: float = np.inf

    def inside_cuts(self, points_lps: np.ndarray) -> np.ndarray:
        """True for LPS points (mm, shape (..., 3)) on the kept side of both cuts (exact planes).

        Used for the projection, where a voxelised cut surface running along the rays would make the
        projected outline ragged.
        """
        points = np.asarray(points_lps, float)
        near_head = np.ones(points.shape[:-1], bool)
        if self.head_centre_lps is not None:
            near_head = np.linalg.norm(points - self.head_centre_lps, axis=-1) < self.head_cut_reach_mm
        keep = ~((self.head_plane.signed_distance(points) <= 0) & near_head)
        if self.distal_plane is not None:
            keep &= self.distal_plane.signed_distance(points) > 0
        return keep


def fit_plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares plane through points (mm): centroid and unit normal."""
    points = np.asarray(points, float)
    centroid = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centroid)
    return centroid, vt[-1]


def head_plane(landmarks: Landmarks) -> Plane:
    """Plane through the head-neck junction points, its normal pointing away from the head."""
    missing = [name for name in JUNCTION_NAMES if name not in landmarks.points]
    if len(missing) > 1:
        raise InputError(
            None,
            f"head-neck junction points missing: {', '.join(missing)}",
            "place the head-neck junction landmarks by hand (bmdgan landmarks --edit ...)",
        )
    points = np.array([landmarks.points[name] for name in JUNCTION_NAMES if name in landmarks.points])
    if len(points) == 3:
        centroid = points.mean(axis=0)
        normal = np.cross(points[1] - points[0], points[2] - points[0])
        normal /= np.linalg.norm(normal)
    else:
        centroid, normal = fit_plane(points)
    if (landmarks.points["femoral_head_centre"] - centroid) @ normal > 0:
        normal = -normal
    return Plane(centroid, normal)


def distal_plane(landmarks: Landmarks) -> Plane | None:
    """Plane through the 2 cm shaft point perpendicular to the shaft axis (normal proximal), if placed."""
    if "shaft_2cm" not in landmarks.points:
        return None
    return Plane(landmarks.points["shaft_2cm"], landmarks.shaft_axis())


def mask_box(mask: np.ndarray, margin_voxels: int = 2) -> tuple[slice, ...] | None:
    """Array slices around the set voxels of ``mask`` plus ``margin_voxels`` (clipped to it); None if empty."""
    box = []
    for axis in range(mask.ndim):
        occupied = np.nonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))[0]
        if len(occupied) == 0:
            return None
        box.append(
            slice(
                max(int(occupied[0]) - margin_voxels, 0), min(int(occupied[-1]) + margin_voxels + 1, mask.shape[axis])
            )
        )
    return tuple(box)


def scan_cut_shares(region: np.ndarray) -> dict[str, float]:
    """For each face of the scan the region ``[k, j, i]`` touches (``"k first"`` ... ``"i last"``): its voxels on that
    face as a share of its largest section parallel to it. Near 0: a few voxels graze the edge; near 1: the scan cuts
    the bone through its middle, so the region (and its CT-aBMD) is only the part in view."""
    shares = {}
    for axis, name in enumerate("kji"):
        section = region.sum(axis=tuple(a for a in range(3) if a != axis))
        for end, face in ((0, "first"), (-1, "last")):
            if section[end] > 0:
                shares[f"{name} {face}"] = float(section[end] / section.max())
    return shares


def describe_scan_cuts(shares: dict[str, float]) -> str:
    """:func:`scan_cut_shares` in words: ``"j last 35%, i last 26%"`` (empty for a whole region)."""
    return ", ".join(f"{face} {share:.0%}" for face, share in shares.items())


def pf_region(femur: np.ndarray, geometry: VolumeGeometry, landmarks: Landmarks) -> PFRegion:
    """Cut the femur label into the PF region (see the module docstring); the work is done in the femur's box."""
    notes = []
    top = head_plane(landmarks)
    bottom = distal_plane(landmarks)
    cuts = PFRegion(
        np.zeros(0, bool),
        top,
        bottom,
        False,
        head_centre_lps=landmarks.points["femoral_head_centre"],
        head_cut_reach_mm=HEAD_CUT_REACH * landmarks.head_radius_mm,
    )
    box = mask_box(femur)
    where = np.argwhere(femur[box]) + [b.start for b in box] if box is not None else np.zeros((0, 3), int)
    keep = np.zeros(femur.shape, bool)
    keep[tuple(where[cuts.inside_cuts(grid.index_to_lps(geometry, where))].T)] = True
    if bottom is None:
        notes.append(
            "no distal cut (shaft 2 cm below the lesser trochanter not in view): the region ends "
            "at the edge of the scan and is incomplete"
        )
    region = np.zeros(femur.shape, bool)
    if box is not None:
        region[box] = grid.largest_component(keep[box])
    if not region.any():
        raise InputError(
            None,
            "the PF region is empty after the cuts",
            "check the landmarks: the head-neck points must lie between the head and the shaft points",
        )
    cut = scan_cut_shares(region)
    if cut:
        notes.append(
            f"the PF region touches the edge of the scan ({describe_scan_cuts(cut)} of its section): part of it may "
            "be outside the field of view"
        )
    return PFRegion(
        region,
        top,
        bottom,
        complete=bottom is not None and not cut,
        notes=notes,
        head_centre_lps=cuts.head_centre_lps,
        head_cut_reach_mm=cuts.head_cut_reach_mm,
    )
