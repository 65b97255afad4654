"""Sanity checks of a CT before anything is measured on it: the geometry is recorded and plausible, the voxels are
finite Hounsfield units.

Readers fill in what a file lacks: SimpleITK takes a missing spacing as 1 mm (a CT of 0.7 mm pixels then gives an
aBMD 46 % off) and turns NaN voxels of a NIfTI file into 0. So the headers are read here, and the CT numbers are
checked for the peaks every CT in HU has: air near -1000 HU (around the body), fat near -100 HU and soft tissue
near 0-100 HU. An MR volume, or a CT stored with the +1024 offset of its raw detector values, is refused with what
to do instead of being segmented and measured.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..errors import InputError
from .sniff import sniff_format

SPACING_RANGE_MM = (0.05, 20.0)
"""Plausible CT voxel size along any axis (mm): from micro-CT-like reconstructions to thick legacy slices."""
AIR_HU = (-1100.0, -850.0)
SOFT_TISSUE_HU = (-30.0, 130.0)
LOWEST_HU_OF_A_CT = -150.0
"""Every CT in HU has voxels below this (air, lung or fat); the 0.5th percentile above it means no air and no fat."""
OFFSET_SOFT_TISSUE = (850.0, 1200.0)
"""Where fat and soft tissue land when 1024 was added to every CT number (the raw detector values)."""
SAMPLE_VOXELS = 2_000_000
"""The CT-number checks look at an even subsample of this many voxels (a 512 x 512 x 600 CT has 157 million)."""
FIX_SPACING = (
    "export the CT again with its geometry (DICOM with PixelSpacing and ImagePositionPatient, or a "
    "NIfTI/NRRD/MHA whose header holds the voxel spacing in mm)"
)


def _nifti_header(path: Path) -> tuple[str, bytes] | None:
    """(byte order, the 348-byte NIfTI-1 header), or None for NIfTI-2 or an unreadable header."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(348)
    except (OSError, EOFError):
        return None
    if len(header) < 348:
        return None
    for order in ("<", ">"):
        if struct.unpack(f"{order}i", header[:4])[0] == 348:
            return order, header
    return None


def _text_header(path: Path, end_marker: str) -> str:
    """The text header of an NRRD/MetaImage file (up to ``end_marker`` or 64 kB), lower-cased."""
    with open(path, "rb") as stream:
        head = stream.read(65536).decode("latin-1", errors="replace")
    end = head.find(end_marker)
    return (head if end < 0 else head[:end]).lower()


def _has_pixel_spacing(header) -> bool:
    """PixelSpacing at the top level, or in the shared functional groups of an enhanced (multi-frame) CT."""
    if header.get("PixelSpacing"):
        return True
    for group in header.get("SharedFunctionalGroupsSequence", []):
        if any(measures.get("PixelSpacing") for measures in group.get("PixelMeasuresSequence", [])):
            return True
    return False


def _dicom_spacing_problem(files: list[Path]) -> str | None:
    import pydicom

    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    if not _has_pixel_spacing(first):
        return "its DICOM files have no PixelSpacing, so the pixel size is unknown (a reader would take 1 mm)"
    if len(files) > 1 and not first.get("ImagePositionPatient"):
        return (
            "its DICOM files have no ImagePositionPatient, so the slice spacing is unknown (a reader would take 1 mm)"
        )
    return None


def recorded_spacing_problem(path: Path, dicom_files: list[Path] | None = None) -> str | None:
    """Why the file does not record its voxel spacing (the reader would then take 1 mm), or None when it does."""
    name = path.name.lower()
    try:
        if dicom_files:
            return _dicom_spacing_problem(dicom_files)
        if name.endswith((".nii", ".nii.gz")):
            parsed = _nifti_header(path)
            if parsed is None:
                return None  # NIfTI-2 or damaged: the reader reports a damaged file itself
            order, header = parsed
            pixdim = struct.unpack(f"{order}3f", header[80:92])
            qform, sform = struct.unpack(f"{order}2h", header[252:256])
            if not all(np.isfinite(pixdim)) or min(pixdim) <= 0:
                return f"its NIfTI header gives no voxel spacing (pixdim {tuple(round(p, 3) for p in pixdim)})"
            if qform == 0 and sform == 0 and pixdim == (1.0, 1.0, 1.0):
                return "its NIfTI header records no geometry (qform and sform codes 0, the default 1 mm spacing)"
            return None
        if name.endswith((".nrrd", ".nhdr")):
            header = _text_header(path, "\n\n")
            if "space directions:" not in header and "spacings:" not in header:
                return "its NRRD header has neither 'space directions' nor 'spacings'"
            return None
        if name.endswith((".mha", ".mhd")):
            header = _text_header(path, "elementdatafile")
            if "elementspacing" not in header and "elementsize" not in header:
                return "its MetaImage header has no ElementSpacing"
            return None
        if sniff_format(path) == "dicom":
            return _dicom_spacing_problem([path])
    except Exception:  # noqa: BLE001 - a header this cannot parse is reported by the image reader itself
        return None
    return None


def check_spacing(path: Path, spacing_mm: tuple[float, float, float], dicom_files: list[Path] | None = None) -> None:
    """Refuse a CT whose spacing is not recorded or is not plausible for a CT (:data:`SPACING_RANGE_MM`)."""
    problem = recorded_spacing_problem(path, dicom_files)
    if problem:
        raise InputError(path, f"{problem}: measuring it would give wrong sizes and BMD", FIX_SPACING)
    low, high = SPACING_RANGE_MM
    if any(not low <= s <= high for s in spacing_mm):
        shown = " x ".join(f"{s:g}" for s in spacing_mm)
        raise InputError(
            path,
            f"has a voxel spacing of {shown} mm, outside the {low:g}-{high:g} mm of any CT "
            "(a header in other units, e.g. cm or m?)",
            FIX_SPACING,
        )


NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
"""NIfTI datatype codes of float voxels (the only ones that can hold NaN)."""


def nifti_nonfinite_voxels(path: Path) -> int:
    """How many NaN or infinite voxels a float NIfTI-1 file stores (SimpleITK reads them as 0); 0 for other files.
    Streams the data in 16 MB chunks."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return 0
    parsed = _nifti_header(path)
    if parsed is None:
        return 0
    order, header = parsed
    datatype = struct.unpack(f"{order}h", header[70:72])[0]
    if datatype not in NIFTI_FLOAT_TYPES:
        return 0
    dims = struct.unpack(f"{order}8h", header[40:56])
    count = int(np.prod([max(1, d) for d in dims[1 : 1 + max(1, min(dims[0], 7))]]))
    offset = int(struct.unpack(f"{order}f", header[108:112])[0])
    dtype = np.dtype(order + NIFTI_FLOAT_TYPES[datatype])
    chunk = (16 << 20) // dtype.itemsize
    bad, read = 0, 0
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as stream:
        stream.seek(offset)
        while read < count:
            data = stream.read(min(chunk, count - read) * dtype.itemsize)
            if not data:
                break
            values = np.frombuffer(data[: len(data) // dtype.itemsize * dtype.itemsize], dtype=dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            read += values.size
    return bad


def _share(sample: np.ndarray, interval: tuple[float, float]) -> float:
    return float(np.count_nonzero((sample >= interval[0]) & (sample <= interval[1]))) / sample.size


def check_hounsfield(hu: np.ndarray, path: Path) -> None:
    """Refuse voxels that are not CT numbers in HU: no air or fat at all (an MR, or the +1024 offset of raw CT
    values, told apart by where soft tissue lies), or neither air nor soft tissue."""
    flat = hu.reshape(-1)
    sample = flat[:: max(1, flat.size // SAMPLE_VOXELS)]
    lowest = float(np.percentile(sample, 0.5))
    if lowest >= LOWEST_HU_OF_A_CT:
        if _share(sample, OFFSET_SOFT_TISSUE) >= 0.05:
            raise InputError(
                path,
                f"its CT numbers look stored with a +1024 offset: the lowest values are near "
                f"{lowest:.0f} (air is -1000 HU) and soft tissue lies near 1024-1100",
                "subtract 1024 from the voxels (or set RescaleIntercept to -1024) and export the CT again",
            )
        raise InputError(
            path,
            f"does not look like a CT in Hounsfield units: no air (-1000 HU) or fat (-100 HU) "
            f"anywhere, the lowest values are near {lowest:.0f} (an MR or a rescaled image?)",
            "give the CT in HU (DICOM CT, or a NIfTI/NRRD/MHA exported from it without rescaling)",
        )
    if _share(sample, AIR_HU) < 0.005 and _share(sample, SOFT_TISSUE_HU) < 0.05:
        raise InputError(
            path,
            "does not look like a CT in Hounsfield units: neither air near -1000 HU nor soft "
            "tissue near 0-100 HU (an MR or a rescaled image?)",
            "give the CT in HU (DICOM CT, or a NIfTI/NRRD/MHA exported from it without rescaling)",
        )
