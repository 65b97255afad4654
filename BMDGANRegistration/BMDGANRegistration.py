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
    """Saved with the scene: the CT of the case being curated, its bones and landmarks."""

    ct: slicer.vtkMRMLScalarVolumeNode
    bones: slicer.vtkMRMLSegmentationNode
    landmarks: slicer.vtkMRMLMarkupsFiducialNode


class BMDGANRegistrationWidget(ParameterNodeWidget):
    parameterNodeClass = BMDGANRegistrationParameterNode

    def createLogic(self):
        return BMDGANRegistrationLogic()

    def setup(self) -> None:
        ParameterNodeWidget.setup(self)
        self.ui.loadCTButton.connect("clicked(bool)", self.onLoadCT)
        self.ui.analyseButton.connect("clicked(bool)", self.onAnalyse)
        self.ui.drrButton.connect("clicked(bool)", self.onProjectDRRs)
        self._calibration = None
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


    def onAnalyse(self) -> None:
        from BMDGANLib.slicer_setup import ensure_requirements

        parameters = self._parameterNode
        if parameters.ct is None or not ensure_requirements(slicer):
            return
        dialog = slicer.util.createProgressDialog(labelText="Analysing the CT...", maximum=5)

        def step(name: str) -> None:
            dialog.labelText = f"Analysing the CT: {name}"
            dialog.value += 1
            slicer.app.processEvents()

        with slicer.util.tryWithErrorDisplay("CT analysis failed.", waitCursor=True):
            result = self.logic.engine.analyse_ct(parameters.ct, slicer.mrmlScene, parameters.bones,
                                                  parameters.landmarks, progress=step)
            parameters.bones, parameters.landmarks = result.segmentation_node, result.landmarks_node
            self._calibration = result.calibration
            m = result.measurement
            self.ui.analysisLabel.text = (f"{m['side']} hip: vBMD {m['qct_vbmd_mg_cm3']:.0f} mg/cm3, CT-aBMD "
                                          f"{m['ct_abmd_g_cm2']:.3f} g/cm2, PF volume {m['pf_volume_cm3']:.1f} cm3\n"
                                          f"calibration: {result.calibration['method']} (R2 "
                                          f"{result.calibration['r2']:.4f})" + "".join(f"\nnote: {n}" for n in m["notes"]))
            slicer.modules.plots.logic().ShowChartInLayout(result.calibration_plot_node)
        dialog.close()

    def onProjectDRRs(self) -> None:
        parameters = self._parameterNode
        if parameters.ct is None or parameters.bones is None or self._calibration is None:
            slicer.util.errorDisplay("Analyse the CT first.")
            return
        with slicer.util.tryWithErrorDisplay("DRR projection failed.", waitCursor=True):
            nodes, _ = self.logic.engine.project_drrs(parameters.ct, parameters.bones, slicer.mrmlScene,
                                                      self._calibration)
            slicer.util.setSliceViewerLayers(background=nodes[0], fit=True)


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
        self.test_analyse_sample_ct()

    def test_load_sample_ct(self) -> None:
        from bmdgan.sample_data import SAMPLE_CT, sample_data_dir

        logic = BMDGANRegistrationLogic()
        node, volume = logic.engine.load_ct(sample_data_dir() / SAMPLE_CT, slicer.mrmlScene)
        self.assertEqual(slicer.util.arrayFromVolume(node).shape, (53, 155, 159))
        self.assertAlmostEqual(node.GetSpacing()[2], 3.27, places=3)
        self.assertEqual(node.GetAttribute("BMDGAN.Unit"), "HU")
        self.delayDisplay("Sample CT loaded in HU with its geometry")

    def test_analyse_sample_ct(self) -> None:
        from bmdgan.sample_data import SAMPLE_CT, sample_data_dir

        logic = BMDGANRegistrationLogic()
        node, _ = logic.engine.load_ct(sample_data_dir() / SAMPLE_CT, slicer.mrmlScene)
        result = logic.engine.analyse_ct(node, slicer.mrmlScene)
        self.assertGreaterEqual(result.landmarks_node.GetNumberOfControlPoints(), 6)
        self.assertTrue(result.segmentation_node.GetSegmentation().GetSegmentIdBySegmentName("proximal femur region"))
        self.assertGreater(result.measurement["qct_vbmd_mg_cm3"], 100)
        self.delayDisplay(f"CT analysed: CT-aBMD {result.measurement['ct_abmd_g_cm2']:.3f} g/cm2")
