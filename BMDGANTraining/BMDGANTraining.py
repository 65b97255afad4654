"""BMDGANTraining: train and evaluate the BMD-GAN networks in a separate process.

Thin widget over :class:`BMDGANTrainingLib.training_logic.TrainingLogic` (no Qt, runs headless).
"""

from __future__ import annotations

import slicer
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin


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
    """Saved with the scene: the device the next run uses."""

    device: str = "auto"


class BMDGANTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None, logic=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self._parameterNode = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BMDGANTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or BMDGANTrainingLogic()
        self.ui.checkEnvironmentButton.connect("clicked(bool)", self.onCheckEnvironment)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self._parameterNode = BMDGANTrainingParameterNode(self.logic.getParameterNode())
        self._parameterNode.connectGui(self.ui)

    def onCheckEnvironment(self) -> None:
        from BMDGANLib.slicer_setup import ensure_requirements

        if not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay("Could not inspect PyTorch.", waitCursor=True):
            self.ui.environmentLabel.text = self.logic.engine.compute_environment().describe()


class BMDGANTrainingLogic(ScriptedLoadableModuleLogic):
    """Slicer-side Logic: the parameter node, plus the Qt-free training logic in ``self.engine``."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from BMDGANTrainingLib.training_logic import TrainingLogic

        self.engine = TrainingLogic()

    def getParameterNode(self):
        return BMDGANTrainingParameterNode(super().getParameterNode()).parameterNode


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
