"""Reference projectors: plain trilinear ray marching, for cross-checks and as the benchmark baseline.

Every ray is cut where it enters and leaves the voxel box, the chord is divided into ``samples`` equal
steps (at most ``step_mm`` long) and the volume is sampled trilinearly at the step midpoints (midpoint
rule). Deliberately simple: no chunking (memory grows with rays x samples), no gradients needed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import ProjectionGeometry
from .projector import line_integral_unit
from .rays import box_intersection, camera_rays


def _ray_segments(shape_ijk, ijk_to_lps: np.ndarray, geometry: ProjectionGeometry, dtype, device):
    """Index-space origins, directions, clipped entry/exit t and mm per unit t of every detector ray."""
    origins_cam, directions_cam = camera_rays(geometry, dtype, device)
    lps_from_camera = torch.as_tensor(geometry.lps_from_camera, dtype=dtype, device=device)
    ijk_from_camera = torch.as_tensor(np.linalg.inv(ijk_to_lps), dtype=dtype, device=device) @ lps_from_camera
    origins = origins_cam @ ijk_from_camera[:3, :3].T + ijk_from_camera[:3, 3]
    directions = directions_cam @ ijk_from_camera[:3, :3].T
    mm_per_t = torch.linalg.vector_norm(directions_cam @ lps_from_camera[:3, :3].T, dim=-1)
    low = torch.full((3,), -0.5, dtype=dtype, device=device)
    high = torch.as_tensor(shape_ijk, dtype=dtype, device=device) - 0.5
    entry, leave = box_intersection(origins, directions, low, high)
    if not geometry.parallel:
        entry, leave = torch.clamp(entry, min=0.0), torch.clamp(leave, max=1.0)
    leave = torch.maximum(leave, entry)
    return origins, directions, entry, leave, mm_per_t


@torch.no_grad()
def reference_project(
    values: np.ndarray,
    ijk_to_lps: np.ndarray,
    geometry: ProjectionGeometry,
    *,
    unit: str = "mg/cm3",
    step_mm: float | None = None,
    device="cpu",
) -> np.ndarray:
    """Line integrals (C, rows, cols) of ``values`` (K, J, I) or (C, K, J, I) by trilinear ray marching.

    step_mm: largest sampling step along a ray (default: half the smallest voxel spacing).
    """
    volume = torch.as_tensor(np.asarray(values, dtype=np.float32), device=device)
    if volume.ndim == 3:
        volume = volume.unsqueeze(0)
    k, j, i = volume.shape[1:]
    spacing = np.linalg.norm(np.asarray(ijk_to_lps)[:3, :3], axis=0)
    step_mm = float(step_mm or spacing.min() / 2.0)
    origins, directions, entry, leave, mm_per_t = _ray_segments((i, j, k), ijk_to_lps, geometry, torch.float32, device)
    chord_mm = (leave - entry) * mm_per_t
    samples = max(1, int(math.ceil(float(chord_mm.max()) / step_mm)))
    fractions = (torch.arange(samples, dtype=torch.float32, device=device) + 0.5) / samples
    t = entry.unsqueeze(0) + fractions.unsqueeze(1) * (leave - entry).unsqueeze(0)  # (samples, rays)
    points = origins.unsqueeze(0) + t.unsqueeze(-1) * directions.unsqueeze(0)  # (samples, rays, 3)
    sizes = torch.as_tensor([i, j, k], dtype=torch.float32, device=device)
    grid = (points * (2.0 / (sizes - 1.0)) - 1.0).view(1, samples, -1, 1, 3)
    sampled = F.grid_sample(volume.unsqueeze(0), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sums = sampled[0, :, :, :, 0].sum(dim=1)  # (C, rays)
    image = sums * (chord_mm / samples).unsqueeze(0) * line_integral_unit(unit).scale
    return image.reshape(volume.shape[0], *geometry.shape).cpu().numpy()


def scipy_reference_project(
    values: np.ndarray,
    ijk_to_lps: np.ndarray,
    geometry: ProjectionGeometry,
    *,
    unit: str = "mg/cm3",
    step_mm: float | None = None,
) -> np.ndarray:
    """Same as :func:`reference_project` with ``scipy.ndimage.map_coordinates`` (order 1) on one channel."""
    from scipy.ndimage import map_coordinates

    values = np.asarray(values, dtype=np.float32)
    k, j, i = values.shape
    spacing = np.linalg.norm(np.asarray(ijk_to_lps)[:3, :3], axis=0)
    step_mm = float(step_mm or spacing.min() / 2.0)
    origins, directions, entry, leave, mm_per_t = (
        t.numpy() for t in _ray_segments((i, j, k), ijk_to_lps, geometry, torch.float64, "cpu")
    )
    chord_mm = (leave - entry) * mm_per_t
    samples = max(1, int(math.ceil(float(chord_mm.max()) / step_mm)))
    sums = np.zeros(origins.shape[0])
    for index in range(samples):
        t = entry + (index + 0.5) / samples * (leave - entry)
        points = origins + t[:, None] * directions
        sums += map_coordinates(values, [points[:, 2], points[:, 1], points[:, 0]], order=1, mode="constant", cval=0.0)
    image = sums * chord_mm / samples * line_integral_unit(unit).scale
    return image.reshape(1, *geometry.shape).astype(np.float32)
