"""BMDGAN: bone mineral density of the proximal femur from a plain hip radiograph (one click).

Thin widget over :class:`BMDGANLib.estimation_logic.EstimationLogic`, which holds all behaviour and
runs without Qt.
"""

from __future__ import annotations

import qt
import slicer
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from BMDGANLib.widget_base import EngineLogic, ParameterNodeWidget

CITATION = ("Gu Y, Otake Y, Uemura K, et al. BMD-GAN: Bone mineral density estimation using X-ray image "
            "decomposition into projections of bone-segmented quantitative computed tomography using "
            "hierarchical learning. Medical Image Analysis, 2023.")


class BMDGAN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BMD-GAN"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerBMDGAN contributors"]
        self.parent.helpText = (
            "Estimates the bone mineral density of the proximal femur from a plain hip radiograph: the "
            "radiograph is decomposed into the projected density of the proximal-femur region (PF-DRR), "
            "from which DXA-like areal BMD (g/cm2), QCT volumetric BMD (mg/cm3), T-score and WHO category "
            "are derived. Research software, not for clinical use.")
        self.parent.acknowledgementText = "Method: " + CITATION


@parameterNodeWrapper
class BMDGANParameterNode:
    """Saved with the scene: the radiograph, the model folder ("" = default model), the hip and the device."""

    radiograph: slicer.vtkMRMLScalarVolumeNode
    modelFolder: str = ""
    side: str = "auto"
    device: str = "cpu"


class BMDGANWidget(ParameterNodeWidget):
    parameterNodeClass = BMDGANParameterNode

    def createLogic(self):
        return BMDGANLogic()

    def setup(self) -> None:
        ParameterNodeWidget.setup(self)
        self.ui.loadRadiographButton.connect("clicked(bool)", self.onLoadRadiograph)
        self.ui.radiographSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onRadiographChanged)
        self.ui.estimateButton.connect("clicked(bool)", self.onEstimate)
        self.initializeParameterNode()

    def onLoadRadiograph(self) -> None:
        from BMDGANLib.slicer_setup import ensure_requirements

        path = qt.QFileDialog.getOpenFileName(self.parent, "Radiograph", "",
                                              "Radiographs (*.dcm *.png *.jpg *.jpeg *.tif *.tiff);;All files (*)")
        if not path or not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay("Could not read the radiograph.", waitCursor=True):
            node, radiograph = self.logic.engine.load_radiograph(path, slicer.mrmlScene)
            slicer.util.setSliceViewerLayers(background=node, fit=True)
            self._parameterNode.radiograph = node
            self.ui.radiographInfoLabel.text = self.logic.engine.summary(radiograph)

    def onRadiographChanged(self, node) -> None:
        if node is None:
            self.ui.radiographInfoLabel.text = ""
            return
        with slicer.util.tryWithErrorDisplay("Not a radiograph.", waitCursor=True):
            self.ui.radiographInfoLabel.text = self.logic.engine.summary(self.logic.engine.radiograph_from_node(node))


    def onEstimate(self) -> None:
        from BMDGANLib.slicer_setup import ensure_requirements

        parameters = self._parameterNode
        if parameters.radiograph is None or not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay("BMD estimation failed.", waitCursor=True):
            result = self.logic.engine.estimate(parameters.radiograph, slicer.mrmlScene, parameters.modelFolder or None,
                                                parameters.side, parameters.device)
            slicer.util.setSliceViewerLayers(background=parameters.radiograph, foreground=result.pf_drr_nodes[0],
                                             foregroundOpacity=0.5, fit=True)
            self.ui.resultsLabel.text = self.logic.engine.describe(result)


class BMDGANLogic(EngineLogic):
    parameterNodeClass = BMDGANParameterNode

    def __init__(self) -> None:
        from BMDGANLib.estimation_logic import EstimationLogic

        EngineLogic.__init__(self, EstimationLogic())


class BMDGANTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: ``Slicer --python-code "slicer.util.selectModule('BMDGAN')"`` then
    Reload and Test, or Slicer's test runner (``ctest -R py_BMDGAN``)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_load_sample_radiograph()

    def test_load_sample_radiograph(self) -> None:
        from bmdgan.sample_data import SAMPLE_RADIOGRAPH, sample_data_dir

        sample = sample_data_dir() / SAMPLE_RADIOGRAPH
        logic = BMDGANLogic()
        node, radiograph = logic.engine.load_radiograph(sample, slicer.mrmlScene)
        self.assertEqual(slicer.util.arrayFromVolume(node).shape, (1, 331, 331))
        self.assertEqual(node.GetSpacing()[:2], (1.0, 1.0))
        self.assertEqual(radiograph.modality, "DX")
        self.delayDisplay("Sample radiograph loaded with its spacing")
