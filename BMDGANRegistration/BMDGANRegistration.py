"""BMDGANRegistration: curate paired datasets (CT calibration, bone labels, landmarks, DRRs, 2D-3D registration).

Thin widget over :class:`BMDGANRegistrationLib.curation_logic.CurationLogic` and
:mod:`BMDGANRegistrationLib.registration_logic` (no Qt, run headless). Registration runs in a separate
``bmdgan register`` process that a timer follows, so the GUI stays responsive; the registered pose is a linear
transform node, and each change of it (Transforms module or the nudge buttons) redraws the overlay.
"""

from __future__ import annotations

import shutil
import sys
import tempfile

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
    """Saved with the scene: the CT of the case being curated, its bones and landmarks; the radiograph, its
    source-to-detector distance (mm, used when the radiograph carries no detector geometry), the optional landmark
    pairs that start the registration, the registered pose, its overlay and opacity (0-1), and the nudge steps
    (mm, degrees)."""

    ct: slicer.vtkMRMLScalarVolumeNode
    bones: slicer.vtkMRMLSegmentationNode
    landmarks: slicer.vtkMRMLMarkupsFiducialNode
    radiograph: slicer.vtkMRMLScalarVolumeNode
    sourceToDetectorMm: float = 1000.0
    radiographPoints: slicer.vtkMRMLMarkupsFiducialNode
    ctPoints: slicer.vtkMRMLMarkupsFiducialNode
    pose: slicer.vtkMRMLLinearTransformNode
    overlay: slicer.vtkMRMLScalarVolumeNode
    overlayOpacity: float = 0.7
    nudgeStepMm: float = 1.0
    nudgeStepDeg: float = 1.0


class BMDGANRegistrationWidget(ParameterNodeWidget):
    parameterNodeClass = BMDGANRegistrationParameterNode

    def createLogic(self):
        return BMDGANRegistrationLogic()

    def setup(self) -> None:
        ParameterNodeWidget.setup(self)
        self.ui.loadCTButton.connect("clicked(bool)", self.onLoadCT)
        self.ui.analyseButton.connect("clicked(bool)", self.onAnalyse)
        self.ui.drrButton.connect("clicked(bool)", self.onProjectDRRs)
        self.ui.registerButton.connect("clicked(bool)", self.onRegister)
        self.ui.cancelRegistrationButton.connect("clicked(bool)", self.onCancelRegistration)
        self.ui.poseSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onPoseChanged)
        self.ui.overlayOpacitySlider.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.redrawOverlayButton.connect("clicked(bool)", self.updateOverlay)
        nudges = ((self.ui.nudgeLeftButton, (-1, 0, 0), 0), (self.ui.nudgeRightButton, (1, 0, 0), 0),
                  (self.ui.nudgeUpButton, (0, -1, 0), 0), (self.ui.nudgeDownButton, (0, 1, 0), 0),
                  (self.ui.rotateCounterClockwiseButton, (0, 0, 0), -1), (self.ui.rotateClockwiseButton, (0, 0, 0), 1))
        for button, direction, turn in nudges:  # direction: camera axes (x image right, y image down); turn: clockwise
            button.connect("clicked(bool)", lambda _=False, d=direction, t=turn: self.onNudge(d, t))
        self._calibration = None
        self._job = None
        self._observedPose = None
        self._jobTimer = qt.QTimer()
        self._jobTimer.setInterval(500)
        self._jobTimer.connect("timeout()", self.onJobTimer)
        self._overlayTimer = qt.QTimer()  # coalesces a burst of transform edits into one redraw
        self._overlayTimer.setSingleShot(True)
        self._overlayTimer.setInterval(150)
        self._overlayTimer.connect("timeout()", self.updateOverlay)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._jobTimer.stop()
        self._overlayTimer.stop()
        if self._job is not None:
            self.logic.registration.cancel(self._job)
        ParameterNodeWidget.cleanup(self)

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

    # --- registration --------------------------------------------------------------------------------------------

    def onRegister(self) -> None:
        from BMDGANLib.slicer_setup import ensure_requirements
        from BMDGANRegistrationLib.registration_logic import landmarks_from_markups, radiograph_geometry

        parameters = self._parameterNode
        if parameters.radiograph is None or parameters.ct is None:
            slicer.util.errorDisplay("Select the radiograph and the CT first.")
            return
        if self._job is not None or not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay("Could not start the registration.", waitCursor=True):
            ct = self.logic.engine.ct_from_node(parameters.ct)
            geometry = radiograph_geometry(parameters.radiograph, ct, parameters.sourceToDetectorMm)
            landmarks = None
            if parameters.radiographPoints is not None and parameters.ctPoints is not None:
                landmarks = landmarks_from_markups(parameters.radiograph, parameters.radiographPoints,
                                                   parameters.ctPoints)
            folder = tempfile.mkdtemp(prefix="bmdgan-registration-")
            self._job = self.logic.registration.start(parameters.radiograph, parameters.ct, slicer.mrmlScene, folder,
                                                      geometry, parameters.bones, landmarks,
                                                      python=shutil.which("PythonSlicer") or sys.executable)
            self.ui.registrationStatusLabel.text = f"registering (work folder {folder})"
            self._setRegistering(True)
            self._jobTimer.start()

    def _setRegistering(self, running: bool) -> None:
        self.ui.registerButton.enabled = not running
        self.ui.cancelRegistrationButton.enabled = running

    def onCancelRegistration(self) -> None:
        if self._job is not None and self._job.running():
            self.logic.registration.cancel(self._job)
            self._job = None
            self._jobTimer.stop()
            self._setRegistering(False)
            self.ui.registrationStatusLabel.text = "registration cancelled"

    def onJobTimer(self) -> None:
        job = self._job
        self.ui.registrationStatusLabel.text = job.status()
        if job.running():
            return
        self._jobTimer.stop()
        self._setRegistering(False)
        self._job = None
        with slicer.util.tryWithErrorDisplay("Registration failed.", waitCursor=True):
            record, transform = self.logic.registration.finish(job, slicer.mrmlScene, self._parameterNode.pose)
            quality = record["quality"]
            self.ui.registrationStatusLabel.text = (f"{quality['flag'].upper()}: {record['similarity']['name']} "
                                                    f"{record['similarity']['final']:.3f}, {record['seconds']:.0f} s; "
                                                    + "; ".join(quality["messages"]))
            self._parameterNode.pose = transform  # a new or modified pose redraws the overlay (onPoseChanged)

    def onPoseChanged(self, node) -> None:
        """Redraw the overlay whenever the selected pose transform is edited (Transforms module or nudges)."""
        if self._observedPose is not None:
            self.removeObserver(self._observedPose, slicer.vtkMRMLTransformNode.TransformModifiedEvent,
                                self.onPoseModified)
        self._observedPose = node
        if node is not None:
            self.addObserver(node, slicer.vtkMRMLTransformNode.TransformModifiedEvent, self.onPoseModified)
            self._overlayTimer.start()

    def onPoseModified(self, caller=None, event=None) -> None:
        self._overlayTimer.start()

    def updateOverlay(self) -> None:
        from BMDGANRegistrationLib.registration_logic import show_overlay, update_overlay

        parameters = self._parameterNode
        if parameters is None or None in (parameters.pose, parameters.radiograph, parameters.ct):
            return
        with slicer.util.tryWithErrorDisplay("Could not draw the overlay.", waitCursor=True):
            parameters.overlay = update_overlay(parameters.radiograph, parameters.ct, parameters.pose,
                                                slicer.mrmlScene, parameters.bones, parameters.overlay)
            show_overlay(slicer.mrmlScene, parameters.radiograph, parameters.overlay, parameters.overlayOpacity)

    def onOpacityChanged(self, opacity: float) -> None:
        from BMDGANRegistrationLib.registration_logic import show_overlay

        parameters = self._parameterNode
        if parameters is not None and parameters.overlay is not None and parameters.radiograph is not None:
            show_overlay(slicer.mrmlScene, parameters.radiograph, parameters.overlay, opacity)

    def onNudge(self, direction: tuple, turn: int) -> None:
        """Move the pose one step: along the image axes (mm) or about the beam through the CT's centre (degrees)."""
        from BMDGANRegistrationLib.registration_logic import ct_centre_lps, nudge

        parameters = self._parameterNode
        if parameters.pose is None or parameters.ct is None:
            slicer.util.errorDisplay("Register first (or select a registration transform and the CT).")
            return
        with slicer.util.tryWithErrorDisplay("Could not nudge the pose."):
            nudge(parameters.pose, ct_centre_lps(parameters.ct), [parameters.nudgeStepMm * d for d in direction],
                  parameters.nudgeStepDeg * turn)


class BMDGANRegistrationLogic(EngineLogic):
    parameterNodeClass = BMDGANRegistrationParameterNode

    def __init__(self) -> None:
        from BMDGANRegistrationLib.curation_logic import CurationLogic
        from BMDGANRegistrationLib.registration_logic import RegistrationLogic

        EngineLogic.__init__(self, CurationLogic())
        self.registration = RegistrationLogic()


class BMDGANRegistrationTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer (Reload and Test, or ``ctest -R py_BMDGANRegistration``)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_load_sample_ct()
        self.test_analyse_sample_ct()
        self.setUp()
        self.test_register_nudge_and_overlay()

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

    def test_register_nudge_and_overlay(self) -> None:
        """A radiograph simulated from the sample CT, registered in a separate process from a start 8 mm off while
        the GUI keeps processing events; then a 10 mm nudge moves the overlay's bone outline by 10 mm times the
        magnification, and the overlay is shown at the requested opacity in the slice views."""
        import tempfile
        from pathlib import Path

        import numpy as np

        from bmdgan.projection.dicom_writer import write_dx_dicom
        from bmdgan.projection.geometry import default_ap_geometry
        from bmdgan.projection.simulator import simulate_radiograph
        from bmdgan.sample_data import SAMPLE_CT, sample_data_dir
        from BMDGANLib.estimation_logic import EstimationLogic
        from BMDGANRegistrationLib import registration_logic as registration

        logic = BMDGANRegistrationLogic()
        ct_node, ct = logic.engine.load_ct(sample_data_dir() / SAMPLE_CT, slicer.mrmlScene)
        truth = default_ap_geometry(ct, pixel_spacing_mm=1.0)
        folder = Path(tempfile.mkdtemp())
        dicom = write_dx_dicom(folder / "xray.dcm", simulate_radiograph(ct, truth, rng=1), patient_id="test")
        radiograph_node, _ = EstimationLogic().load_radiograph(dicom, slicer.mrmlScene)
        offset = np.eye(4)
        offset[:3, 3] = [8.0, -5.0, 0.0]  # mm, in the image plane
        job = logic.registration.start(radiograph_node, ct_node, slicer.mrmlScene, folder / "job",
                                       truth.with_pose(offset @ truth.camera_from_lps),
                                       python=shutil.which("PythonSlicer") or sys.executable)
        while job.running():
            slicer.app.processEvents()  # the GUI is free while the process registers
            self.delayDisplay(job.status(), 500)
        record, transform = logic.registration.finish(job, slicer.mrmlScene)
        self.assertEqual(record["quality"]["flag"], "good")
        registered = registration.pose_geometry(transform)
        centre = registration.ct_centre_lps(ct_node)
        self.assertLess(np.abs(registered.project_points(centre) - truth.project_points(centre)).max(), 2.0)  # px
        overlay = registration.update_overlay(radiograph_node, ct_node, transform, slicer.mrmlScene)
        before = np.argwhere(slicer.util.arrayFromVolume(overlay)[0] == registration.OVERLAY_BONE)[:, 1].mean()
        registration.nudge(transform, centre, translation_mm=(10.0, 0.0, 0.0))
        registration.update_overlay(radiograph_node, ct_node, transform, slicer.mrmlScene, overlay_node=overlay)
        after = np.argwhere(slicer.util.arrayFromVolume(overlay)[0] == registration.OVERLAY_BONE)[:, 1].mean()
        self.assertAlmostEqual(after - before, 10.0 * registered.magnification_at(centre), delta=1.0)  # columns
        views = registration.show_overlay(slicer.mrmlScene, radiograph_node, overlay, 0.4)
        composites = slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")
        self.assertEqual(views, len(composites))
        self.assertGreaterEqual(views, 1)
        for composite in composites:
            self.assertEqual(composite.GetForegroundVolumeID(), overlay.GetID())
            self.assertAlmostEqual(composite.GetForegroundOpacity(), 0.4)
        self.delayDisplay(f"Registered ({record['similarity']['final']:.3f} GC), nudged and overlaid")
