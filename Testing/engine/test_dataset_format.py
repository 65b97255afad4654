"""Dataset folder format, the paper's hip normalisation, and patient-level folds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bmdgan.datasets.folds import assign_patient_folds, source_ct_of, split
from bmdgan.datasets.format import CaseRecord, DatasetWriter, load_image, read_header, read_manifest, rewrite_manifest
from bmdgan.datasets.normalise import apply_hip_crop, plan_hip_crop
from bmdgan.errors import InputError

SHAPE = (16, 8)


def _images(value: float) -> dict[str, np.ndarray]:
    return {"radiograph": np.full(SHAPE, value, np.float32), "drr_pf": np.full(SHAPE, value / 10, np.float32)}


def test_write_read_round_trip(tmp_path):
    writer = DatasetWriter(tmp_path, SHAPE, {"source": "test"})
    writer.add(CaseRecord("c1", "p1", "left", mirrored=True, ct_abmd_g_cm2=0.81, qct_vbmd_mg_cm3=290.5), _images(1))
    writer.add(CaseRecord("c2", "p2", "right", pose="supine"), _images(2))
    records = read_manifest(tmp_path)
    assert [r.case_id for r in records] == ["c1", "c2"]
    assert records[0].ct_abmd_g_cm2 == 0.81 and records[0].qct_vbmd_mg_cm3 == 290.5 and records[0].mirrored
    assert math.isnan(records[0].dxa_bmd_g_cm2) and records[1].pose == "supine"
    image = load_image(tmp_path, records[1], "drr_pf")
    assert image.dtype == np.float32 and image.shape == SHAPE and image[0, 0] == pytest.approx(0.2)
    assert read_header(tmp_path)["channels"]["drr_pf"].endswith("g/cm2")
    with pytest.raises(InputError, match="no drr_stage1 image"):
        load_image(tmp_path, records[0], "drr_stage1")


def test_resume_after_a_crash_mid_row(tmp_path):
    writer = DatasetWriter(tmp_path, SHAPE)
    writer.add(CaseRecord("c1", "p1", "left"), _images(1))
    with open(tmp_path / "manifest.csv", "a") as stream:  # a crash while appending the next row
        stream.write("c2,p2,rig")
    resumed = DatasetWriter(tmp_path, SHAPE)
    assert resumed.done == {"c1"}
    resumed.add(CaseRecord("c2", "p2", "right"), _images(2))
    assert [r.case_id for r in read_manifest(tmp_path)] == ["c1", "c2"]
    with pytest.raises(InputError, match="already in the dataset"):
        resumed.add(CaseRecord("c1", "p1", "left"), _images(1))
    assert not list(tmp_path.rglob(".partial-*"))


def test_bad_images_and_other_versions_are_refused(tmp_path):
    writer = DatasetWriter(tmp_path, SHAPE)
    bad = _images(1)
    bad["drr_pf"][0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        writer.add(CaseRecord("c1", "p1", "left"), bad)
    assert read_manifest(tmp_path) == []
    with pytest.raises(InputError, match="holds"):
        DatasetWriter(tmp_path, (32, 8))
    header = json.loads((tmp_path / "dataset.json").read_text())
    header["version"] = 0
    (tmp_path / "dataset.json").write_text(json.dumps(header))
    with pytest.raises(InputError, match="re-build the dataset"):
        read_manifest(tmp_path)
    header["version"] = 99
    (tmp_path / "dataset.json").write_text(json.dumps(header))
    with pytest.raises(InputError, match="upgrade bmdgan"):
        read_manifest(tmp_path)


def test_patient_folds_never_split_a_patient(tmp_path):
    records = [CaseRecord(f"c{i}", f"p{i // 4}", "left", pose=f"pose{i % 4}") for i in range(40)]
    assign_patient_folds(records, n_folds=5, seed=3)
    by_patient = {}
    for record in records:
        by_patient.setdefault(record.patient_id, set()).add(record.fold)
    assert all(len(folds) == 1 for folds in by_patient.values())
    assert sorted(sum(1 for r in records if r.fold == f) for f in range(5)) == [8] * 5  # 10 patients, 2 per fold
    train, test = split(records, 2)
    assert not {r.patient_id for r in train} & {r.patient_id for r in test}
    again = assign_patient_folds([CaseRecord(r.case_id, r.patient_id, "left") for r in records], 5, seed=3)
    assert [r.fold for r in again] == [r.fold for r in records]
    writer = DatasetWriter(tmp_path, SHAPE)
    for record in records[:3]:
        writer.add(record, _images(1))
    rewrite_manifest(tmp_path, records[:3])
    assert [r.fold for r in read_manifest(tmp_path)] == [r.fold for r in records[:3]]
    with pytest.raises(InputError, match="cannot fill"):
        assign_patient_folds(records[:4], n_folds=5)


def test_extending_a_cohort_keeps_every_assigned_fold():
    """New patients join the smallest folds; nobody already assigned moves (a run's held-out fold stays held out)."""
    first = assign_patient_folds([CaseRecord(f"c{i}", f"p{i:02d}", "left") for i in range(36)], n_folds=5, seed=0)
    before = {r.patient_id: r.fold for r in first}
    extended = assign_patient_folds(first + [CaseRecord(f"n{i}", f"q{i}", "left") for i in range(6)], 5, seed=0)
    assert all(r.fold == before[r.patient_id] for r in extended if r.patient_id in before)
    assert sorted(sum(1 for r in extended if r.fold == f) for f in range(5)) == [8, 8, 8, 9, 9]
    # A patient found in two folds (a hand-edited manifest) would be trained on and tested: refused, not healed.
    split_patient = [CaseRecord("a", "p00", "left", fold=0), CaseRecord("b", "p00", "left", fold=3)]
    with pytest.raises(InputError, match="patient p00 is split over folds 0 and 3"):
        assign_patient_folds(split_patient + extended[2:], 5, seed=0)
    with pytest.raises(InputError, match="1 folds leave nothing to train on"):
        assign_patient_folds(extended, 1)


def test_hip_crop_keeps_the_target_half_and_mirrors_the_left_hip():
    rows, columns = 600, 500
    image = np.zeros((rows, columns), np.float32)
    image[:, : columns // 2] = np.linspace(0, 1, columns // 2)[None]  # patient's right half: ramp
    image[:, columns // 2 :] = 5.0  # patient's left half: constant
    right = plan_hip_crop(image.shape, "right")
    out = apply_hip_crop(image, right)
    assert out.shape == (512, 256) and not right.mirrored
    assert out.max() <= 1.0 + 1e-6 and out[:, 10].mean() < out[:, -10].mean()  # ramp kept, not mirrored
    left = plan_hip_crop(image.shape, "left")
    assert left.mirrored and left.column_start == 250
    np.testing.assert_allclose(apply_hip_crop(image, left), 5.0, rtol=1e-6)
    # Mirroring the image swaps the sides exactly.
    np.testing.assert_allclose(apply_hip_crop(image[:, ::-1], plan_hip_crop(image.shape, "left")), out, atol=1e-5)


def test_hip_crop_covers_and_centre_crops_and_maps_back():
    crop = plan_hip_crop((1000, 900), "right")  # half is 450 wide: height limits, scale = 0.569
    assert crop.scale == pytest.approx(max(512 / 1000, 256 / 450))
    assert crop.crop_top == (round(1000 * crop.scale) - 512) // 2 and crop.crop_left == 0
    rows, columns = crop.output_to_source(np.array([0.0, 511.0]), np.array([0.0, 255.0]))
    assert rows[0] == pytest.approx((0 + crop.crop_top + 0.5) / crop.scale - 0.5)
    assert 0 <= columns[0] < columns[1] <= 450
    left = plan_hip_crop((1000, 900), "left")
    _, left_columns = left.output_to_source(np.array([0.0]), np.array([0.0]))
    assert left_columns[0] > 850  # output's left edge is the source's outer right edge, mirrored


def test_hip_crop_preserves_areal_density():
    """A uniform 0.8 g/cm2 area stays 0.8 g/cm2 after resizing: values are intensive, not summed."""
    image = np.full((700, 700), 0.8, np.float32)
    np.testing.assert_allclose(apply_hip_crop(image, plan_hip_crop(image.shape, "right")), 0.8, rtol=1e-5)
    with pytest.raises(InputError, match="side must be"):
        plan_hip_crop(image.shape, "up")


def test_dataset_report_pictures(dataset, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    result = subprocess.run(
        [sys.executable, "-m", "bmdgan", "dataset-report", str(dataset), "--out", str(tmp_path), "--samples", "3"],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "16 images of 8 patients" in result.stdout
    montage = Image.open(tmp_path / "montage.png")
    assert montage.size[1] > montage.size[0]  # three rows of tall hip images
    assert Image.open(tmp_path / "histograms.png").size[0] > 800  # two ground-truth columns side by side


def test_ct_folds_hold_out_whole_source_cts_so_every_held_out_bone_is_unseen():
    """Virtual patients of one CT share its bone: folds by ``ct`` keep them together, folds by patient do not."""

    def virtual_cohort() -> list[CaseRecord]:
        return [
            CaseRecord(
                f"STS_{ct:03d}-v{p}-{pose}",
                f"STS_{ct:03d}-v{p}",
                "right",
                pose=pose,
                provenance=json.dumps({"ct": f"STS_{ct:03d}", "k_trab": 1.0}),
            )
            for ct in range(9)
            for p in range(4)
            for pose in ("standing", "supine")
        ]

    records = virtual_cohort()
    folds_of_ct = {}
    for record in assign_patient_folds(records, n_folds=5, seed=1, group_by="ct"):
        folds_of_ct.setdefault(source_ct_of(record), set()).add(record.fold)
    assert all(len(folds) == 1 for folds in folds_of_ct.values())
    assert sorted(sum(1 for folds in folds_of_ct.values() if f in folds) for f in range(5)) == [1, 2, 2, 2, 2]
    train, test = split(records, 0)
    assert not {source_ct_of(r) for r in train} & {source_ct_of(r) for r in test}
    by_patient = assign_patient_folds(virtual_cohort(), n_folds=5, seed=1)
    assert any(len({r.fold for r in by_patient if source_ct_of(r) == ct}) > 1 for ct in folds_of_ct)
    assert source_ct_of(CaseRecord("real-1", "patient-7", "left")) == "patient-7"  # a real patient is its own bone
    with pytest.raises(InputError, match="4 cts cannot fill 5 folds.*fold by patient"):
        assign_patient_folds([r for r in records if source_ct_of(r) < "STS_004"], n_folds=5, group_by="ct")
    with pytest.raises(InputError, match="unknown fold grouping"):
        assign_patient_folds(records, group_by="site")
