"""Cross-sections of a binary mask on planes in LPS mm: area, centroid and radial extent.

Used to follow the femoral neck and shaft: a plane is given by a point and a unit normal, and the
section is sampled on a square grid of ``pixel_mm`` pixels (nearest voxel), so the results do not
depend on how the CT was stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..io.volume import VolumeGeometry
from . import grid


def plane_basis(normal: np.ndarray, hint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane perpendicular to ``normal`` (the first along ``hint`` if given)."""
    normal = np.asarray(normal, float) / np.linalg.norm(normal)
    if hint is None or np.linalg.norm(np.cross(normal, hint)) < 1e-6:
        hint = np.array([1.0, 0.0, 0.0]) if abs(normal[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    first = np.asarray(hint, float) - (np.asarray(hint, float) @ normal) * normal
    first /= np.linalg.norm(first)
    return first, np.cross(normal, first)


@dataclass
class Section:
    """The connected piece of a mask's section that holds (or is nearest to) the plane's point."""

    area_mm2: float
    centroid_lps: np.ndarray
    found: bool
    clipped: bool = False
    """True when the piece reaches the edge of the field of view (its true area is unknown)."""


def section(
    mask: np.ndarray,
    geometry: VolumeGeometry,
    point_lps: np.ndarray,
    normal: np.ndarray,
    half_size_mm: float = 45.0,
    pixel_mm: float = 0.5,
) -> Section:
    """Area (mm2) and centroid (LPS mm) of the mask's section piece at ``point_lps`` on the plane."""
    first, second = plane_basis(normal)
    steps = np.arange(-half_size_mm, half_size_mm + pixel_mm / 2, pixel_mm)
    a, b = np.meshgrid(steps, steps, indexing="ij")
    points = point_lps + a[..., None] * first + b[..., None] * second
    values = grid.sample(np.asarray(mask, np.float32), geometry, points.reshape(-1, 3), order=0, outside=0.0)
    image = ndimage.binary_fill_holes(values.reshape(a.shape) > 0.5)
    pieces, count = ndimage.label(image)
    if count == 0:
        return Section(0.0, np.asarray(point_lps, float), False)
    middle = len(steps) // 2
    piece = pieces[middle, middle]
    if piece == 0:
        distance = ndimage.distance_transform_edt(pieces == 0, return_distances=False, return_indices=True)
        piece = pieces[tuple(index[middle, middle] for index in distance)]
    chosen = pieces == piece
    centroid = points[chosen].mean(axis=0)
    near = ndimage.binary_dilation(chosen, iterations=2)  # the piece and its rim: out of view there = clipped
    clipped = not bool(np.all(grid.inside_grid(mask.shape, geometry, points[near])))
    return Section(float(chosen.sum() * pixel_mm**2), centroid, True, clipped)


def radial_extent(
    mask: np.ndarray,
    geometry: VolumeGeometry,
    start_lps: np.ndarray,
    directions: np.ndarray,
    max_mm: float = 80.0,
    step_mm: float = 0.5,
    max_gap_mm: float = 4.0,
) -> np.ndarray:
    """Distance (mm) from ``start_lps`` along each direction to the mask's outer surface (0 if it starts outside).

    The surface is where the ray leaves the mask for good: gaps shorter than ``max_gap_mm`` (holes in the
    marrow, a thin unfilled cortex) are stepped over, longer ones end the search.
    """
    distances = np.arange(0.0, max_mm + step_mm / 2, step_mm)
    points = start_lps[None, None, :] + directions[:, None, :] * distances[None, :, None]
    values = grid.sample(np.asarray(mask, np.float32), geometry, points.reshape(-1, 3), order=0, outside=0.0)
    inside = values.reshape(len(directions), len(distances)) > 0.5
    gap = max(1, int(round(max_gap_mm / step_mm)))
    # a sample ends the search when it and the next ``gap`` samples are all outside
    outside_run = ndimage.minimum_filter1d(
        (~inside).astype(np.uint8), size=gap, axis=1, origin=-(gap // 2), mode="constant", cval=1
    ).astype(bool)
    ends = np.where(outside_run.any(axis=1), np.argmax(outside_run, axis=1), len(distances) - 1)
    return np.where(inside[:, 0], distances[ends], 0.0)
