"""Build small DICOM radiographs with chosen attributes, for the reader's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def write_dx(path: Path, stored: np.ndarray, **attributes) -> Path:
    """Write ``stored`` (uint16 [row, col]) as a DX file; keyword arguments become DICOM attributes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = DX_FOR_PRESENTATION
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.PatientName = "Test^Phantom"
    dataset.PatientID = "TEST-0001"
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 12
    dataset.HighBit = 11
    dataset.PixelRepresentation = 0
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    dataset.PixelData = stored.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def hip_like_phantom(rows: int = 96, columns: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An attenuation map (bone = 1, soft tissue = 0.3, air = 0) and the boolean bone mask."""
    y, x = np.mgrid[0:rows, 0:columns]
    body = np.abs(x - columns / 2) < columns * 0.4
    bone = (x - columns / 2) ** 2 + (y - rows / 2) ** 2 < (min(rows, columns) / 5) ** 2
    attenuation = np.where(bone, 1.0, np.where(body, 0.3, 0.0))
    return attenuation, bone
