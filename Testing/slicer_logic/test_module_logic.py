"""The modules' Qt-free Logic on real MRML nodes (slicer-core) and the real shared data."""

from __future__ import annotations

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from bmdgan.ct.pipeline import STEPS  # noqa: E402
from bmdgan.errors import InputError  # noqa: E402
from BMDGANLib import dependencies  # noqa: E402
from BMDGANLib.estimation_logic import RADIOGRAPH_ATTRIBUTE, EstimationLogic  # noqa: E402
from BMDGANRegistrationLib.curation_logic import UNIT_ATTRIBUTE, CurationLogic  # noqa: E402
from BMDGANTrainingLib.training_logic import TrainingLogic  # noqa: E402


def test_estimation_logic_loads_a_real_radiograph(shared_data):
    scene = slicer.vtkMRMLScene()
    logic = EstimationLogic()
    node, radiograph = logic.load_radiograph(shared_data / "xray" / "ddh_pediatric" / "331_DDH_12.dcm", scene)
    assert node.GetAttribute(RADIOGRAPH_ATTRIBUTE) == "1"
    assert slicer.util.arrayFromVolume(node).shape == (1, 331, 331)
    assert node.GetSpacing() == (1.0, 1.0, 1.0)
    back = logic.radiograph_from_node(node)
    np.testing.assert_array_equal(back.pixels, radiograph.pixels)
    assert "331 x 331 pixels" in logic.summary(back) and "1.000 x 1.000 mm" in logic.summary(back)


def test_estimation_logic_refuses_a_ct_node_as_radiograph(shared_data):
    scene = slicer.vtkMRMLScene()
    ct_node, _ = CurationLogic().load_ct(shared_data / "ct" / "ibsi_sts" / "STS_003.nii.gz", scene)
    with pytest.raises(InputError, match="51 slices, not a single radiograph"):
        EstimationLogic().radiograph_from_node(ct_node)


def test_curation_logic_loads_a_real_ct(shared_data):
    scene = slicer.vtkMRMLScene()
    logic = CurationLogic()
    node, volume = logic.load_ct(shared_data / "ct" / "ibsi_sts" / "STS_003.nii.gz", scene)
    assert node.GetAttribute(UNIT_ATTRIBUTE) == "HU"
    assert node.GetName() == "STS_003"
    back = logic.ct_from_node(node)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.geometry.ijk_to_lps(), volume.geometry.ijk_to_lps(), atol=1e-9)


def test_training_logic_sees_this_machine():
    logic = TrainingLogic()
    environment = logic.compute_environment()
    import torch

    assert environment.torch_version == torch.__version__
    assert environment.cpu_threads == torch.get_num_threads()
    assert logic.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="GPU was requested"):
            logic.resolve_device("cuda")


def test_requirements_are_one_list_for_pip_and_slicer():
    from importlib import metadata

    requirements = dependencies.read_requirements()
    declared = {r.name.lower() for r in requirements}
    installed = {
        str(r).split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for r in metadata.requires("bmdgan")
        if "extra ==" not in r
    }
    assert declared == installed  # pyproject reads the same file
    assert {"torch", "simpleitk", "pydicom", "numpy"} <= declared


def test_only_missing_requirements_are_installed_and_installed_ones_are_pinned():
    present = dependencies.Requirement("numpy", ">=99")  # installed but too old: kept, never replaced
    absent = dependencies.Requirement("bmdgan-surely-not-a-real-package", ">=1")
    assert dependencies.missing_requirements([present, absent]) == [absent]
    pins = dependencies.constraints_text().splitlines()
    assert f"numpy=={np.__version__}" in pins
    assert f"vtk=={dependencies.installed_version('vtk')}" in pins
    calls = []
    dependencies.install([absent], calls.append)
    assert calls and calls[0].startswith('"bmdgan-surely-not-a-real-package>=1" -c ')


@pytest.mark.slow
def test_estimation_logic_puts_results_into_the_scene_and_estimates_again_from_moved_points(trained):
    """The bundled sample radiograph node -> the hip detector's right hip, a PF-DRR volume node lying exactly on the
    input region, a PF segmentation, a results table and a point list (head centre, neck point); moving the head
    point 10 mm and estimating from the points cuts the region there."""
    import vtk

    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

    run_folder, _ = trained
    scene = slicer.vtkMRMLScene()
    logic = EstimationLogic()
    node, radiograph = logic.load_radiograph(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH, scene, "X-ray")
    result = logic.estimate(node, scene, run_folder / "model", side="auto")
    assert [hip.side for hip in result.hips] == ["right"]
    hip = result.hips[0]
    pf_node = result.pf_drr_nodes[0]
    assert pf_node.GetAttribute("BMDGAN.Unit") == "g/cm2"
    assert pf_node.GetDisplayNode().GetColorNode().GetNumberOfColors() == 256
    # The PF-DRR's voxel corners, through its IJK-to-RAS and the radiograph's RAS-to-IJK, are the region's corners.
    pf_to_ras, ras_to_source = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    pf_node.GetIJKToRASMatrix(pf_to_ras)
    node.GetRASToIJKMatrix(ras_to_source)
    rows, columns = slicer.util.arrayFromVolume(pf_node).shape[1:]
    for (i, j), corner in zip(
        ((-0.5, -0.5), (columns - 0.5, -0.5), (columns - 0.5, rows - 0.5), (-0.5, rows - 0.5)), hip.roi_corners_px
    ):
        source = ras_to_source.MultiplyPoint(pf_to_ras.MultiplyPoint((i, j, 0, 1)))
        assert source[:2] == pytest.approx(corner, abs=0.2)
    table = result.table_node
    assert table.GetNumberOfRows() == 1 and table.GetCellText(0, 0) == "right"
    assert float(table.GetCellText(0, 1)) == pytest.approx(hip.dxa_bmd_g_cm2, abs=5e-4)
    assert result.segmentation_node.GetSegmentation().GetSegmentIdBySegmentName("proximal femur right")
    assert EstimationLogic.describe(result).startswith("right hip: aBMD")
    # The hip's points sit on the detected head centre and neck point.
    points = result.landmark_nodes[0]
    assert points.GetAttribute("BMDGAN.HipSide") == "right" and points.GetNumberOfControlPoints() == 2
    head_ras = [0.0, 0.0, 0.0]
    points.GetNthControlPointPosition(0, head_ras)
    assert ras_to_source.MultiplyPoint((*head_ras, 1))[:2] == pytest.approx(hip.femoral_head_centre_px, abs=0.1)
    # Moved 10 mm along the image's columns, the head point moves the region with it.
    source_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(source_to_ras)
    step = [source_to_ras.GetElement(axis, 0) * 10.0 / radiograph.pixel_spacing_mm[1] for axis in range(3)]
    points.SetNthControlPointPosition(0, *(head_ras[axis] + step[axis] for axis in range(3)))
    moved = logic.estimate(node, scene, run_folder / "model", landmark_nodes=result.landmark_nodes)
    shift = (
        np.subtract(moved.hips[0].femoral_head_centre_px, hip.femoral_head_centre_px)
        * radiograph.pixel_spacing_mm[::-1]
    )
    assert shift == pytest.approx([10.0, 0.0], abs=0.1)
    assert moved.landmark_nodes == result.landmark_nodes and moved.hips[0].detector_confidence == 1.0


@pytest.mark.slow
def test_a_child_s_radiograph_node_gets_no_category_as_its_file_gets_none(tmp_path):
    """The bundled sample with a child's age in its header, loaded by the module and estimated from its node with
    the default model: the hip is refused its T-score and category for the age, as `bmdgan estimate` refuses the
    file (the node carries the header)."""
    import pydicom

    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

    dataset = pydicom.dcmread(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH)
    dataset.PatientAge = "010Y"
    dataset.save_as(tmp_path / "child.dcm")
    scene = slicer.vtkMRMLScene()
    logic = EstimationLogic()
    node, _ = logic.load_radiograph(tmp_path / "child.dcm", scene)
    result = logic.estimate(node, scene)
    assert [hip.side for hip in result.hips] == ["right"]
    hip = result.hips[0]
    assert any("10.0 years old" in warning for warning in hip.warnings)
    assert hip.who_category is None and hip.t_score is None and hip.dxa_bmd_g_cm2 is not None


@pytest.mark.slow
def test_training_logic_runs_follows_stops_and_resumes_a_process(dataset, tmp_path):
    import time

    from BMDGANTrainingLib.training_logic import TrainingRequest

    logic = TrainingLogic()
    run_folder = tmp_path / "run"
    request = TrainingRequest(
        str(dataset),
        str(run_folder),
        config="smoke",
        fold=0,
        stages="stage1",
        device="cpu",
        extra_arguments=["--epochs", "40"],
    )
    logic.start(request)
    deadline = time.time() + 240
    checkpoint = run_folder / "stage1" / "checkpoints" / "latest.json"
    while not (logic.history(run_folder, "stage1") and checkpoint.exists()) and time.time() < deadline:
        assert logic.is_running(), (run_folder / "training.log").read_text()[-2000:]
        time.sleep(1)
    progress = logic.progress(run_folder)
    assert progress.stage == "stage1" and progress.total_epochs == 40 and progress.epoch >= 1
    scene = slicer.vtkMRMLScene()
    chart = logic.update_loss_plot(scene, run_folder, "stage1")
    assert chart.GetNumberOfPlotSeriesNodes() >= 5  # g_total, g_l1, g_gc, g_fm, g_gan, d
    assert logic.stop() == 130  # interrupted like Ctrl+C: bmdgan's exit code for an interruption
    assert not logic.is_running()
    stopped_at = logic.progress(run_folder).epoch
    logic.start(
        TrainingRequest(
            str(dataset),
            str(run_folder),
            config="smoke",
            fold=0,
            stages="stage1",
            device="cpu",
            extra_arguments=["--epochs", "40", "--stop-after-epochs", "1"],
        )
    )
    assert logic.process.wait(240) == 0, (run_folder / "training.log").read_text()[-2000:]
    resumed = logic.progress(run_folder).epoch
    assert stopped_at <= resumed <= stopped_at + 2  # one more epoch, from the last checkpoint
    assert logic.model_folder(run_folder) is None  # stage 2 not trained: no model to use yet


def test_training_logic_starts_stage2_from_a_pretrained_run(trained, dataset, tmp_path):
    """The module's pretrained run reaches ``bmdgan train --pretrained``: stage 2 starts from that run's weights and
    stage 1 is not trained."""
    from BMDGANTrainingLib.training_logic import TrainingRequest

    pretrained, _ = trained
    run_folder = tmp_path / "run"
    logic = TrainingLogic()
    request = TrainingRequest(
        str(dataset),
        str(run_folder),
        "smoke",
        0,
        "both",
        "cpu",
        pretrained=str(pretrained),
        extra_arguments=["--epochs", "1"],
    )
    logic.start(request)
    assert logic.process.wait(240) == 0, (run_folder / "training.log").read_text()[-2000:]
    settings = json.loads((run_folder / "run.json").read_text(encoding="utf-8"))
    assert settings["stages"] == ["stage2"] and settings["pretrained"]["run"] == str(pretrained.resolve())
    assert not (run_folder / "stage1").exists() and logic.model_folder(run_folder) is not None


@pytest.mark.slow
def test_curation_logic_analyses_a_real_ct_into_nodes(shared_data):
    from bmdgan.ct.landmarks import LANDMARK_NAMES
    from bmdgan.projection.projector import Projector
    from BMDGANRegistrationLib.curation_logic import GEOMETRY_ATTRIBUTE

    scene = slicer.vtkMRMLScene()
    logic = CurationLogic()
    ct_node, ct = logic.load_ct(shared_data / "ct" / "ibsi_sts" / "STS_029.nii.gz", scene)
    steps = []
    result = logic.analyse_ct(ct_node, scene, progress=steps.append)
    assert steps == list(STEPS)  # one hip: every step once, in order, the hip bones last
    assert result.calibration["method"].startswith("phantomless") and result.calibration["units"] == "mg/cm3"
    segmentation = result.segmentation_node.GetSegmentation()
    names = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
    assert {"femur", "proximal femur region"} <= names
    landmarks = result.landmarks_node
    assert {landmarks.GetNthControlPointLabel(i) for i in range(landmarks.GetNumberOfControlPoints())} >= set(
        LANDMARK_NAMES
    ) - {"shaft_2cm", "shaft_5cm"}
    assert 150 < result.measurement["qct_vbmd_mg_cm3"] < 450 and 0.4 < result.measurement["ct_abmd_g_cm2"] < 1.3
    assert result.calibration_plot_node.GetNumberOfPlotSeriesNodes() == 2
    # DRR nodes: the same numbers as the projector's, with the geometry on the node.
    nodes, geometry = logic.project_drrs(ct_node, result.segmentation_node, scene, result.calibration)
    pf_node = nodes[1]
    assert json.loads(pf_node.GetAttribute(GEOMETRY_ATTRIBUTE))["detector_rows"] == geometry.detector_rows
    assert pf_node.GetSpacing()[:2] == (geometry.column_spacing_mm, geometry.row_spacing_mm)
    from bmdgan.ct.calibration import Calibration
    from BMDGANLib.mrml_conversion import segmentation_node_to_labels
    from BMDGANRegistrationLib.curation_logic import SEGMENT_NAMES

    labels = segmentation_node_to_labels(result.segmentation_node, ct, scene, SEGMENT_NAMES).array
    density = Calibration.from_dict(result.calibration).density(ct.array)
    expected = Projector(density * (labels == 3), ct.geometry.ijk_to_lps()).project(geometry)[0]
    np.testing.assert_allclose(slicer.util.arrayFromVolume(pf_node)[0], expected, atol=1e-4)
    # A user's edit of a landmark overrides the automatic one.
    moved = np.array(landmarks.GetNthControlPointPosition(1)) + [2.0, 0.0, 0.0]
    landmarks.SetNthControlPointPosition(1, *moved)
    edited = logic.analyse_ct(ct_node, scene, landmarks_node=landmarks)
    assert "edited by the user" in edited.measurement["landmarks_source"]


@pytest.mark.slow
def test_curation_logic_adds_accepted_cases_to_a_dataset(shared_data, tmp_path):
    from bmdgan.datasets.format import read_manifest
    from bmdgan.projection.dicom_writer import write_dx_dicom
    from bmdgan.projection.geometry import default_ap_geometry
    from bmdgan.projection.simulator import simulate_radiograph

    scene = slicer.vtkMRMLScene()
    logic = CurationLogic()
    ct_node, ct = logic.load_ct(shared_data / "ct" / "ibsi_sts" / "STS_029.nii.gz", scene)
    analysis = logic.analyse_ct(ct_node, scene)
    geometry = default_ap_geometry(ct, pixel_spacing_mm=1.0)
    estimation = EstimationLogic()
    for case, seed in enumerate((0, 1, 2)):
        radiograph = simulate_radiograph(ct, geometry, rng=seed)
        dicom = write_dx_dicom(tmp_path / f"xray{seed}.dcm", radiograph, patient_id="x")
        radiograph_node, _ = estimation.load_radiograph(dicom, scene)
        report = logic.add_case(
            tmp_path / "dataset",
            radiograph_node,
            ct_node,
            analysis.segmentation_node,
            analysis.landmarks_node,
            analysis.calibration,
            geometry,
            scene,
            side="left",
            patient="MRN-1234",
            key="secret",
            pose="supine",
            accepted=case != 1,
        )
    assert len(report["built"]) == 2 and not report["skipped"]
    records = read_manifest(tmp_path / "dataset" / "pairs")
    assert len(records) == 2 and len({r.patient_id for r in records}) == 1  # one patient, pseudonymised
    assert "MRN-1234" not in (tmp_path / "dataset" / "pairs" / "manifest.csv").read_text()
    statuses = [case["status"] for case in logic.case_list(tmp_path / "dataset")]
    assert statuses == ["built", "rejected", "built"]


@pytest.mark.slow
def test_curation_logic_curates_the_hip_asked_for(shared_data):
    """The Registration module's Hip choice is the command line's --side: on a whole-pelvis CT each side gives
    that hip (head on its own side: the patient's left at larger LPS x), and on a thigh crop holding one right
    femur 'left' is refused by name."""
    scene = slicer.vtkMRMLScene()
    logic = CurationLogic()
    ct_node, _ = logic.load_ct(shared_data / "ct" / "pelvic_reference" / "Pelvic-Ref-005.nii.gz", scene)
    assert logic.hip_sides(ct_node) == ["left", "right"]
    head_x = {}
    for side in ("left", "right"):
        result = logic.analyse_ct(ct_node, scene, side=side)
        assert result.measurement["side"] == side
        landmarks = result.landmarks_node
        names = [landmarks.GetNthControlPointLabel(i) for i in range(landmarks.GetNumberOfControlPoints())]
        ras = landmarks.GetNthControlPointPosition(names.index("femoral_head_centre"))
        head_x[side] = -ras[0]  # RAS -> LPS
    assert head_x["left"] > head_x["right"] + 100.0
    crop_node, _ = logic.load_ct(shared_data / "ct" / "ibsi_sts" / "STS_012.nii.gz", scene)
    with pytest.raises(InputError, match="right"):
        logic.analyse_ct(crop_node, scene, side="left")
