"""The training module's evaluation and sample pictures on real MRML nodes (slicer-core): a smoke-trained run is
evaluated by a real ``bmdgan evaluate`` process, and what the scene holds is compared with the files it wrote."""

from __future__ import annotations

import csv
import json
import math
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from bmdgan.errors import BMDGANError, InputError  # noqa: E402
from BMDGANTrainingLib.evaluation_logic import EvaluationLogic, EvaluationRequest, check_request, summary  # noqa: E402
from BMDGANTrainingLib.training_logic import TrainingLogic  # noqa: E402


def _column(table_node, name: str) -> list:
    array = table_node.GetTable().GetColumnByName(name)
    assert array is not None, f"no column {name!r} in {table_node.GetName()}"
    return [array.GetValue(row) for row in range(array.GetNumberOfValues())]


def _series_arrays(chart, series_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The x and y values a chart's series plots, read through the series' table and column names."""
    for index in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(index)
        if series.GetName().endswith(series_name):
            table = series.GetTableNode()
            return (
                np.array(_column(table, series.GetXColumnName())),
                np.array(_column(table, series.GetYColumnName())),
            )
    raise AssertionError(f"{chart.GetName()} has no series {series_name!r}")


def _wait(job, timeout_s: float = 240.0) -> list:
    progress, deadline = [], time.time() + timeout_s
    while job.running() and time.time() < deadline:
        progress.append(job.progress())
        time.sleep(0.1)
    assert not job.running(), job.request.log_path.read_text()[-2000:]
    return progress


def test_evaluation_refuses_a_run_without_a_model_and_a_fold_the_dataset_lacks(dataset, tmp_path):
    with pytest.raises(InputError, match=r"has no exported model \(model/model.json\).*train stages 1 and 2"):
        check_request(EvaluationRequest(str(tmp_path), str(dataset), 0))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    with pytest.raises(InputError, match=r"has 0 cases in fold 7 \(its folds: 0, 1, 2, 3\).*choose one of its folds"):
        EvaluationLogic.start(EvaluationRequest(str(tmp_path), str(dataset), 7))
    with pytest.raises(InputError, match="is not a bmdgan dataset"):
        check_request(EvaluationRequest(str(tmp_path), str(tmp_path), 0))
    assert check_request(EvaluationRequest(str(tmp_path), str(dataset), None)) == 16  # 8 patients x 2 poses


def test_prediction_pairs_leave_out_missing_values():
    from bmdgan.evaluation.metrics import bland_altman
    from BMDGANTrainingLib.evaluation_logic import prediction_pairs

    columns = {
        "case_id": ["a", "b", "c", "d"],
        "pose": ["supine"] * 4,
        "ct_abmd_g_cm2_truth": ["0.7", "0.9", "nan", "1.1"],
        "ct_abmd_g_cm2_decomposition": ["0.75", "0.8", "1.0", "nan"],  # 2 finite pairs: no chart
        "ct_abmd_g_cm2_baseline": ["0.6", "1.0", "0.9", "1.3"],
    }
    [(method, target, estimate, truth)] = prediction_pairs(columns)
    assert (method, target) == ("baseline", "ct_abmd_g_cm2")
    assert estimate.tolist() == [0.6, 1.0, 1.3] and truth.tolist() == [0.7, 0.9, 1.1]
    assert bland_altman(estimate, truth).mean_difference == pytest.approx((-0.1 + 0.1 + 0.2) / 3, rel=1e-12)


@pytest.mark.slow
def test_evaluation_of_a_trained_run_puts_metrics_and_charts_into_the_scene(trained, dataset):
    run_folder, _ = trained
    scene = slicer.vtkMRMLScene()
    logic = EvaluationLogic()
    job = logic.start(EvaluationRequest(str(run_folder), str(dataset), 0, robustness=False))
    progress = _wait(job)
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and job.progress().fraction == 1.0
    result = logic.finish(job, scene, load_pictures=True)
    folder = run_folder / "evaluation" / "fold_0"
    assert result.folder == folder
    report = json.loads((folder / "metrics.json").read_text())
    assert report["fold"] == 0 and report["cases"] == 4
    assert summary(report) == (
        f"4 cases (fold 0): PF-DRR PSNR {report['pf_drr']['psnr_db_mean']:.1f} dB, "
        f"Dice {report['pf_drr']['dice_mean']:.3f}"
    )

    # The table holds metrics.json's numbers, a row per method, target and pose.
    table = result.table_node
    rows = list(zip(_column(table, "method"), _column(table, "target"), _column(table, "pose")))
    assert ("decomposition", "ct_abmd_g_cm2", "all") in rows and ("decomposition", "qct_vbmd_mg_cm3", "all") in rows
    for row, (method, target, pose) in enumerate(rows):
        metrics = report["methods"][method][target]
        expected = metrics["all"] if pose == "all" else metrics["per_pose"][pose]
        for column in ("n", "pcc", "icc", "mae", "see", "rms_cv_percent"):
            value = _column(table, column)[row]
            assert value == expected[column] or (expected[column] is None and math.isnan(value)), (row, column)
    assert _column(table, "unit")[rows.index(("decomposition", "qct_vbmd_mg_cm3", "all"))] == "mg/cm3"

    # The charts plot predictions.csv's columns; the Bland-Altman lines are mean +/- 1.96 SD of the differences.
    with open(folder / "predictions.csv", newline="") as stream:
        predictions = list(csv.DictReader(stream))
    for target in ("ct_abmd_g_cm2", "qct_vbmd_mg_cm3"):
        truth = np.array([float(r[f"{target}_truth"]) for r in predictions])
        estimate = np.array([float(r[f"{target}_decomposition"]) for r in predictions])
        x, y = _series_arrays(result.correlation_charts[("decomposition", target)], "cases")
        np.testing.assert_array_equal(x, truth)
        np.testing.assert_array_equal(y, estimate)
        chart = result.bland_altman_charts[("decomposition", target)]
        x, y = _series_arrays(chart, "cases")
        np.testing.assert_allclose(x, (estimate + truth) / 2, rtol=1e-15)
        np.testing.assert_allclose(y, estimate - truth, rtol=1e-15)
        difference = estimate - truth
        mean, sd = difference.mean(), difference.std(ddof=1)
        for name, level in (
            ("mean difference", mean),
            ("lower limit", mean - 1.96 * sd),
            ("upper limit", mean + 1.96 * sd),
        ):
            line_x, line_y = _series_arrays(chart, name)
            np.testing.assert_allclose(line_y, [level, level], rtol=1e-12)
            assert line_x.tolist() == [x.min(), x.max()]
        # The CSV rounds to 6 digits: its limits match the unrounded ones of metrics.json to that precision.
        bland_altman = report["methods"]["decomposition"][target]["all"]["bland_altman"]
        np.testing.assert_allclose(
            [mean, mean + 1.96 * sd],
            [bland_altman["mean_difference"], bland_altman["upper_limit"]],
            atol=1e-4 * np.abs(truth).max(),
        )
        assert chart.GetYAxisTitle().endswith("g/cm2)" if target.endswith("g_cm2") else "mg/cm3)")

    # The pictures evaluate drew, one RGB volume node each, pixel for pixel.
    from PIL import Image

    pictures = sorted(folder.glob("*.png"))
    assert [p.stem for p in pictures] == sorted(
        f"{kind}_decomposition_{t}"
        for kind in ("bland_altman", "correlation")
        for t in ("ct_abmd_g_cm2", "qct_vbmd_mg_cm3")
    )
    for path, node in zip(pictures, result.picture_nodes):
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node)[0], np.asarray(Image.open(path).convert("RGB")))

    # Evaluating again updates the same nodes instead of adding new ones.
    count = scene.GetNumberOfNodes()
    again = logic.load(folder, scene, f"{run_folder.name} fold_0", load_pictures=True)
    assert again.table_node is table and scene.GetNumberOfNodes() == count


@pytest.mark.slow
def test_evaluation_of_every_case_has_a_row_per_pose(trained, dataset):
    run_folder, _ = trained
    scene = slicer.vtkMRMLScene()
    logic = EvaluationLogic()
    job = logic.start(EvaluationRequest(str(run_folder), str(dataset), None, robustness=False))
    _wait(job)
    result = logic.finish(job, scene)
    report = json.loads((run_folder / "evaluation" / "all_cases" / "metrics.json").read_text())
    table = result.table_node
    rows = list(zip(_column(table, "target"), _column(table, "pose"), _column(table, "pcc")))
    assert [(t, p) for t, p, _ in rows] == [
        (t, p) for t in ("ct_abmd_g_cm2", "qct_vbmd_mg_cm3") for p in ("all", "pose0", "pose1")
    ]
    for target, pose, pcc in rows:
        metrics = report["methods"]["decomposition"][target]
        assert pcc == (metrics["all"] if pose == "all" else metrics["per_pose"][pose])["pcc"]
    assert _column(table, "n") == [16.0, 8.0, 8.0] * 2


@pytest.mark.slow
def test_a_cancelled_evaluation_writes_no_results(trained, dataset, tmp_path):
    import shutil

    run_folder = tmp_path / "run"  # the trained model in a run folder of its own: no earlier results in it
    shutil.copytree(trained[0] / "model", run_folder / "model")
    request = EvaluationRequest(str(run_folder), str(dataset), None)  # every case, 9 times: seconds to stop it in
    logic = EvaluationLogic()
    job = logic.start(request)
    deadline = time.time() + 120
    while job.progress().phase == "starting" and time.time() < deadline:
        time.sleep(0.05)
    assert job.progress().phase in ("evaluating", "robustness")
    assert logic.cancel(job) == 130  # interrupted like Ctrl+C
    assert not job.running() and job.progress().phase == "stopped"
    assert not (request.out_folder / "metrics.json").exists()
    with pytest.raises(BMDGANError, match="exit code 130"):
        logic.finish(job, slicer.vtkMRMLScene())


@pytest.mark.slow
def test_the_latest_training_sample_is_a_volume_node(trained, smoke):
    from bmdgan.training.trainer import sample_path

    run_folder, histories = trained
    logic = TrainingLogic()
    epochs = 2  # stage 2 of the fixture, a sample after every epoch (smoke: sample_every_epochs 1)
    assert smoke.sample_every_epochs == 1 and len({h["epoch"] for h in histories["stage2"]}) == epochs
    for epoch in range(epochs):
        assert sample_path(run_folder / "stage2", epoch).is_file()
    scene = slicer.vtkMRMLScene()
    sample, node = logic.load_latest_sample(scene, run_folder)
    assert (sample.stage, sample.epoch) == ("stage2", epochs - 1)
    pixels = slicer.util.arrayFromVolume(node)
    rows, columns = smoke.image_shape
    assert pixels.shape == (1, rows, 3 * columns)  # radiograph | target | prediction
    np.testing.assert_array_equal(pixels[0], np.load(sample_path(run_folder / "stage2", epochs - 1)))
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert node.GetSpacing() == (1.0, 1.0, 1.0) and node.GetAttribute("BMDGAN.TrainingSample") == "stage2 epoch 2"
    assert node.GetAttribute("BMDGAN.Unit") == "display 0-1 (DRRs: g/cm2 / 2)"
    assert node.GetDisplayNode().GetWindow() == 1.0 and node.GetDisplayNode().GetLevel() == 0.5
    # Laid out like a radiograph: columns along LPS x (RAS -x), rows along LPS y (RAS -y).
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    assert [matrix.GetElement(i, i) for i in range(3)] == [-1.0, -1.0, 1.0]
    again, same = logic.load_latest_sample(scene, run_folder)
    assert same is node
    assert logic.latest_sample(run_folder / "stage1" / "no run") is None
    assert logic.load_latest_sample(scene, run_folder / "stage1" / "no run") is None


def test_progress_is_read_from_a_terminal_bar_and_from_a_log_line():
    """The evaluation process writes plain lines to its log (bmdgan.progress), a tqdm bar on a terminal: the
    Logic reads the phase and done/total from either."""
    from BMDGANTrainingLib.evaluation_logic import _PROGRESS

    assert _PROGRESS.findall("evaluating:  40%|####      | 4/10 [00:02<00:03]") == [("evaluating", "4", "10")]
    log = "loading\nevaluating: 0/10 it (0 %), 0.0 s\nevaluating: 10/10 it (100 %), 3.1 s\nrobustness: 2/7 it (29 %)"
    assert _PROGRESS.findall(log)[-1] == ("robustness", "2", "7")
