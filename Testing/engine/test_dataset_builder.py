"""Building a dataset from real cases: ground truth at the registered pose, pseudonyms only, bad rows skipped."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from bmdgan.datasets.format import load_image, read_manifest
from bmdgan.io import Volume, read_ct, write_volume

IDENTIFYING = {
    "PatientName": "Doe^Jane",
    "PatientBirthDate": "19500101",
    "AccessionNumber": "ACC123456",
    "PatientID": "MRN-987654",
}


@pytest.mark.slow
def test_build_dataset_from_a_case_table(shared_data, tmp_path):
    from bmdgan.projection.dicom_writer import write_dx_dicom
    from bmdgan.projection.geometry import default_ap_geometry
    from bmdgan.projection.simulator import simulate_radiograph

    ct_path = shared_data / "ct" / "ibsi_sts" / "STS_029.nii.gz"
    ct = read_ct(ct_path)
    geometry = default_ap_geometry(ct, pixel_spacing_mm=1.0)
    geometry.save(tmp_path / "pose.json")
    dicom = write_dx_dicom(tmp_path / "xray.dcm", simulate_radiograph(ct, geometry, rng=0), patient_id="x")
    dataset = pydicom.dcmread(dicom)
    for keyword, value in IDENTIFYING.items():
        setattr(dataset, keyword, value)
    dataset.save_as(dicom)
    far = geometry.with_pose(
        geometry.camera_from_lps @ np.array([[1, 0, 0, 400.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    )
    far.save(tmp_path / "other_ct_pose.json")
    no_bone = Volume(np.full((20, 40, 40), 40.0, np.float32), ct.geometry, "HU", "soft tissue only")
    no_bone.array[:, :8] = -1000.0  # air in front of the body: a CT in HU, only without a femur
    write_volume(no_bone, tmp_path / "no_femur.nii.gz")
    rows = [
        {
            "radiograph": "xray.dcm",
            "ct": str(ct_path),
            "side": "left",
            "geometry": "pose.json",
            "dxa_bmd_g_cm2": "0.81",
            "pose": "supine",
        },  # STS_029 holds a left femur (a right one is refused)
        {"radiograph": "missing.dcm", "ct": str(ct_path), "side": "right", "geometry": "pose.json"},
        {
            "radiograph": "xray.dcm",
            "ct": "no_femur.nii.gz",
            "side": "right",
            "geometry": "pose.json",
        },
        {
            "radiograph": "xray.dcm",
            "ct": str(ct_path),
            "side": "left",
            "geometry": "other_ct_pose.json",
        },
    ]
    with open(tmp_path / "cases.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["radiograph", "ct", "side", "geometry", "dxa_bmd_g_cm2", "pose"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "dataset"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmdgan",
            "build-dataset",
            str(tmp_path / "cases.csv"),
            "--out",
            str(out),
            "--key",
            "secret",
            "--image-size",
            "256x128",
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "build_report.json").read_text())
    assert len(report["built"]) == 1 and set(report["skipped"]) == {"row 2", "row 3", "row 4"}
    assert "does not exist" in report["skipped"]["row 2"]
    assert "femoral head" in report["skipped"]["row 3"] or "femur" in report["skipped"]["row 3"]
    assert "outside the radiograph" in report["skipped"]["row 4"]
    record = read_manifest(out)[0]
    assert record.dxa_bmd_g_cm2 == 0.81 and record.pose == "supine" and record.patient_id.startswith("P")
    assert 0.3 < record.ct_abmd_g_cm2 < 1.6 and 100 < record.qct_vbmd_mg_cm3 < 600
    pf, stage1 = load_image(out, record, "drr_pf"), load_image(out, record, "drr_stage1")
    assert pf.shape == (256, 128) and pf.max() > 0.2
    # Stage 1 holds the PF region plus the rest of the femur and pelvis, whose fatty marrow may read slightly
    # below water (negative calibrated density): larger in total, never much smaller anywhere.
    assert stage1.sum() > 1.2 * pf.sum() and (stage1 - pf).min() > -0.05
    # Nothing identifying anywhere in the output: the full values in every file, and the family name alone in
    # the text files (three bytes would match float data by chance).
    for path in out.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for value in IDENTIFYING.values():
                assert value.encode() not in content, (path, value)
            if path.suffix in (".json", ".csv"):
                assert b"Doe" not in content, path
    # Finishing the dataset with other fold settings would move cases between folds: refused before any work.
    assert json.loads((out / "dataset.json").read_text())["fold_settings"] == {"folds": 5, "seed": 0}
    manifest = (out / "manifest.csv").read_text()
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmdgan",
            "build-dataset",
            str(tmp_path / "cases.csv"),
            "--out",
            str(out),
            "--key",
            "secret",
            "--image-size",
            "256x128",
            "--fold-count",
            "3",
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )
    assert again.returncode == 2 and "holds a dataset made with folds 5, not 3" in again.stderr
    assert (out / "manifest.csv").read_text() == manifest
