"""Analytic phantoms with exact line integrals, and a synthetic body CT: for tests and benchmarks.

Phantoms are voxelised with partial volumes (``supersample``^3 points per voxel), so a voxel on the
surface holds the fraction of it inside the object; the exact chord lengths (mm) of every detector ray
through the continuous object are given for the same geometry.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..io.volume import Volume, VolumeGeometry
from .geometry import ProjectionGeometry


def _lps_grid(shape_kji: tuple[int, int, int], geometry: VolumeGeometry, offset_ijk=(0.0, 0.0, 0.0)):
    """LPS coordinates (3 arrays broadcastable to shape_kji) of voxel centres shifted by ``offset_ijk``."""
    k, j, i = (np.arange(n, dtype=np.float64) for n in shape_kji)
    matrix = geometry.ijk_to_lps()
    ii, jj, kk = i[None, None, :] + offset_ijk[0], j[None, :, None] + offset_ijk[1], k[:, None, None] + offset_ijk[2]
    return tuple(matrix[row, 0] * ii + matrix[row, 1] * jj + matrix[row, 2] * kk + matrix[row, 3] for row in range(3))


def voxelise(
    inside: Callable, shape_kji: tuple[int, int, int], geometry: VolumeGeometry, supersample: int = 4
) -> np.ndarray:
    """Fraction (float32, [k, j, i]) of each voxel inside the object ``inside(x, y, z) -> bool`` (LPS mm)."""
    fraction = np.zeros(shape_kji, dtype=np.float32)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    for ok in offsets:
        for oj in offsets:
            for oi in offsets:
                fraction += inside(*_lps_grid(shape_kji, geometry, (oi, oj, ok)))
    return fraction / supersample**3


def sphere_phantom(
    shape_kji,
    spacing_mm,
    radius_mm: float,
    value: float,
    unit: str = "mg/cm3",
    centre_lps_mm=None,
    supersample: int = 4,
) -> tuple[Volume, np.ndarray]:
    """Uniform sphere (``value`` in ``unit``) centred in the grid (or at ``centre_lps_mm``): volume, centre."""
    geometry = VolumeGeometry(tuple(spacing_mm), (0.0, 0.0, 0.0))
    centre = np.asarray(
        centre_lps_mm if centre_lps_mm is not None else (np.array(shape_kji[::-1]) - 1) / 2.0 * np.asarray(spacing_mm),
        dtype=float,
    )

    def inside(x, y, z):
        return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius_mm**2

    return Volume(voxelise(inside, tuple(shape_kji), geometry, supersample) * np.float32(value), geometry, unit), centre


def cylinder_phantom(
    shape_kji, spacing_mm, radius_mm: float, length_mm: float, value: float, unit: str = "mg/cm3", supersample: int = 4
) -> tuple[Volume, np.ndarray, np.ndarray]:
    """Uniform cylinder along LPS x (left-right) centred in the grid: volume, centre, unit axis."""
    geometry = VolumeGeometry(tuple(spacing_mm), (0.0, 0.0, 0.0))
    centre = (np.array(shape_kji[::-1]) - 1) / 2.0 * np.asarray(spacing_mm, dtype=float)
    axis = np.array([1.0, 0.0, 0.0])

    def inside(x, y, z):
        radial = (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius_mm**2
        return radial & (np.abs(x - centre[0]) <= length_mm / 2)

    volume = Volume(voxelise(inside, tuple(shape_kji), geometry, supersample) * np.float32(value), geometry, unit)
    return volume, centre, axis


def _pixel_rays_lps(geometry: ProjectionGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Origins and unit directions (rows, cols, 3) in LPS mm of every detector ray."""
    x, y = geometry.pixel_camera_mm()
    grid_x, grid_y = np.meshgrid(x, y)
    sid = geometry.source_to_detector_mm
    if geometry.parallel:
        origins = np.stack([grid_x, grid_y, np.zeros_like(grid_x)], axis=-1)
        directions = np.broadcast_to(np.array([0.0, 0.0, 1.0]), origins.shape)
    else:
        origins = np.zeros(grid_x.shape + (3,))
        directions = np.stack([grid_x, grid_y, np.full_like(grid_x, sid)], axis=-1)
        directions = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    inverse = geometry.lps_from_camera
    return origins @ inverse[:3, :3].T + inverse[:3, 3], directions @ inverse[:3, :3].T


def sphere_chords_mm(geometry: ProjectionGeometry, centre_lps_mm, radius_mm: float) -> np.ndarray:
    """Exact chord length (rows, cols) in mm of each detector ray through the sphere."""
    origins, directions = _pixel_rays_lps(geometry)
    to_centre = np.asarray(centre_lps_mm, dtype=float) - origins
    along = np.sum(to_centre * directions, axis=-1)
    distance2 = np.sum(to_centre**2, axis=-1) - along**2
    return 2.0 * np.sqrt(np.clip(radius_mm**2 - distance2, 0.0, None))


def cylinder_chords_mm(
    geometry: ProjectionGeometry, centre_lps_mm, axis, radius_mm: float, length_mm: float
) -> np.ndarray:
    """Exact chord length (rows, cols) in mm of each detector ray through the finite cylinder."""
    origins, directions = _pixel_rays_lps(geometry)
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    relative = origins - np.asarray(centre_lps_mm, dtype=float)
    along_o, along_d = relative @ axis, directions @ axis
    radial_o = relative - along_o[..., None] * axis
    radial_d = directions - along_d[..., None] * axis
    a = np.sum(radial_d**2, axis=-1)
    b = 2.0 * np.sum(radial_o * radial_d, axis=-1)
    c = np.sum(radial_o**2, axis=-1) - radius_mm**2
    discriminant = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(np.clip(discriminant, 0.0, None))
        t0 = np.where(a > 1e-12, (-b - root) / (2 * a), np.where(c <= 0, -np.inf, np.inf))
        t1 = np.where(a > 1e-12, (-b + root) / (2 * a), np.where(c <= 0, np.inf, -np.inf))
        cap0 = (-length_mm / 2 - along_o) / along_d
        cap1 = (length_mm / 2 - along_o) / along_d
    inside_caps = np.abs(along_o) <= length_mm / 2
    s0 = np.where(np.abs(along_d) > 1e-12, np.minimum(cap0, cap1), np.where(inside_caps, -np.inf, np.inf))
    s1 = np.where(np.abs(along_d) > 1e-12, np.maximum(cap0, cap1), np.where(inside_caps, np.inf, -np.inf))
    start, stop = np.maximum(t0, s0), np.minimum(t1, s1)
    chord = np.where(discriminant > 0, stop - start, 0.0)
    return np.clip(chord, 0.0, None)


def gaussian_blob(
    shape_kji, spacing_mm, centre_lps_mm, sigma_mm: float, value: float = 1000.0, unit: str = "mg/cm3"
) -> Volume:
    """A smooth Gaussian blob (peak ``value``): a point-like marker with a sub-voxel centre."""
    geometry = VolumeGeometry(tuple(spacing_mm), (0.0, 0.0, 0.0))
    x, y, z = _lps_grid(tuple(shape_kji), geometry)
    c = np.asarray(centre_lps_mm, dtype=float)
    r2 = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2
    return Volume((value * np.exp(-r2 / (2 * sigma_mm**2))).astype(np.float32), geometry, unit)


BODY_LABELS = {"soft_tissue": 1, "pelvis": 2, "femur_left": 3, "femur_right": 4, "proximal_femur_left": 5}
"""Labels of :func:`synthetic_body_ct` (0 = air outside the body)."""


def synthetic_body_ct(shape_kji, spacing_mm, seed: int = 0) -> tuple[Volume, np.ndarray]:
    """A pelvis-like CT in HU (elliptic body with fat layer, pelvis ring, two femora with heads and
    textured trabecular bone) and its label map (:data:`BODY_LABELS`). Grid centred on the LPS origin."""
    rng = np.random.default_rng(seed)
    shape_kji = tuple(int(n) for n in shape_kji)
    spacing = np.asarray(spacing_mm, dtype=float)
    extent = (np.array(shape_kji[::-1]) - 1) * spacing
    geometry = VolumeGeometry(tuple(spacing), tuple(-extent / 2.0))
    x, y, z = (a.astype(np.float32) for a in _lps_grid(shape_kji, geometry))
    half_width, half_depth, half_height = extent / 2.0
    body = (x / (0.9 * half_width)) ** 2 + (y / (0.8 * half_depth)) ** 2 <= 1.0
    inner = (x / (0.8 * half_width)) ** 2 + (y / (0.7 * half_depth)) ** 2 <= 1.0
    hu = np.full(shape_kji, -1000.0, dtype=np.float32)
    labels = np.zeros(shape_kji, dtype=np.int16)
    body_3d = np.broadcast_to(body, shape_kji)
    hu[body_3d] = -100.0
    hu[np.broadcast_to(inner, shape_kji)] = 40.0
    labels[body_3d] = BODY_LABELS["soft_tissue"]
    ring = np.abs(np.sqrt((x / (0.55 * half_width)) ** 2 + (y / (0.45 * half_depth)) ** 2) - 1.0) < 0.08
    pelvis = np.broadcast_to(ring, shape_kji) & (z > 0.0)
    hu[pelvis] = 700.0
    labels[pelvis] = BODY_LABELS["pelvis"]
    for side, name in ((1.0, "femur_left"), (-1.0, "femur_right")):
        cx = side * 0.45 * half_width
        shaft = ((x - cx) ** 2 + y**2 <= (0.08 * half_width) ** 2) & (z <= 0.0)
        head = (x - cx) ** 2 + y**2 + (z - 0.05 * half_height) ** 2 <= (0.12 * half_width) ** 2
        femur = np.broadcast_to(shaft, shape_kji) | head
        hu[femur] = 400.0
        labels[femur] = BODY_LABELS[name]
        if name == "femur_left":
            proximal = femur & (z > -0.3 * half_height)
            labels[proximal] = BODY_LABELS["proximal_femur_left"]
    bone = labels >= BODY_LABELS["pelvis"]
    hu[bone] += rng.normal(0.0, 80.0, size=int(bone.sum())).astype(np.float32)
    hu[body_3d] += rng.normal(0.0, 10.0, size=int(body_3d.sum())).astype(np.float32)
    return Volume(hu, geometry, "HU", source="synthetic body"), labels
