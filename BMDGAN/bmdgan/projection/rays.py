"""Detector rays of a :class:`ProjectionGeometry` in the camera frame and in a volume's index space (torch)."""

from __future__ import annotations

import numpy as np
import torch

from .geometry import ProjectionGeometry


def camera_rays(geometry: ProjectionGeometry, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and directions (rows * columns, 3), camera mm, pixels in row-major order.

    Perspective: every ray starts at the source (origin) and ``origin + 1 * direction`` is the pixel centre
    on the detector, so the ray parameter t runs from 0 (source) to 1 (detector).
    Parallel: rays start on the plane z = 0 above each pixel and run along +z (direction length = SID).
    """
    x, y = geometry.pixel_camera_mm()
    grid_y, grid_x = np.meshgrid(y, x, indexing="ij")
    sid = geometry.source_to_detector_mm
    pixels = np.stack([grid_x.ravel(), grid_y.ravel(), np.full(grid_x.size, sid)], axis=-1)
    if geometry.parallel:
        origins = pixels.copy()
        origins[:, 2] = 0.0
        directions = np.zeros_like(pixels)
        directions[:, 2] = sid
    else:
        origins = np.zeros_like(pixels)
        directions = pixels
    return (
        torch.as_tensor(origins, dtype=dtype, device=device),
        torch.as_tensor(directions, dtype=dtype, device=device),
    )


def box_intersection(
    origins: torch.Tensor, directions: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit ray parameters (...,) of the rays ``origin + t * direction`` through the box [low, high]
    (slab method); exit <= entry for a miss. Rays parallel to a face count as inside iff within its slab."""
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t_low = (low - origins) / safe
    t_high = (high - origins) / safe
    t_near = torch.minimum(t_low, t_high)
    t_far = torch.maximum(t_low, t_high)
    parallel = directions.abs() < 1e-12
    inside = (origins >= low) & (origins <= high)
    big = torch.full_like(t_near, 1e30)
    t_near = torch.where(parallel, torch.where(inside, -big, big), t_near)
    t_far = torch.where(parallel, torch.where(inside, big, -big), t_far)
    return t_near.amax(dim=-1), t_far.amin(dim=-1)
