"""Write simulated radiographs as DICOM DX (For Presentation), atomically.

The DICOM carries the geometry (ImagerPixelSpacing at the detector, PixelSpacing at the patient plane,
DistanceSourceToDetector/Patient, ViewPosition AP, PatientOrientation L\\F) so that
:func:`bmdgan.io.read_radiograph` and :func:`bmdgan.projection.geometry_from_radiograph` recover it.
No patient-identifying data is written: PatientID is a pseudonym, name/birth date/sex are empty.
UIDs are derived from the pseudonym and the seed, so the same simulation gives the same file.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .simulator import SimulatedRadiograph

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
"""SOP Class UID of Digital X-Ray Image Storage - For Presentation."""


def write_dx_dicom(
    path: str | Path,
    radiograph: SimulatedRadiograph,
    *,
    patient_id: str,
    seed: int | None = None,
    description: str = "Simulated AP hip radiograph (bmdgan DRR simulator)",
    content_datetime: _dt.datetime | None = None,
) -> Path:
    """Write ``radiograph`` as a DX For Presentation DICOM file (MONOCHROME2, 16 bits allocated)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    geometry = radiograph.geometry
    sid = geometry.source_to_detector_mm
    sod = radiograph.source_to_patient_mm
    magnification = sid / sod
    identity = [
        patient_id,
        str(seed),
        json.dumps(radiograph.parameters.to_dict(), sort_keys=True),
        json.dumps(geometry.to_dict(), sort_keys=True),
    ]
    study_uid = generate_uid(entropy_srcs=identity + ["study"])
    series_uid = generate_uid(entropy_srcs=identity + ["series"])
    instance_uid = generate_uid(entropy_srcs=identity + ["instance"])
    when = content_datetime or _dt.datetime.now()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = instance_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=identity + ["frame"])
    # Patient (pseudonymous only)
    ds.PatientName = ""
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic image; pseudonymous PatientID only"
    # Study / series / equipment
    ds.StudyDate = ds.ContentDate = ds.SeriesDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = ds.SeriesTime = when.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.Modality = "DX"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SeriesDescription = description
    ds.Manufacturer = "bmdgan"
    ds.ManufacturerModelName = "bmdgan DRR radiograph simulator"
    ds.BodyPartExamined = "HIP"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = "simulation parameters: " + json.dumps(radiograph.parameters.to_dict(), sort_keys=True)
    # Geometry
    ds.ViewPosition = "AP"
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [f"{geometry.row_spacing_mm:.6g}", f"{geometry.column_spacing_mm:.6g}"]
    ds.PixelSpacing = [
        f"{geometry.row_spacing_mm / magnification:.6g}",
        f"{geometry.column_spacing_mm / magnification:.6g}",
    ]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "simulated: imager spacing divided by SID / source-to-patient"
    ds.EstimatedRadiographicMagnificationFactor = f"{magnification:.6g}"
    ds.DistanceSourceToDetector = f"{sid:.6g}"
    ds.DistanceSourceToPatient = f"{sod:.6g}"
    ds.DetectorType = "SCINTILLATOR"
    # Image pixel
    rows, columns = radiograph.pixels.shape
    bits = radiograph.bits_stored
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1  # higher pixel values = less X-ray intensity (bone bright)
    ds.WindowCenter = f"{radiograph.window_center:.6g}"
    ds.WindowWidth = f"{radiograph.window_width:.6g}"
    ds.LossyImageCompression = "00"
    ds.PixelData = np.ascontiguousarray(radiograph.pixels, dtype="<u2").tobytes()

    with atomic_path(path) as temporary:
        ds.save_as(temporary, enforce_file_format=True)
    return Path(path)
