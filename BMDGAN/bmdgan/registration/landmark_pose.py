"""Pose of the CT from 2D-3D landmark correspondences (points clicked on the radiograph and in the CT).

Given the intrinsic geometry (SID, pixel pitch, principal point) and N >= 4 pairs (pixel (column, row),
LPS point in mm), find the rigid ``camera_from_lps`` that minimises the reprojection error in pixels:

1. starts: the direct linear transform (DLT) for N >= 6 non-coplanar points (the 3x4 projection, its
   rotation made orthonormal by SVD), plus AP-like views (the standard AP rotation turned by 0, +-30 and
   180 degrees about the beam and the patient's long axis) placed so that the points' centroid lies on
   the centroid's ray at the typical depth; 2. Levenberg-Marquardt (Gauss-Newton with damping,
   ``scipy.optimize.least_squares``) on the reprojection residuals from every start; the lowest
   residual wins. Exact (to round-off) on noise-free correspondences.

Landmark file (JSON; pixel centres at integer coordinates, rows and columns from 0 like the geometry)::

    {"format": "bmdgan-landmarks", "version": 1,
     "landmarks": [{"name": "femoral_head_centre", "column_px": 210.5, "row_px": 140.0,
                    "lps_mm": [12.0, -30.5, 870.2]}, ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from ..errors import InputError
from ..projection.geometry import AP_ROTATION, DEFAULT_OBJECT_TO_DETECTOR_MM, ProjectionGeometry

LANDMARKS_FORMAT = "bmdgan-landmarks"
LANDMARKS_VERSION = 1
MIN_LANDMARKS = 4
"""Fewest correspondences accepted: 3 give up to four poses (P3P), 4 in general position one."""


@dataclass(frozen=True)
class Landmarks:
    """Corresponding points: ``pixels`` (N, 2) as (column, row) and ``lps_mm`` (N, 3), with names."""

    names: tuple[str, ...]
    pixels: np.ndarray
    lps_mm: np.ndarray

    def to_dict(self) -> dict:
        return {
            "format": LANDMARKS_FORMAT,
            "version": LANDMARKS_VERSION,
            "landmarks": [
                {"name": name, "column_px": float(p[0]), "row_px": float(p[1]), "lps_mm": [float(v) for v in x]}
                for name, p, x in zip(self.names, self.pixels, self.lps_mm)
            ],
        }

    @staticmethod
    def from_dict(data: dict, path: str | Path | None = None) -> Landmarks:
        if not isinstance(data, dict) or data.get("format") != LANDMARKS_FORMAT:
            raise InputError(
                path,
                f'is not a landmark file (expected "format": "{LANDMARKS_FORMAT}")',
                "see the landmark JSON format in bmdgan.registration.landmark_pose",
            )
        if data.get("version") != LANDMARKS_VERSION:
            raise InputError(
                path,
                f"landmark file version {data.get('version')!r} is not supported",
                f"write version {LANDMARKS_VERSION}",
            )
        try:
            items = data["landmarks"]
            names = tuple(str(item.get("name", f"landmark{n}")) for n, item in enumerate(items))
            pixels = np.array([[float(item["column_px"]), float(item["row_px"])] for item in items], dtype=float)
            points = np.array([[float(v) for v in item["lps_mm"]] for item in items], dtype=float)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InputError(
                path,
                f"landmark field missing or invalid ({type(error).__name__}: {error})",
                "each landmark needs column_px, row_px and lps_mm [x, y, z]",
            ) from None
        if (
            points.ndim != 2
            or points.shape[1:] != (3,)
            or not np.all(np.isfinite(points))
            or not np.all(np.isfinite(pixels))
        ):
            raise InputError(
                path, "landmark coordinates must be finite numbers, lps_mm with 3 values", "fix the landmark file"
            )
        return Landmarks(names, pixels.reshape(-1, 2), points)

    @staticmethod
    def load(path: str | Path) -> Landmarks:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "does not exist", "check the path of the landmark JSON")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(path, f"is not valid JSON ({error})", "give a landmark JSON") from None
        return Landmarks.from_dict(data, path)


@dataclass(frozen=True)
class LandmarkPose:
    """Solved pose (4x4, LPS mm -> camera mm) and its reprojection residuals (pixels) per landmark."""

    camera_from_lps: np.ndarray
    residuals_px: np.ndarray

    @property
    def rms_px(self) -> float:
        return float(np.sqrt(np.mean(self.residuals_px**2)))


def _matrix(vector: np.ndarray) -> np.ndarray:
    """4x4 from (rotation vector (radians), translation (mm))."""
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec(vector[:3]).as_matrix()
    pose[:3, 3] = vector[3:]
    return pose


def _vector(pose: np.ndarray) -> np.ndarray:
    return np.concatenate([Rotation.from_matrix(pose[:3, :3]).as_rotvec(), pose[:3, 3]])


def _residuals(vector: np.ndarray, geometry: ProjectionGeometry, pixels: np.ndarray, points: np.ndarray) -> np.ndarray:
    projected = geometry.with_pose(_matrix(vector)).project_points(points)
    if not geometry.parallel:
        depth = points @ Rotation.from_rotvec(vector[:3]).as_matrix()[2] + vector[5]
        projected = np.where((depth > 1e-6)[:, None], projected, 1e6)  # behind the source: huge residual
    return (projected - pixels).ravel()


def _dlt_pose(geometry: ProjectionGeometry, pixels: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """Pose from the direct linear transform (perspective, N >= 6 non-coplanar points), or None."""
    if geometry.parallel or len(points) < 6:
        return None
    mean, spread = points.mean(axis=0), np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean())
    if spread <= 0:
        return None
    normalised = (points - mean) / spread
    rays = (np.linalg.inv(geometry.intrinsic_matrix()) @ np.c_[pixels, np.ones(len(pixels))].T).T
    rows = []
    for (u, v, w), (x, y, z) in zip(rays, normalised):
        X = np.array([x, y, z, 1.0])
        rows.append(np.concatenate([w * X, np.zeros(4), -u * X]))
        rows.append(np.concatenate([np.zeros(4), w * X, -v * X]))
    _, singular, vt = np.linalg.svd(np.asarray(rows))
    if singular[-2] < 1e-9 * singular[0]:
        return None  # coplanar or degenerate configuration: the DLT is not unique
    projection = vt[-1].reshape(3, 4)
    denormalise = np.eye(4)
    denormalise[:3, :3] /= spread
    denormalise[:3, 3] = -mean / spread
    projection = projection @ denormalise  # ~ [R | t] up to scale
    u, s, vt3 = np.linalg.svd(projection[:, :3])
    scale = s.mean()
    rotation = u @ vt3
    sign = np.sign(np.linalg.det(rotation))
    rotation, scale = rotation * sign, scale * sign
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = projection[:, 3] / scale
    if np.median(points @ rotation[2] + pose[2, 3]) < 0:
        return None  # the points would lie behind the source
    return pose


def _view_starts(geometry: ProjectionGeometry, pixels: np.ndarray, points: np.ndarray) -> list[np.ndarray]:
    """AP-like starting poses with the landmarks' centroid on its ray at the typical depth."""
    depth = geometry.source_to_detector_mm - DEFAULT_OBJECT_TO_DETECTOR_MM
    target = pixels.mean(axis=0)
    cu, cv = geometry.principal_point_px
    if geometry.parallel:
        camera_point = np.array(
            [(target[0] - cu) * geometry.column_spacing_mm, (target[1] - cv) * geometry.row_spacing_mm, depth]
        )
    else:
        camera_point = np.array(
            [
                (target[0] - cu) * geometry.column_spacing_mm * depth / geometry.source_to_detector_mm,
                (target[1] - cv) * geometry.row_spacing_mm * depth / geometry.source_to_detector_mm,
                depth,
            ]
        )
    centroid = points.mean(axis=0)
    starts = []
    for axis, angle in (("z", 0.0), ("z", 30.0), ("z", -30.0), ("z", 180.0), ("y", 30.0), ("y", -30.0), ("y", 180.0)):
        turn = Rotation.from_euler(axis, angle, degrees=True).as_matrix()
        pose = np.eye(4)
        pose[:3, :3] = turn @ AP_ROTATION
        pose[:3, 3] = camera_point - pose[:3, :3] @ centroid
        starts.append(pose)
    return starts


def solve_landmark_pose(geometry: ProjectionGeometry, pixels_px, points_lps_mm) -> LandmarkPose:
    """camera_from_lps minimising the reprojection error (pixels) of ``points_lps_mm`` (N, 3) onto
    ``pixels_px`` (N, 2) as (column, row), for the detector of ``geometry`` (its own pose is ignored)."""
    pixels = np.asarray(pixels_px, dtype=float).reshape(-1, 2)
    points = np.asarray(points_lps_mm, dtype=float).reshape(-1, 3)
    if len(pixels) != len(points):
        raise InputError(
            None,
            f"{len(pixels)} radiograph points but {len(points)} CT points",
            "give the same landmarks on the radiograph and in the CT",
        )
    if len(points) < MIN_LANDMARKS:
        raise InputError(
            None,
            f"{len(points)} landmark pairs are too few to solve the pose",
            f"click at least {MIN_LANDMARKS} corresponding points (not all on one line)",
        )
    centred = points - points.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    if singular[1] < 1e-3 * max(singular[0], 1e-12):
        raise InputError(
            None,
            "the CT landmarks lie on one line: the rotation about that line is undetermined",
            "add a landmark off the line (e.g. the greater trochanter or the lesser trochanter)",
        )
    starts = _view_starts(geometry, pixels, points)
    dlt = _dlt_pose(geometry, pixels, points)
    if dlt is not None:
        starts.insert(0, dlt)
    best = None
    for start in starts:
        fit = least_squares(
            _residuals,
            _vector(start),
            args=(geometry, pixels, points),
            method="lm",
            xtol=1e-15,
            ftol=1e-15,
            gtol=1e-15,
            max_nfev=2000,
        )
        if best is None or fit.cost < best.cost:
            best = fit
    pose = _matrix(best.x)
    residuals = np.linalg.norm(best.fun.reshape(-1, 2), axis=1)
    return LandmarkPose(pose, residuals)
