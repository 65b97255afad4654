"""Six pose parameters <-> rigid 4x4 (torch, differentiable, batched); what 2D/3D registration optimises.

Parameters ``(rx, ry, rz, tx, ty, tz)``: rotations in degrees about the x, y, z axes of the frame the
matrix acts in, applied in the order x, then y, then z (fixed axes: ``R = Rz @ Ry @ Rx``), about the
centre ``c`` (mm); then a translation ``t`` (mm)::

    M(p) = T(c + t) @ R @ T(-c)        (p' = R (p - c) + c + t)

so ``t`` is the displacement of the centre itself. Angles are unique for ``|ry| < 90`` degrees.

:func:`camera_pose` applies the parameters in the camera frame about a CT point (e.g. the CT centre or
the femoral head): ``rx``/``ry`` are out-of-plane rotations about the detector's column/row directions,
``rz`` the in-plane rotation about the beam, ``tx``/``ty`` in-plane shifts and ``tz`` the depth (magnification).
"""

from __future__ import annotations

import numpy as np
import torch


def _as_tensor(value, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value if like is None else value.to(dtype=like.dtype, device=like.device)
    dtype = torch.float64 if like is None else like.dtype
    device = None if like is None else like.device
    return torch.as_tensor(np.asarray(value, dtype=float), dtype=dtype, device=device)


def euler_to_rotation(angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) ``Rz @ Ry @ Rx`` from angles (..., 3) in degrees (x first)."""
    radians = torch.deg2rad(angles_deg)
    cx, cy, cz = torch.cos(radians).unbind(-1)
    sx, sy, sz = torch.sin(radians).unbind(-1)
    row0 = torch.stack([cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx], dim=-1)
    row1 = torch.stack([sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx], dim=-1)
    row2 = torch.stack([-sy, cy * sx, cy * cx], dim=-1)
    return torch.stack([row0, row1, row2], dim=-2)


def rotation_to_euler(rotation: torch.Tensor) -> torch.Tensor:
    """Angles (..., 3) in degrees of ``R = Rz @ Ry @ Rx`` (inverse of :func:`euler_to_rotation`)."""
    ry = torch.asin(torch.clamp(-rotation[..., 2, 0], -1.0, 1.0))
    rx = torch.atan2(rotation[..., 2, 1], rotation[..., 2, 2])
    rz = torch.atan2(rotation[..., 1, 0], rotation[..., 0, 0])
    return torch.rad2deg(torch.stack([rx, ry, rz], dim=-1))


def pose_to_matrix(params, centre_mm=None) -> torch.Tensor:
    """Rigid 4x4 (..., 4, 4) from parameters (..., 6) = 3 angles (degrees) + 3 translations (mm) about
    ``centre_mm`` (3,) or (..., 3) (origin if None). Differentiable; dtype and device follow ``params``."""
    params = _as_tensor(params)
    centre = (
        torch.zeros(3, dtype=params.dtype, device=params.device) if centre_mm is None else _as_tensor(centre_mm, params)
    )
    rotation = euler_to_rotation(params[..., :3])
    centre = centre.expand(params.shape[:-1] + (3,))
    translation = centre + params[..., 3:] - (rotation @ centre.unsqueeze(-1)).squeeze(-1)
    top = torch.cat([rotation, translation.unsqueeze(-1)], dim=-1)
    bottom = torch.zeros(params.shape[:-1] + (1, 4), dtype=params.dtype, device=params.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def matrix_to_pose(matrix, centre_mm=None) -> torch.Tensor:
    """Parameters (..., 6) of a rigid 4x4 (..., 4, 4) about ``centre_mm`` (inverse of :func:`pose_to_matrix`)."""
    matrix = _as_tensor(matrix)
    rotation = matrix[..., :3, :3]
    centre = (
        torch.zeros(3, dtype=matrix.dtype, device=matrix.device) if centre_mm is None else _as_tensor(centre_mm, matrix)
    )
    centre = centre.expand(matrix.shape[:-2] + (3,))
    translation = matrix[..., :3, 3] + (rotation @ centre.unsqueeze(-1)).squeeze(-1) - centre
    return torch.cat([rotation_to_euler(rotation), translation], dim=-1)


def camera_pose(params, base_camera_from_lps, centre_lps_mm) -> torch.Tensor:
    """camera_from_lps (..., 4, 4) = ``M(params about the centre, in camera coordinates) @ base``.

    params (..., 6): rotations (degrees) about camera axes through the CT point ``centre_lps_mm`` (LPS mm),
    then translations along camera x, y, z (mm). ``params = 0`` gives ``base``. Differentiable in ``params``.
    """
    params = _as_tensor(params)
    base = _as_tensor(base_camera_from_lps, params)
    centre = _as_tensor(centre_lps_mm, params)
    centre_camera = (base[..., :3, :3] @ centre.unsqueeze(-1)).squeeze(-1) + base[..., :3, 3]
    return pose_to_matrix(params, centre_camera) @ base


def camera_pose_parameters(camera_from_lps, base_camera_from_lps, centre_lps_mm) -> torch.Tensor:
    """Inverse of :func:`camera_pose`: the 6 parameters taking ``base`` to ``camera_from_lps``."""
    matrix = _as_tensor(camera_from_lps)
    base = _as_tensor(base_camera_from_lps, matrix)
    centre = _as_tensor(centre_lps_mm, matrix)
    centre_camera = (base[..., :3, :3] @ centre.unsqueeze(-1)).squeeze(-1) + base[..., :3, 3]
    return matrix_to_pose(matrix @ torch.linalg.inv(base), centre_camera)
