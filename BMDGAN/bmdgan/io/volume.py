"""CT volumes with their geometry in the LPS physical frame (mm).

The array is indexed ``[k, j, i]``; voxel index ``(i, j, k)`` maps to the LPS point
``origin + direction @ (spacing * (i, j, k))`` (ITK's definition, voxel centres).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""4x4 that flips x and y: converts LPS points to RAS (and back: it is its own inverse)."""


@dataclass(frozen=True)
class VolumeGeometry:
    """Voxel grid in LPS mm.

    spacing_mm: voxel size along i, j, k (mm, all > 0).
    origin_mm: LPS position of the centre of voxel (0, 0, 0) (mm).
    direction: 3x3, column c is the LPS unit vector of index axis c (i, j, k).
    """

    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self):
        spacing = np.asarray(self.spacing_mm, dtype=float)
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise InputError(
                None,
                f"voxel spacing must be three positive numbers in mm, got {self.spacing_mm}",
                "fix the spacing in the file header",
            )
        if not np.all(np.isfinite(self.origin_mm)):
            raise InputError(None, f"volume origin is not finite: {self.origin_mm}", "fix the file header")
        if abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
            raise InputError(None, "volume direction matrix is not a rotation", "fix the file header")
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in spacing))
        object.__setattr__(self, "origin_mm", tuple(float(o) for o in self.origin_mm))
        object.__setattr__(self, "direction", direction)

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix taking homogeneous voxel indices (i, j, k, 1) to LPS mm."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction @ np.diag(self.spacing_mm)
        matrix[:3, 3] = self.origin_mm
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix taking voxel indices to Slicer's RAS mm (what MRML volume nodes store)."""
        return LPS_TO_RAS @ self.ijk_to_lps()

    @staticmethod
    def from_ijk_to_lps(matrix: np.ndarray) -> VolumeGeometry:
        """Inverse of :meth:`ijk_to_lps` (matrix without shear)."""
        matrix = np.asarray(matrix, dtype=float)
        columns = matrix[:3, :3]
        spacing = np.linalg.norm(columns, axis=0)
        return VolumeGeometry(tuple(spacing), tuple(matrix[:3, 3]), columns / spacing)


@dataclass
class Volume:
    """A 3D image: ``array[k, j, i]`` with its geometry and unit ("HU", "mg/cm3", "label", "1/mm")."""

    array: np.ndarray
    geometry: VolumeGeometry
    unit: str = "HU"
    source: str = ""

    def __post_init__(self):
        if self.array.ndim != 3:
            raise InputError(
                self.source or None,
                f"expected a 3D volume, got an array of shape {self.array.shape}",
                "give a CT volume (a DICOM series or a 3D NIfTI/NRRD/MHA file), not a 2D image",
            )
        if 0 in self.array.shape:
            raise InputError(
                self.source or None, f"the volume is empty (shape {self.array.shape})", "check the crop or the file"
            )

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along i, j, k."""
        k, j, i = self.array.shape
        return i, j, k

    def with_array(self, array: np.ndarray, unit: str | None = None) -> Volume:
        """Same grid, other voxel values (e.g. a label map or calibrated density)."""
        return replace(self, array=array, unit=self.unit if unit is None else unit)

    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.geometry.spacing_mm))


def geometry_from_sitk(image, path: str | Path | None = None) -> VolumeGeometry:
    """Geometry of a SimpleITK image; zero or negative spacing is reported with the file name."""
    try:
        return VolumeGeometry(image.GetSpacing(), image.GetOrigin(), np.reshape(image.GetDirection(), (3, 3)))
    except InputError as error:
        raise InputError(path, error.problem, error.fix) from None


def geometry_to_sitk(image, geometry: VolumeGeometry) -> None:
    """Write the geometry onto a SimpleITK image in place."""
    image.SetSpacing(geometry.spacing_mm)
    image.SetOrigin(geometry.origin_mm)
    image.SetDirection(tuple(np.asarray(geometry.direction).ravel()))
