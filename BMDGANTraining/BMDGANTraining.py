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
        self.timer = qt.QTimer()
        self.timer.setInterval(2000)
        self.timer.connect("timeout()", self.onTimer)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.timer.stop()
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
        if not engine.is_running():
            self.timer.stop()

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
        from BMDGANTrainingLib.training_logic import TrainingLogic

        EngineLogic.__init__(self, TrainingLogic())


class BMDGANTrainingTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer (Reload and Test, or ``ctest -R py_BMDGANTraining``)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_compute_environment()

    def test_compute_environment(self) -> None:
        environment = BMDGANTrainingLogic().engine.compute_environment()
        self.assertGreaterEqual(environment.cpu_threads, 1)
        self.assertIn(environment.default_device, ("cpu", "cuda"))
        self.delayDisplay(environment.describe())
