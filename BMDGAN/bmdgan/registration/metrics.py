"""Accuracy of a registered pose against a known one (benchmarks and tests).

mTRE (mean target registration error, mm): mean 3D distance between target points placed by the true
pose and by the registered pose (both in the camera frame). With one view, depth along the beam is the
least determined direction and dominates the mTRE.
mPD (mean projection distance, mm at the detector): mean 2D distance between the targets' projections;
what a reader of the overlay sees.
"""

from __future__ import annotations

import numpy as np

from ..projection.geometry import ProjectionGeometry


def mean_target_error_mm(
    points_lps_mm: np.ndarray, true_camera_from_lps: np.ndarray, camera_from_lps: np.ndarray
) -> float:
    """mTRE (mm) of the points (N, 3) between two camera_from_lps poses."""
    points = np.asarray(points_lps_mm, dtype=float)
    truth = points @ np.asarray(true_camera_from_lps)[:3, :3].T + np.asarray(true_camera_from_lps)[:3, 3]
    found = points @ np.asarray(camera_from_lps)[:3, :3].T + np.asarray(camera_from_lps)[:3, 3]
    return float(np.linalg.norm(truth - found, axis=1).mean())


def mean_projection_distance_mm(
    geometry: ProjectionGeometry,
    points_lps_mm: np.ndarray,
    true_camera_from_lps: np.ndarray,
    camera_from_lps: np.ndarray,
) -> float:
    """mPD (mm at the detector) of the points' projections between two poses on this detector."""
    truth = geometry.with_pose(true_camera_from_lps).project_points(points_lps_mm)
    found = geometry.with_pose(camera_from_lps).project_points(points_lps_mm)
    delta = (truth - found) * np.array([geometry.column_spacing_mm, geometry.row_spacing_mm])
    return float(np.linalg.norm(delta, axis=1).mean())
