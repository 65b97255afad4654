"""BMDGAN module Logic: batch estimation over a study and the exports, on slicer-core with the shipped default model
and the bundled sample radiographs (Resources/SampleData/*.dcm)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from bmdgan.errors import InputError  # noqa: E402
from bmdgan.io import read_radiograph  # noqa: E402
from bmdgan.sample_data import SAMPLE_CT, SAMPLE_RADIOGRAPH, SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir  # noqa: E402
from BMDGANLib.estimation_logic import BATCH_COLUMNS, EstimationLogic, study_files, study_radiographs  # noqa: E402
from BMDGANRegistrationLib.curation_logic import CurationLogic  # noqa: E402

SAMPLES = (SAMPLE_SIMULATED_RADIOGRAPH, SAMPLE_RADIOGRAPH)


@pytest.fixture()
def study_scene():
    """A scene with the two sample radiographs in one DICOM-like study and the sample CT in another."""
    scene = slicer.vtkMRMLScene()
    logic = EstimationLogic()
    nodes = [logic.load_radiograph(sample_data_dir() / name, scene)[0] for name in SAMPLES]
    ct_node, _ = CurationLogic().load_ct(sample_data_dir() / SAMPLE_CT, scene)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient")
    study = hierarchy.CreateStudyItem(patient, "hip study")
    for node in nodes:
        hierarchy.CreateItem(study, node)
    hierarchy.CreateItem(hierarchy.CreateStudyItem(patient, "CT study"), ct_node)
    return scene, nodes, ct_node


def test_study_radiographs_are_the_single_slice_images_of_the_study(study_scene):
    scene, nodes, ct_node = study_scene
    assert study_radiographs(scene, nodes[1]) == nodes
    assert study_radiographs(scene, ct_node) == []  # the CT's study holds no radiograph
    derived = EstimationLogic().estimate(nodes[0], scene, side="right").pf_drr_nodes[0]
    assert derived not in study_radiographs(scene)  # PF-DRRs (g/cm2) are not radiographs
    assert study_radiographs(scene) == nodes  # no study given: the scene's radiographs


def test_batch_rows_equal_single_estimates_and_a_failing_image_is_a_row(study_scene):
    scene, nodes, ct_node = study_scene
    logic = EstimationLogic()
    calls = []
    batch = logic.estimate_batch(
        [nodes[0], ct_node, nodes[1]], scene, side="right", progress=lambda *call: calls.append(call)
    )
    assert calls == [(1, 3, nodes[0].GetName()), (2, 3, "STS_012"), (3, 3, nodes[1].GetName())]
    assert not batch.cancelled
    assert [row.radiograph for row in batch.rows] == [nodes[0].GetName(), "STS_012", nodes[1].GetName()]
    assert batch.rows[1].hip is None and "53 slices, not a single radiograph" in batch.rows[1].error
    table = batch.table_node
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == list(BATCH_COLUMNS)
    assert table.GetNumberOfRows() == 3
    assert batch.rows[0].hip is not None  # the adult sample's right hip
    if batch.rows[2].hip is None:  # the child's radiograph: the adult hip detector may find no hip
        assert "no hip found" in batch.rows[2].error
        with pytest.raises(InputError, match="no hip found"):
            logic.estimate(nodes[1], scene, side="right")
    for row, node in ((0, nodes[0]), (2, nodes[1])):
        if batch.rows[row].hip is None:
            continue
        single = logic.estimate(node, scene, side="right").hips[0]
        hip = batch.rows[row].hip
        assert (hip.dxa_bmd_g_cm2, hip.qct_bmd_mg_cm3, hip.t_score) == (
            single.dxa_bmd_g_cm2,
            single.qct_bmd_mg_cm3,
            single.t_score,
        )
        assert 0.3 < hip.dxa_bmd_g_cm2 < 1.4 and 100 < hip.qct_bmd_mg_cm3 < 500  # g/cm2, mg/cm3
        cells = {BATCH_COLUMNS[c]: table.GetCellText(row, c) for c in range(len(BATCH_COLUMNS))}
        assert cells["side"] == "right" and cells["error"] == ""
        assert float(cells["aBMD (g/cm2)"]) == pytest.approx(single.dxa_bmd_g_cm2, abs=5e-4)
        assert float(cells["vBMD (mg/cm3)"]) == pytest.approx(single.qct_bmd_mg_cm3, abs=0.5)
        assert float(cells["T-score"]) == pytest.approx(single.t_score, abs=0.05)
        assert cells["WHO category"] == single.who_category
    assert "53 slices" in table.GetCellText(1, BATCH_COLUMNS.index("error"))
    assert table.GetCellText(1, BATCH_COLUMNS.index("aBMD (g/cm2)")) == ""


def test_batch_over_a_folder_and_stopping_it(tmp_path):
    folder = tmp_path / "study"
    (folder / "series1").mkdir(parents=True)
    shutil.copy(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH, folder / "series1" / "IM0001")  # no extension
    shutil.copy(sample_data_dir() / SAMPLE_RADIOGRAPH, folder / "b.dcm")
    (folder / "c.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)  # a truncated DICOM file
    shutil.copy(sample_data_dir() / "331_DDH_1.json", folder / "notes.json")  # not an image: left out
    files = study_files(folder)
    assert [p.name for p in files] == ["b.dcm", "c.dcm", "IM0001"]
    scene = slicer.vtkMRMLScene()
    logic = EstimationLogic()
    batch = logic.estimate_batch(files, scene, side="right")
    assert [row.radiograph for row in batch.rows] == ["b.dcm", "c.dcm", "IM0001"]
    assert batch.rows[0].hip is not None or "no hip found" in batch.rows[0].error  # a child's: maybe no adult hip
    assert batch.rows[1].hip is None and batch.rows[1].error and "c.dcm" in batch.rows[1].error
    assert batch.rows[2].hip is not None
    node, _ = logic.load_radiograph(files[2], scene)
    assert batch.rows[2].hip.dxa_bmd_g_cm2 == logic.estimate(node, scene, side="right").hips[0].dxa_bmd_g_cm2
    stopped = logic.estimate_batch(files, scene, side="right", progress=lambda done, total, name: done < 1)
    assert stopped.cancelled and [row.radiograph for row in stopped.rows] == ["b.dcm"]
    with pytest.raises(InputError, match="no radiograph to estimate"):
        logic.estimate_batch([], scene)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no DICOM, PNG, JPEG or TIFF file"):
        study_files(tmp_path / "empty")
    with pytest.raises(InputError, match="is not a folder"):
        study_files(tmp_path / "missing")


def test_exports_write_the_result_json_and_report_png(tmp_path):
    from PIL import Image

    scene = slicer.vtkMRMLScene()
    logic = EstimationLogic()
    node, _ = logic.load_radiograph(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH, scene)
    result = logic.estimate(node, scene, side="right")
    written = logic.export_json(result, tmp_path / "out" / "result.json")
    data = json.loads(written.read_text())
    hip = data["hips"][0]
    assert {"dxa_bmd_g_cm2", "qct_bmd_mg_cm3", "t_score", "who_category", "warnings", "trustworthy", "side"} <= set(hip)
    assert hip["dxa_bmd_g_cm2"] == result.hips[0].dxa_bmd_g_cm2
    assert hip["qct_bmd_mg_cm3"] == result.hips[0].qct_bmd_mg_cm3
    assert hip["who_category"] == result.hips[0].who_category and hip["side"] == "right"
    sample = read_radiograph(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH)  # mm at the patient plane
    assert data["pixel_spacing_mm"] == pytest.approx(list(sample.pixel_spacing_mm), abs=1e-6)
    assert data["model"].endswith("default")
    png = logic.export_report(result, tmp_path / "out" / "report.png")
    with Image.open(png) as picture:
        picture.verify()
    with Image.open(png) as picture:
        assert picture.format == "PNG" and picture.size == (990, 880)  # one hip: 9.0 x 8.0 inches at 110 dpi
        assert np.asarray(picture.convert("L")).std() > 10  # a picture, not a blank page
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.png", "result.json"]  # no partial files
    with pytest.raises(InputError, match="does not end in .png"):
        logic.export_report(result, tmp_path / "report.jpg")
    from BMDGANLib.estimation_logic import EstimationResult

    with pytest.raises(InputError, match="no estimate to export"):
        logic.export_json(EstimationResult(), tmp_path / "empty.json")
