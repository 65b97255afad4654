"""``bmdgan estimate`` with a smoke-trained model: results, report, out-of-distribution warnings, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bmdgan.inference.tscore import load_reference, t_score, who_category


def run_estimate(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bmdgan", "estimate", *arguments],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )


@pytest.mark.slow
def test_estimate_finds_the_hip_and_writes_result_pf_drr_and_report(trained, tmp_path):
    """The bundled sample (a right hip with the upper thigh, no laterality tag) with no hint: the detector finds
    one hip, the right one; result.json gives its head centre (within 5 mm of the CT's), the input region's
    corners and the detector's confidence beside the numbers."""
    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

    run_folder, _ = trained
    sample = sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH
    truth = json.loads(sample.with_name(sample.stem + "_truth.json").read_text())
    result = run_estimate(str(sample), "--model", str(run_folder / "model"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "out" / sample.stem
    summary = json.loads((folder / "result.json").read_text())
    assert [hip["side"] for hip in summary["hips"]] == ["right"] and "no_hip_found" not in summary
    hip = summary["hips"][0]
    assert hip["method"] == "decomposition"
    assert hip["dxa_like_source"] == "ct_abmd_g_cm2" and hip["reference"] == "nhanes3_total_hip_female"
    if hip["trustworthy"]:
        assert hip["t_score"] == pytest.approx(t_score(hip["dxa_bmd_g_cm2"], load_reference()))
        assert hip["who_category"] == who_category(hip["t_score"])
    else:  # the smoke model may find the sample unfamiliar: then a reason and no category, never just a flag
        assert hip["warnings"] and hip["t_score"] is None and hip["who_category"] is None
    spacing = summary["pixel_spacing_mm"]
    error = np.subtract(hip["femoral_head_centre_px"], truth["femoral_head_centre_px"]) * spacing[::-1]
    assert np.hypot(*error) < 5.0 and hip["detector_confidence"] > 0.4
    corners = np.array(hip["roi_corners_px"]) * spacing[::-1]
    assert np.hypot(*(corners[1] - corners[0])) == pytest.approx(140.0, rel=1e-3)  # the region's width, mm
    assert np.hypot(*(corners[3] - corners[0])) == pytest.approx(280.0, rel=1e-3)  # and height
    assert (folder / "pf_drr_right.tif").is_file() and (folder / "report.png").stat().st_size > 10_000
    assert not list((tmp_path / "out").glob(".partial-*"))


@pytest.mark.slow
def test_an_image_without_a_hip_gets_no_number_and_a_reason(trained, tmp_path):
    """The upper quarter of the bundled sample (iliac wing and soft tissue, above the femoral head): no hip found,
    exit code 3, a result.json without a number that says why, and a report picture; a PNG without a pixel spacing
    is refused (exit 2) unless --pixel-mm states it."""
    import pydicom
    from PIL import Image

    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

    run_folder, _ = trained
    dataset = pydicom.dcmread(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH)
    top = dataset.pixel_array[: dataset.Rows // 4].copy()
    dataset.PixelData, dataset.Rows = top.tobytes(), top.shape[0]
    dataset.save_as(tmp_path / "no_hip.dcm")
    result = run_estimate(str(tmp_path / "no_hip.dcm"), "--model", str(run_folder / "model"), "--out", str(tmp_path))
    assert result.returncode == 3, result.stderr
    summary = json.loads((tmp_path / "no_hip" / "result.json").read_text())
    assert summary["hips"] == [] and "no hip found" in summary["no_hip_found"]
    assert (tmp_path / "no_hip" / "report.png").is_file() and "no hip found" in result.stdout
    full = pydicom.dcmread(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH).pixel_array.astype(np.float64)
    Image.fromarray(np.rint(255 * full / full.max()).astype(np.uint8)).save(tmp_path / "hip.png")
    refused = run_estimate(
        str(tmp_path / "hip.png"), "--model", str(run_folder / "model"), "--out", str(tmp_path / "a")
    )
    assert refused.returncode == 2 and "no pixel spacing" in refused.stderr and "--pixel-mm" in refused.stderr
    spacing = str(float(dataset.PixelSpacing[0]))
    stated = run_estimate(
        str(tmp_path / "hip.png"),
        "--model",
        str(run_folder / "model"),
        "--pixel-mm",
        spacing,
        "--out",
        str(tmp_path / "b"),
    )
    assert stated.returncode == 0, stated.stderr
    assert [hip["side"] for hip in json.loads((tmp_path / "b" / "hip" / "result.json").read_text())["hips"]] == [
        "right"
    ]


@pytest.mark.slow
def test_a_spacing_at_the_detector_is_brought_to_the_patient_by_a_stated_magnification(trained, tmp_path):
    """The bundled sample with its spacing given at the detector only (ImagerPixelSpacing = PixelSpacing x 1.15):
    read as it is, each hip is warned about; with --magnification 1.15 the spacing is the sample's own again and
    the hip is found where the sample's own spacing puts it."""
    import pydicom

    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

    run_folder, _ = trained
    dataset = pydicom.dcmread(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH)
    at_patient = [float(v) for v in dataset.PixelSpacing]
    dataset.ImagerPixelSpacing = [f"{1.15 * v:.6g}" for v in at_patient]
    for keyword in ("PixelSpacing", "EstimatedRadiographicMagnificationFactor"):
        if keyword in dataset:
            delattr(dataset, keyword)
    dataset.save_as(tmp_path / "detector.dcm")
    results = {}
    for name, extra in (("as_given", []), ("stated", ["--magnification", "1.15"])):
        run = run_estimate(
            str(tmp_path / "detector.dcm"), "--model", str(run_folder / "model"), "--out", str(tmp_path / name), *extra
        )
        assert run.returncode == 0, run.stderr
        results[name] = json.loads((tmp_path / name / "detector" / "result.json").read_text())
    assert results["as_given"]["pixel_spacing_mm"] == pytest.approx([1.15 * v for v in at_patient], rel=1e-5)
    assert all(any("detector only" in w for w in hip["warnings"]) for hip in results["as_given"]["hips"])
    assert results["stated"]["pixel_spacing_mm"] == pytest.approx(at_patient, rel=1e-5)
    assert results["as_given"]["pixel_spacing_source"] == "ImagerPixelSpacing (at the detector)"
    assert results["stated"]["pixel_spacing_source"] == "ImagerPixelSpacing/--magnification"
    assert not any("detector only" in w for hip in results["stated"]["hips"] for w in hip["warnings"])
    sample = run_estimate(
        str(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH),
        "--model",
        str(run_folder / "model"),
        "--out",
        str(tmp_path / "sample"),
    )
    assert sample.returncode == 0, sample.stderr
    own = json.loads((tmp_path / "sample" / SAMPLE_SIMULATED_RADIOGRAPH.split(".")[0] / "result.json").read_text())
    assert results["stated"]["hips"][0]["femoral_head_centre_px"] == pytest.approx(
        own["hips"][0]["femoral_head_centre_px"], abs=0.2
    )


@pytest.mark.slow
def test_paediatric_radiograph_gets_no_trustworthy_number(trained, shared_data, tmp_path):
    """A child's AP pelvis (no age in its header): no hip is trustworthy. The adult hip detector finds no hip
    (exit 3, the reason in result.json), or what it reports is flagged."""
    run_folder, _ = trained
    result = run_estimate(
        str(shared_data / "xray" / "ddh_pediatric" / "331_DDH_1.dcm"),
        "--model",
        str(run_folder / "model"),
        "--out",
        str(tmp_path),
    )
    summary = json.loads((tmp_path / "331_DDH_1" / "result.json").read_text())
    if result.returncode == 3:
        assert summary["hips"] == [] and "no hip found" in summary["no_hip_found"]
    else:
        assert result.returncode == 0, result.stderr
        assert summary["hips"] and "NOT TRUSTWORTHY" in result.stdout
        assert not any(hip["trustworthy"] for hip in summary["hips"])


@pytest.mark.slow
def test_corrupt_input_exits_2_and_writes_nothing(trained, tmp_path):
    run_folder, _ = trained
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"\x00" * 50)
    result = run_estimate(str(bad), "--model", str(run_folder / "model"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "not a readable DICOM" in result.stderr
    assert not (tmp_path / "out" / "scan").exists()


def test_missing_default_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BMDGAN_MODEL", str(tmp_path / "nowhere"))
    result = run_estimate(str(tmp_path / "x.png"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no default model is installed" in result.stderr


@pytest.mark.slow
def test_evaluate_command_writes_metrics_and_plots(trained, dataset, tmp_path):
    run_folder, _ = trained
    command = [
        sys.executable,
        "-m",
        "bmdgan",
        "evaluate",
        "--model",
        str(run_folder / "model"),
        "--dataset",
        str(dataset),
    ]
    # No --fold on the model's own training dataset: the fold it was trained without (fold 0), not every case.
    result = subprocess.run(
        command + ["--out", str(tmp_path), "--jpeg-qualities", "90,30", "--bit-depths", "8,4"],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "evaluating fold 0, the fold this model was trained without" in result.stdout
    every = subprocess.run(
        command + ["--fold", "all", "--out", str(tmp_path / "all"), "--jpeg-qualities", "", "--bit-depths", ""],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )
    assert every.returncode == 0 and "include training cases" in every.stderr
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["cases"] == 16
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["cases"] == 4 and metrics["fold"] == 0  # 2 patients x 2 poses in the held-out fold
    assert list(metrics["methods"]) == ["decomposition"]  # the smoke model has no stage-3 regressors
    abmd = metrics["methods"]["decomposition"]["ct_abmd_g_cm2"]["all"]
    assert -1 <= abmd["pcc"] <= 1 and abmd["mae"] >= 0 and abmd["rms_cv_percent"] is not None
    assert set(metrics["robustness"]["jpeg_quality"]) == {"90", "30"}
    assert set(metrics["robustness"]["bit_depth"]) == {"8", "4"}
    for name in (
        "bland_altman_decomposition_ct_abmd_g_cm2.png",
        "correlation_decomposition_qct_vbmd_mg_cm3.png",
        "robustness.png",
    ):
        assert (tmp_path / name).stat().st_size > 5000, name
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(rows) == 5
    assert rows[0].startswith(
        "case_id,patient_id,side,pose,psnr_db,dice,ct_abmd_g_cm2_truth,qct_vbmd_mg_cm3_truth,"
        "ct_abmd_g_cm2_decomposition"
    )


def test_psnr_dice_and_degradations_on_known_images():
    from bmdgan.evaluation.evaluate import bit_depth_reduced, dice, jpeg_degraded, psnr_db

    truth = np.zeros((10, 10))
    truth[2:6, 2:6] = 1.0
    shifted = np.zeros((10, 10))
    shifted[2:6, 3:7] = 1.0
    assert dice(shifted, truth, 0.5) == pytest.approx(2 * 12 / 32)
    assert psnr_db(truth + 0.1, truth) == pytest.approx(20.0)  # peak 1, RMSE 0.1
    ramp = np.linspace(0, 1000, 64 * 64).reshape(64, 64)
    assert len(np.unique(bit_depth_reduced(ramp, 4))) == 16
    assert np.abs(jpeg_degraded(ramp, 95) - ramp / ramp.max() * 255).mean() < 3


def test_spread_diagnosis_separates_per_ct_offsets_from_a_collapsed_model():
    """Two analytic models on three CTs: one ranks each CT's patients exactly but adds a CT offset (within-CT PCC 1,
    PCC 1 once the offsets are removed, full spread), one answers the mean plus a little noise (SD ratio ~0)."""
    from bmdgan.evaluation.cross_validation import spread_diagnosis

    rng = np.random.default_rng(0)
    rows, source_of = [], {}
    for ct, offset in (("A", -0.2), ("B", 0.0), ("C", 0.25)):
        for patient in range(10):
            truth = float(rng.uniform(0.5, 1.0))
            case = f"{ct}-v{patient:03d}-standing"
            source_of[case] = ct
            rows.append(
                {
                    "case_id": case,
                    "patient_id": f"{ct}-v{patient:03d}",
                    "side": "right",
                    "ct_abmd_g_cm2_truth": truth,
                    "ct_abmd_g_cm2_offset": truth + offset,
                    "ct_abmd_g_cm2_collapsed": 0.75 + float(rng.normal(0, 0.001)),
                }
            )
    diagnosis = spread_diagnosis(rows, source_of)
    offset = diagnosis["offset"]["ct_abmd_g_cm2"]
    assert offset["within_ct_pcc_median"] == pytest.approx(1.0)
    assert offset["pcc_without_ct_bias"] == pytest.approx(1.0)
    assert set(offset["per_ct_pcc"]) == {"A", "B", "C"}
    truths = np.array([r["ct_abmd_g_cm2_truth"] for r in rows])
    offsets = np.array([r["ct_abmd_g_cm2_offset"] for r in rows])
    assert offset["estimate_sd_over_truth_sd"] == pytest.approx(offsets.std() / truths.std())
    assert np.corrcoef(offsets, truths)[0, 1] < 0.8  # what the pooled PCC alone would have said
    collapsed = diagnosis["collapsed"]["ct_abmd_g_cm2"]
    assert collapsed["estimate_sd_over_truth_sd"] < 0.01
    assert abs(collapsed["within_ct_pcc_median"]) < 0.8


@pytest.mark.slow
def test_cross_validation_pools_every_fold_and_resumes(dataset, smoke, tmp_path):
    from dataclasses import replace

    from bmdgan.evaluation.cross_validation import cross_validate

    config = replace(smoke, epochs={"stage1": 1, "stage2": 1, "stage3_frozen": 1, "stage3_finetune": 1, "baseline": 1})
    pooled = cross_validate(config, dataset, tmp_path, [0, 1], ("ct_abmd_g_cm2",), "cpu", progress=False)
    assert pooled["images"] == 8  # folds 0 and 1: two patients x two poses each
    assert set(pooled["methods"]) == {"decomposition", "decomposition+regression", "baseline"}
    assert pooled["methods"]["baseline"]["ct_abmd_g_cm2"]["n"] == 8
    per_ct = pooled["per_source_ct"]["baseline"]["ct_abmd_g_cm2"]
    assert sum(b["n"] for b in per_ct.values()) == 8 and all(b["mae"] >= abs(b["bias"]) for b in per_ct.values())
    assert set(pooled["diagnosis"]["baseline"]["ct_abmd_g_cm2"]["per_ct_pcc"]) == set(per_ct)
    stamp = (tmp_path / "fold0" / "evaluation" / "predictions.csv").stat().st_mtime
    again = cross_validate(config, dataset, tmp_path, [0, 1], ("ct_abmd_g_cm2",), "cpu", progress=False)
    assert again == pooled and (tmp_path / "fold0" / "evaluation" / "predictions.csv").stat().st_mtime == stamp
    # One more baseline epoch changes every fold's model: its stale predictions are evaluated again.
    longer = replace(config, epochs={**config.epochs, "baseline": 2})
    retrained = cross_validate(longer, dataset, tmp_path, [0, 1], ("ct_abmd_g_cm2",), "cpu", progress=False)
    assert (tmp_path / "fold0" / "evaluation" / "predictions.csv").stat().st_mtime > stamp
    assert retrained["methods"]["baseline"] != pooled["methods"]["baseline"]
    assert retrained["methods"]["decomposition"] == pooled["methods"]["decomposition"]


@pytest.fixture(scope="module")
def curve(dataset, smoke, tmp_path_factory):
    """A learning curve over sizes 2 and 4 (and all 6) of the synthetic patients, folds 0 and 1: (folder, points,
    config)."""
    from dataclasses import replace

    from bmdgan.evaluation.learning_curve import learning_curve

    out = tmp_path_factory.mktemp("curve")
    config = replace(smoke, epochs={"stage1": 1, "stage2": 1, "stage3_frozen": 1, "stage3_finetune": 1, "baseline": 1})
    return out, learning_curve(config, dataset, out, [2, 4], [0, 1], ("ct_abmd_g_cm2",), progress=False), config


def test_learning_curve_trains_nested_ct_subsets_as_many_steps(curve, dataset):
    """Each point trains on the first k of its fold's training CTs (nested, never a held-out one) for as many steps
    as the full set, and every point is pooled over the same held-out images."""
    from bmdgan.datasets.format import read_manifest
    from bmdgan.evaluation.learning_curve import learning_curve, training_ct_order
    from bmdgan.training.run_folder import read_run_settings

    out, points, config = curve
    records = read_manifest(dataset)
    order = training_ct_order(records, 0, seed=0)
    held_out = {r.patient_id for r in records if r.fold == 0}
    assert len(order) == 6 and not held_out & set(order) and order == training_ct_order(records, 0, seed=0)
    assert order != training_ct_order(records, 0, seed=1)
    assert [p["size"] for p in points] == [2, 4, "all"]
    assert [p["training_cts"] for p in points] == [2, 4, 6] and [p["epoch_factor"] for p in points] == [3, 1.5, 1]
    assert [p["image_ratio"] for p in points] == [3, 1.5, 1]  # smoke's period of 4 epochs scales exactly
    assert {p["images"] for p in points} == {8}  # folds 0 and 1, two patients x two poses each, at every point
    subset = read_manifest(out / "ct2" / "datasets" / "fold0")
    assert {r.patient_id for r in subset if r.fold != 0} == set(order[:2])
    assert {r.case_id for r in subset if r.fold == 0} == {r.case_id for r in records if r.fold == 0}
    larger = {r.patient_id for r in read_manifest(out / "ct4" / "datasets" / "fold0") if r.fold != 0}
    assert set(order[:2]) < larger
    assert read_run_settings(out / "ct2" / "fold0")["config"]["epochs"]["stage2"] == 3
    assert read_run_settings(out / "all" / "fold0")["dataset"] == str(dataset)
    assert (out / "learning_curve_ct_abmd_g_cm2.png").stat().st_size > 10_000
    assert learning_curve(config, dataset, out, [2, 4], [0, 1], ("ct_abmd_g_cm2",), progress=False) == points


def test_learning_curve_sizes_are_checked_before_training(dataset, smoke, tmp_path):
    from bmdgan.errors import InputError
    from bmdgan.evaluation.learning_curve import learning_curve

    for size in (0, 6):  # the folds train on 6 CTs: 6 is the all point, not a subset
        with pytest.raises(InputError, match=f"--sizes {size} is not a subset size"):
            learning_curve(smoke, dataset, tmp_path, [2, size], [0, 1], ("ct_abmd_g_cm2",), progress=False)
    with pytest.raises(InputError, match="no held-out fold"):
        learning_curve(smoke, dataset, tmp_path, [2], [], ("ct_abmd_g_cm2",), progress=False)
    with pytest.raises(InputError, match="holds no virtual bones"):
        learning_curve(smoke, dataset, tmp_path, [2], [0], ("ct_abmd_g_cm2",), progress=False, bone_sets=("virtual",))
    with pytest.raises(InputError, match="unknown bone set 'anatomies'"):
        learning_curve(smoke, dataset, tmp_path, [2], [0], ("ct_abmd_g_cm2",), progress=False, bone_sets=("anatomies",))
    assert not list(tmp_path.iterdir())


def test_a_virtual_bone_is_told_from_a_real_one_by_its_entry_and_donor():
    from bmdgan.datasets.folds import is_virtual_bone
    from bmdgan.datasets.format import CaseRecord

    def record(patient: str, provenance: str) -> CaseRecord:
        return CaseRecord(f"{patient}-standing", patient, "right", provenance=provenance)

    assert not is_virtual_bone(record("STS_020-v003", '{"ct":"STS_020"}'))  # a real bone's virtual patient
    assert not is_virtual_bone(record("Pelvic-Ref-002-v000", '{"ct":"Pelvic-Ref-002","side":"left"}'))
    assert is_virtual_bone(record("STS_020-a01-v003", '{"ct":"STS_020"}'))  # an anatomy of it
    assert is_virtual_bone(record("Pelvic-Ref-002-t00-v000", '{"ct":"Pelvic-Ref-002","donor_ct":"STS_040"}'))
    assert not is_virtual_bone(record("patient-v12", ""))  # a real patient, whatever the name


@pytest.fixture(scope="module")
def virtual_cohort(dataset, tmp_path_factory):
    """The synthetic pairs as a cohort of real bones (patient pN drawn on CT pN), each with a virtual anatomy
    (``pN-a00``, the same images) in its CT's fold, and p0's body with p6's femur (a transplant)."""
    import shutil
    from dataclasses import replace

    from bmdgan.datasets.format import read_manifest, rewrite_manifest

    folder = tmp_path_factory.mktemp("virtual") / "cohort"
    shutil.copytree(dataset, folder)
    real = [
        replace(r, patient_id=f"{r.patient_id}-v000", provenance=json.dumps({"ct": r.patient_id}))
        for r in read_manifest(folder)
    ]
    anatomies = [
        replace(r, case_id=f"{r.case_id}-a00", patient_id=r.patient_id.replace("-v000", "-a00-v000")) for r in real
    ]
    transplant = [
        replace(r, case_id=f"{r.case_id}-t00", patient_id="p0-t00-v000", provenance='{"ct":"p0","donor_ct":"p6"}')
        for r in real
        if r.patient_id == "p0-v000"
    ]
    rewrite_manifest(folder, real + anatomies + transplant)
    return folder


@pytest.mark.slow
def test_learning_curve_with_and_without_virtual_bones_at_the_same_steps(virtual_cohort, smoke, tmp_path):
    """Each point is drawn twice, trained on the chosen CTs' real bones alone and with their virtual anatomies
    (a transplant only when both its CTs are chosen), every run for as many steps as the fold's real bones, and
    every point tested on the same held-out images: the held-out CTs' real bones."""
    from dataclasses import replace

    from bmdgan.datasets.folds import is_virtual_bone, source_cts_of
    from bmdgan.datasets.format import read_manifest
    from bmdgan.evaluation.learning_curve import curve_table, learning_curve, training_ct_order
    from bmdgan.training.run_folder import read_run_settings

    config = replace(smoke, epochs={"stage1": 1, "stage2": 1, "stage3_frozen": 1, "stage3_finetune": 1, "baseline": 1})
    points = learning_curve(config, virtual_cohort, tmp_path, [2], [0], ("ct_abmd_g_cm2",), progress=False)
    records = read_manifest(virtual_cohort)
    held_out = {r.case_id for r in records if r.fold == 0 and not is_virtual_bone(r)}
    assert [(p["bone_set"], p["size"]) for p in points] == [
        ("real", 2),
        ("real", "all"),
        ("virtual", 2),
        ("virtual", "all"),
    ]
    assert {p["images"] for p in points} == {len(held_out)} == {4}  # two patients x two poses, no anatomy
    order = training_ct_order(records, 0, seed=0)
    for point, folder, chosen in (
        ("real", tmp_path / "ct2", order[:2]),
        ("real", tmp_path / "all", order),
        ("virtual", tmp_path / "virtual" / "ct2", order[:2]),
        ("virtual", tmp_path / "virtual" / "all", order),
    ):
        subset = read_manifest(folder / "datasets" / "fold0")
        assert {r.case_id for r in subset if r.fold == 0} == held_out
        training = [r for r in subset if r.fold != 0]
        assert {source_cts_of(r)[0] for r in training} == set(chosen)
        expected_virtual = 0 if point == "real" else 2 * len(chosen) + 2 * ({"p0", "p6"} <= set(chosen))
        assert sum(is_virtual_bone(r) for r in training) == expected_virtual
        assert len(training) == 2 * len(chosen) + expected_virtual
    # Same steps as the fold's 12 real training images: twice the images (and p0+p6's transplant), half the period.
    real_all, virtual_all = points[1], points[3]
    transplant_images = 2 * ({"p0", "p6"} <= set(order))
    assert real_all["image_ratio"] == 1 and real_all["epoch_factor"] == 1
    assert virtual_all["image_ratio"] == pytest.approx(12 / (24 + transplant_images))
    assert virtual_all["epoch_factor"] == 0.5
    assert read_run_settings(tmp_path / "virtual" / "all" / "fold0")["config"]["restart_period_epochs"] == 2
    assert (tmp_path / "learning_curve_ct_abmd_g_cm2.png").stat().st_size > 10_000
    rows = curve_table(points, "ct_abmd_g_cm2")
    assert [(row["bone_set"], row["size"]) for row in rows] == [(p["bone_set"], p["size"]) for p in points]
    pooled = points[3]["methods"]["baseline"]["ct_abmd_g_cm2"]
    assert rows[3]["methods"]["baseline"] == (pooled["pcc"], pooled["mae"])


def test_a_smaller_training_set_keeps_whole_warm_restart_cycles():
    """Scaled for 3.27 times fewer images, each stage still ends at the bottom of a warm-restart cycle."""
    from bmdgan.evaluation.learning_curve import same_steps
    from bmdgan.training.config import load_config

    cpu = load_config("cpu")
    scaled = same_steps(cpu, 3.27)
    assert scaled.restart_period_epochs == 33
    assert scaled.epochs["stage2"] == 528 and scaled.epochs["stage3_finetune"] == 33
    assert all(epochs % 33 == 0 for epochs in scaled.epochs.values())
    assert abs(scaled.epochs["stage2"] / cpu.epochs["stage2"] / 3.27 - 1) < 0.01


def test_model_card_leads_with_whole_ct_folds_their_bias_and_the_curve(curve, tmp_path):
    from bmdgan.evaluation.model_card import package_model

    out, points, _ = curve
    shipped = package_model(
        out / "all" / "fold0" / "model",
        out / "all" / "fold0",
        tmp_path / "shipped",
        {},
        "bmdgan train ...",
        None,
        ["Pelvic-Ref-002"],
        ["STS_012"],
        cross_validations={"folds 0-1": out / "all"},
        learning_curve=out,
    )
    card = (shipped / "MODEL_CARD.md").read_text(encoding="utf-8")
    pooled = points[-1]["methods"]["baseline"]["ct_abmd_g_cm2"]
    assert (
        "## Whole CTs held out: folds 0-1" in card and f"| baseline | ct_abmd_g_cm2 | 8 | {pooled['pcc']:.3f} |" in card
    )
    bias = points[-1]["per_source_ct"]["decomposition"]["ct_abmd_g_cm2"]
    assert len(bias) == 4 and all(f"| {patient} | 2 | {b['bias']:+.3f} |" in card for patient, b in bias.items())
    curve_at = card.index("## Learning curve")
    assert curve_at > card.index("## Whole CTs held out") and "| real bones | 2.0 | 2.0 |" in card[curve_at:]
    assert "TCIA Pelvic-Reference-Data, CC BY 3.0" in card and "(fold 0 held out)" in card


def test_model_card_refuses_a_cross_validation_that_cannot_speak_for_the_model(curve, tmp_path):
    """A CT held out in two folds (its other patients trained the fold that held it out) or folds trained with
    another configuration than the packaged run's are refused, before anything is written."""
    import shutil

    from bmdgan.errors import InputError
    from bmdgan.evaluation.model_card import package_model

    out, _, _ = curve
    run = out / "all" / "fold0"

    def package(cv):
        return package_model(
            run / "model",
            run,
            tmp_path / "shipped",
            {},
            "bmdgan train ...",
            None,
            ["p"],
            ["q"],
            cross_validations={"folds 0-1": cv},
        )

    from dataclasses import replace

    from bmdgan.datasets.format import read_manifest, write_subset

    split = tmp_path / "split"
    shutil.copytree(out / "all", split)
    settings = json.loads((split / "fold1" / "run.json").read_text())
    records = read_manifest(settings["dataset"])
    moved = next(r for r in records if r.fold == 1)  # one case of a fold-1 patient dealt to fold 0: a patient split
    mixed = [replace(r, fold=0) if r.case_id == moved.case_id else r for r in records]
    settings["dataset"] = str(write_subset(settings["dataset"], tmp_path / "mixed", mixed, "a patient split"))
    (split / "fold1" / "run.json").write_text(json.dumps(settings))
    with pytest.raises(InputError, match=f"holds out {moved.patient_id} while its other virtual patients trained"):
        package(split)
    other = tmp_path / "other"
    shutil.copytree(out / "all", other)
    settings = json.loads((other / "fold1" / "run.json").read_text())
    settings["config"] = {**settings["config"], "name": "cpu-long", "epochs": {"stage2": 320}}
    (other / "fold1" / "run.json").write_text(json.dumps(settings))
    with pytest.raises(InputError, match=r"another configuration than the packaged run \(epochs: .*name: 'cpu-long'"):
        package(other)
    assert not (tmp_path / "shipped").exists()


def test_a_model_trained_on_every_ct_takes_its_intervals_from_the_cross_validation(curve, dataset, tmp_path):
    """The intervals are fitted on the cross-validation's held-out predictions (each source predicted by a model that
    never saw it), the same residuals the pooled metrics were computed from; the limits on the images given."""
    from bmdgan.errors import InputError
    from bmdgan.evaluation.confidence import calibrate_confidence, cross_validation_columns
    from bmdgan.inference.uncertainty import fit_predictive

    out, points, _ = curve
    model = out / "all" / "fold0" / "model"
    summary = calibrate_confidence(model, tmp_path / "calibrated", [], [dataset], cross_validation=out / "all")
    bias = points[-1]["per_source_ct"]["decomposition"]["ct_abmd_g_cm2"]
    assert summary["held_out_cts"] == sorted(bias) and summary["held_out_images"] == 8
    assert summary["limit_cts_never_seen"] == [] and summary["new_patient_images"] == 16
    estimates, truths, cts = cross_validation_columns(out / "all")[("decomposition", "ct_abmd_g_cm2")]
    assert np.mean(np.subtract(estimates, truths)) == pytest.approx(
        points[-1]["methods"]["decomposition"]["ct_abmd_g_cm2"]["bland_altman"]["mean_difference"]
    )
    description = json.loads((tmp_path / "calibrated" / "model.json").read_text())
    entry = next(e for e in description["prediction_intervals"] if e["method"] == "decomposition")
    expected = fit_predictive(estimates, truths, cts, "ct_abmd_g_cm2", "decomposition", "g/cm2").to_dict()
    assert entry == expected
    with pytest.raises(InputError, match="no images to fit the out-of-distribution limits"):
        calibrate_confidence(model, tmp_path / "other", [], [], cross_validation=out / "all")
    with pytest.raises(InputError, match="saw every CT it has images of"):
        calibrate_confidence(model, tmp_path / "site", [], [dataset], [dataset], cross_validation=out / "all")
    assert not (tmp_path / "site").exists()


def test_package_model_writes_an_honest_card_and_replaces_the_old_model(trained, dataset, tmp_path):
    """The card names every CT with its source, warns when the held-out aBMD PCC is weak, and the packaged
    folder holds only the new model: an earlier package is replaced with --overwrite, its files that the new
    model lacks go with it, and a folder that holds anything else is refused."""
    from bmdgan.evaluation.evaluate import evaluate, write_evaluation
    from bmdgan.inference.model import DecompositionModel

    run_folder, _ = trained
    evaluation = tmp_path / "evaluation"
    result = evaluate(DecompositionModel.load(run_folder / "model"), dataset, fold=0, jpeg_qualities=(), bit_depths=())
    write_evaluation(evaluation, result)
    from bmdgan.outputs import MARKER

    out = tmp_path / "shipped"
    out.mkdir()
    (out / "regressor_from_an_older_model.safetensors").write_bytes(b"old")
    (out / MARKER).write_text(
        json.dumps({"command": "package-model", "files": ["regressor_from_an_older_model.safetensors"]})
    )

    def package(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "bmdgan",
                "package-model",
                str(run_folder),
                "--out",
                str(out),
                "--evaluation",
                f"fold 0={evaluation}",
                "--training-command",
                "bmdgan train ...",
                "--cts",
                "STS_015,example_ct,my_hospital_01",
                "--held-out-cts",
                "STS_012",
                *extra,
            ],
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=300,
        )

    refused = package()
    assert refused.returncode == 2 and "pass --overwrite" in refused.stderr
    completed = package("--overwrite")
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in (run_folder / "model").glob("*.safetensors")] + ["model.json", "MODEL_CARD.md", MARKER]
    )
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "- Real CTs (IBSI / TCIA Soft-tissue-Sarcoma, CC BY 3.0" in card and "): STS_015." in card
    assert "TotalSegmentator example CT with its v1 femur/hip masks, Apache-2.0" in card and "): example_ct." in card
    assert "add their attribution): my_hospital_01." in card
    assert "Held out entirely" in card and "STS_012" in card
    pcc = result["report"]["methods"]["decomposition"]["ct_abmd_g_cm2"]["all"]["pcc"]
    assert ("## Read this first" in card) == (pcc < 0.9)  # the goal (one evaluation here)
    assert ("correlates only weakly" in card) == (pcc < 0.5)
    assert ("only moderately" in card) == (0.5 <= pcc < 0.9)
    assert f"| decomposition | ct_abmd_g_cm2 | 4 | {pcc:.3f} |" in card
    assert f"CTs the model never saw ({', '.join(result['report']['source_cts'])})" in card
    assert not list(tmp_path.glob(".partial-*")) and not list(tmp_path.glob(".previous-*"))
    (out / "notes.txt").write_text("the user's")
    refused = package("--overwrite")
    assert refused.returncode == 2 and "notes.txt" in refused.stderr and (out / "model.json").is_file()


def test_model_card_says_whether_an_evaluation_s_cts_trained_the_model():
    """Each evaluation is labelled by how many of its source CTs trained the model; a real cohort's many patient ids
    are cut short."""
    from bmdgan.evaluation.model_card import _familiarity

    trained = ["STS_015", "STS_020", "example_ct"]
    assert _familiarity({"source_cts": ["STS_015", "example_ct"]}, trained).startswith(
        "New virtual patients of 2 CTs the model trained on"
    )
    assert _familiarity({"source_cts": ["STS_015", "STS_012"]}, trained) == "1 of its 2 CTs were in training (STS_015)."
    assert _familiarity({}, trained).startswith("Source CTs not recorded")
    patients = [f"hospital_{index:03d}" for index in range(40)]
    assert _familiarity({"source_cts": patients}, trained) == (
        "CTs the model never saw (hospital_000, hospital_001, hospital_002, hospital_003, hospital_004, hospital_005 "
        "and 34 more): a new patient's bone."
    )


def test_model_card_warning_follows_the_pcc_that_estimate_reports():
    """The card's first warning uses what ``bmdgan estimate`` reports (regression when present): strong when all are
    below 0.5, plain when any is below the 0.90 goal (naming those that fall short when others reach it), none when all
    reach it."""
    from bmdgan.evaluation.model_card import _read_this_first

    def metrics(decomposition: float, regression: float | None = None) -> dict:
        methods = {"decomposition": {"ct_abmd_g_cm2": {"all": {"pcc": decomposition}}}}
        if regression is not None:
            methods["decomposition+regression"] = {"ct_abmd_g_cm2": {"all": {"pcc": regression}}}
        return {"methods": methods}

    weak = "\n".join(_read_this_first({"fold 0": metrics(0.3)}))
    assert "correlates only weakly" in weak and "PCC 0.30 on fold 0; goal 0.90" in weak
    moderate = "\n".join(_read_this_first({"fold 0": metrics(0.95, regression=0.7), "seed 1": metrics(0.6)}))
    assert "only moderately" in moderate and "PCC 0.70 on fold 0; 0.60 on seed 1; goal" in moderate
    assert _read_this_first({"fold 0": metrics(0.3, regression=0.91), "seed 1": metrics(0.93)}) == []
    mixed = "\n".join(_read_this_first({"fold 0": metrics(0.95), "site 7": metrics(0.87), "seed 1": metrics(0.91)}))
    assert "reaches the PCC goal of 0.90" in mixed and "not on site 7, PCC 0.87:" in mixed
    assert "fold 0" not in mixed and "seed 1" not in mixed and "only moderately" not in mixed
    assert _read_this_first({}) == []


def test_inputs_sharing_a_name_get_their_own_result_folders():
    from pathlib import Path

    from bmdgan.inference.estimation import output_folder_names

    files = [Path("a/hip.dcm"), Path("b/hip.png"), Path("c/other.jpg")]
    assert output_folder_names(files) == ["hip-1", "hip-2", "other"]
    # a numbered name another input already has is skipped, decided up front (b/x.dcm was saved as x-2, then
    # overwritten by c/x-2.dcm); names differing only in case collide on macOS and Windows disks
    assert output_folder_names([Path("a/x.dcm"), Path("b/x.dcm"), Path("c/x-2.dcm")]) == ["x-1", "x-3", "x-2"]
    assert output_folder_names([Path("a/Hip.dcm"), Path("b/hip.dcm"), Path("hip-1.png")]) == ["Hip-2", "hip-3", "hip-1"]


def test_per_source_bias_shows_each_ct_offset():
    """Two source CTs, one estimated 0.1 g/cm2 high and one 0.05 low: the pooled rows give each its own bias."""
    from bmdgan.evaluation.cross_validation import per_source_bias

    rows = [
        {"case_id": f"c{i}", "patient_id": f"p{i}", "ct_abmd_g_cm2_truth": str(t), "ct_abmd_g_cm2_baseline": str(e)}
        for i, (t, e) in enumerate([(0.7, 0.8), (0.9, 1.0), (0.6, 0.55), (0.8, 0.75), (0.5, float("nan"))])
    ]
    source_of = {"c0": "A", "c1": "A", "c2": "B", "c3": "B", "c4": "B"}
    bias = per_source_bias(rows, source_of)["baseline"]["ct_abmd_g_cm2"]
    assert bias["A"]["n"] == 2 and bias["A"]["bias"] == pytest.approx(0.1) and bias["A"]["mae"] == pytest.approx(0.1)
    assert bias["B"]["n"] == 2 and bias["B"]["bias"] == pytest.approx(-0.05)  # the NaN estimate is left out


def test_a_child_or_another_body_part_gets_no_t_score_or_category(tmp_path):
    """The bundled sample's DICOM with header fields changed: an 8-year-old (PatientAge), a child by birth and
    study dates, a chest, a lateral view - each gets its aBMD with the reason and no T-score or WHO category (the
    shipped model); the same image as a 45-year-old's hip keeps them."""
    import pydicom

    from bmdgan.detection.detector import HipDetector
    from bmdgan.inference.estimation import estimate_radiograph
    from bmdgan.inference.model import DecompositionModel
    from bmdgan.inference.tscore import load_reference
    from bmdgan.io import read_radiograph
    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

    model = DecompositionModel.load(sample_data_dir().parents[0] / "Models" / "default", "cpu")
    detector = HipDetector.load()
    reference = load_reference(None)
    cases = {
        "adult": {"PatientAge": "045Y", "BodyPartExamined": "HIP", "ViewPosition": "AP"},
        "child": {"PatientAge": "008Y"},
        "child by dates": {"PatientBirthDate": "20150301", "StudyDate": "20230615"},
        "chest": {"BodyPartExamined": "CHEST"},
        "lateral": {"ViewPosition": "LL"},
    }
    results = {}
    for name, fields in cases.items():
        dataset = pydicom.dcmread(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH)
        for keyword, value in fields.items():
            setattr(dataset, keyword, value)
        path = tmp_path / f"{name.replace(' ', '_')}.dcm"
        dataset.save_as(path)
        ((results[name], _),) = estimate_radiograph(model, detector, read_radiograph(path), reference)
    assert results["adult"].t_score is not None and results["adult"].who_category is not None
    assert not any("DICOM" in w for w in results["adult"].warnings)
    for name, reason in (
        ("child", "8.0 years"),
        ("child by dates", "8.3 years"),
        ("chest", "CHEST"),
        ("lateral", "LL"),
    ):
        hip = results[name]
        assert hip.dxa_bmd_g_cm2 == pytest.approx(results["adult"].dxa_bmd_g_cm2)  # the number stays, flagged
        assert hip.t_score is None and hip.who_category is None and not hip.trustworthy
        assert reason in hip.warnings[0], (name, hip.warnings)
