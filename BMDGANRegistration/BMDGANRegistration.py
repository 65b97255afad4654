"""BMDGANRegistration: curate paired datasets (CT calibration, bone labels, landmarks, DRRs, 2D-3D registration).

Thin widget over :class:`BMDGANRegistrationLib.curation_logic.CurationLogic` and
:mod:`BMDGANRegistrationLib.registration_logic` (no Qt, run headless). Registration runs in a separate
``bmdgan register`` process that a timer follows, so the GUI stays responsive; the registered pose is a linear
transform node, and each change of it (Transforms module or the nudge buttons) redraws the overlay.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from typing import Annotated

import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from BMDGAN import CITATION
from BMDGANLib.slicer_setup import ensure_requirements
from BMDGANLib.widget_base import ModuleLogic, ParameterNodeWidget
from BMDGANLib.widget_lifecycle import enter_and_exit
from BMDGANRegistrationLib import registration_logic as registration
from BMDGANRegistrationLib.curation_logic import CurationLogic
from BMDGANRegistrationLib.registration_logic import RegistrationLogic


class BMDGANRegistration(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("BMD-GAN Registration")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        # BMDGAN: the shared engine and Logic; Plots: the calibration chart; the rest: bones, landmarks, pose.
        self.parent.dependencies = ["BMDGAN", "Markups", "Plots", "Segmentations", "Transforms"]
        self.parent.contributors = ["SlicerBMDGAN contributors"]
        self.parent.helpText = _(
            "Dataset curation for BMD-GAN: load a CT in HU, calibrate it to bone density (mg/cm3), label the "
            "pelvis, femur and proximal-femur region, project DRRs and register the CT to the patient's "
            "radiograph, then add the verified case to a training dataset."
        )
        self.parent.acknowledgementText = _("Method: {citation}").format(citation=CITATION)


@parameterNodeWrapper
class BMDGANRegistrationParameterNode:
    """Saved with the scene: the CT of the case being curated, the hip to curate ('auto', 'left', 'right': as
    ``--side``), its bones and landmarks; the radiograph, its
    source-to-detector distance (mm, used when the radiograph carries no detector geometry), the optional landmark
    pairs that start the registration, the registered pose, its overlay and opacity (0-1), and the nudge steps
    (mm, degrees); the dataset folder cases are added to, with the case's patient, pose name and whether the
    radiograph shows one hip (the pseudonym key is never saved)."""

    ct: slicer.vtkMRMLScalarVolumeNode
    hipSide: Annotated[str, Choice(["auto", "left", "right"])] = "auto"
    bones: slicer.vtkMRMLSegmentationNode
    landmarks: slicer.vtkMRMLMarkupsFiducialNode
    radiograph: slicer.vtkMRMLScalarVolumeNode
    sourceToDetectorMm: Annotated[float, WithinRange(300.0, 3000.0)] = 1000.0
    radiographPoints: slicer.vtkMRMLMarkupsFiducialNode
    ctPoints: slicer.vtkMRMLMarkupsFiducialNode
    pose: slicer.vtkMRMLLinearTransformNode
    overlay: slicer.vtkMRMLScalarVolumeNode
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.7
    nudgeStepMm: Annotated[float, WithinRange(0.1, 50.0)] = 1.0
    nudgeStepDeg: Annotated[float, WithinRange(0.1, 45.0)] = 1.0
    datasetFolder: str = ""
    patient: str = ""
    casePose: str = ""


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
        nudges = (
            (self.ui.nudgeLeftButton, (-1, 0, 0), 0),
            (self.ui.nudgeRightButton, (1, 0, 0), 0),
            (self.ui.nudgeUpButton, (0, -1, 0), 0),
            (self.ui.nudgeDownButton, (0, 1, 0), 0),
            (self.ui.rotateCounterClockwiseButton, (0, 0, 0), -1),
            (self.ui.rotateClockwiseButton, (0, 0, 0), 1),
        )
        for button, direction, turn in nudges:  # direction: camera axes (x image right, y image down); turn: clockwise
            button.connect("clicked(bool)", lambda _=False, d=direction, t=turn: self.onNudge(d, t))
        self.ui.acceptCaseButton.connect("clicked(bool)", lambda: self.onAddCase(accepted=True))
        self.ui.rejectCaseButton.connect("clicked(bool)", lambda: self.onAddCase(accepted=False))
        self._calibration = None
        self._side = None
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
            self.logic.cancel_registration(self._job)
        ParameterNodeWidget.cleanup(self)

    def onLoadCT(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            self.parent,
            _("CT volume"),
            "",
            _("CT volumes") + " (*.nii *.nii.gz *.nrrd *.mha *.mhd);;" + _("All files") + " (*)",
        )
        if not path or not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not read the CT."), waitCursor=True):
            node, volume = self.logic.load_ct(path, slicer.mrmlScene)
            slicer.util.setSliceViewerLayers(background=node, fit=True)
            self._parameterNode.ct = node
            spacing = " x ".join(f"{s:.3f}" for s in volume.geometry.spacing_mm)
            self.ui.ctInfoLabel.text = f"{' x '.join(map(str, volume.shape_ijk))} voxels, {spacing} mm, HU"

    def onAnalyse(self) -> None:
        parameters = self._parameterNode
        if parameters.ct is None or not ensure_requirements(slicer):
            return
        dialog = slicer.util.createProgressDialog(labelText=_("Analysing the CT..."), maximum=5)

        def step(name: str) -> None:
            dialog.labelText = _("Analysing the CT: {step}").format(step=name)
            dialog.value += 1
            slicer.app.processEvents()

        with slicer.util.tryWithErrorDisplay(_("CT analysis failed."), waitCursor=True):
            result = self.logic.analyse_ct(
                parameters.ct,
                slicer.mrmlScene,
                parameters.bones,
                parameters.landmarks,
                side=parameters.hipSide,
                progress=step,
            )
            parameters.bones, parameters.landmarks = result.segmentation_node, result.landmarks_node
            self._calibration, self._side = result.calibration, result.measurement["side"]
            m = result.measurement
            self.ui.analysisLabel.text = (
                f"{m['side']} hip: vBMD {m['qct_vbmd_mg_cm3']:.0f} mg/cm3, CT-aBMD "
                f"{m['ct_abmd_g_cm2']:.3f} g/cm2, PF volume {m['pf_volume_cm3']:.1f} cm3\n"
                f"calibration: {result.calibration['method']} (R2 "
                f"{result.calibration['r2']:.4f})" + "".join(f"\nnote: {n}" for n in m["notes"])
            )
            slicer.modules.plots.logic().ShowChartInLayout(result.calibration_plot_node)
        dialog.close()

    def onProjectDRRs(self) -> None:
        parameters = self._parameterNode
        if parameters.ct is None or parameters.bones is None or self._calibration is None:
            slicer.util.errorDisplay(_("Analyse the CT first."))
            return
        with slicer.util.tryWithErrorDisplay(_("DRR projection failed."), waitCursor=True):
            nodes, _geometry = self.logic.project_drrs(
                parameters.ct, parameters.bones, slicer.mrmlScene, self._calibration
            )
            slicer.util.setSliceViewerLayers(background=nodes[0], fit=True)

    # --- registration --------------------------------------------------------------------------------------------

    def onRegister(self) -> None:
        parameters = self._parameterNode
        if parameters.radiograph is None or parameters.ct is None:
            slicer.util.errorDisplay(_("Select the radiograph and the CT first."))
            return
        if self._job is not None or not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the registration."), waitCursor=True):
            ct = self.logic.ct_from_node(parameters.ct)
            geometry = registration.radiograph_geometry(parameters.radiograph, ct, parameters.sourceToDetectorMm)
            landmarks = None
            if parameters.radiographPoints is not None and parameters.ctPoints is not None:
                landmarks = registration.landmarks_from_markups(
                    parameters.radiograph, parameters.radiographPoints, parameters.ctPoints
                )
            folder = tempfile.mkdtemp(prefix="bmdgan-registration-")
            self._job = self.logic.start_registration(
                parameters.radiograph, parameters.ct, slicer.mrmlScene, folder, geometry, parameters.bones, landmarks
            )
            self.ui.registrationStatusLabel.text = _("registering (work folder {folder})").format(folder=folder)
            self._setRegistering(True)
            self._jobTimer.start()

    def _setRegistering(self, running: bool) -> None:
        self.ui.registerButton.enabled = not running
        self.ui.cancelRegistrationButton.enabled = running

    def onCancelRegistration(self) -> None:
        if self._job is not None and self._job.running():
            self.logic.cancel_registration(self._job)
            self._job = None
            self._jobTimer.stop()
            self._setRegistering(False)
            self.ui.registrationStatusLabel.text = _("registration cancelled")

    def onJobTimer(self) -> None:
        job = self._job
        self.ui.registrationStatusLabel.text = job.status()
        if job.running():
            return
        self._jobTimer.stop()
        self._setRegistering(False)
        self._job = None
        with slicer.util.tryWithErrorDisplay(_("Registration failed."), waitCursor=True):
            record, transform = self.logic.finish_registration(job, slicer.mrmlScene, self._parameterNode.pose)
            quality = record["quality"]
            self.ui.registrationStatusLabel.text = (
                f"{quality['flag'].upper()}: {record['similarity']['name']} "
                f"{record['similarity']['final']:.3f}, {record['seconds']:.0f} s; " + "; ".join(quality["messages"])
            )
            self._parameterNode.pose = transform  # a new or modified pose redraws the overlay (onPoseChanged)

    def onPoseChanged(self, node) -> None:
        """Redraw the overlay whenever the selected pose transform is edited (Transforms module or nudges)."""
        if self._observedPose is not None:
            self.removeObserver(
                self._observedPose, slicer.vtkMRMLTransformNode.TransformModifiedEvent, self.onPoseModified
            )
        self._observedPose = node
        if node is not None:
            self.addObserver(node, slicer.vtkMRMLTransformNode.TransformModifiedEvent, self.onPoseModified)
            self._overlayTimer.start()

    def onPoseModified(self, caller=None, event=None) -> None:
        self._overlayTimer.start()

    def updateOverlay(self) -> None:
        parameters = self._parameterNode
        if parameters is None or None in (parameters.pose, parameters.radiograph, parameters.ct):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not draw the overlay."), waitCursor=True):
            parameters.overlay = registration.update_overlay(
                parameters.radiograph,
                parameters.ct,
                parameters.pose,
                slicer.mrmlScene,
                parameters.bones,
                parameters.overlay,
            )
            registration.show_overlay(
                slicer.mrmlScene, parameters.radiograph, parameters.overlay, parameters.overlayOpacity
            )

    def onOpacityChanged(self, opacity: float) -> None:
        parameters = self._parameterNode
        if parameters is not None and parameters.overlay is not None and parameters.radiograph is not None:
            registration.show_overlay(slicer.mrmlScene, parameters.radiograph, parameters.overlay, opacity)

    def onNudge(self, direction: tuple, turn: int) -> None:
        """Move the pose one step: along the image axes (mm) or about the beam through the CT's centre (degrees)."""
        parameters = self._parameterNode
        if parameters.pose is None or parameters.ct is None:
            slicer.util.errorDisplay(_("Register first (or select a registration transform and the CT)."))
            return
        with slicer.util.tryWithErrorDisplay(_("Could not nudge the pose.")):
            registration.nudge(
                parameters.pose,
                registration.ct_centre_lps(parameters.ct),
                [parameters.nudgeStepMm * d for d in direction],
                parameters.nudgeStepDeg * turn,
            )

    # --- dataset -------------------------------------------------------------------------------------------------

    def onAddCase(self, accepted: bool) -> None:
        """Write the registered case into the dataset folder (accepted: rebuilt into its pairs; rejected: listed
        only) and show the folder's cases."""
        parameters = self._parameterNode
        needed = (parameters.radiograph, parameters.ct, parameters.bones, parameters.landmarks, parameters.pose)
        if None in needed or self._calibration is None:
            slicer.util.errorDisplay(_("Analyse the CT and register it to the radiograph first."))
            return
        key = self.ui.pseudonymKeyLineEdit.text
        if not parameters.datasetFolder or not parameters.patient or not key:
            slicer.util.errorDisplay(_("Choose the dataset folder and give the patient ID and the pseudonym key."))
            return
        with slicer.util.tryWithErrorDisplay(_("Could not add the case."), waitCursor=True):
            self.logic.add_case(
                parameters.datasetFolder,
                parameters.radiograph,
                parameters.ct,
                parameters.bones,
                parameters.landmarks,
                self._calibration,
                registration.pose_geometry(parameters.pose),
                slicer.mrmlScene,
                self._side,
                parameters.patient,
                key,
                pose=parameters.casePose,
                accepted=accepted,
            )
            cases = self.logic.case_list(parameters.datasetFolder)
            counts = Counter(case["status"].split(":")[0] for case in cases)  # built, skipped, rejected
            self.ui.casesLabel.text = _("{count} cases: {statuses}").format(
                count=len(cases), statuses=", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            )


class BMDGANRegistrationLogic(ModuleLogic, CurationLogic):
    """The module's parameter node, :class:`~BMDGANRegistrationLib.curation_logic.CurationLogic` (CT, analysis,
    DRRs, dataset cases) and the registration process's start, cancel and finish: the widget's whole interface."""

    parameterNodeClass = BMDGANRegistrationParameterNode

    def __init__(self) -> None:
        ModuleLogic.__init__(self)
        CurationLogic.__init__(self)
        self._registration = RegistrationLogic()

    def start_registration(
        self, radiograph_node, ct_node, scene, folder, geometry, segmentation_node=None, landmarks=None
    ) -> registration.RegistrationJob:
        """Start ``bmdgan register`` in a separate process (see RegistrationLogic.start)."""
        return self._registration.start(radiograph_node, ct_node, scene, folder, geometry, segmentation_node, landmarks)

    def cancel_registration(self, job: registration.RegistrationJob) -> int:
        return self._registration.cancel(job)

    def finish_registration(self, job: registration.RegistrationJob, scene, transform_node=None):
        """(record, transform node) of a finished registration (see RegistrationLogic.finish)."""
        return self._registration.finish(job, scene, transform_node)


class BMDGANRegistrationTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer (Reload and Test, or ``ctest -R py_BMDGANRegistration``)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_enter_and_exit_keeps_observers()
        self.setUp()
        self.test_load_sample_ct()
        self.test_analyse_sample_ct()
        self.setUp()
        self.test_register_nudge_and_overlay()

    def test_enter_and_exit_keeps_observers(self) -> None:
        """Opening and leaving the module ten times leaves as many observers as before (each visit added one)."""
        before, after = enter_and_exit(slicer.util.getModuleWidget("BMDGANRegistration"), times=10)
        self.assertEqual(before, after)
        self.delayDisplay(f"Entered and left ten times: {after[0]} parameter-node observers")

    def test_load_sample_ct(self) -> None:
        from bmdgan.sample_data import SAMPLE_CT, sample_data_dir

        logic = BMDGANRegistrationLogic()
        node, volume = logic.load_ct(sample_data_dir() / SAMPLE_CT, slicer.mrmlScene)
        self.assertEqual(slicer.util.arrayFromVolume(node).shape, (53, 155, 159))
        self.assertAlmostEqual(node.GetSpacing()[2], 3.27, places=3)
        self.assertEqual(node.GetAttribute("BMDGAN.Unit"), "HU")
        self.delayDisplay("Sample CT loaded in HU with its geometry")

    def test_analyse_sample_ct(self) -> None:
        from bmdgan.sample_data import SAMPLE_CT, sample_data_dir

        logic = BMDGANRegistrationLogic()
        node, _volume = logic.load_ct(sample_data_dir() / SAMPLE_CT, slicer.mrmlScene)
        result = logic.analyse_ct(node, slicer.mrmlScene)
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

        logic = BMDGANRegistrationLogic()
        ct_node, ct = logic.load_ct(sample_data_dir() / SAMPLE_CT, slicer.mrmlScene)
        truth = default_ap_geometry(ct, pixel_spacing_mm=1.0)
        folder = Path(tempfile.mkdtemp())
        dicom = write_dx_dicom(folder / "xray.dcm", simulate_radiograph(ct, truth, rng=1), patient_id="test")
        radiograph_node, _radiograph = EstimationLogic().load_radiograph(dicom, slicer.mrmlScene)
        offset = np.eye(4)
        offset[:3, 3] = [8.0, -5.0, 0.0]  # mm, in the image plane
        job = logic.start_registration(
            radiograph_node, ct_node, slicer.mrmlScene, folder / "job", truth.with_pose(offset @ truth.camera_from_lps)
        )
        while job.running():
            slicer.app.processEvents()  # the GUI is free while the process registers
            self.delayDisplay(job.status(), 500)
        record, transform = logic.finish_registration(job, slicer.mrmlScene)
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
