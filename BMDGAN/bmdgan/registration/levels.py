"""Coarse-to-fine resolution levels: block-averaged radiograph and detector, block-averaged CT.

Why: the cost of a DRR is (detector pixels) x (voxel planes crossed), so a level at 4x the detector pitch
and 4x the voxel size is about 64x cheaper; the coarse levels find the pose, the fine ones refine it.

Detector: a block of ``f x f`` pixels becomes one pixel of pitch ``f * pitch`` (mm) centred on the block, so
the principal point ``p`` moves to ``(p - (f - 1) / 2) / f``; trailing pixels that do not fill a block
are dropped. CT: blocks of ``(fi, fj, fk)`` voxels are averaged (zeros beyond the edge, as the projector
assumes outside the volume); the voxel axis that runs along the X-ray beam is pooled more than the
others, because a line integral along the beam does not need fine sampling along the beam itself.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..projection.geometry import ProjectionGeometry

MAX_DEPTH_RATIO = 4.0
"""Largest voxel aspect (along the beam / across it) of a pooled CT: beyond ~4 the projector marches
oblique rays across the long axis instead, and the blur of a cone-beam ray crossing one deep voxel
(depth x tan(8 degrees) at the detector edge) exceeds a fine voxel."""


def downsample_geometry(geometry: ProjectionGeometry, factor: int) -> ProjectionGeometry:
    """The detector with ``factor x factor`` pixels merged (same pose, pitch x factor, mm)."""
    factor = int(factor)
    if factor == 1:
        return geometry
    cu, cv = geometry.principal_point_px
    return replace(
        geometry,
        detector_columns=max(1, geometry.detector_columns // factor),
        detector_rows=max(1, geometry.detector_rows // factor),
        column_spacing_mm=geometry.column_spacing_mm * factor,
        row_spacing_mm=geometry.row_spacing_mm * factor,
        principal_point_px=((cu - (factor - 1) / 2.0) / factor, (cv - (factor - 1) / 2.0) / factor),
    )


def downsample_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Block mean (float32) of a 2D image over ``factor x factor`` pixels (incomplete blocks dropped)."""
    factor = int(factor)
    image = np.asarray(image, dtype=np.float32)
    if factor == 1:
        return image
    rows, cols = image.shape[0] // factor, image.shape[1] // factor
    blocks = image[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def downsample_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Block "all" of a 2D bool mask: a coarse pixel is in the ROI only if all its fine pixels are."""
    factor = int(factor)
    mask = np.asarray(mask, dtype=bool)
    if factor == 1:
        return mask
    rows, cols = mask.shape[0] // factor, mask.shape[1] // factor
    return mask[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor).all(axis=(1, 3))


def detector_factor(geometry: ProjectionGeometry, pitch_mm: float) -> int:
    """Integer pixel merge factor that brings the detector pitch closest to ``pitch_mm`` (at least 1)."""
    native = 0.5 * (geometry.column_spacing_mm + geometry.row_spacing_mm)
    return max(1, int(round(pitch_mm / native)))


def beam_axis(ijk_to_lps: np.ndarray, camera_from_lps: np.ndarray) -> int:
    """Index axis (0 = i, 1 = j, 2 = k) of the CT most parallel to the beam (camera z) at this pose."""
    axes_camera = np.asarray(camera_from_lps)[:3, :3] @ np.asarray(ijk_to_lps)[:3, :3]
    axes_camera = axes_camera / np.linalg.norm(axes_camera, axis=0)
    return int(np.argmax(np.abs(axes_camera[2])))


def volume_factors(
    spacing_mm, axis_along_beam: int, voxel_mm: float, depth_ratio: float = MAX_DEPTH_RATIO
) -> tuple[int, int, int]:
    """Pooling factors (fi, fj, fk) that bring the voxels to about ``voxel_mm`` across the beam and
    ``depth_ratio * voxel_mm`` along it (never below the native spacing)."""
    factors = []
    for axis, spacing in enumerate(spacing_mm):
        target = voxel_mm * (depth_ratio if axis == axis_along_beam else 1.0)
        factors.append(max(1, int(round(target / float(spacing)))))
    return tuple(factors)


def pool_volume(
    array: np.ndarray, ijk_to_lps: np.ndarray, factors: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Block-mean a ``[k, j, i]`` array by ``factors`` = (fi, fj, fk): the pooled array and its 4x4
    index -> LPS (mm). Voxel b of the pooled grid is the mean of voxels ``f*b ... f*b + f - 1``."""
    fi, fj, fk = (int(f) for f in factors)
    if (fi, fj, fk) == (1, 1, 1):
        return np.asarray(array, dtype=np.float32), np.asarray(ijk_to_lps, dtype=float)
    k, j, i = array.shape
    padded = np.zeros((math.ceil(k / fk) * fk, math.ceil(j / fj) * fj, math.ceil(i / fi) * fi), np.float32)
    padded[:k, :j, :i] = array
    tensor = torch.from_numpy(padded)[None, None]
    pooled = F.avg_pool3d(tensor, kernel_size=(fk, fj, fi))[0, 0].numpy()
    scale = np.eye(4)
    scale[:3, :3] = np.diag([fi, fj, fk])
    scale[:3, 3] = [(fi - 1) / 2.0, (fj - 1) / 2.0, (fk - 1) / 2.0]
    return np.ascontiguousarray(pooled), np.asarray(ijk_to_lps, dtype=float) @ scale


def pool_mask(mask: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Fraction (float32, 0..1) of each pooled block inside a bool ``[k, j, i]`` mask (partial volume)."""
    pooled, _ = pool_volume(np.asarray(mask, dtype=np.float32), np.eye(4), factors)
    return pooled
