"""Regions of the radiograph that registration looks at: the exposed field and the bone's window.

Exposed field: a collimated border (the shutters of the X-ray tube) is uniform and its straight edge is
the strongest gradient of the image, but the CT has nothing like it; left in, it pulls the registration.
Rows and columns at the image border that are (almost) uniform (collimation, or an empty background that
holds nothing to register anyway) are excluded, with a safety margin for the blurred shutter edge.
Rectangular collimation only: give an ROI mask for anything else.

CT border: where the CT's field of view ends, its DRR has edges that no radiograph has (see
:func:`away_from_ct_border`).

Bone window: the detector rectangle around the projected bone (plus a margin in mm). Rendering only this
window at the fine levels saves most of the cost and concentrates the similarity on the anatomy of interest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..projection.geometry import ProjectionGeometry, volume_corners_lps

UNIFORM_ROW_FRACTION = 0.02
"""A row/column whose standard deviation is below this fraction of the image's 1-99 percentile range is uniform."""
SHUTTER_MARGIN_PX = 3
"""Pixels removed inside a detected collimation edge (penumbra and processing halo of the shutter)."""


@dataclass(frozen=True)
class Field:
    """Exposed field of a radiograph: bool mask (rows, cols) and the collimated fraction removed."""

    mask: np.ndarray
    collimated_fraction: float
    box: tuple[int, int, int, int]  # row0, row1, col0, col1 (end exclusive)


def exposed_field(pixels: np.ndarray) -> Field:
    """The rectangle inside any uniform (collimated) border of the image (see module docstring)."""
    image = np.asarray(pixels, dtype=np.float64)
    low, high = np.percentile(image, [1.0, 99.0])
    tolerance = UNIFORM_ROW_FRACTION * max(high - low, 1e-12)
    busy_rows = np.nonzero(image.std(axis=1) > tolerance)[0]
    busy_cols = np.nonzero(image.std(axis=0) > tolerance)[0]
    rows, cols = image.shape
    if busy_rows.size == 0 or busy_cols.size == 0:
        return Field(np.zeros(image.shape, dtype=bool), 1.0, (0, 0, 0, 0))
    row0, row1 = int(busy_rows[0]), int(busy_rows[-1]) + 1
    col0, col1 = int(busy_cols[0]), int(busy_cols[-1]) + 1
    # shrink only the sides where a border was found
    row0 = row0 + SHUTTER_MARGIN_PX if row0 > 0 else 0
    col0 = col0 + SHUTTER_MARGIN_PX if col0 > 0 else 0
    row1 = row1 - SHUTTER_MARGIN_PX if row1 < rows else rows
    col1 = col1 - SHUTTER_MARGIN_PX if col1 < cols else cols
    mask = np.zeros(image.shape, dtype=bool)
    if row1 > row0 and col1 > col0:
        mask[row0:row1, col0:col1] = True
    return Field(mask, 1.0 - float(mask.mean()), (row0, row1, col0, col1))


def projected_box(
    geometry: ProjectionGeometry, points_lps_mm: np.ndarray, margin_mm: float
) -> tuple[int, int, int, int]:
    """Pixel box (row0, row1, col0, col1), end exclusive, of the projected points plus ``margin_mm`` (at the
    detector), not clipped: it may reach beyond the detector."""
    projected = geometry.project_points(points_lps_mm)
    margin_cols = margin_mm / geometry.column_spacing_mm
    margin_rows = margin_mm / geometry.row_spacing_mm
    col0 = int(np.floor(projected[:, 0].min() - margin_cols))
    col1 = int(np.ceil(projected[:, 0].max() + margin_cols)) + 1
    row0 = int(np.floor(projected[:, 1].min() - margin_rows))
    row1 = int(np.ceil(projected[:, 1].max() + margin_rows)) + 1
    return row0, row1, col0, col1


def bone_window(
    geometry: ProjectionGeometry, points_lps_mm: np.ndarray, margin_mm: float
) -> tuple[int, int, int, int] | None:
    """:func:`projected_box` clipped to the detector; None when less than 8x8 pixels of it remain."""
    row0, row1, col0, col1 = projected_box(geometry, points_lps_mm, margin_mm)
    col0, row0 = max(col0, 0), max(row0, 0)
    col1, row1 = min(col1, geometry.detector_columns), min(row1, geometry.detector_rows)
    if col1 - col0 < 8 or row1 - row0 < 8:
        return None
    return row0, row1, col0, col1


def crop_geometry(geometry: ProjectionGeometry, box: tuple[int, int, int, int]) -> ProjectionGeometry:
    """The detector restricted to ``box`` = (row0, row1, col0, col1): same rays for the same pixels."""
    row0, row1, col0, col1 = box
    cu, cv = geometry.principal_point_px
    return replace(
        geometry, detector_columns=col1 - col0, detector_rows=row1 - row0, principal_point_px=(cu - col0, cv - row0)
    )


def inside_fraction(geometry: ProjectionGeometry, points_lps_mm: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of the points that project onto the detector (and onto ``mask`` when given)."""
    projected = geometry.project_points(points_lps_mm)
    column = np.rint(projected[:, 0]).astype(np.int64)
    row = np.rint(projected[:, 1]).astype(np.int64)
    inside = (column >= 0) & (column < geometry.detector_columns) & (row >= 0) & (row < geometry.detector_rows)
    if not geometry.parallel:
        inside &= geometry.to_camera(points_lps_mm)[:, 2] > 0
    if mask is not None:
        inside[inside] = np.asarray(mask, dtype=bool)[row[inside], column[inside]]
    return float(inside.mean()) if len(inside) else 0.0


def ct_silhouette(geometry: ProjectionGeometry, shape_ijk: tuple[int, int, int], ijk_to_lps: np.ndarray) -> np.ndarray:
    """Detector pixels (bool, rows x cols) whose ray crosses the CT's voxel box: the convex hull of the
    projected box corners (exact for a box in front of the source)."""
    from scipy.spatial import ConvexHull, QhullError

    corners = volume_corners_lps(shape_ijk, ijk_to_lps)
    rows, cols = geometry.shape
    if not geometry.parallel and np.any(geometry.to_camera(corners)[:, 2] <= 0):
        return np.ones((rows, cols), dtype=bool)  # the box reaches the source: every ray may cross it
    try:
        hull = ConvexHull(geometry.project_points(corners))
    except QhullError:
        return np.zeros((rows, cols), dtype=bool)
    column, row = np.meshgrid(np.arange(cols, dtype=float), np.arange(rows, dtype=float))
    pixels = np.stack([column.ravel(), row.ravel()], axis=1)
    inside = np.all(pixels @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9, axis=1)
    return inside.reshape(rows, cols)


def away_from_ct_border(
    geometry: ProjectionGeometry, shape_ijk: tuple[int, int, int], ijk_to_lps: np.ndarray, margin_mm: float
) -> np.ndarray:
    """Pixels inside the CT's silhouette and at least ``margin_mm`` (at the detector) from its edge.

    Why: where the CT's field of view ends, its DRR has a sharp edge (truncated body) that no radiograph
    has (the patient goes on). Registration must not fit these edges; the margin covers how far they can
    move while a level searches."""
    silhouette = ct_silhouette(geometry, shape_ijk, ijk_to_lps)
    if margin_mm <= 0 or not silhouette.any():
        return silhouette
    from scipy.ndimage import distance_transform_edt

    pitch = 0.5 * (geometry.column_spacing_mm + geometry.row_spacing_mm)
    pad = int(np.ceil(margin_mm / pitch)) + 1
    # a silhouette that runs off the image goes on beyond it: the image border is not the CT's border
    padded = np.pad(silhouette, pad, mode="edge")
    distance = distance_transform_edt(padded)[pad:-pad, pad:-pad]
    return distance * pitch > margin_mm
