"""BMDGANTraining: train and evaluate the BMD-GAN networks in a separate process.

Thin widget over :class:`BMDGANTrainingLib.training_logic.TrainingLogic` (no Qt, runs headless).
"""

from __future__ import annotations

import shutil
import sys

import qt
import slicer
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from BMDGANLib.widget_base import EngineLogic, ParameterNodeWidget


class BMDGANTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BMD-GAN Training"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerBMDGAN contributors"]
        self.parent.helpText = (
            "Trains the BMD-GAN decomposition (stages 1 and 2, hierarchical learning) and regression (stage 3) "
            "networks on a dataset folder, in a separate process, and evaluates them.")
        from BMDGAN import CITATION

        self.parent.acknowledgementText = "Method: " + CITATION


@parameterNodeWrapper
class BMDGANTrainingParameterNode:
    """Saved with the scene: what the next training run uses."""

    datasetFolder: str = ""
    runFolder: str = ""
    config: str = "cpu"
    fold: int = 0
    stages: str = "both"
    device: str = "auto"
    followSamples: bool = True
    evaluateRobustness: bool = True
    loadEvaluationPictures: bool = False


class BMDGANTrainingWidget(ParameterNodeWidget):
    parameterNodeClass = BMDGANTrainingParameterNode

    def createLogic(self):
        return BMDGANTrainingLogic()

    def setup(self) -> None:
        ParameterNodeWidget.setup(self)
        self.ui.checkEnvironmentButton.connect("clicked(bool)", self.onCheckEnvironment)
        self.ui.startButton.connect("clicked(bool)", self.onStart)
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.useModelButton.connect("clicked(bool)", self.onUseModel)
        self.ui.showSampleButton.connect("clicked(bool)", lambda: self.showLatestSample(fit=True))
        self.ui.evaluateButton.connect("clicked(bool)", self.onEvaluate)
        self.ui.cancelEvaluationButton.connect("clicked(bool)", self.onCancelEvaluation)
        self.ui.chartSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onChartSelected)
        self.timer = qt.QTimer()
        self.timer.setInterval(2000)
        self.timer.connect("timeout()", self.onTimer)
        self.evaluationJob = None
        self.evaluationTimer = qt.QTimer()
        self.evaluationTimer.setInterval(500)
        self.evaluationTimer.connect("timeout()", self.onEvaluationTimer)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.timer.stop()
        self.evaluationTimer.stop()
        ParameterNodeWidget.cleanup(self)

    def onStart(self) -> None:
        from BMDGANLib.slicer_setup import ensure_requirements
        from BMDGANTrainingLib.training_logic import TrainingRequest

        parameters = self._parameterNode
        if not parameters.datasetFolder or not parameters.runFolder or not ensure_requirements(slicer):
            return
        request = TrainingRequest(parameters.datasetFolder, parameters.runFolder, parameters.config,
                                  None if parameters.fold < 0 else parameters.fold, parameters.stages, parameters.device)
        with slicer.util.tryWithErrorDisplay("Could not start training.", waitCursor=True):
            self.logic.engine.start(request, python=shutil.which("PythonSlicer") or sys.executable)
            self.timer.start()

    def onStop(self) -> None:
        self.logic.engine.stop()
        self.onTimer()

    def onTimer(self) -> None:
        engine, run_folder = self.logic.engine, self._parameterNode.runFolder
        progress = engine.progress(run_folder)
        self.ui.progressBar.value = int(100 * progress.fraction)
        state = "running" if engine.is_running() else "stopped"
        self.ui.statusLabel.text = f"{state}: {progress.stage or 'starting'}, epoch {progress.epoch}/{progress.total_epochs}"
        if progress.stage:
            chart = engine.update_loss_plot(slicer.mrmlScene, run_folder, progress.stage)
            if chart is not None:
                slicer.modules.plots.logic().ShowChartInLayout(chart)
        if self._parameterNode.followSamples:
            self.showLatestSample(fit=False)
        if not engine.is_running():
            self.timer.stop()

    def showLatestSample(self, fit: bool) -> None:
        """The run's latest sample picture as the slice views' background (see TrainingLogic.load_latest_sample)."""
        loaded = self.logic.engine.load_latest_sample(slicer.mrmlScene, self._parameterNode.runFolder)
        if loaded is None:
            if fit:  # asked for by the user, not the training timer
                self.ui.statusLabel.text = "No sample yet: the trainer writes one every sample_every_epochs epochs."
            return
        sample, node = loaded
        slicer.util.setSliceViewerLayers(background=node, fit=fit)
        if fit:
            self.ui.statusLabel.text = f"Sample of {sample.stage}, epoch {sample.epoch + 1}: radiograph | target | G(x)"

    def onEvaluate(self) -> None:
        from BMDGANLib.slicer_setup import ensure_requirements
        from BMDGANTrainingLib.evaluation_logic import EvaluationRequest

        parameters = self._parameterNode
        if self.evaluationJob is not None:
            self.ui.evaluationStatusLabel.text = "An evaluation is running: wait for it or cancel it first."
            return
        if not parameters.datasetFolder or not parameters.runFolder or not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay("Could not start the evaluation.", waitCursor=True):
            request = EvaluationRequest(parameters.runFolder, parameters.datasetFolder,
                                        None if parameters.fold < 0 else parameters.fold,
                                        self.logic.engine.resolve_device(parameters.device),
                                        parameters.evaluateRobustness)
            python = shutil.which("PythonSlicer") or sys.executable
            self.evaluationJob = self.logic.evaluation.start(request, python)
            self.ui.evaluationStatusLabel.text = f"evaluating into {request.out_folder}"
            self.evaluationTimer.start()

    def onCancelEvaluation(self) -> None:
        if self.evaluationJob is None:
            return
        self.evaluationTimer.stop()
        code = self.logic.evaluation.cancel(self.evaluationJob)
        self.evaluationJob = None
        self.ui.evaluationProgressBar.value = 0
        self.ui.evaluationStatusLabel.text = f"Cancelled (exit code {code}); no results were written."

    def onEvaluationTimer(self) -> None:
        job = self.evaluationJob
        progress = job.progress()
        self.ui.evaluationProgressBar.value = int(100 * progress.fraction)
        if job.running():
            self.ui.evaluationStatusLabel.text = f"{progress.phase}: {100 * progress.fraction:.0f} %"
            return
        self.evaluationTimer.stop()
        self.evaluationJob = None
        with slicer.util.tryWithErrorDisplay("The evaluation failed.", waitCursor=True):
            result = self.logic.evaluation.finish(job, slicer.mrmlScene, self._parameterNode.loadEvaluationPictures)
            self.showEvaluation(result)

    def showEvaluation(self, result) -> None:
        """The metrics table in the layout's table view, the first correlation chart in its plot view."""
        from BMDGANTrainingLib.evaluation_logic import summary

        self.ui.evaluationStatusLabel.text = summary(result.report)
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(result.table_node.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
        charts = list(result.correlation_charts.values())
        if charts:
            self.ui.chartSelector.setCurrentNode(charts[0])

    def onChartSelected(self, chart) -> None:
        if chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)

    def onUseModel(self) -> None:
        folder = self.logic.engine.model_folder(self._parameterNode.runFolder)
        if folder is None:
            slicer.util.errorDisplay("This run has no exported model yet: stage 2 must finish first.")
            return
        import BMDGAN

        parameters = BMDGAN.BMDGANParameterNode(BMDGAN.BMDGANLogic().getParameterNode())
        parameters.modelFolder = str(folder)


    def onCheckEnvironment(self) -> None:
        from BMDGANLib.slicer_setup import ensure_requirements

        if not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay("Could not inspect PyTorch.", waitCursor=True):
            self.ui.environmentLabel.text = self.logic.engine.compute_environment().describe()


class BMDGANTrainingLogic(EngineLogic):
    parameterNodeClass = BMDGANTrainingParameterNode

    def __init__(self) -> None:
        from BMDGANTrainingLib.evaluation_logic import EvaluationLogic
        from BMDGANTrainingLib.training_logic import TrainingLogic

        EngineLogic.__init__(self, TrainingLogic())
        self.evaluation = EvaluationLogic()


class BMDGANTrainingTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer (Reload and Test, or ``ctest -R py_BMDGANTraining``): trains a smoke run on a tiny
    synthetic dataset in a ``bmdgan train`` process, shows its latest sample, evaluates it in a ``bmdgan evaluate``
    process and checks the scene's table and charts against the files evaluate wrote (about a minute on a CPU)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_compute_environment()
        self.setUp()
        self.test_train_sample_and_evaluate()

    def test_compute_environment(self) -> None:
        environment = BMDGANTrainingLogic().engine.compute_environment()
        self.assertGreaterEqual(environment.cpu_threads, 1)
        self.assertIn(environment.default_device, ("cpu", "cuda"))
        self.delayDisplay(environment.describe())

    @staticmethod
    def synthetic_dataset(folder):
        """16 hip-like pairs of 8 patients in 4 folds: a bright femur-like shape whose density (g/cm2) is the
        case's BMD, on a soft-tissue background with noise (a test fixture, not a physical simulation)."""
        import numpy as np

        from bmdgan.datasets.folds import assign_patient_folds
        from bmdgan.datasets.format import CaseRecord, DatasetWriter, read_manifest, rewrite_manifest

        rng = np.random.default_rng(0)
        shape = (64, 32)
        y, x = np.mgrid[0:shape[0], 0:shape[1]] / np.array(shape)[:, None, None]
        writer = DatasetWriter(folder, shape, {"source": "BMDGANTraining self-test"})
        for patient in range(8):
            bmd_g_cm2 = rng.uniform(0.5, 1.1)
            for pose in range(2):
                bone = ((((x - 0.55) / 0.18) ** 2 + ((y - 0.25) / 0.09) ** 2 < 1) |
                        ((np.abs(x - 0.6) < 0.12) & (y > 0.25))).astype(np.float32)
                radiograph = 0.6 + 0.2 * x + 0.9 * bmd_g_cm2 * bone + rng.normal(0, 0.03, shape)
                record = CaseRecord(f"p{patient}_pose{pose}", f"p{patient}", "right", pose=f"pose{pose}",
                                    ct_abmd_g_cm2=bmd_g_cm2, qct_vbmd_mg_cm3=300 * bmd_g_cm2)
                writer.add(record, {"radiograph": radiograph.astype(np.float32),
                                    "drr_stage1": (bmd_g_cm2 * bone).astype(np.float32),
                                    "drr_pf": (bmd_g_cm2 * bone * (y < 0.5)).astype(np.float32)})
        rewrite_manifest(folder, assign_patient_folds(read_manifest(folder), n_folds=4, seed=0))
        return folder

    def waitFor(self, running, timeout_s: float = 600.0) -> None:
        import time

        deadline = time.time() + timeout_s
        while running() and time.time() < deadline:
            slicer.app.processEvents()
            time.sleep(0.2)
        self.assertFalse(running(), "the process did not finish in time")

    def test_train_sample_and_evaluate(self) -> None:
        import csv
        import json
        import tempfile
        from pathlib import Path

        import numpy as np

        from BMDGANTrainingLib.evaluation_logic import EvaluationRequest
        from BMDGANTrainingLib.training_logic import TrainingRequest

        logic = BMDGANTrainingLogic()
        folder = Path(tempfile.mkdtemp(prefix="BMDGANTraining-selftest-"))
        dataset = self.synthetic_dataset(folder / "dataset")
        python = shutil.which("PythonSlicer") or sys.executable
        self.delayDisplay("Training a smoke run (stages 1 and 2) in a separate process")
        logic.engine.start(TrainingRequest(str(dataset), str(folder / "run"), "smoke", 0, "both", "cpu"), python)
        self.waitFor(logic.engine.is_running)
        self.assertEqual(logic.engine.process.returncode, 0, logic.engine.log_path.read_text()[-2000:])
        sample, sample_node = logic.engine.load_latest_sample(slicer.mrmlScene, folder / "run")
        self.assertEqual(sample.stage, "stage2")
        slicer.util.setSliceViewerLayers(background=sample_node, fit=True)

        self.delayDisplay("Evaluating fold 0 in a separate process")
        job = logic.evaluation.start(EvaluationRequest(str(folder / "run"), str(dataset), 0, robustness=False), python)
        self.waitFor(job.running)
        result = logic.evaluation.finish(job, slicer.mrmlScene, load_pictures=True)
        report = json.loads((result.folder / "metrics.json").read_text())
        table = result.table_node.GetTable()
        for row in range(table.GetNumberOfRows()):
            method, target, pose = (table.GetValueByName(row, column).ToString()
                                    for column in ("method", "target", "pose"))
            metrics = report["methods"][method][target]
            expected = metrics["all"] if pose == "all" else metrics["per_pose"][pose]
            self.assertEqual(table.GetValueByName(row, "pcc").ToDouble(), expected["pcc"])
            self.assertEqual(table.GetValueByName(row, "mae").ToDouble(), expected["mae"])
        with open(result.folder / "predictions.csv", newline="") as stream:
            truth = [float(r["ct_abmd_g_cm2_truth"]) for r in csv.DictReader(stream)]
        chart = result.correlation_charts[("decomposition", "ct_abmd_g_cm2")]
        points = chart.GetNthPlotSeriesNode(0).GetTableNode().GetTable().GetColumnByName("truth")
        np.testing.assert_array_equal([points.GetValue(i) for i in range(points.GetNumberOfValues())], truth)
        self.assertEqual(len(result.picture_nodes), len(list(result.folder.glob("*.png"))))
        slicer.modules.plots.logic().ShowChartInLayout(result.bland_altman_charts[("decomposition", "ct_abmd_g_cm2")])
        self.delayDisplay("Evaluation loaded: " + result.table_node.GetName())
