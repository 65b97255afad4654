"""Projection geometry of a radiograph: detector, source distance and the CT's pose (all in mm).

Camera frame (mm): the X-ray source is at the origin; the detector plane is ``z = source_to_detector_mm``;
``+x`` runs along increasing detector column and ``+y`` along increasing detector row (image "down").
The centre of pixel (column ``c``, row ``r``), indices from 0, lies at::

    x = (c - principal_column) * column_spacing_mm
    y = (r - principal_row) * row_spacing_mm
    z = source_to_detector_mm

so a camera point (X, Y, Z) projects (pinhole) to ``c = principal_column + SID * X / (Z * column_spacing_mm)``
and ``r = principal_row + SID * Y / (Z * row_spacing_mm)``. In the parallel mode (used for the CT-aBMD,
DXA-like measurement) rays run along ``+z`` through each pixel and ``c = principal_column + X / column_spacing_mm``.

The pose ``camera_from_lps`` is the rigid 4x4 (mm) taking a point of the CT's physical LPS frame to the
camera frame. Standard AP view (:data:`AP_ROTATION`): the beam runs anterior to posterior (camera ``+z`` =
patient posterior), image right = patient left (camera ``+x`` = LPS ``+x``), image down = patient inferior
(camera ``+y`` = LPS ``-z``): an AP radiograph viewed as usual, patient's left on the image's right,
head at the top (DICOM PatientOrientation ``L\\F``).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import InputError

GEOMETRY_FORMAT = "bmdgan-projection-geometry"
GEOMETRY_VERSION = 1

AP_ROTATION = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Rotation camera_from_lps of a standard AP view: camera x = patient left, y = inferior, z = posterior."""

DEFAULT_SOURCE_TO_DETECTOR_MM = 1000.0
"""Typical hip/pelvis radiograph SID (clinical range 1000-1150 mm)."""
DEFAULT_OBJECT_TO_DETECTOR_MM = 200.0
"""Typical distance from the patient's mid-plane to a bucky detector (table gap plus half the pelvis)."""
RIGID_TOLERANCE = 1e-3
"""Largest deviation of the pose's 3x3 from an orthonormal rotation accepted as rigid."""


def _rigid_problem(matrix: np.ndarray) -> str | None:
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        return "the pose must be a finite 4x4 matrix"
    if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        return "the last row of the pose must be 0 0 0 1"
    rotation = matrix[:3, :3]
    if (
        np.abs(rotation @ rotation.T - np.eye(3)).max() > RIGID_TOLERANCE
        or abs(np.linalg.det(rotation) - 1.0) > RIGID_TOLERANCE
    ):
        return "the 3x3 part of the pose is not a proper rotation (the pose must be rigid, mm)"
    return None


@dataclass(frozen=True)
class ProjectionGeometry:
    """Detector, source distance (mm) and pose of the CT in the camera frame (see module docstring).

    source_to_detector_mm: SID, distance from the source to the detector plane along z (mm).
    detector_columns / detector_rows: detector size in pixels.
    column_spacing_mm / row_spacing_mm: pixel pitch at the detector (DICOM ImagerPixelSpacing) (mm).
    principal_point_px: (column, row) of the foot of the perpendicular from the source on the detector.
    camera_from_lps: rigid 4x4, LPS mm -> camera mm.
    parallel: rays parallel to +z (orthographic) instead of a cone beam from the source.
    """

    source_to_detector_mm: float
    detector_columns: int
    detector_rows: int
    column_spacing_mm: float
    row_spacing_mm: float
    principal_point_px: tuple[float, float]
    camera_from_lps: np.ndarray
    parallel: bool = False

    def __post_init__(self):
        numbers = (self.source_to_detector_mm, self.column_spacing_mm, self.row_spacing_mm)
        if not all(math.isfinite(float(v)) and float(v) > 0 for v in numbers):
            raise InputError(
                None,
                f"source-to-detector distance and pixel spacing must be positive mm, got "
                f"SID={self.source_to_detector_mm}, spacing=({self.column_spacing_mm}, "
                f"{self.row_spacing_mm})",
                "fix the geometry",
            )
        if int(self.detector_columns) < 1 or int(self.detector_rows) < 1:
            raise InputError(
                None,
                f"detector size must be positive, got {self.detector_columns}x{self.detector_rows}",
                "fix the geometry",
            )
        principal = tuple(float(v) for v in self.principal_point_px)
        if len(principal) != 2 or not all(math.isfinite(v) for v in principal):
            raise InputError(None, "the principal point must be two finite pixel coordinates", "fix the geometry")
        matrix = np.asarray(self.camera_from_lps, dtype=float)
        problem = _rigid_problem(matrix)
        if problem:
            raise InputError(None, problem, "give a rigid camera_from_lps pose")
        object.__setattr__(self, "source_to_detector_mm", float(self.source_to_detector_mm))
        object.__setattr__(self, "detector_columns", int(self.detector_columns))
        object.__setattr__(self, "detector_rows", int(self.detector_rows))
        object.__setattr__(self, "column_spacing_mm", float(self.column_spacing_mm))
        object.__setattr__(self, "row_spacing_mm", float(self.row_spacing_mm))
        object.__setattr__(self, "principal_point_px", principal)
        object.__setattr__(self, "camera_from_lps", matrix.copy())
        object.__setattr__(self, "parallel", bool(self.parallel))

    # ------------------------------------------------------------------ basic properties
    @property
    def shape(self) -> tuple[int, int]:
        """Image shape (rows, columns)."""
        return self.detector_rows, self.detector_columns

    @property
    def lps_from_camera(self) -> np.ndarray:
        """Inverse pose (camera mm -> LPS mm)."""
        return np.linalg.inv(self.camera_from_lps)

    def with_pose(self, camera_from_lps: np.ndarray) -> ProjectionGeometry:
        """Same detector, another pose."""
        return replace(self, camera_from_lps=np.asarray(camera_from_lps, dtype=float))

    def intrinsic_matrix(self) -> np.ndarray:
        """3x3 pinhole matrix K (pixels): ``(c, r, 1) ~ K @ (X, Y, Z)`` for camera points (perspective mode)."""
        cu, cv = self.principal_point_px
        return np.array(
            [
                [self.source_to_detector_mm / self.column_spacing_mm, 0.0, cu],
                [0.0, self.source_to_detector_mm / self.row_spacing_mm, cv],
                [0.0, 0.0, 1.0],
            ]
        )

    def source_lps(self) -> np.ndarray | None:
        """LPS position of the X-ray source (mm); None in the parallel mode."""
        return None if self.parallel else self.lps_from_camera[:3, 3].copy()

    def to_camera(self, points_lps: np.ndarray) -> np.ndarray:
        """LPS points (..., 3) mm -> camera points (..., 3) mm."""
        points = np.asarray(points_lps, dtype=float)
        return points @ self.camera_from_lps[:3, :3].T + self.camera_from_lps[:3, 3]

    def project_points(self, points_lps: np.ndarray) -> np.ndarray:
        """Pixel coordinates (..., 2) as (column, row) of LPS points (..., 3) mm (pixel centres are integers)."""
        camera = self.to_camera(points_lps)
        cu, cv = self.principal_point_px
        if self.parallel:
            scale = np.ones(camera.shape[:-1])
        else:
            scale = self.source_to_detector_mm / camera[..., 2]
        column = cu + camera[..., 0] * scale / self.column_spacing_mm
        row = cv + camera[..., 1] * scale / self.row_spacing_mm
        return np.stack([column, row], axis=-1)

    def magnification_at(self, point_lps: np.ndarray) -> float:
        """Detector size / object size for an object at this LPS point (1 in the parallel mode)."""
        if self.parallel:
            return 1.0
        return float(self.source_to_detector_mm / self.to_camera(point_lps)[..., 2])

    def spacing_at_mm(self, point_lps: np.ndarray) -> tuple[float, float]:
        """(row, column) pixel spacing at the patient for an object at this LPS point (mm): the detector pitch over
        the magnification there, what a DICOM's PixelSpacing states."""
        magnification = self.magnification_at(np.asarray(point_lps, float))
        return self.row_spacing_mm / magnification, self.column_spacing_mm / magnification

    def pixel_camera_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Camera x (columns,) and y (rows,) of the pixel centres on the detector plane (mm)."""
        cu, cv = self.principal_point_px
        x = (np.arange(self.detector_columns) - cu) * self.column_spacing_mm
        y = (np.arange(self.detector_rows) - cv) * self.row_spacing_mm
        return x, y

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """Versioned plain-data form (units in the key names)."""
        return {
            "format": GEOMETRY_FORMAT,
            "version": GEOMETRY_VERSION,
            "projection": "parallel" if self.parallel else "perspective",
            "source_to_detector_mm": self.source_to_detector_mm,
            "detector_columns": self.detector_columns,
            "detector_rows": self.detector_rows,
            "column_spacing_mm": self.column_spacing_mm,
            "row_spacing_mm": self.row_spacing_mm,
            "principal_point_px": {"column": self.principal_point_px[0], "row": self.principal_point_px[1]},
            "camera_from_lps_mm": [[float(v) for v in row] for row in self.camera_from_lps],
            "conventions": (
                "camera frame in mm: source at the origin, detector plane z = source_to_detector_mm, "
                "+x along increasing column, +y along increasing row; pixel (column c, row r) centre at "
                "x = (c - principal column) * column_spacing_mm, y = (r - principal row) * row_spacing_mm; "
                "camera_from_lps_mm maps CT LPS mm to camera mm; parallel projection: rays along +z"
            ),
        }

    @staticmethod
    def from_dict(data: dict, path: str | Path | None = None) -> ProjectionGeometry:
        """Inverse of :meth:`to_dict`; raises :class:`InputError` naming ``path`` for a bad or unknown file."""
        if not isinstance(data, dict) or data.get("format") != GEOMETRY_FORMAT:
            raise InputError(
                path,
                f'is not a projection geometry (expected "format": "{GEOMETRY_FORMAT}")',
                "give a geometry JSON written by bmdgan",
            )
        version = data.get("version")
        if version != GEOMETRY_VERSION:
            raise InputError(
                path,
                f"geometry version {version!r} is not supported (this bmdgan reads version {GEOMETRY_VERSION})",
                "upgrade bmdgan or re-create the geometry",
            )
        try:
            projection = data.get("projection", "perspective")
            if projection not in ("perspective", "parallel"):
                raise ValueError(f"projection must be 'perspective' or 'parallel', got {projection!r}")
            principal = data["principal_point_px"]
            geometry = ProjectionGeometry(
                source_to_detector_mm=float(data["source_to_detector_mm"]),
                detector_columns=int(data["detector_columns"]),
                detector_rows=int(data["detector_rows"]),
                column_spacing_mm=float(data["column_spacing_mm"]),
                row_spacing_mm=float(data["row_spacing_mm"]),
                principal_point_px=(float(principal["column"]), float(principal["row"])),
                camera_from_lps=np.asarray(data["camera_from_lps_mm"], dtype=float),
                parallel=projection == "parallel",
            )
        except InputError as error:
            raise InputError(path, error.problem, error.fix) from None
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                path,
                f"geometry field missing or invalid ({type(error).__name__}: {error})",
                "see the geometry JSON format in bmdgan.projection.geometry",
            ) from None
        return geometry

    def save(self, path: str | Path) -> Path:
        """Write the geometry JSON atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @staticmethod
    def load(path: str | Path) -> ProjectionGeometry:
        """Read a geometry JSON (see :meth:`to_dict`)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "does not exist", "check the path of the geometry JSON")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(path, f"is not valid JSON ({error})", "give a geometry JSON written by bmdgan") from None
        return ProjectionGeometry.from_dict(data, path)


# ---------------------------------------------------------------------- constructors
def volume_corners_lps(shape_ijk: tuple[int, int, int], ijk_to_lps: np.ndarray) -> np.ndarray:
    """The 8 corners (8, 3) in LPS mm of the box covered by the voxels (voxel centres +- half a voxel)."""
    ni, nj, nk = shape_ijk
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, ni - 0.5) for j in (-0.5, nj - 0.5) for k in (-0.5, nk - 0.5)])
    return (corners @ np.asarray(ijk_to_lps, dtype=float).T)[:, :3]


def volume_centre_lps(shape_ijk: tuple[int, int, int], ijk_to_lps: np.ndarray) -> np.ndarray:
    """LPS centre (mm) of the voxel box."""
    centre = np.append((np.asarray(shape_ijk, dtype=float) - 1.0) / 2.0, 1.0)
    return (np.asarray(ijk_to_lps, dtype=float) @ centre)[:3]


def rotation_about(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rodrigues 3x3 rotation about a unit ``axis`` by ``angle_deg`` (degrees, right-handed)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(angle_deg)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def ap_pose(centre_lps_mm: np.ndarray, source_to_centre_mm: float) -> np.ndarray:
    """camera_from_lps of an AP view whose central ray passes through ``centre_lps_mm`` at this depth (mm)."""
    pose = np.eye(4)
    pose[:3, :3] = AP_ROTATION
    pose[:3, 3] = np.array([0.0, 0.0, float(source_to_centre_mm)]) - AP_ROTATION @ np.asarray(centre_lps_mm, float)
    return pose


def default_ap_geometry(
    volume,
    *,
    source_to_detector_mm: float = DEFAULT_SOURCE_TO_DETECTOR_MM,
    object_to_detector_mm: float = DEFAULT_OBJECT_TO_DETECTOR_MM,
    pixel_spacing_mm: float = 0.5,
    columns: int | None = None,
    rows: int | None = None,
    margin: float = 0.05,
    parallel: bool = False,
    centre_lps_mm: np.ndarray | None = None,
    max_side_px: int | None = None,
) -> ProjectionGeometry:
    """AP geometry centred on a CT (a :class:`bmdgan.io.Volume`), its centre at ``object_to_detector_mm``
    in front of the detector; without ``columns``/``rows`` the detector covers the CT's projected box plus
    ``margin`` (fraction) at ``pixel_spacing_mm`` (detector pitch, mm), coarsened if needed so that the
    longer side has at most ``max_side_px`` pixels. A CT deeper than twice ``object_to_detector_mm`` is moved
    toward the source just enough for its box to stay in front of the detector (rays end at the detector)."""
    if not 0 < object_to_detector_mm < source_to_detector_mm:
        raise InputError(
            None,
            f"object-to-detector distance {object_to_detector_mm} mm must lie between 0 and the "
            f"SID {source_to_detector_mm} mm",
            "choose a smaller object-to-detector distance",
        )
    ijk_to_lps = volume.geometry.ijk_to_lps()
    centre = volume_centre_lps(volume.shape_ijk, ijk_to_lps) if centre_lps_mm is None else np.asarray(centre_lps_mm)
    corners_lps = volume_corners_lps(volume.shape_ijk, ijk_to_lps)
    behind_centre_mm = float(((corners_lps - centre) @ AP_ROTATION[2]).max())  # box depth behind the centre
    object_to_detector_mm = max(object_to_detector_mm, behind_centre_mm + 1.0)
    pose = ap_pose(centre, source_to_detector_mm - object_to_detector_mm)
    if columns is None or rows is None:
        probe = ProjectionGeometry(
            source_to_detector_mm, 1, 1, pixel_spacing_mm, pixel_spacing_mm, (0.0, 0.0), pose, parallel
        )
        corners = probe.to_camera(corners_lps)
        if not parallel and np.any(corners[:, 2] <= 1.0):
            raise InputError(
                volume.source or None,
                "the CT box reaches the X-ray source in the default AP geometry",
                "increase the source-to-detector distance",
            )
        scale = 1.0 if parallel else source_to_detector_mm / corners[:, 2]
        half_x = np.abs(corners[:, 0] * scale).max() * (1.0 + margin)
        half_y = np.abs(corners[:, 1] * scale).max() * (1.0 + margin)
        if max_side_px:
            pixel_spacing_mm = max(pixel_spacing_mm, 2.0 * max(half_x, half_y) / int(max_side_px))
        columns = columns or max(2, int(math.ceil(2.0 * half_x / pixel_spacing_mm - 1e-6)))
        rows = rows or max(2, int(math.ceil(2.0 * half_y / pixel_spacing_mm - 1e-6)))
    return ProjectionGeometry(
        source_to_detector_mm,
        columns,
        rows,
        pixel_spacing_mm,
        pixel_spacing_mm,
        ((columns - 1) / 2.0, (rows - 1) / 2.0),
        pose,
        parallel,
    )


def geometry_from_radiograph(
    radiograph,
    *,
    volume=None,
    camera_from_lps: np.ndarray | None = None,
    source_to_detector_mm: float | None = None,
    source_to_patient_mm: float | None = None,
) -> ProjectionGeometry:
    """Geometry of a :class:`bmdgan.io.Radiograph` from its DICOM fields (DistanceSourceToDetector,
    ImagerPixelSpacing, Rows/Columns); arguments fill missing fields. The pose is ``camera_from_lps`` if
    given, else an AP view with the CT centre (or the LPS origin) on the central ray at the
    source-to-patient distance: an initial pose for 2D/3D registration to refine."""
    rows, columns = radiograph.shape
    sid = radiograph.source_to_detector_mm or source_to_detector_mm
    if not sid:
        raise InputError(
            radiograph.source or None,
            "has no source-to-detector distance (DistanceSourceToDetector)",
            "give the SID in mm (e.g. --sid-mm 1000)",
        )
    sod = radiograph.source_to_patient_mm or source_to_patient_mm or sid - DEFAULT_OBJECT_TO_DETECTOR_MM
    spacing = radiograph.imager_pixel_spacing_mm
    if spacing is None and radiograph.pixel_spacing_mm is not None:
        factor = radiograph.magnification_factor or (sid / sod if radiograph.source_to_patient_mm else None)
        if factor is None:
            warnings.warn(
                f"{radiograph.source}: no ImagerPixelSpacing; PixelSpacing is used as the detector pitch", stacklevel=2
            )
            factor = 1.0
        spacing = (radiograph.pixel_spacing_mm[0] * factor, radiograph.pixel_spacing_mm[1] * factor)
    if spacing is None:
        raise InputError(
            radiograph.source or None,
            "has no pixel spacing (ImagerPixelSpacing or PixelSpacing)",
            "give the detector pixel spacing in mm",
        )
    if camera_from_lps is None:
        centre = np.zeros(3) if volume is None else volume_centre_lps(volume.shape_ijk, volume.geometry.ijk_to_lps())
        camera_from_lps = ap_pose(centre, sod)
    return ProjectionGeometry(
        sid, columns, rows, spacing[1], spacing[0], ((columns - 1) / 2.0, (rows - 1) / 2.0), camera_from_lps
    )
