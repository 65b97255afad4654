"""Mean CT number (HU) of calibration-phantom rods: given as points, as a label map, or found automatically.

Phantom rods are straight cylinders parallel to the scanner axis (the slice normal), placed under or
beside the patient, outside the body. The automatic search works on the median image along the slice
axis (a rod is the same in every slice, anatomy is not; noise drops by the square root of the slice
count) and keeps compact round spots outside the body that stand out from their surroundings by more
than ``ROD_MIN_CONTRAST_SIGMAS`` times the noise. When fewer rods are found than expected, it says so:
a rod as dense as the phantom's body (a 0 mg/cm3 rod in water-equivalent resin) cannot be seen, and
its position must then be given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..io.volume import Volume
from . import grid
from .calibration import CalibrationError

ROD_RADIUS_RANGE_MM = (3.0, 20.0)
"""Rod radius range (mm) accepted by the automatic search."""
ROD_MIN_CONTRAST_SIGMAS = 6.0
"""A rod differs from its surroundings by at least this many noise standard deviations."""
ROD_MEASURE_RADIUS_MM = 4.0
"""Points: CT numbers are averaged within this radius (mm) of the rod axis..."""
ROD_MEASURE_LENGTH_MM = 20.0
"""...over this length (mm) along the slice axis."""


@dataclass
class Rod:
    """One rod: its centre (LPS mm), mean and standard deviation of CT number (HU), voxels used."""

    centre_lps: np.ndarray
    mean_hu: float
    std_hu: float
    voxels: int


def _slice_axis(geometry) -> np.ndarray:
    """Unit LPS vector of the array's k axis (the scanner axis for axial CT)."""
    return np.asarray(geometry.direction)[:, 2]


def measure_rods_at_points(
    ct: Volume,
    points_lps: np.ndarray,
    radius_mm: float = ROD_MEASURE_RADIUS_MM,
    length_mm: float = ROD_MEASURE_LENGTH_MM,
) -> list[Rod]:
    """Mean CT number in a cylinder (radius, length in mm, along the slice axis) around each LPS point."""
    axis = _slice_axis(ct.geometry)
    x, y, z = grid.voxel_lps_coordinates(ct.array.shape, ct.geometry)
    rods = []
    for point in np.asarray(points_lps, float).reshape(-1, 3):
        if not grid.inside_grid(ct.array.shape, ct.geometry, point[None])[0]:
            raise CalibrationError(
                None,
                f"rod point {np.round(point, 1).tolist()} (LPS mm) is outside the scan",
                "place the rod points on the rods in this CT",
            )
        dx, dy, dz = x - point[0], y - point[1], z - point[2]
        along = dx * axis[0] + dy * axis[1] + dz * axis[2]
        radial2 = dx * dx + dy * dy + dz * dz - along * along
        inside = (radial2 <= radius_mm**2) & (np.abs(along) <= length_mm / 2)
        if inside.sum() < 5:
            raise CalibrationError(
                None,
                f"fewer than 5 voxels around rod point {np.round(point, 1).tolist()}",
                "use a larger measuring radius or check the point",
            )
        values = ct.array[inside]
        rods.append(Rod(point, float(values.mean()), float(values.std()), int(inside.sum())))
    return rods


def measure_rods_in_labels(ct: Volume, labels: np.ndarray) -> list[Rod]:
    """Mean CT number in each labelled rod (labels 1..n, eroded by one voxel to leave the rod's edge out)."""
    if labels.shape != ct.array.shape:
        raise CalibrationError(
            None, "the rod label map is not on the CT's voxel grid", "export the rod labels from this CT"
        )
    rods = []
    for value in sorted(int(v) for v in np.unique(labels) if v > 0):
        mask = labels == value
        core = ndimage.binary_erosion(mask)
        use = core if core.sum() >= 5 else mask
        centre = grid.voxel_points_lps(use, ct.geometry).mean(axis=0)
        values = ct.array[use]
        rods.append(Rod(centre, float(values.mean()), float(values.std()), int(use.sum())))
    if not rods:
        raise CalibrationError(
            None, "the rod label map has no labelled voxels", "label each rod with its own value 1..n"
        )
    return rods


def _body_mask(median_image: np.ndarray) -> np.ndarray:
    """The patient's outline in the median image: the largest object above -300 HU, holes filled."""
    body = median_image > -300
    body = ndimage.binary_opening(body, iterations=2)
    labels, count = ndimage.label(body)
    if count == 0:
        return body
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == np.argmax(sizes))


def detect_rods(ct: Volume, count: int) -> list[Rod]:
    """Find ``count`` phantom rods automatically (see the module docstring); raises if not all are found."""
    pixel_mm = float(np.mean(ct.geometry.spacing_mm[:2]))
    median_image = np.median(ct.array, axis=0)
    spread = np.std(ct.array, axis=0)
    noise = (
        float(np.median(spread[(median_image > -200) & (median_image < 200)]))
        if np.any((median_image > -200) & (median_image < 200))
        else 20.0
    )
    noise_of_median = max(noise / np.sqrt(max(ct.array.shape[0], 1)) * 1.25, 2.0)
    body = _body_mask(median_image)
    background = ndimage.median_filter(median_image, size=int(round(2.5 * ROD_RADIUS_RANGE_MM[1] / pixel_mm)) | 1)
    contrast = median_image - background
    threshold = max(ROD_MIN_CONTRAST_SIGMAS * noise_of_median, 15.0)
    steady = spread < max(3.0 * noise, 30.0)  # the same along the scanner axis
    candidates = []
    for sign in (1.0, -1.0):
        spots = (sign * contrast > threshold) & steady & ~body & (median_image > -900)
        labels, found = ndimage.label(spots)
        for index in range(1, found + 1):
            spot = labels == index
            area_mm2 = spot.sum() * pixel_mm**2
            radius = np.sqrt(area_mm2 / np.pi)
            if not (ROD_RADIUS_RANGE_MM[0] <= radius <= ROD_RADIUS_RANGE_MM[1]):
                continue
            rows, cols = np.nonzero(spot)
            extent = max(np.ptp(rows), np.ptp(cols)) + 1
            roundness = area_mm2 / (np.pi * (extent * pixel_mm / 2) ** 2)
            if roundness < 0.6:
                continue
            core = ndimage.binary_erosion(spot, iterations=max(1, int(radius / pixel_mm / 3)))
            if core.sum() < 3:
                continue
            centre_kji = np.array([(ct.array.shape[0] - 1) / 2, rows.mean(), cols.mean()])
            centre = grid.index_to_lps(ct.geometry, centre_kji[None])[0]
            values = ct.array[:, core]
            candidates.append(Rod(centre, float(values.mean()), float(values.std()), int(values.size)))
    if len(candidates) < count:
        raise CalibrationError(
            ct.source or None,
            f"found {len(candidates)} of the {count} phantom rods outside the body",
            "give the rods as points (--rod-points) or as a label map (--rod-labels), "
            "or use the phantomless calibration",
        )
    if len(candidates) > count:
        # keep the rods most alike in size: a phantom's rods share one diameter
        sizes = np.array([rod.voxels for rod in candidates], float)
        typical = np.median(sizes)
        candidates = sorted(candidates, key=lambda rod: abs(np.log(rod.voxels / typical)))[:count]
    return candidates
