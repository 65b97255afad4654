"""Paired datasets from real cases: radiograph + CT + registered pose -> normalised images and ground truth.

Each case's input region is cut around the CT's femoral head centre and neck point projected by the registered
pose (:mod:`.normalise`): the landmarks are exact here, where ``estimate`` has the hip detector's.

The case table is a CSV with one row per radiograph:

=================  ==========================================================================================
radiograph         the patient's radiograph (DICOM, PNG, JPEG, TIFF)
ct                 the patient's CT (DICOM folder, NIfTI, NRRD, MHA)
side               hip to use: left or right
geometry           the pose and geometry JSON of the CT against this radiograph (``bmdgan register``)
labels             optional label map (1 pelvis, 2 femur, 3 PF region; else automatic)
landmarks          optional ``.mrk.json`` landmarks that override the automatic ones
calibration        optional calibration JSON (``bmdgan calibrate``; else phantomless)
dxa_bmd_g_cm2      optional DXA areal BMD (g/cm2)
pose               optional pose label (standing, supine...)
patient            optional patient identifier to pseudonymise (else the DICOM PatientID or the file name)
=================  ==========================================================================================

No patient-identifying data leaves the source: ids are pseudonyms (a keyed hash of the DICOM PatientID, or of
the radiograph's file name), images are stored as bare float32 arrays, and the provenance names the table row,
never a path. A case that cannot be built is skipped and its reason goes into ``build_report.json``, scrubbed of
every path, file name and identifier of the row (:func:`scrub`).

A radiograph belongs to one patient: a row whose radiograph an earlier row gave (same SOPInstanceUID, or the same
pixels) under another patient key is skipped, so one radiograph cannot reach two folds (trained on in one, tested
in the other). The first row keeps it even when that row cannot be built: the table itself is contradictory.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import math
import re
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..ct import labels as L
from ..ct.calibration import Calibration
from ..ct.markups import read_landmark_file
from ..errors import BMDGANError, InputError
from ..io import read_ct, read_label_volume, read_radiograph
from ..io.sniff import sniff_format
from ..progress import progress_bar
from ..projection.geometry import ProjectionGeometry
from .format import CaseRecord, DatasetWriter
from .normalise import NECK_POINT_MM, apply_hip_roi, plan_hip_roi

REQUIRED_COLUMNS = ("radiograph", "ct", "side", "geometry")
POSE_LABEL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
"""What the pose column may hold: a label, never free text (it goes into the manifest)."""
MIN_PF_PIXELS_IN_IMAGE = 50
"""A registered pose must put the CT's PF region on the radiograph: fewer projected pixels mean a pose file of
another CT or another radiograph."""


def pseudonym(identifier: str, key: str) -> str:
    """A stable pseudonym: HMAC-SHA256 of the identifier with the project's secret key (10 hex digits)."""
    return "P" + hmac.new(key.encode(), identifier.encode(), hashlib.sha256).hexdigest()[:10]


def patient_identifier(radiograph_path: Path) -> str:
    """The DICOM PatientID when there is one, else the file name (never written out: only hashed)."""
    if radiograph_path is None or not radiograph_path.is_file():
        raise InputError(radiograph_path, "the case's radiograph file does not exist", "fix the case table")
    if radiograph_path.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        return radiograph_path.name
    import pydicom

    try:
        dataset = pydicom.dcmread(radiograph_path, stop_before_pixels=True)
    except Exception as error:  # pydicom raises several types for broken files
        raise InputError(
            radiograph_path, f"is not a readable DICOM file ({type(error).__name__})", "check the radiograph file"
        ) from None
    return str(dataset.get("PatientID", "")) or radiograph_path.name


PATH_TOKEN = re.compile(r"[^\s'\"()\[\]{},;]*[/\\][^\s'\"()\[\]{},;]*")
"""Anything in a message that looks like a path (holds a / or a \\)."""


def scrub(message: str, row: dict, table: Path, identifiers: tuple[str, ...] = ()) -> str:
    """``message`` without anything of the source that could identify a patient: every path-like token becomes
    ``<path>``, and every value of the row (file names, stems, folder names, free text), the table's folder and
    ``identifiers`` (e.g. the DICOM PatientID) become ``<redacted>`` wherever they stand as whole words."""
    secrets = set(identifiers)
    for value in row.values():
        value = (value or "").strip()
        if not value:
            continue
        try:
            float(value)
            continue  # numbers (BMD) identify no one and explain errors
        except ValueError:
            pass
        if value.lower() in ("left", "right"):
            continue
        secrets.add(value)
        path = _resolve(table, value)
        if path is not None:
            secrets |= {str(path), path.name.split(".")[0], *Path(value).parts}
    secrets |= {str(table.parent), *table.parent.parts}
    text = PATH_TOKEN.sub("<path>", message)
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        text = re.sub(r"(?<![\w])" + re.escape(secret) + r"(?![\w])", "<redacted>", text, flags=re.IGNORECASE)
    return text


def skip_reason(error: Exception, paths: dict[str, Path | None]) -> str:
    """What went wrong with a row, the file named by its table column instead of its path."""
    if isinstance(error, InputError):
        column = next(
            (
                name
                for name, path in paths.items()
                if path is not None and error.path is not None and Path(error.path) == path
            ),
            "input",
        )
        where = f"{column} file: " if error.path is not None else ""
        return f"{where}{error.problem}" + (f" ({error.fix})" if error.fix else "")
    if isinstance(error, OSError):
        return f"{type(error).__name__}: {error.strerror or 'cannot be read'}"
    return str(error)


def radiograph_fingerprints(path: Path) -> set[str]:
    """What identifies one radiograph across copies: its DICOM SOPInstanceUID (when it has one) and a SHA-256 of
    its pixels as read (float32)."""

    keys = {"pixels:" + hashlib.sha256(read_radiograph(path).pixels.tobytes()).hexdigest()}
    if sniff_format(path) == "dicom":
        import pydicom

        uid = str(pydicom.dcmread(path, stop_before_pixels=True).get("SOPInstanceUID", "")).strip()
        if uid:
            keys.add("uid:" + uid)
    return keys


def _resolve(table: Path, value: str) -> Path | None:
    if not value.strip():
        return None
    path = Path(value.strip())
    return path if path.is_absolute() else table.parent / path


def build_case(row: dict, table: Path, image_shape: tuple[int, int]) -> tuple[dict, dict[str, np.ndarray]]:
    """Ground truth and normalised images of one table row; raises a BMDGANError saying why it cannot be built."""
    from ..ct.measurement import neutral_frame
    from ..ct.pipeline import analyse_ct
    from ..projection.projector import Projector

    side = row["side"].strip().lower()
    pose = (row.get("pose") or "").strip().lower() or "unknown"
    if not POSE_LABEL.match(pose):  # the manifest carries no free text from the source
        raise InputError(None, "the pose is not a short label", "use e.g. standing or supine (letters, digits, - _)")
    paths = {
        name: _resolve(table, row.get(name, ""))
        for name in ("radiograph", "ct", "geometry", "labels", "landmarks", "calibration")
    }
    for name, path in paths.items():
        if path is not None and not path.exists():
            raise InputError(path, f"the case's {name} file does not exist", "fix the case table")
    radiograph = read_radiograph(paths["radiograph"])
    ct = read_ct(paths["ct"])
    geometry = ProjectionGeometry.load(paths["geometry"])
    if geometry.shape != radiograph.shape:
        raise InputError(
            paths["geometry"],
            f"the geometry's detector is {geometry.shape[1]} x {geometry.shape[0]} "
            f"pixels, the radiograph {radiograph.shape[1]} x {radiograph.shape[0]}",
            "give the pose registered to this radiograph",
        )
    analysis = analyse_ct(
        ct,
        side=side,
        label_volume=read_label_volume(paths["labels"], like=ct) if paths["labels"] else None,
        landmark_points=read_landmark_file(paths["landmarks"]) if paths["landmarks"] else None,
        calibration=Calibration.load(paths["calibration"]) if paths["calibration"] else None,
    )
    labels = analysis.label_volume().array
    density = analysis.calibration.density(ct.array).astype(np.float32)
    density[analysis.segmentation.metal] = analysis.measurement.qct_vbmd_mg_cm3  # metal is not bone mineral
    projector = Projector(
        density,
        ct.geometry.ijk_to_lps(),
        unit="mg/cm3",
        masks=np.stack([labels > 0, labels == L.PF_REGION]),
        channel_names=["drr_stage1", "drr_pf"],
    )
    drr_stage1, drr_pf = projector.project(geometry)
    if (drr_pf > 0.05).sum() < MIN_PF_PIXELS_IN_IMAGE:
        raise InputError(
            paths["geometry"],
            "the registered pose puts the CT's proximal femur outside the radiograph",
            "the pose file belongs to another CT or radiograph: register this pair again",
        )
    head = np.asarray(analysis.landmarks.points["femoral_head_centre"], float)
    neck = head + NECK_POINT_MM * neutral_frame(analysis.landmarks).matrix()[0]
    head_px, neck_px = geometry.project_points(np.stack([head, neck]))
    roi = plan_hip_roi(head_px, neck_px, side, geometry.spacing_at_mm(head), image_shape)  # the pose knows it
    images = {
        "radiograph": apply_hip_roi(radiograph.pixels, roi),
        "drr_stage1": apply_hip_roi(drr_stage1, roi, outside=0.0),
        "drr_pf": apply_hip_roi(drr_pf, roi, outside=0.0),
    }
    measurement = analysis.measurement
    dxa = row.get("dxa_bmd_g_cm2", "").strip()
    truth = {
        "ct_abmd_g_cm2": measurement.ct_abmd_g_cm2,
        "qct_vbmd_mg_cm3": measurement.qct_vbmd_mg_cm3,
        "dxa_bmd_g_cm2": float(dxa) if dxa else math.nan,
        "mirrored": roi.mirrored,
        "pose": pose,
        "side": side,
    }
    return truth, images


def build_dataset(
    table: str | Path, out: str | Path, key: str, image_shape: tuple[int, int] = (512, 256), progress: bool = True
) -> dict:
    """Build (or finish) ``out`` from the case table; returns the report written to ``build_report.json``."""

    table = Path(table)
    try:
        with open(table, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(
            table,
            f"cannot be read as a CSV case table ({type(error).__name__})",
            "give a UTF-8 CSV file with a header row",
        ) from None
    missing = [c for c in REQUIRED_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise InputError(
            table,
            f"the case table is empty or lacks columns {missing}",
            f"give a CSV with at least {', '.join(REQUIRED_COLUMNS)}",
        )
    writer = DatasetWriter(out, image_shape, {"source": "bmdgan build-dataset"})
    report = {"built": [], "skipped": {}}
    per_patient: dict[str, int] = {}
    seen: dict[str, tuple[str, int]] = {}  # radiograph fingerprint -> (patient, first row giving it)
    for number, row in enumerate(progress_bar(rows, desc="cases", disable=not progress), start=1):
        identifier = ""
        paths = {
            name: _resolve(table, row.get(name) or "")
            for name in ("radiograph", "ct", "geometry", "labels", "landmarks", "calibration")
        }
        try:
            identifier = (row.get("patient") or "").strip() or patient_identifier(paths["radiograph"])
            patient = pseudonym(identifier, key)
            fingerprints = radiograph_fingerprints(paths["radiograph"])
            earlier = next((seen[f] for f in fingerprints if f in seen and seen[f][0] != patient), None)
            if earlier is not None:
                raise InputError(
                    paths["radiograph"],
                    f"is the same radiograph as row {earlier[1]} (same "
                    "SOPInstanceUID or identical pixels) under another patient "
                    "key: it would reach two folds",
                    "give each radiograph under one patient (the 'patient' column or its PatientID)",
                )
            seen.update({f: seen.get(f, (patient, number)) for f in fingerprints})
            per_patient[patient] = per_patient.get(patient, 0) + 1
            case_id = f"{patient}-{per_patient[patient]:02d}"
            if case_id in writer.done:
                report["built"].append(case_id)
                continue
            truth, images = build_case(row, table, image_shape)
        except (BMDGANError, OSError) as error:
            report["skipped"][f"row {number}"] = scrub(
                skip_reason(error, paths), row, table, (identifier,) if identifier else ()
            )
            continue
        writer.add(
            CaseRecord(
                case_id,
                patient,
                truth["side"],
                truth["pose"],
                truth["mirrored"],
                dxa_bmd_g_cm2=truth["dxa_bmd_g_cm2"],
                ct_abmd_g_cm2=truth["ct_abmd_g_cm2"],
                qct_vbmd_mg_cm3=truth["qct_vbmd_mg_cm3"],
                provenance=f"case table row {number}",
            ),
            images,
        )
        report["built"].append(case_id)
    atomic_write_text(Path(out) / "build_report.json", json.dumps(report, indent=2))
    return report
