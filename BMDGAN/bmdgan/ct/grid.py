"""Voxel grid helpers: LPS mm <-> voxel index, interpolation at LPS points, balls in mm.

Arrays are ``[k, j, i]`` as everywhere in the package; the functions here take and return LPS points
as ``(n, 3)`` arrays in mm and hide the index order.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..io.volume import VolumeGeometry


def index_to_lps(geometry: VolumeGeometry, kji: np.ndarray) -> np.ndarray:
    """LPS mm of voxel positions given as ``(n, 3)`` ``(k, j, i)`` indices (integers or fractional)."""
    kji = np.asarray(kji, dtype=float).reshape(-1, 3)
    ijk = kji[:, ::-1]
    matrix = geometry.ijk_to_lps()
    return ijk @ matrix[:3, :3].T + matrix[:3, 3]


def lps_to_index(geometry: VolumeGeometry, points_lps: np.ndarray) -> np.ndarray:
    """Fractional ``(k, j, i)`` indices of LPS points (mm), shape ``(n, 3)``."""
    points = np.asarray(points_lps, dtype=float).reshape(-1, 3)
    matrix = geometry.ijk_to_lps()
    inverse = np.linalg.inv(matrix[:3, :3])
    ijk = (points - matrix[:3, 3]) @ inverse.T
    return ijk[:, ::-1]


def sample(
    array: np.ndarray, geometry: VolumeGeometry, points_lps: np.ndarray, order: int = 1, outside: float = np.nan
) -> np.ndarray:
    """Interpolate ``array`` at LPS points (mm); points outside the grid get ``outside``."""
    points = np.asarray(points_lps, dtype=float)
    flat = points.reshape(-1, 3)
    kji = lps_to_index(geometry, flat)
    values = ndimage.map_coordinates(np.asarray(array, dtype=np.float32), kji.T, order=order, mode="nearest")
    inside = np.all((kji >= -0.5) & (kji <= np.array(array.shape) - 0.5), axis=1)
    values = np.where(inside, values, outside)
    return values.reshape(points.shape[:-1])


def inside_grid(
    shape_kji: tuple[int, int, int], geometry: VolumeGeometry, points_lps: np.ndarray, margin_voxels: float = 0.5
) -> np.ndarray:
    """True for LPS points that lie within the voxel grid (``margin_voxels`` inside its border)."""
    kji = lps_to_index(geometry, np.asarray(points_lps).reshape(-1, 3))
    low = margin_voxels - 0.5
    high = np.array(shape_kji) - 0.5 - margin_voxels
    return np.all((kji >= low) & (kji <= high), axis=1).reshape(np.asarray(points_lps).shape[:-1])


def voxel_points_lps(mask: np.ndarray, geometry: VolumeGeometry) -> np.ndarray:
    """LPS mm of the centres of the voxels set in ``mask``, shape ``(n, 3)``."""
    return index_to_lps(geometry, np.argwhere(mask))


def spacing_kji(geometry: VolumeGeometry) -> np.ndarray:
    """Voxel size in mm along the array axes ``(k, j, i)``."""
    return np.asarray(geometry.spacing_mm, dtype=float)[::-1]


def ball(radius_mm: float, geometry: VolumeGeometry) -> np.ndarray:
    """Boolean structuring element: the voxels whose centres lie within ``radius_mm`` of the centre voxel."""
    spacing = spacing_kji(geometry)
    half = np.floor(radius_mm / spacing).astype(int)
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing)]
    dk, dj, di = np.meshgrid(*axes, indexing="ij")
    return dk**2 + dj**2 + di**2 <= radius_mm**2 + 1e-9


def distance_from_points_mm(shape_kji, geometry: VolumeGeometry, centre_lps: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel centre from one LPS point, array ``[k, j, i]``."""
    k, j, i = np.indices(shape_kji, dtype=np.float32)
    matrix = geometry.ijk_to_lps().astype(np.float32)
    offset = matrix[:3, 3] - np.asarray(centre_lps, dtype=np.float32)
    total = np.zeros(shape_kji, dtype=np.float32)
    for row in range(3):
        component = matrix[row, 0] * i + matrix[row, 1] * j + matrix[row, 2] * k + offset[row]
        total += component * component
    return np.sqrt(total)


def voxel_lps_coordinates(shape_kji, geometry: VolumeGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS x, y, z (mm) of every voxel centre, three float32 arrays ``[k, j, i]``."""
    k, j, i = np.indices(shape_kji, dtype=np.float32)
    matrix = geometry.ijk_to_lps().astype(np.float32)
    return tuple(matrix[row, 0] * i + matrix[row, 1] * j + matrix[row, 2] * k + matrix[row, 3] for row in range(3))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected part of a boolean mask (empty mask stays empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes_per_slice(mask: np.ndarray, axis: int = 0) -> np.ndarray:
    """Fill 2D holes slice by slice along ``axis`` (marrow cavities enclosed by cortex in that plane).

    All slices at once: the background is labelled with 4-connectivity inside each slice only, and every
    background piece that does not touch the slice's border is a hole.
    """
    mask = np.asarray(mask, bool)
    structure = np.zeros((3, 3, 3), bool)
    plane = [slice(None)] * 3
    plane[axis] = 1
    structure[tuple(plane)] = ndimage.generate_binary_structure(2, 1)
    background, _ = ndimage.label(~mask, structure)
    border = np.zeros(mask.shape, bool)
    for other in (a for a in range(3) if a != axis):
        index = [slice(None)] * 3
        index[other] = 0
        border[tuple(index)] = True
        index[other] = -1
        border[tuple(index)] = True
    outside = np.unique(background[border & ~mask])
    return mask | ~np.isin(background, outside) & (background > 0)


def box_around(shape_kji, geometry: VolumeGeometry, points_lps: np.ndarray, margin_mm: float) -> tuple[slice, ...]:
    """Array slices ``[k, j, i]`` of the box holding the LPS points (mm) plus ``margin_mm``, clipped to the grid."""
    corners = []
    for point in np.asarray(points_lps, float).reshape(-1, 3):
        for offset in np.array(np.meshgrid(*[[-margin_mm, margin_mm]] * 3)).T.reshape(-1, 3):
            corners.append(point + offset)
    kji = lps_to_index(geometry, np.array(corners))
    low = np.clip(np.floor(kji.min(axis=0)).astype(int), 0, np.array(shape_kji))
    high = np.clip(np.ceil(kji.max(axis=0)).astype(int) + 1, 0, np.array(shape_kji))
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))


def crop(volume, box: tuple[slice, ...]):
    """The part of a :class:`Volume` inside ``box`` (array slices), with its geometry moved to match."""
    from dataclasses import replace

    start = np.array([[s.start for s in box]], float)
    origin = index_to_lps(volume.geometry, start)[0]
    geometry = VolumeGeometry(volume.geometry.spacing_mm, tuple(origin), volume.geometry.direction)
    return replace(volume, array=volume.array[box], geometry=geometry)


def _bounding_box(mask: np.ndarray, margin: np.ndarray) -> tuple[slice, ...] | None:
    """Array slices around the set voxels of ``mask``, widened by ``margin`` voxels per axis (None if empty)."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        occupied = np.nonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))[0]
        box.append(
            slice(
                max(int(occupied[0]) - int(margin[axis]), 0),
                min(int(occupied[-1]) + int(margin[axis]) + 1, mask.shape[axis]),
            )
        )
    return tuple(box)


def mask_box(mask: np.ndarray, margin_mm: float, geometry: VolumeGeometry) -> tuple[slice, ...] | None:
    """Array slices ``[k, j, i]`` around the set voxels of ``mask`` plus ``margin_mm``, clipped to the grid
    (None if the mask is empty): work on the box, not the whole scan."""
    return _bounding_box(np.asarray(mask, bool), np.ceil(margin_mm / spacing_kji(geometry)))


def dilate_mm(mask: np.ndarray, radius_mm: float, geometry: VolumeGeometry) -> np.ndarray:
    """Dilation by a ball of ``radius_mm`` (exact in mm on anisotropic grids, via a distance transform)."""
    mask = np.asarray(mask, bool)
    spacing = spacing_kji(geometry)
    box = _bounding_box(mask, np.ceil(radius_mm / spacing) + 1)
    out = np.zeros_like(mask)
    if box is None:
        return out
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing) <= radius_mm
    return out


def erode_mm(mask: np.ndarray, radius_mm: float, geometry: VolumeGeometry) -> np.ndarray:
    """Erosion by a ball of ``radius_mm`` (voxels farther than that from the outside; the grid's edge does
    not count as outside: what touches it may continue beyond the scan)."""
    mask = np.asarray(mask, bool)
    box = _bounding_box(mask, np.ones(3))
    out = np.zeros_like(mask)
    if box is None:
        return out
    out[box] = ndimage.distance_transform_edt(mask[box], sampling=spacing_kji(geometry)) > radius_mm
    return out


def open_mm(mask: np.ndarray, radius_mm: float, geometry: VolumeGeometry) -> np.ndarray:
    """Opening (erosion then dilation) by a ball of ``radius_mm``."""
    return dilate_mm(erode_mm(mask, radius_mm, geometry), radius_mm, geometry)


def close_mm(mask: np.ndarray, radius_mm: float, geometry: VolumeGeometry) -> np.ndarray:
    """Closing (dilation then erosion) by a ball of ``radius_mm``; the grid edge counts as inside."""
    padded = np.pad(np.asarray(mask, bool), 1, mode="edge")
    closed = ~dilate_mm(~dilate_mm(padded, radius_mm, geometry), radius_mm, geometry)
    return closed[1:-1, 1:-1, 1:-1]


def coarsen_in_plane(volume, factors: tuple[int, int]):
    """A :class:`Volume` whose slices are block means over ``factors`` (j, i) voxels (cropped to whole blocks),
    with its geometry: the same slices on a coarser in-plane grid, for work that needs no fine detail."""
    from dataclasses import replace

    fj, fi = factors
    k, j, i = volume.array.shape
    cropped = volume.array[:, : j - j % fj, : i - i % fi]
    array = cropped.reshape(k, j // fj, fj, i // fi, fi).mean(axis=(2, 4), dtype=np.float32)
    origin = index_to_lps(volume.geometry, np.array([[0.0, (fj - 1) / 2, (fi - 1) / 2]]))[0]
    spacing = (volume.geometry.spacing_mm[0] * fi, volume.geometry.spacing_mm[1] * fj, volume.geometry.spacing_mm[2])
    return replace(volume, array=array, geometry=VolumeGeometry(spacing, tuple(origin), volume.geometry.direction))


def refine_in_plane(mask: np.ndarray, factors: tuple[int, int], shape_kji) -> np.ndarray:
    """A mask of :func:`coarsen_in_plane`'s grid back on the full grid ``shape_kji`` (each block's value; the
    rows and columns cropped off repeat the last block)."""
    fj, fi = factors
    full = np.repeat(np.repeat(np.asarray(mask), fj, axis=1), fi, axis=2)
    pad = [(0, 0), (0, shape_kji[1] - full.shape[1]), (0, shape_kji[2] - full.shape[2])]
    return np.pad(full, pad, mode="edge")
