"""BMDGAN: bone mineral density of the proximal femur from a plain hip radiograph (one click).

Thin widget over :class:`BMDGANLib.estimation_logic.EstimationLogic`, which holds all behaviour and
runs without Qt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from bmdgan.errors import InputError
from BMDGANLib.estimation_logic import EstimationLogic, study_files, study_radiographs
from BMDGANLib.slicer_setup import ensure_requirements
from BMDGANLib.widget_base import ModuleLogic, ParameterNodeWidget
from BMDGANLib.widget_lifecycle import enter_and_exit

CITATION = (
    "Gu Y, Otake Y, Uemura K, et al. BMD-GAN: Bone mineral density estimation using X-ray image "
    "decomposition into projections of bone-segmented quantitative computed tomography using "
    "hierarchical learning. Medical Image Analysis, 2023."
)


class BMDGAN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("BMD-GAN")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        # Batch results go to a table in the subject hierarchy's study; PF regions are segmentations.
        self.parent.dependencies = ["Segmentations", "SubjectHierarchy", "Tables"]
        self.parent.contributors = ["SlicerBMDGAN contributors"]
        self.parent.helpText = _(
            "Estimates the bone mineral density of the proximal femur from a plain hip radiograph: the "
            "radiograph is decomposed into the projected density of the proximal-femur region (PF-DRR), "
            "from which DXA-like areal BMD (g/cm2), QCT volumetric BMD (mg/cm3), T-score and WHO category "
            "are derived. Research software, not for clinical use."
        )
        self.parent.acknowledgementText = _("Method: {citation}").format(citation=CITATION)


@parameterNodeWrapper
class BMDGANParameterNode:
    """Saved with the scene: the radiograph, the model folder ("" = default model), the hip, the device and the
    folder of the last batch."""

    radiograph: slicer.vtkMRMLScalarVolumeNode
    modelFolder: str = ""
    side: Annotated[str, Choice(["auto", "left", "right"])] = "auto"
    device: Annotated[str, Choice(["cpu", "cuda"])] = "cpu"
    batchFolder: str = ""


class BMDGANWidget(ParameterNodeWidget):
    parameterNodeClass = BMDGANParameterNode

    def createLogic(self):
        return BMDGANLogic()

    def setup(self) -> None:
        ParameterNodeWidget.setup(self)
        self.ui.loadRadiographButton.connect("clicked(bool)", self.onLoadRadiograph)
        self.ui.radiographSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onRadiographChanged)
        self.ui.estimateButton.connect("clicked(bool)", self.onEstimate)
        self.ui.estimateFromPointsButton.connect("clicked(bool)", self.onEstimateFromPoints)
        self.ui.exportReportButton.connect("clicked(bool)", self.onExportReport)
        self.ui.exportJsonButton.connect("clicked(bool)", self.onExportJson)
        self.ui.estimateStudyButton.connect("clicked(bool)", self.onEstimateStudy)
        self.ui.estimateFolderButton.connect("clicked(bool)", self.onEstimateFolder)
        self._result = None
        self.initializeParameterNode()

    def onLoadRadiograph(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            self.parent,
            _("Radiograph"),
            "",
            _("Radiographs") + " (*.dcm *.png *.jpg *.jpeg *.tif *.tiff);;" + _("All files") + " (*)",
        )
        if not path or not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not read the radiograph."), waitCursor=True):
            node, radiograph = self.logic.load_radiograph(path, slicer.mrmlScene)
            slicer.util.setSliceViewerLayers(background=node, fit=True)
            self._parameterNode.radiograph = node
            self.ui.radiographInfoLabel.text = self.logic.summary(radiograph)

    def onRadiographChanged(self, node) -> None:
        if node is None:
            self.ui.radiographInfoLabel.text = ""
            return
        with slicer.util.tryWithErrorDisplay(_("Not a radiograph."), waitCursor=True):
            self.ui.radiographInfoLabel.text = self.logic.summary(self.logic.radiograph_from_node(node))

    def onEstimate(self) -> None:
        self._estimate(landmark_nodes=None)

    def onEstimateFromPoints(self) -> None:
        if self._result is not None:
            self._estimate(landmark_nodes=self._result.landmark_nodes)

    def _estimate(self, landmark_nodes) -> None:
        parameters = self._parameterNode
        if parameters.radiograph is None or not ensure_requirements(slicer):
            return
        with slicer.util.tryWithErrorDisplay(_("BMD estimation failed."), waitCursor=True):
            result = self.logic.estimate(
                parameters.radiograph,
                slicer.mrmlScene,
                parameters.modelFolder or None,
                parameters.side,
                parameters.device,
                landmark_nodes=landmark_nodes,
            )
            slicer.util.setSliceViewerLayers(
                background=parameters.radiograph, foreground=result.pf_drr_nodes[0], foregroundOpacity=0.5, fit=True
            )
            self.ui.resultsLabel.text = self.logic.describe(result)
            self._result = result
            self.ui.exportReportButton.enabled = self.ui.exportJsonButton.enabled = True
            self.ui.estimateFromPointsButton.enabled = True

    def _exportPath(self, title: str, suffix: str, pattern: str) -> str:
        name = self._parameterNode.radiograph.GetName() if self._parameterNode.radiograph else "bmdgan"
        return qt.QFileDialog.getSaveFileName(self.parent, title, f"{name}_{suffix}", pattern)

    def onExportReport(self) -> None:
        path = self._exportPath(_("Report picture"), "report.png", _("PNG pictures") + " (*.png)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Could not write the report picture."), waitCursor=True):
                self.logic.export_report(self._result, path)

    def onExportJson(self) -> None:
        path = self._exportPath(_("Result JSON"), "result.json", _("JSON files") + " (*.json)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Could not write the result JSON."), waitCursor=True):
                self.logic.export_json(self._result, path)

    def onEstimateStudy(self) -> None:
        self._runBatch(study_radiographs(slicer.mrmlScene, self._parameterNode.radiograph), "study")

    def onEstimateFolder(self) -> None:
        folder = self._parameterNode.batchFolder
        if not folder:
            slicer.util.errorDisplay(_("Choose the folder of the study first."))
            return
        try:
            files = study_files(folder)
        except InputError as error:
            slicer.util.errorDisplay(str(error))
            return
        self._runBatch(files, Path(folder).name)

    def _runBatch(self, sources: list, name: str) -> None:
        """Estimate in the GUI thread, one radiograph at a time (well under a second each on a CPU), processing
        events between them so that the progress dialog updates and its Cancel button stops the batch."""
        if not sources:
            slicer.util.errorDisplay(_("No radiograph found: load the study's radiographs or choose a folder."))
            return
        if not ensure_requirements(slicer):
            return
        parameters = self._parameterNode
        dialog = slicer.util.createProgressDialog(labelText=_("Estimating BMD..."), maximum=len(sources))

        def progress(done: int, total: int, label: str) -> bool:
            dialog.value = done
            dialog.labelText = _("Estimated {label} ({done} of {total})").format(label=label, done=done, total=total)
            slicer.app.processEvents()
            return not dialog.wasCanceled

        with slicer.util.tryWithErrorDisplay(_("Batch estimation failed."), waitCursor=True):
            batch = self.logic.estimate_batch(
                sources,
                slicer.mrmlScene,
                parameters.modelFolder or None,
                parameters.side,
                parameters.device,
                progress=progress,
                name=f"BMD-GAN {name}",
            )
            failed = sum(1 for row in batch.rows if row.error)
            status = _("{rows} rows in table '{table}', {failed} failed").format(
                rows=len(batch.rows), table=batch.table_node.GetName(), failed=failed
            )
            self.ui.batchStatusLabel.text = status + (" " + _("(stopped)") if batch.cancelled else "")
            self._showTable(batch.table_node)
        dialog.close()

    @staticmethod
    def _showTable(table) -> None:
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()


class BMDGANLogic(ModuleLogic, EstimationLogic):
    """The module's parameter node and :class:`~BMDGANLib.estimation_logic.EstimationLogic` (load, estimate,
    batch, export): the widget's whole interface."""

    parameterNodeClass = BMDGANParameterNode

    def __init__(self) -> None:
        ModuleLogic.__init__(self)
        EstimationLogic.__init__(self)


class BMDGANTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: ``Slicer --python-code "slicer.util.selectModule('BMDGAN')"`` then
    Reload and Test, or Slicer's test runner (``ctest -R py_BMDGAN``)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_enter_and_exit_keeps_observers()
        self.setUp()
        self.test_load_sample_radiograph()
        self.setUp()
        self.test_batch_and_exports()

    def test_enter_and_exit_keeps_observers(self) -> None:
        """Opening and leaving the module ten times leaves its parameter node and the widget with as many
        observers as before (each visit used to add one)."""
        before, after = enter_and_exit(slicer.util.getModuleWidget("BMDGAN"), times=10)
        self.assertEqual(before, after)
        self.delayDisplay(
            f"Entered and left ten times: {after[0]} parameter-node observers, {after[1]} widget observations"
        )

    def test_load_sample_radiograph(self) -> None:
        from bmdgan.sample_data import SAMPLE_RADIOGRAPH, sample_data_dir

        sample = sample_data_dir() / SAMPLE_RADIOGRAPH
        logic = BMDGANLogic()
        node, radiograph = logic.load_radiograph(sample, slicer.mrmlScene)
        self.assertEqual(slicer.util.arrayFromVolume(node).shape, (1, 331, 331))
        self.assertEqual(node.GetSpacing()[:2], (1.0, 1.0))
        self.assertEqual(radiograph.modality, "DX")
        self.delayDisplay("Sample radiograph loaded with its spacing")

    def test_batch_and_exports(self) -> None:
        """Both sample radiographs in one batch (rows equal to single estimates), then the exports of one."""
        import json
        import tempfile

        from bmdgan.sample_data import SAMPLE_RADIOGRAPH, SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

        logic = BMDGANLogic()
        nodes = [
            logic.load_radiograph(sample_data_dir() / name, slicer.mrmlScene)[0]
            for name in (SAMPLE_SIMULATED_RADIOGRAPH, SAMPLE_RADIOGRAPH)
        ]
        self.assertEqual(study_radiographs(slicer.mrmlScene), nodes)
        batch = logic.estimate_batch(nodes, slicer.mrmlScene, side="right")
        self.assertEqual(batch.table_node.GetNumberOfRows(), 2)
        single = logic.estimate(nodes[0], slicer.mrmlScene, side="right")
        self.assertEqual(batch.rows[0].hip.dxa_bmd_g_cm2, single.hips[0].dxa_bmd_g_cm2)
        folder = Path(tempfile.mkdtemp())
        report = json.loads(logic.export_json(single, folder / "result.json").read_text())
        self.assertAlmostEqual(report["hips"][0]["qct_bmd_mg_cm3"], single.hips[0].qct_bmd_mg_cm3)
        png = logic.export_report(single, folder / "report.png")
        self.assertEqual(png.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        self.delayDisplay(f"Batch of 2 and exports: aBMD {single.hips[0].dxa_bmd_g_cm2:.3f} g/cm2 -> {folder}")
