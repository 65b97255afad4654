"""Find the femoral shaft: the longest straight bony tube in the CT (axis line in LPS mm, radius in mm).

Why: the shaft is the most reliable part of the femur to find, whatever the patient's position (the
hip may be flexed, the header may be wrong), and it anchors everything else: the femoral head is
looked for near its proximal end, and it gives the shaft axis of the landmarks.

How (no training data, no header trust):

1. Direction: on a cylinder, the surface normals of any two points are perpendicular to the axis, so
   their cross product points along it. Pairs of nearby bone-edge points vote with the cross product
   of their CT-number gradients; a straight tube collects a sharp peak of votes, curved or flat bone
   (pelvis, head) spreads its votes.
2. Position: edge points projected on the plane perpendicular to that direction vote for circle
   centres 9-18 mm away along their gradient (a 2D Hough); the shaft's outer cortex gives the peak.
3. Extent: the edge points on that circle give the shaft's first and last position along the axis.

``contrast`` (peak votes over mean votes) is large (> 30) where a shaft is in view and small (< 8)
where only pelvis and head are, which is how a missing shaft is reported.

Both femurs of a bilateral CT: once a shaft is found, the edges around its axis are removed and the
search is repeated (:func:`find_shafts`). Where the two thighs are not parallel (legs on a knee rest,
abducted) their votes split and neither peak may stand out: :mod:`.hips` then looks for each shaft in a
box below its femoral head (:func:`find_shaft` on a cropped volume).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..io.volume import Volume
from . import grid
from .head import fibonacci_directions, hu_gradient

SHAFT_RADIUS_RANGE_MM = (9.0, 19.0)
"""Outer radius of an adult femoral shaft (mm)."""
MIN_DIRECTION_CONTRAST = 28.0
"""Direction-vote contrast below which no straight tube is reported."""
MIN_SHAFT_LENGTH_MM = 60.0
"""Shortest stretch of tube accepted as a shaft (mm)."""


@dataclass
class Shaft:
    """A straight bony tube: ``point_lps + t * direction`` for ``t`` in [t_min, t_max] (mm)."""

    point_lps: np.ndarray
    direction: np.ndarray
    radius_mm: float
    t_min: float
    t_max: float
    contrast: float

    def at(self, t: float) -> np.ndarray:
        """LPS point (mm) on the axis at signed distance ``t`` (mm) from ``point_lps``."""
        return self.point_lps + t * self.direction

    def distance_to_axis(self, points_lps: np.ndarray) -> np.ndarray:
        """Perpendicular distance (mm) of LPS points from the axis line."""
        offset = np.asarray(points_lps, float) - self.point_lps
        along = offset @ self.direction
        return np.linalg.norm(offset - along[..., None] * self.direction, axis=-1)

    def position(self, points_lps: np.ndarray) -> np.ndarray:
        """Signed position (mm) of LPS points along the axis."""
        return (np.asarray(points_lps, float) - self.point_lps) @ self.direction


@lru_cache(maxsize=2)
def _hemisphere_bins(count: int = 3000) -> tuple[np.ndarray, list]:
    directions = fibonacci_directions(2 * count)
    directions = directions[directions[:, 2] >= 0]
    neighbours = cKDTree(directions).query_ball_point(directions, 2 * np.sin(np.radians(4) / 2))
    return directions, neighbours


def bone_edges(
    volume: Volume, smooth: np.ndarray, max_points: int = 60000, seed: int = 0, gradient: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Bone surface points (LPS mm) and unit CT-number gradients there (pointing into bone), subsampled.

    ``gradient``: :func:`.head.hu_gradient` of ``smooth`` if already made."""
    if gradient is None:
        gradient = hu_gradient(volume, smooth)
    magnitude = np.sqrt(sum(g**2 for g in gradient))
    edges = (magnitude > 200) & (smooth > 150) & (smooth < 1500)
    where = np.argwhere(edges)
    if len(where) > max_points:
        where = where[np.random.default_rng(seed).choice(len(where), max_points, replace=False)]
    points = grid.index_to_lps(volume.geometry, where)
    g_kji = np.stack([g[tuple(where.T)] for g in gradient], axis=1)
    g_lps = g_kji[:, ::-1] @ np.asarray(volume.geometry.direction).T
    g_lps /= np.maximum(np.linalg.norm(g_lps, axis=1, keepdims=True), 1e-9)
    return points, g_lps


def tube_direction(points: np.ndarray, normals: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """Axis direction (unit, z >= 0) voted by pairs of edge points, and the vote contrast."""
    if len(points) < 100:
        return np.array([0.0, 0.0, 1.0]), 0.0
    rng = np.random.default_rng(seed)
    if len(points) > 25000:
        keep = rng.choice(len(points), 25000, replace=False)
        points, normals = points[keep], normals[keep]
    tree = cKDTree(points)
    _, neighbours = tree.query(points, k=64, distance_upper_bound=30.0)
    partner = neighbours[np.arange(len(points))[:, None], rng.integers(16, 64, size=(len(points), 6))]
    valid = partner < len(points)
    first = np.repeat(np.arange(len(points))[:, None], 6, axis=1)[valid]
    second = partner[valid]
    axis = np.cross(normals[first], normals[second])
    norm = np.linalg.norm(axis, axis=1)
    axis = axis[norm > 0.5] / norm[norm > 0.5, None]
    axis[axis[:, 2] < 0] *= -1
    bins, neighbour_lists = _hemisphere_bins()
    _, nearest = cKDTree(bins).query(axis)
    counts = np.bincount(nearest, minlength=len(bins)).astype(float)
    smoothed = np.array([counts[n].sum() for n in neighbour_lists])
    best = int(np.argmax(smoothed))
    close = axis @ bins[best] > np.cos(np.radians(6))
    direction = axis[close].mean(axis=0) if close.any() else bins[best]
    direction /= np.linalg.norm(direction)
    return direction, float(smoothed[best] / max(smoothed.mean(), 1e-9))


def _perpendicular_basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([1.0, 0.0, 0.0]) if abs(direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    first = np.cross(direction, helper)
    first /= np.linalg.norm(first)
    return first, np.cross(direction, first)


SECOND_SHAFT_MIN_DISTANCE_MM = 80.0
"""A second shaft's axis passes at least this far (mm) from the first's middle: the other thigh."""
SECOND_SHAFT_MAX_ANGLE_DEG = 40.0
"""The two femoral shafts of one patient are within this angle (degrees) of each other."""
CLEARED_MARGIN_MM = 20.0
"""Edges within the first shaft's radius plus this (mm) of its axis are removed before looking again."""


def find_shaft(volume: Volume, smooth: np.ndarray) -> Shaft | None:
    """The femoral shaft as a :class:`Shaft`, or None when no straight tube is in view."""
    return _shaft_from_edges(*bone_edges(volume, smooth))


def find_shafts(
    volume: Volume, smooth: np.ndarray, max_count: int = 2, gradient: np.ndarray | None = None
) -> list[Shaft]:
    """Up to ``max_count`` femoral shafts, the clearest first (see the module docstring)."""
    points, normals = bone_edges(volume, smooth, gradient=gradient)
    shafts: list[Shaft] = []
    while len(shafts) < max_count:
        shaft = _shaft_from_edges(points, normals)
        if shaft is None:
            break
        if shafts:
            first = shafts[0]
            middle = first.at((first.t_min + first.t_max) / 2)
            angle = np.degrees(np.arccos(min(abs(float(shaft.direction @ first.direction)), 1.0)))
            if shaft.distance_to_axis(middle) < SECOND_SHAFT_MIN_DISTANCE_MM or angle > SECOND_SHAFT_MAX_ANGLE_DEG:
                break
        shafts.append(shaft)
        keep = shaft.distance_to_axis(points) > shaft.radius_mm + CLEARED_MARGIN_MM
        points, normals = points[keep], normals[keep]
    return shafts


def _shaft_from_edges(points: np.ndarray, normals: np.ndarray) -> Shaft | None:
    """The clearest straight tube among bone edge points (LPS mm) and their unit normals, or None."""
    direction, contrast = tube_direction(points, normals)
    if contrast < MIN_DIRECTION_CONTRAST:
        return None
    u, w = _perpendicular_basis(direction)
    side_on = np.abs(normals @ direction) < 0.4
    plane = np.stack([points @ u, points @ w], axis=1)[side_on]
    plane_normals = np.stack([normals @ u, normals @ w], axis=1)[side_on]
    plane_normals /= np.maximum(np.linalg.norm(plane_normals, axis=1, keepdims=True), 1e-9)
    cell = 1.5
    low = plane.min(axis=0) - SHAFT_RADIUS_RANGE_MM[1]
    shape = np.ceil((plane.max(axis=0) + SHAFT_RADIUS_RANGE_MM[1] - low) / cell).astype(int) + 1
    votes = np.zeros(shape, np.float32)
    for radius in np.arange(*SHAFT_RADIUS_RANGE_MM, 1.0):
        cells = np.round((plane + radius * plane_normals - low) / cell).astype(int)
        np.add.at(votes, tuple(cells.T), 1.0)
    votes = ndimage.gaussian_filter(votes, 1.0)
    peak = np.array(np.unravel_index(np.argmax(votes), votes.shape)) * cell + low
    distance = np.linalg.norm(plane - peak, axis=1)
    pointing_in = np.einsum("ij,ij->i", plane_normals, peak - plane) > 0.5 * np.maximum(distance, 1e-9)
    ring = pointing_in & (distance > SHAFT_RADIUS_RANGE_MM[0]) & (distance < SHAFT_RADIUS_RANGE_MM[1])
    if ring.sum() < 50:
        return None
    radius = float(np.median(distance[ring]))
    on_tube = pointing_in & (np.abs(distance - radius) < 2.5)
    along = (points[side_on] @ direction)[on_tube]
    # the tube's extent: the longest run of positions without a gap over 10 mm
    along = np.sort(along)
    gaps = np.nonzero(np.diff(along) > 10.0)[0]
    starts = np.concatenate([[0], gaps + 1])
    ends = np.concatenate([gaps, [len(along) - 1]])
    longest = int(np.argmax(along[ends] - along[starts]))
    t_min, t_max = float(along[starts[longest]]), float(along[ends[longest]])
    if t_max - t_min < MIN_SHAFT_LENGTH_MM:
        return None
    origin = peak[0] * u + peak[1] * w
    return Shaft(origin, direction, radius, t_min, t_max, contrast)
