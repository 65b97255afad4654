"""BMDGANRegistration: curate paired datasets (CT calibration, bone labels, landmarks, DRRs, 2D-3D registration).

Thin widget over :class:`BMDGANRegistrationLib.curation_logic.CurationLogic` (no Qt, runs headless).
"""

from __future__ import annotations

import qt
import slicer
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from BMDGANLib.widget_base import EngineLogic, ParameterNodeWidget


class BMDGANRegistration(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BMD-GAN Registration"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerBMDGAN contributors"]
        self.parent.helpText = (
            "Dataset curation for BMD-GAN: load a CT in HU, calibrate it to bone density (mg/cm3), label the "
            "pelvis, femur and proximal-femur region, project DRRs and register the CT to the patient's "
            "radiograph, then add the verified case to a training dataset.")
        from BMDGAN import CITATION

        self.parent.acknowledgementText = "Method: " + CITATION


@parameterNodeWrapper
class BMDGANRegistrationParameterNode:
    """Saved with the scene: the CT of the case being curated."""

    ct: slicer.vtkMRMLScalarVolumeNode


class BMDGANRegistrationWidget(ParameterNodeWidget):
    parameterNodeClass = BMDGANRegistrationParameterNode

    def createLogic(self):
        return BMDGANRegistrationLogic()

    def setup(self) -> None:
        ParameterNodeWidget.setup(self)
        self.ui.loadCTButton.connect("clicked(bool)", self.onLoadCT)
        self.initializeParameterNode()

    def onLoadCT(self) -> None:
        from BMDGANLib.slicer_setup import ensure_requirements

        path = qt.QFileDialog.getOpenFileName(self.parent, "CT volume", "",
                                              "CT volumes (*.nii *.nii.gz *.nrrd *.mha *.mhd);;All files (*)")
        if not path or not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay("Could not read the CT.", waitCursor=True):
            node, volume = self.logic.engine.load_ct(path, slicer.mrmlScene)
            slicer.util.setSliceViewerLayers(background=node, fit=True)
            self._parameterNode.ct = node
            spacing = " x ".join(f"{s:.3f}" for s in volume.geometry.spacing_mm)
            self.ui.ctInfoLabel.text = f"{' x '.join(map(str, volume.shape_ijk))} voxels, {spacing} mm, HU"


class BMDGANRegistrationLogic(EngineLogic):
    parameterNodeClass = BMDGANRegistrationParameterNode

    def __init__(self) -> None:
        from BMDGANRegistrationLib.curation_logic import CurationLogic

        EngineLogic.__init__(self, CurationLogic())


class BMDGANRegistrationTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer (Reload and Test, or ``ctest -R py_BMDGANRegistration``)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_load_sample_ct()

    def test_load_sample_ct(self) -> None:
        from bmdgan.sample_data import SAMPLE_CT, sample_data_dir

        logic = BMDGANRegistrationLogic()
        node, volume = logic.engine.load_ct(sample_data_dir() / SAMPLE_CT, slicer.mrmlScene)
        self.assertEqual(slicer.util.arrayFromVolume(node).shape, (53, 155, 159))
        self.assertAlmostEqual(node.GetSpacing()[2], 3.27, places=3)
        self.assertEqual(node.GetAttribute("BMDGAN.Unit"), "HU")
        self.delayDisplay("Sample CT loaded in HU with its geometry")
