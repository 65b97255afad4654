"""Virtual cohort on a synthetic femur-like CT: channel linearity against the simulator's own material
decomposition, orientation from landmarks, ground-truth scaling, determinism and resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bmdgan.cohort.channels import CHANNELS, channel_volumes, combine
from bmdgan.cohort.generator import (
    CohortSettings,
    hip_geometry,
    make_patient_cases,
    orientation_flips,
    patient_of,
    simulate_cohort,
)
from bmdgan.cohort.prepared_ct import PreparedCT, load_prepared, save_prepared
from bmdgan.cohort.virtual_patient import sample_patient, sample_pose
from bmdgan.datasets.folds import source_cts_of
from bmdgan.datasets.format import load_image, read_manifest
from bmdgan.errors import InputError
from bmdgan.io import Volume, VolumeGeometry
from bmdgan.projection.materials import decompose_hu
from bmdgan.projection.projector import Projector


def synthetic_femur(flip_superior: bool = False, flip_left_right: bool = False) -> PreparedCT:
    """A 'right femur' in LPS: head (sphere) superior and medial (toward -x... patient's left is +x, so the
    right femur's medial side is +x), shaft (tube) below, in soft tissue; cortical shell + trabecular core."""
    shape = (60, 64, 64)  # k, j, i at 2.5 x 2 x 2 mm
    geometry = VolumeGeometry((2.0, 2.0, 2.5), (-64.0, -64.0, -75.0))
    k, j, i = np.indices(shape)
    x, y, z = -64 + 2.0 * i, -64 + 2.0 * j, -75 + 2.5 * k
    if flip_superior:
        z = -z
    if flip_left_right:
        x = -x
    hu = np.where(x**2 + y**2 < 55**2, 40.0, -1000.0).astype(np.float32)
    hu[(np.abs(x) < 60) & (np.abs(y) < 56) & (x**2 + y**2 >= 45**2)] = -100.0  # a fat layer
    head = (x - 15) ** 2 + y**2 + (z - 40) ** 2 < 20**2
    neck = (np.abs(z - 30) < 8) & (np.abs(y) < 9) & (x > -10) & (x < 15)
    shaft = ((x + 10) ** 2 + y**2 < 14**2) & (z < 35)
    bone = head | neck | shaft
    core = ((x - 15) ** 2 + y**2 + (z - 40) ** 2 < 16**2) | ((x + 10) ** 2 + y**2 < 9**2) & (z < 35)
    density = np.where(bone, np.where(core, 200.0, 900.0), 0.0).astype(np.float32)
    hu[bone] = density[bone] / 0.75 + 40.0
    pf = bone & (z > 0)
    prepared_geometry = geometry
    head_centre = np.array([15.0 * (-1 if flip_left_right else 1), 0.0, 40.0 * (-1 if flip_superior else 1)])
    shaft_point = np.array([-10.0 * (-1 if flip_left_right else 1), 0.0, -50.0 * (-1 if flip_superior else 1)])
    lateral = np.array([-1.0 if not flip_left_right else 1.0, 0.0, 0.0])  # from the head toward the trochanter
    up = np.array([0.0, 0.0, -1.0 if flip_superior else 1.0])
    frame = np.stack([lateral, np.cross(up, lateral), up])
    return PreparedCT(
        "SYN",
        Volume(hu, prepared_geometry, "HU", "synthetic"),
        density,
        bone,
        pf,
        head_centre,
        shaft_point,
        "right",
        (0.3, 0.5),
        (150.0, 100.0),
        {"method": "synthetic"},
        frame,
    )


def test_channels_at_unit_factors_equal_the_simulator_materials():
    prepared = synthetic_femur()
    volumes = channel_volumes(prepared.hu.array, prepared.density_mg_cm3, prepared.bone_mask, prepared.pf_mask)
    patient = sample_patient(0, "SYN", 0)
    geometry = hip_geometry(prepared, sample_pose(0, patient, "standing"), (128, 64))
    projected = dict(zip(CHANNELS, Projector(volumes, prepared.hu.geometry.ijk_to_lps()).project(geometry)))
    parts = combine(projected, 1.0, 1.0, 0.0, geometry.row_spacing_mm)
    direct = Projector(
        decompose_hu(prepared.hu.array, prepared.density_mg_cm3), prepared.hu.geometry.ijk_to_lps()
    ).project(geometry)
    np.testing.assert_allclose(parts["materials"], direct, atol=2e-3 * direct.max())
    # Ground truth: the PF channel is the projected mineral of the PF region only, and scales with k.
    pf_direct = Projector(prepared.density_mg_cm3 * prepared.pf_mask, prepared.hu.geometry.ijk_to_lps()).project(
        geometry
    )
    np.testing.assert_allclose(parts["drr_pf"], pf_direct[0], atol=1e-3 * pf_direct.max())
    doubled = combine(projected, 2.0, 2.0, 0.0, geometry.row_spacing_mm)
    np.testing.assert_allclose(doubled["drr_pf"], 2 * parts["drr_pf"], rtol=1e-6)
    fatter = combine(projected, 1.0, 1.0, 30.0, geometry.row_spacing_mm)
    body = projected["soft_base"] > 1.0
    assert np.median(fatter["materials"][0][body] - parts["materials"][0][body]) == pytest.approx(2.85, rel=0.05)


@pytest.mark.parametrize("flip_superior, flip_left_right", [(False, False), (True, False), (False, True), (True, True)])
def test_orientation_puts_the_head_up_and_medial_right(flip_superior, flip_left_right):
    prepared = synthetic_femur(flip_superior, flip_left_right)
    patient = sample_patient(0, "SYN", 0)
    geometry = hip_geometry(prepared, sample_pose(0, patient, "standing"), (128, 64))
    flip_rows, flip_columns = orientation_flips(prepared, geometry)
    head, shaft = geometry.project_points(np.stack([prepared.head_centre_lps, prepared.shaft_point_lps]))
    head_row = 127 - head[1] if flip_rows else head[1]
    shaft_row = 127 - shaft[1] if flip_rows else shaft[1]
    head_column = 63 - head[0] if flip_columns else head[0]
    shaft_column = 63 - shaft[0] if flip_columns else shaft[0]
    assert head_row < shaft_row and head_column > shaft_column


def test_patient_cases_have_consistent_ground_truth_and_are_deterministic(tmp_path):
    prepared = synthetic_femur()
    save_prepared(prepared, tmp_path)
    back = load_prepared(tmp_path, "SYN")
    np.testing.assert_array_equal(back.density_mg_cm3, prepared.density_mg_cm3)
    settings = CohortSettings(
        str(tmp_path), seed=3, patients_per_ct=2, poses=("standing", "abduction"), image_shape=(128, 64)
    )
    cases = make_patient_cases(settings, "SYN", 0)
    again = make_patient_cases(settings, "SYN", 0)
    patient = patient_of(settings, "SYN", 0, "SYN")
    assert patient.bone_factor != sample_patient(3, "SYN", 0).bone_factor  # a population draw, not the source's
    for (record, images), (record_again, images_again) in zip(cases, again):
        assert record.row() == record_again.row()
        for name in images:
            np.testing.assert_array_equal(images[name], images_again[name])
        assert record.ct_abmd_g_cm2 == pytest.approx(0.3 * patient.trabecular_factor + 0.5 * patient.cortical_factor)
        assert images["drr_pf"].max() > 0 and (images["drr_stage1"] >= images["drr_pf"] - 1e-6).all()
        # After orientation the PF region (head, neck) lies above the rest of the femur (the shaft).
        rows = np.arange(images["drr_pf"].shape[0])
        shaft_only = np.clip(images["drr_stage1"] - images["drr_pf"], 0, None).sum(axis=1)
        pf_rows = images["drr_pf"].sum(axis=1)
        assert (rows * pf_rows).sum() / pf_rows.sum() < (rows * shaft_only).sum() / shaft_only.sum()
    standing, abduction = cases[0][1]["drr_pf"], cases[1][1]["drr_pf"]
    assert np.abs(standing - abduction).mean() > 1e-3  # another pose, another projection of the same bone
    # A femur placed into another body (bmdgan.cohort.transplant) keeps its donor CT in the provenance: a second
    # source, which whole-CT folds hold out with it.
    save_prepared(replace(prepared, key="SYN-t00", donor_ct="DONOR"), tmp_path)
    record = make_patient_cases(settings, "SYN-t00", 0)[0][0]
    assert source_cts_of(record) == ("SYN", "DONOR") and source_cts_of(cases[0][0]) == ("SYN",)


@pytest.mark.slow
def test_cohort_resumes_to_the_same_dataset(tmp_path):
    save_prepared(synthetic_femur(), tmp_path / "prepared")
    settings = CohortSettings(
        str(tmp_path / "prepared"),
        seed=1,
        patients_per_ct=5,
        poses=("standing", "supine"),
        image_shape=(64, 32),
        folds=5,
    )
    straight = simulate_cohort(settings, ["SYN"], tmp_path / "straight", workers=1, progress=False)
    assert straight["images"] == 10 and straight["patients"] == 5
    # A run killed after three patients: its dataset holds those cases only; restarting finishes it.
    partial = replace(settings, patients_per_ct=3)
    simulate_cohort(partial, ["SYN"], tmp_path / "resumed", workers=1, progress=False)
    resumed = simulate_cohort(settings, ["SYN"], tmp_path / "resumed", workers=2, progress=False)
    assert resumed["written_now"] == 4
    a, b = read_manifest(tmp_path / "straight"), read_manifest(tmp_path / "resumed")
    assert [r.row() for r in a] == [r.row() for r in b]
    for record in a:
        np.testing.assert_array_equal(
            load_image(tmp_path / "straight", record, "radiograph"),
            load_image(tmp_path / "resumed", record, "radiograph"),
        )
    assert len({r.fold for r in a}) == 5
    assert not list(Path(tmp_path).rglob(".partial-*"))
    # A cohort made before site protocols has no acquisition setting: its images each had their own ('varied').
    header = json.loads((tmp_path / "straight" / "dataset.json").read_text())
    del header["settings"]["acquisition"]
    (tmp_path / "straight" / "dataset.json").write_text(json.dumps(header))
    assert (
        simulate_cohort(
            replace(settings, acquisition="varied"), ["SYN"], tmp_path / "straight", workers=1, progress=False
        )["written_now"]
        == 0
    )
    with pytest.raises(InputError, match="holds a dataset made with acquisition 'varied', not 'reference'"):
        simulate_cohort(settings, ["SYN"], tmp_path / "straight", workers=1, progress=False)


def test_cohort_folds_by_ct_keep_each_source_ct_in_one_fold(tmp_path):
    for ct_id in ("SYN", "SYN2", "SYN3", "SYN4"):
        save_prepared(replace(synthetic_femur(), ct_id=ct_id), tmp_path / "prepared")
    settings = CohortSettings(
        str(tmp_path / "prepared"),
        seed=2,
        patients_per_ct=2,
        poses=("standing",),
        image_shape=(64, 32),
        folds=3,
        fold_by="ct",
    )
    simulate_cohort(settings, ["SYN", "SYN2", "SYN3"], tmp_path / "cohort", workers=1, progress=False)
    records = read_manifest(tmp_path / "cohort")
    folds = {ct: {r.fold for r in records if r.patient_id.startswith(f"{ct}-")} for ct in ("SYN", "SYN2", "SYN3")}
    assert sorted(fold for ct_folds in folds.values() for fold in ct_folds) == [0, 1, 2]
    assert json.loads((tmp_path / "cohort" / "dataset.json").read_text())["settings"]["fold_by"] == "ct"
    manifest = (tmp_path / "cohort" / "manifest.csv").read_text()
    for changed, message in (
        (replace(settings, fold_by="patient"), "fold_by 'ct', not 'patient'"),
        (replace(settings, seed=3), "seed 2, not 3"),
        (replace(settings, folds=2), "folds 3, not 2"),
    ):
        with pytest.raises(InputError, match=f"holds a dataset made with {message}"):
            simulate_cohort(changed, ["SYN", "SYN2", "SYN3"], tmp_path / "cohort", workers=1, progress=False)
    assert (tmp_path / "cohort" / "manifest.csv").read_text() == manifest  # folds not moved
    # Extended by one CT given alone (the cohort already holds three): it joins a fold, nobody else moves.
    extended = simulate_cohort(settings, ["SYN4"], tmp_path / "cohort", workers=1, progress=False)
    assert extended["written_now"] == 2 and extended["cts"] == 4
    after = {r.case_id: r.fold for r in read_manifest(tmp_path / "cohort")}
    assert all(after[r.case_id] == r.fold for r in records)
    assert len({fold for case, fold in after.items() if case.startswith("SYN4-")}) == 1
    assert json.loads((tmp_path / "cohort" / "dataset.json").read_text())["ct_ids"] == ["SYN", "SYN2", "SYN3", "SYN4"]
    with pytest.raises(InputError, match="3 CTs cannot fill 5 folds by CT"):
        simulate_cohort(
            replace(settings, folds=5), ["SYN", "SYN2", "SYN3"], tmp_path / "few", workers=1, progress=False
        )
    with pytest.raises(InputError, match="1 folds leave nothing to train on"):
        simulate_cohort(replace(settings, folds=1), ["SYN"], tmp_path / "few", workers=1, progress=False)
    with pytest.raises(InputError, match="unknown fold grouping 'site'"):
        simulate_cohort(replace(settings, fold_by="site"), ["SYN"], tmp_path / "few", workers=1, progress=False)
    assert not (tmp_path / "few").exists()  # refused before any work


def test_simulate_cohort_cli_refuses_too_few_cts_before_preparing_them(tmp_path, capsys):
    from bmdgan.cli.main import main

    code = main(
        [
            "simulate-cohort",
            str(tmp_path / "STS_001.nii.gz"),
            str(tmp_path / "STS_002.nii.gz"),
            "--out",
            str(tmp_path / "cohort"),
            "--fold-by",
            "ct",
            "--fold-count",
            "5",
        ]
    )
    assert code == 2 and "2 CTs cannot fill 5 folds by CT" in capsys.readouterr().err
    assert not (tmp_path / "cohort").exists()  # the CTs (which do not even exist) were never opened


@pytest.fixture(scope="session")
def real_cohort(shared_data, tmp_path_factory):
    """A small virtual cohort from three real CTs (5 patients x 2 poses each, 256 x 128 images)."""
    from bmdgan.cohort.generator import prepare_cts

    out = tmp_path_factory.mktemp("real_cohort")
    paths = [shared_data / "ct" / "ibsi_sts" / f"{case}.nii.gz" for case in ("STS_015", "STS_029", "STS_036")]
    ct_ids, skipped = prepare_cts(paths, out / "prepared", progress=False)
    assert not skipped, skipped
    settings = CohortSettings(
        str(out / "prepared"),
        seed=0,
        patients_per_ct=5,
        poses=("standing", "abduction"),
        image_shape=(256, 128),
        folds=5,
    )
    simulate_cohort(settings, ct_ids, out, workers=2, progress=False)
    return out


def test_the_scan_cuts_of_thigh_crops_are_measured(real_cohort):
    """The three crops cut their PF regions by different amounts (docs/bones.md): STS_029's box takes off a third of
    its posterior section, STS_036's a quarter of its side section, STS_015's box only grazes the bone."""
    from bmdgan.cohort.prepared_ct import pf_scan_cuts, prepared_bones

    folder = real_cohort / "prepared"
    cuts = {ct: pf_scan_cuts(folder, prepared_bones(folder, ct)[0]) for ct in ("STS_015", "STS_029", "STS_036")}
    assert cuts["STS_029"] == {"j last": pytest.approx(0.35, abs=0.05)}
    assert cuts["STS_036"]["i last"] == pytest.approx(0.26, abs=0.05)
    assert 0 < cuts["STS_015"]["i last"] < 0.1


def test_simulate_cohort_refuses_the_cts_whose_scan_cuts_a_pf_region_beyond_the_limit(
    real_cohort, shared_data, tmp_path
):
    from bmdgan.cli.main import main

    out = tmp_path / "cohort"
    out.mkdir()
    (out / "prepared").symlink_to(real_cohort / "prepared")  # already prepared: the cache is reused
    crops = [str(shared_data / "ct" / "ibsi_sts" / f"{case}.nii.gz") for case in ("STS_015", "STS_029", "STS_036")]
    common = ["--patients-per-ct", "1", "--poses", "standing", "--image-size", "64x32", "--fold-count", "2"]
    assert main(["simulate-cohort", *crops, "--out", str(out), *common, "--max-pf-cut", "30%", "--workers", "1"]) == 0
    summary = json.loads((out / "cohort_summary.json").read_text())
    assert list(summary["skipped_cts"]) == ["STS_029"]  # 35 % of its section cut; STS_036's 26 % is kept
    assert "j last face, 35%" in summary["skipped_cts"]["STS_029"]
    assert sorted({r.patient_id.split("-")[0] for r in read_manifest(out)}) == ["STS_015", "STS_036"]
    assert main(["simulate-cohort", *crops, "--out", str(out), *common, "--max-pf-cut", "20%", "--workers", "1"]) == 2
    assert sorted({r.patient_id.split("-")[0] for r in read_manifest(out)}) == ["STS_015", "STS_036"]  # untouched


@pytest.mark.slow
def test_radiograph_intensity_does_not_measure_bmd_but_the_pf_drr_does(real_cohort):
    """The paper's Fig. 1: the mean radiograph intensity in the PF region follows the ground-truth aBMD only
    weakly (soft tissue, exposure, processing and pose dominate it; 0.51 on these 30 images of one site, 0.14
    over the 10-CT cohort), the mean of the PF-DRR follows it closely."""
    records = read_manifest(real_cohort)
    assert len(records) == 30 and len({r.patient_id for r in records}) == 15
    abmd = np.array([r.ct_abmd_g_cm2 for r in records])
    intensity, pf_mean = [], []
    for record in records:
        radiograph = load_image(real_cohort, record, "radiograph")
        pf = load_image(real_cohort, record, "drr_pf")
        region = pf > 0.1 * pf.max()
        intensity.append(radiograph[region].mean() / radiograph.max())  # bit depth varies: use the full scale
        pf_mean.append(pf[region].mean())
    r_radiograph = np.corrcoef(abmd, intensity)[0, 1]
    r_pf_drr = np.corrcoef(abmd, pf_mean)[0, 1]
    print(f"Pearson r with ground-truth aBMD: radiograph PF intensity {r_radiograph:.3f}, PF-DRR mean {r_pf_drr:.3f}")
    assert r_radiograph < 0.6
    assert r_pf_drr > 0.9
    assert abmd.min() > 0.3 and abmd.max() < 1.6  # g/cm2: plausible for scaled real femurs


@pytest.mark.slow
def test_prepare_ct_from_a_totalsegmentator_segmentation(shared_data):
    """A pelvis CT whose femur comes from TotalSegmentator's masks: the cohort's components add up to the
    measurement of bmdgan measure-ct on the same labels."""
    from bmdgan.cohort.prepared_ct import prepare_ct

    folder = shared_data / "ct" / "totalsegmentator_example"
    masks = [folder / "masks_totalsegmentator_v1" / f"{name}.nii.gz" for name in ("femur_right", "hip_right")]
    prepared = prepare_ct(folder / "example_ct.nii.gz", "example_ct", "right", masks)
    assert prepared.side == "right" and prepared.pf_mask.any() and prepared.bone_mask.sum() > prepared.pf_mask.sum()
    assert sum(prepared.abmd_components_g_cm2) == pytest.approx(prepared.calibration["full_ct_abmd_g_cm2"], rel=1e-5)
    assert sum(prepared.vbmd_components_mg_cm3) == pytest.approx(prepared.calibration["full_qct_vbmd_mg_cm3"], rel=1e-5)
    assert 0.3 < sum(prepared.abmd_components_g_cm2) < 1.3


def test_population_draws_make_a_patients_density_independent_of_its_source_bone():
    """Two source bones, one twice as dense as the other: with population draws their virtual patients' CT-aBMD
    (trabecular x k^1.4 + cortical x k^0.8, the cohort's ground truth) has the same distribution (the paper's
    0.759 +/- 0.151 g/cm2); with 'source' draws it follows the source."""
    light, dense = (0.25, 0.35), (0.5, 0.7)

    def abmd(patient, components):
        return components[0] * patient.trabecular_factor + components[1] * patient.cortical_factor

    for_light = [abmd(sample_patient(0, f"L{i}", 0, light), light) for i in range(300)]
    for_dense = [abmd(sample_patient(0, f"D{i}", 0, dense), dense) for i in range(300)]
    for values in (for_light, for_dense):
        assert np.mean(values) == pytest.approx(0.759, abs=0.02) and np.std(values) == pytest.approx(0.15, abs=0.02)
        assert min(values) >= 0.40 and max(values) <= 1.25
    assert abs(np.mean(for_light) - np.mean(for_dense)) < 0.03
    by_source = [
        abmd(sample_patient(0, f"D{i}", 0), dense) / abmd(sample_patient(0, f"D{i}", 0), light) for i in range(5)
    ]
    assert by_source == pytest.approx([2.0] * 5)  # the old draw scales the source's own density
