"""Dataset folder format, the paper's hip normalisation, and patient-level folds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bmdgan.datasets.folds import assign_patient_folds, source_ct_of, source_cts_of, split
from bmdgan.datasets.format import (
    CaseRecord,
    DatasetWriter,
    load_image,
    read_header,
    read_manifest,
    rewrite_manifest,
    write_subset,
)
from bmdgan.datasets.normalise import HEAD_IN_ROI, ROI_MM, apply_hip_roi, plan_hip_roi
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


def test_a_subset_shares_the_images_and_refuses_foreign_cases(tmp_path):
    source = tmp_path / "full"
    writer = DatasetWriter(source, SHAPE, {"source": "test"})
    for index in range(3):
        writer.add(CaseRecord(f"c{index}", f"p{index}", "right"), _images(index))
    kept = read_manifest(source)[1:]
    subset = write_subset(source, tmp_path / "subset", kept, "cases 1 and 2")
    assert [r.case_id for r in read_manifest(subset)] == ["c1", "c2"]
    assert load_image(subset, read_manifest(subset)[1], "radiograph")[0, 0] == 2.0
    assert read_header(subset)["subset_of"] == str(source.resolve()) and (subset / "images").is_symlink()
    assert write_subset(source, tmp_path / "subset", kept, "cases 1 and 2") == subset  # written again: the same
    with pytest.raises(InputError, match="holds no case c9"):
        write_subset(source, tmp_path / "other", [CaseRecord("c9", "p9", "right")], "a case it lacks")
    # A resume with another seed would pick other cases: the runs beside the subset were trained on the first.
    with pytest.raises(InputError, match="subset of other cases"):
        write_subset(source, tmp_path / "subset", kept[:1], "case 1 only")
    assert [r.case_id for r in read_manifest(subset)] == ["c1", "c2"]
    with pytest.raises(InputError, match="not a subset of"):
        write_subset(subset, tmp_path / "subset", kept, "a subset of the subset")


def test_an_unfinished_subset_of_another_dataset_is_linked_again(tmp_path):
    """A crash after linking another dataset's images (no header yet) must not leave the new subset reading them."""
    sources = {}
    for value in (1, 2):
        sources[value] = tmp_path / f"full{value}"
        DatasetWriter(sources[value], SHAPE, {"source": "test"}).add(CaseRecord("c0", "p0", "right"), _images(value))
    (tmp_path / "subset").mkdir()
    (tmp_path / "subset" / "images").symlink_to(sources[1] / "images", target_is_directory=True)
    subset = write_subset(sources[2], tmp_path / "subset", read_manifest(sources[2]), "case 0 of the second")
    assert load_image(subset, read_manifest(subset)[0], "radiograph")[0, 0] == 2.0


def test_a_subset_copies_the_images_where_links_are_not_allowed(tmp_path, monkeypatch):
    """Windows without Developer Mode refuses symbolic links: the subset then holds a copy of the images."""
    source = tmp_path / "full"
    writer = DatasetWriter(source, SHAPE, {"source": "test"})
    for index in range(2):
        writer.add(CaseRecord(f"c{index}", f"p{index}", "right"), _images(index))

    def refuse(*args, **kwargs):
        raise OSError(1314, "A required privilege is not held by the client")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    subset = write_subset(source, tmp_path / "subset", read_manifest(source)[1:], "case 1")
    assert (
        not (subset / "images").is_symlink() and load_image(subset, read_manifest(subset)[0], "radiograph")[0, 0] == 1
    )
    assert sorted(p.name for p in (subset / "images").iterdir()) == sorted(
        Path(name).name for name in read_manifest(source)[1].images.values()
    )  # the subset's images only
    assert not list(subset.glob(".partial-*"))


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


def _disc_image(shape, centre_px, radius_px, value=1.0):
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    disc = (columns - centre_px[0]) ** 2 + (rows - centre_px[1]) ** 2 <= radius_px**2
    return (disc * value).astype(np.float32)


def test_hip_region_puts_the_head_where_training_put_it_at_any_spacing():
    """A 'head' (a 25 mm disc) at the same anatomical place on radiographs of 0.2, 0.5 and 1.4 mm pixels lands at
    HEAD_IN_ROI of the region, with its size in mm kept: the region is defined in millimetres, not pixels."""
    output = (128, 64)
    step_mm = ROI_MM[0] / output[0]
    for spacing in (0.2, 0.5, 1.4):
        shape = (int(400 / spacing), int(350 / spacing))
        head = (200 / spacing, 150 / spacing)
        image = _disc_image(shape, head, 25 / spacing)
        roi = plan_hip_roi(head, (head[0] - 40 / spacing, head[1]), "right", (spacing, spacing), output)
        out = apply_hip_roi(image, roi, outside=0.0)
        rows, columns = np.nonzero(out > 0.5)
        assert rows.mean() == pytest.approx(HEAD_IN_ROI[0] * output[0] - 0.5, abs=0.3)
        assert columns.mean() == pytest.approx(HEAD_IN_ROI[1] * output[1] - 0.5, abs=0.3)
        assert out.sum() * step_mm**2 == pytest.approx(np.pi * 25**2, rel=0.03)  # area in mm2 kept


def test_hip_region_turns_with_the_femur_and_mirrors_a_left_hip():
    """The neck point sets the turn: a marker 40 mm lateral along a neck tilted 30 degrees lands on the region's
    horizontal through the head; a left hip (neck to the image's right) comes out as the right hip's mirror."""
    spacing, shape, output = 0.5, (800, 800), (128, 64)
    head = np.array([400.0, 300.0])
    angle = np.radians(30)
    lateral = np.array([-np.cos(angle), np.sin(angle)])  # right hip: lateral is the image's left, and down
    marker = head + 40 / spacing * lateral
    image = _disc_image(shape, marker, 6 / spacing)
    right = plan_hip_roi(head, marker, "right", (spacing, spacing), output)
    out = apply_hip_roi(image, right, outside=0.0)
    rows, columns = np.nonzero(out > 0.5)
    step_mm = ROI_MM[1] / output[1]
    assert rows.mean() == pytest.approx(HEAD_IN_ROI[0] * output[0] - 0.5, abs=0.5)  # level with the head
    assert columns.mean() == pytest.approx(HEAD_IN_ROI[1] * output[1] - 0.5 - 40 / step_mm, abs=0.5)  # lateral
    mirrored_image = image[:, ::-1]
    mirror = np.array([shape[1] - 1, 0.0])
    left = plan_hip_roi(
        (mirror[0] - head[0], head[1]), (mirror[0] - marker[0], marker[1]), "left", (spacing, spacing), output
    )
    assert left.mirrored and not right.mirrored
    np.testing.assert_allclose(apply_hip_roi(mirrored_image, left, outside=0.0), out, atol=1e-4)
    corners = np.array(right.corners_px())
    assert np.hypot(*(corners[1] - corners[0])) * spacing == pytest.approx(ROI_MM[1], rel=1e-3)  # width in mm


def test_hip_region_keeps_areal_density_and_refuses_bad_input():
    """A uniform 0.8 g/cm2 area stays 0.8 g/cm2 (values are intensive); outside the image a density map is 0;
    an unknown side, a missing spacing or a neck point on the head are refused."""
    image = np.full((800, 800), 0.8, np.float32)  # 320 x 320 mm
    roi = plan_hip_roi((400, 320), (300, 320), "right", (0.4, 0.4), (128, 64))
    np.testing.assert_allclose(apply_hip_roi(image, roi), 0.8, rtol=1e-5)
    assert roi.inside_fraction(image.shape) == 1.0
    near_edge = plan_hip_roi((20, 350), (-30, 350), "right", (1.0, 1.0), (128, 64))
    assert 0.0 < near_edge.inside_fraction(image.shape) < 1.0
    assert (apply_hip_roi(image, near_edge, outside=0.0) == 0.0).any()
    with pytest.raises(InputError, match="side must be"):
        plan_hip_roi((1, 1), (0, 1), "up", (1.0, 1.0), (128, 64))
    with pytest.raises(InputError, match="pixel spacing"):
        plan_hip_roi((1, 1), (0, 1), "right", None, (128, 64))
    with pytest.raises(InputError, match="coincides"):
        plan_hip_roi((1, 1), (1, 1), "right", (1.0, 1.0), (128, 64))


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


def test_a_femur_in_another_body_trains_only_without_both_cts_and_is_tested_only_with_both():
    """A transplant (host BODY's pelvis and soft tissue, donor CT's femur) sits in the host's fold; folds by CT keep
    it out of training whenever either CT is held out, and out of the held-out cases unless both are."""

    def case(ct: str, patient: str, donor: str | None = None) -> CaseRecord:
        provenance = {"ct": ct, **({"donor_ct": donor} if donor else {})}
        return CaseRecord(f"{patient}-standing", patient, "left", provenance=json.dumps(provenance))

    records = [case(ct, f"{ct}-v{p}") for ct in ("BODY", "A", "B", "C") for p in range(2)]
    records += [case("BODY", "BODY-t00-v0", donor="A"), case("BODY", "BODY-t01-v0", donor="B")]
    assign_patient_folds(records, n_folds=4, seed=0, group_by="ct")
    fold = {source_ct_of(r): r.fold for r in records}
    assert len(set(fold.values())) == 4 and source_cts_of(records[-1]) == ("BODY", "B")
    for test_fold in range(4):
        train, test = split(records, test_fold)
        trained = {r.patient_id for r in train}
        tested = {r.patient_id for r in test}
        # Holding out BODY or A keeps BODY-with-A's-femur out of training; no fold holds out both: never tested.
        assert ("BODY-t00-v0" in trained) == (test_fold not in (fold["BODY"], fold["A"]))
        assert "BODY-t00-v0" not in tested and "BODY-t01-v0" not in tested
        assert not {ct for r in train for ct in source_cts_of(r)} & {ct for r in test for ct in source_cts_of(r)}
    # Both CTs in one fold: tested there, trained elsewhere.
    for record in records:
        record.fold = 0 if source_ct_of(record) in ("BODY", "A") else 1
    assert "BODY-t00-v0" in {r.patient_id for r in split(records, 0)[1]}
    assert "BODY-t00-v0" in {r.patient_id for r in split(records, 1)[0]}
    # Folds by patient spread a CT over folds (A's two patients in folds 0 and 1): a transplant is then a patient like
    # any other, held out in its own fold.
    for index, record in enumerate(records):
        record.fold = index % 3
    transplant = next(r for r in records if r.patient_id == "BODY-t00-v0")
    assert transplant in split(records, transplant.fold)[1] and transplant not in split(records, transplant.fold)[0]
