"""BMDGANTraining: train and evaluate the BMD-GAN networks in a separate process.

Thin widget over :class:`BMDGANTrainingLib.training_logic.TrainingLogic` (no Qt, runs headless).
"""

from __future__ import annotations

from typing import Annotated

import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

import BMDGAN
from BMDGANLib.slicer_setup import ensure_requirements
from BMDGANLib.widget_base import ModuleLogic, ParameterNodeWidget
from BMDGANLib.widget_lifecycle import enter_and_exit
from BMDGANTrainingLib.evaluation_logic import EvaluationJob, EvaluationLogic, EvaluationRequest, summary
from BMDGANTrainingLib.training_logic import TrainingLogic, TrainingRequest


class BMDGANTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("BMD-GAN Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        # BMDGAN: the shared engine and Logic, and the parameter node "Use model" writes to; Plots, Tables: losses
        # and evaluation results.
        self.parent.dependencies = ["BMDGAN", "Plots", "Tables"]
        self.parent.contributors = ["SlicerBMDGAN contributors"]
        self.parent.helpText = _(
            "Trains the BMD-GAN decomposition (stages 1 and 2, hierarchical learning) and regression (stage 3) "
            "networks on a dataset folder, in a separate process, and evaluates them."
        )
        self.parent.acknowledgementText = _("Method: {citation}").format(citation=BMDGAN.CITATION)


@parameterNodeWrapper
class BMDGANTrainingParameterNode:
    """Saved with the scene: what the next training run uses."""

    datasetFolder: str = ""
    runFolder: str = ""
    config: Annotated[str, Choice(["cpu", "cpu-long", "cpu-cv", "paper", "smoke"])] = "cpu"
    fold: Annotated[int, WithinRange(-1, 9)] = 0  # -1: train on every fold
    stages: Annotated[str, Choice(["both", "stage1", "stage2", "stage3", "baseline"])] = "both"
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    pretrainedRun: str = ""  # empty: stage 1 starts from random weights
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
        parameters = self._parameterNode
        if not parameters.datasetFolder or not parameters.runFolder or not ensure_requirements(slicer):
            return
        fold = None if parameters.fold < 0 else parameters.fold
        request = TrainingRequest(
            parameters.datasetFolder,
            parameters.runFolder,
            parameters.config,
            fold,
            parameters.stages,
            parameters.device,
            pretrained=parameters.pretrainedRun,
        )
        with slicer.util.tryWithErrorDisplay(_("Could not start training."), waitCursor=True):
            self.logic.start(request)
            self.timer.start()

    def onStop(self) -> None:
        self.logic.stop()
        self.onTimer()

    def onTimer(self) -> None:
        logic, run_folder = self.logic, self._parameterNode.runFolder
        progress = logic.progress(run_folder)
        self.ui.progressBar.value = int(100 * progress.fraction)
        state = _("running") if logic.is_running() else _("stopped")
        self.ui.statusLabel.text = _("{state}: {stage}, epoch {epoch}/{epochs}").format(
            state=state, stage=progress.stage or _("starting"), epoch=progress.epoch, epochs=progress.total_epochs
        )
        if progress.stage:
            chart = logic.update_loss_plot(slicer.mrmlScene, run_folder, progress.stage)
            if chart is not None:
                slicer.modules.plots.logic().ShowChartInLayout(chart)
        if self._parameterNode.followSamples:
            self.showLatestSample(fit=False)
        if not logic.is_running():
            self.timer.stop()

    def showLatestSample(self, fit: bool) -> None:
        """The run's latest sample picture as the slice views' background (see TrainingLogic.load_latest_sample)."""
        loaded = self.logic.load_latest_sample(slicer.mrmlScene, self._parameterNode.runFolder)
        if loaded is None:
            if fit:  # asked for by the user, not the training timer
                self.ui.statusLabel.text = _("No sample yet: the trainer writes one every sample_every_epochs epochs.")
            return
        sample, node = loaded
        slicer.util.setSliceViewerLayers(background=node, fit=fit)
        if fit:
            self.ui.statusLabel.text = _("Sample of {stage}, epoch {epoch}: radiograph | target | G(x)").format(
                stage=sample.stage, epoch=sample.epoch + 1
            )

    def onEvaluate(self) -> None:
        parameters = self._parameterNode
        if self.evaluationJob is not None:
            self.ui.evaluationStatusLabel.text = _("An evaluation is running: wait for it or cancel it first.")
            return
        if not parameters.datasetFolder or not parameters.runFolder or not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the evaluation."), waitCursor=True):
            request = EvaluationRequest(
                parameters.runFolder,
                parameters.datasetFolder,
                None if parameters.fold < 0 else parameters.fold,
                self.logic.resolve_device(parameters.device),
                parameters.evaluateRobustness,
            )
            self.evaluationJob = self.logic.start_evaluation(request)
            self.ui.evaluationStatusLabel.text = _("evaluating into {folder}").format(folder=request.out_folder)
            self.evaluationTimer.start()

    def onCancelEvaluation(self) -> None:
        if self.evaluationJob is None:
            return
        self.evaluationTimer.stop()
        code = self.logic.cancel_evaluation(self.evaluationJob)
        self.evaluationJob = None
        self.ui.evaluationProgressBar.value = 0
        self.ui.evaluationStatusLabel.text = _("Cancelled (exit code {code}); no results were written.").format(
            code=code
        )

    def onEvaluationTimer(self) -> None:
        job = self.evaluationJob
        progress = job.progress()
        self.ui.evaluationProgressBar.value = int(100 * progress.fraction)
        if job.running():
            self.ui.evaluationStatusLabel.text = f"{progress.phase}: {100 * progress.fraction:.0f} %"
            return
        self.evaluationTimer.stop()
        self.evaluationJob = None
        with slicer.util.tryWithErrorDisplay(_("The evaluation failed."), waitCursor=True):
            result = self.logic.finish_evaluation(job, slicer.mrmlScene, self._parameterNode.loadEvaluationPictures)
            self.showEvaluation(result)

    def showEvaluation(self, result) -> None:
        """The metrics table in the layout's table view, the first correlation chart in its plot view."""
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
        folder = self.logic.model_folder(self._parameterNode.runFolder)
        if folder is None:
            slicer.util.errorDisplay(_("This run has no exported model yet: stage 2 must finish first."))
            return
        parameters = BMDGAN.BMDGANParameterNode(BMDGAN.BMDGANLogic().getParameterNode())
        parameters.modelFolder = str(folder)

    def onCheckEnvironment(self) -> None:
        if not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not inspect PyTorch."), waitCursor=True):
            self.ui.environmentLabel.text = self.logic.compute_environment().describe()


class BMDGANTrainingLogic(ModuleLogic, TrainingLogic):
    """The module's parameter node, :class:`~BMDGANTrainingLib.training_logic.TrainingLogic` (the training process,
    its progress, losses and samples) and the evaluation process's start, cancel and finish: the widget's whole
    interface."""

    parameterNodeClass = BMDGANTrainingParameterNode

    def __init__(self) -> None:
        ModuleLogic.__init__(self)
        TrainingLogic.__init__(self)
        self._evaluation = EvaluationLogic()

    def start_evaluation(self, request: EvaluationRequest) -> EvaluationJob:
        """Start ``bmdgan evaluate`` in a separate process (see EvaluationLogic.start)."""
        return self._evaluation.start(request)

    def cancel_evaluation(self, job: EvaluationJob) -> int:
        return self._evaluation.cancel(job)

    def finish_evaluation(self, job: EvaluationJob, scene, load_pictures: bool = False):
        """The evaluation's table, charts and pictures as nodes (see EvaluationLogic.finish)."""
        return self._evaluation.finish(job, scene, load_pictures)


class BMDGANTrainingTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer (Reload and Test, or ``ctest -R py_BMDGANTraining``): trains a smoke run on a tiny
    synthetic dataset in a ``bmdgan train`` process, shows its latest sample, evaluates it in a ``bmdgan evaluate``
    process and checks the scene's table and charts against the files evaluate wrote (about a minute on a CPU)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_enter_and_exit_keeps_observers()
        self.setUp()
        self.test_compute_environment()
        self.setUp()
        self.test_train_sample_and_evaluate()

    def test_enter_and_exit_keeps_observers(self) -> None:
        """Opening and leaving the module ten times leaves as many observers as before (each visit added one)."""
        before, after = enter_and_exit(slicer.util.getModuleWidget("BMDGANTraining"), times=10)
        self.assertEqual(before, after)
        self.delayDisplay(f"Entered and left ten times: {after[0]} parameter-node observers")

    def test_compute_environment(self) -> None:
        environment = BMDGANTrainingLogic().compute_environment()
        self.assertGreaterEqual(environment.cpu_threads, 1)
        self.assertIn(environment.default_device, ("cpu", "cuda"))
        self.delayDisplay(environment.describe())

    def waitFor(self, running, timeout_s: float = 600.0) -> None:
        import time

        deadline = time.time() + timeout_s
        while running() and time.time() < deadline:
            slicer.app.processEvents()
            time.sleep(0.2)
        self.assertFalse(running(), "the process did not finish in time")

    def test_train_sample_and_evaluate(self) -> None:
        import tempfile
        from pathlib import Path

        import numpy as np

        from bmdgan.datasets.synthetic import make_pairs_dataset
        from bmdgan.evaluation.evaluation_folder import read_metrics, read_predictions

        logic = BMDGANTrainingLogic()
        folder = Path(tempfile.mkdtemp(prefix="BMDGANTraining-selftest-"))
        dataset = make_pairs_dataset(folder / "dataset")
        self.delayDisplay("Training a smoke run (stages 1 and 2) in a separate process")
        logic.start(TrainingRequest(str(dataset), str(folder / "run"), "smoke", 0, "both", "cpu"))
        self.waitFor(logic.is_running)
        self.assertEqual(logic.process.returncode, 0, logic.log_path.read_text()[-2000:])
        sample, sample_node = logic.load_latest_sample(slicer.mrmlScene, folder / "run")
        self.assertEqual(sample.stage, "stage2")
        slicer.util.setSliceViewerLayers(background=sample_node, fit=True)

        self.delayDisplay("Evaluating fold 0 in a separate process")
        job = logic.start_evaluation(EvaluationRequest(str(folder / "run"), str(dataset), 0, robustness=False))
        self.waitFor(job.running)
        result = logic.finish_evaluation(job, slicer.mrmlScene, load_pictures=True)
        report = read_metrics(result.folder)
        table = result.table_node.GetTable()
        for row in range(table.GetNumberOfRows()):
            method, target, pose = (
                table.GetValueByName(row, column).ToString() for column in ("method", "target", "pose")
            )
            metrics = report["methods"][method][target]
            expected = metrics["all"] if pose == "all" else metrics["per_pose"][pose]
            self.assertEqual(table.GetValueByName(row, "pcc").ToDouble(), expected["pcc"])
            self.assertEqual(table.GetValueByName(row, "mae").ToDouble(), expected["mae"])
        truth = [float(r["ct_abmd_g_cm2_truth"]) for r in read_predictions(result.folder)]
        chart = result.correlation_charts[("decomposition", "ct_abmd_g_cm2")]
        points = chart.GetNthPlotSeriesNode(0).GetTableNode().GetTable().GetColumnByName("truth")
        np.testing.assert_array_equal([points.GetValue(i) for i in range(points.GetNumberOfValues())], truth)
        self.assertEqual(len(result.picture_nodes), len(list(result.folder.glob("*.png"))))
        slicer.modules.plots.logic().ShowChartInLayout(result.bland_altman_charts[("decomposition", "ct_abmd_g_cm2")])
        self.delayDisplay("Evaluation loaded: " + result.table_node.GetName())
