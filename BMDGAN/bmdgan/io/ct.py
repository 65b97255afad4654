"""Read and write CT volumes (DICOM series, NIfTI, NRRD, MHA) in HU with LPS geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from .ct_checks import check_hounsfield, check_spacing, nifti_nonfinite_voxels
from .sniff import sniff_format
from .volume import Volume, geometry_from_sitk, geometry_to_sitk

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def _read_sitk(path: Path):
    """(SimpleITK image, the DICOM files of a series folder or None)."""
    import SimpleITK as sitk

    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise InputError(path, "the folder holds no DICOM series", "point to a folder of CT DICOM files")
        if len(series) > 1:
            raise InputError(
                path, f"the folder holds {len(series)} DICOM series", "point to a folder with exactly one CT series"
            )
        files = reader.GetGDCMSeriesFileNames(str(path), series[0])
        _check_dicom_modality(Path(files[0]))
        reader.SetFileNames(files)
        try:
            return reader.Execute(), [Path(f) for f in files]
        except RuntimeError as error:
            raise InputError(
                path,
                f"the DICOM series cannot be read ({_last_line(error)})",
                "check that every file of the series is complete",
            ) from None
    if path.suffix.lower() == ".dcm" or sniff_format(path) == "dicom":
        _check_dicom_modality(path)
    try:
        return sitk.ReadImage(str(path)), None
    except RuntimeError as error:
        raise InputError(
            path,
            f"cannot be read as an image ({_last_line(error)})",
            "check that the file is complete and is a DICOM, NIfTI, NRRD or MHA volume",
        ) from None


def _last_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[-1][:200]


def _check_dicom_modality(path: Path) -> None:
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:  # pydicom raises several types for broken files
        raise InputError(
            path, f"is not a readable DICOM file ({type(error).__name__})", "check that the file is complete"
        ) from None
    modality = str(header.get("Modality", ""))
    if modality and modality != "CT":
        raise InputError(path, f"DICOM modality is {modality}, not CT", "give the CT series of the patient")


def read_volume(path: str | Path, unit: str) -> Volume:
    """Read a scalar 3D volume (``unit``: e.g. "mg/cm3") with its geometry checked: spacing recorded in the file and
    plausible (:func:`bmdgan.io.ct_checks.check_spacing`), every voxel finite (NIfTI NaNs included, which
    SimpleITK would read as 0). Raises :class:`InputError` naming the file."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist", "check the path")
    image, dicom_files = _read_sitk(path)
    if image.GetDimension() != 3 or image.GetSize()[2] < 2:
        raise InputError(
            path,
            f"is a {image.GetDimension()}D image of size {image.GetSize()}, not a CT volume",
            "give a 3D CT (a DICOM series folder or a NIfTI/NRRD/MHA volume)",
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            path,
            "has several values per voxel (colour or vector image), not CT numbers",
            "give a scalar CT volume in HU",
        )
    geometry = geometry_from_sitk(image, path)
    check_spacing(path, geometry.spacing_mm, dicom_files)
    values = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    bad = nifti_nonfinite_voxels(path) if path.is_file() else 0
    if bad or not np.all(np.isfinite(values)):
        counted = f" ({bad} voxels)" if bad else ""
        raise InputError(
            path, f"contains NaN or infinite values{counted}", "re-export the volume without invalid voxels"
        )
    return Volume(values, geometry, unit=unit, source=str(path))


def read_ct(path: str | Path) -> Volume:
    """Read a CT in HU. Raises :class:`InputError` for missing, corrupt, 2D, non-finite data, a spacing that is not
    recorded or not plausible, and voxels that are not Hounsfield units (an MR, a +1024 offset:
    :func:`bmdgan.io.ct_checks.check_hounsfield`)."""
    volume = read_volume(path, "HU")
    check_hounsfield(volume.array, Path(path))
    return volume


def write_volume(volume: Volume, path: str | Path) -> Path:
    """Write a volume (NIfTI/NRRD/MHA by suffix) atomically: a crash never leaves a half-written file."""
    import SimpleITK as sitk

    path = Path(path)
    if not str(path).lower().endswith(VOLUME_SUFFIXES):
        raise InputError(path, "unknown volume file type", f"use one of {', '.join(VOLUME_SUFFIXES)}")
    image = sitk.GetImageFromArray(volume.array)
    geometry_to_sitk(image, volume.geometry)
    with atomic_path(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=True)
    return path


def read_label_volume(path: str | Path, like: Volume | None = None) -> Volume:
    """Read a label map (integer labels; float 0/1 masks such as TotalSegmentator's are rounded).

    With ``like``, the grid must match that volume's (same shape and geometry within 1e-3 mm).
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist", "check the path")
    image, _ = _read_sitk(path)
    labels = np.rint(sitk.GetArrayFromImage(image)).astype(np.int16)
    volume = Volume(labels, geometry_from_sitk(image, path), unit="label", source=str(path))
    if like is not None:
        same_grid = labels.shape == like.array.shape and np.allclose(
            volume.geometry.ijk_to_lps(), like.geometry.ijk_to_lps(), atol=1e-3
        )
        if not same_grid:
            raise InputError(
                path,
                "the label map is not on the CT's voxel grid",
                "resample the labels to the CT or export them from the same CT",
            )
    return volume
