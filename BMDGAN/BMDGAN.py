"""BMDGAN: bone mineral density of the proximal femur from a plain hip radiograph (one click).

Thin widget over :class:`BMDGANLib.estimation_logic.EstimationLogic`, which holds all behaviour and
runs without Qt.
"""

from __future__ import annotations

from pathlib import Path

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
    """Saved with the scene: the radiograph, the model folder ("" = default model), the hip, the device and the
    folder of the last batch."""

    radiograph: slicer.vtkMRMLScalarVolumeNode
    modelFolder: str = ""
    side: str = "auto"
    device: str = "cpu"
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
        self.ui.exportReportButton.connect("clicked(bool)", self.onExportReport)
        self.ui.exportJsonButton.connect("clicked(bool)", self.onExportJson)
        self.ui.estimateStudyButton.connect("clicked(bool)", self.onEstimateStudy)
        self.ui.estimateFolderButton.connect("clicked(bool)", self.onEstimateFolder)
        self._result = None
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
            self._result = result
            self.ui.exportReportButton.enabled = self.ui.exportJsonButton.enabled = True

    def _exportPath(self, title: str, suffix: str, pattern: str) -> str:
        name = self._parameterNode.radiograph.GetName() if self._parameterNode.radiograph else "bmdgan"
        return qt.QFileDialog.getSaveFileName(self.parent, title, f"{name}_{suffix}", pattern)

    def onExportReport(self) -> None:
        path = self._exportPath("Report picture", "report.png", "PNG pictures (*.png)")
        if path:
            with slicer.util.tryWithErrorDisplay("Could not write the report picture.", waitCursor=True):
                self.logic.engine.export_report(self._result, path)

    def onExportJson(self) -> None:
        path = self._exportPath("Result JSON", "result.json", "JSON files (*.json)")
        if path:
            with slicer.util.tryWithErrorDisplay("Could not write the result JSON.", waitCursor=True):
                self.logic.engine.export_json(self._result, path)

    def onEstimateStudy(self) -> None:
        from BMDGANLib.estimation_logic import study_radiographs

        self._runBatch(study_radiographs(slicer.mrmlScene, self._parameterNode.radiograph), "study")

    def onEstimateFolder(self) -> None:
        from bmdgan.errors import InputError
        from BMDGANLib.estimation_logic import study_files

        folder = self._parameterNode.batchFolder
        if not folder:
            slicer.util.errorDisplay("Choose the folder of the study first.")
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
        from BMDGANLib.slicer_setup import ensure_requirements

        if not sources:
            slicer.util.errorDisplay("No radiograph found: load the study's radiographs or choose a folder.")
            return
        if not ensure_requirements(slicer):
            return
        parameters = self._parameterNode
        dialog = slicer.util.createProgressDialog(labelText="Estimating BMD...", maximum=len(sources))

        def progress(done: int, total: int, label: str) -> bool:
            dialog.value = done
            dialog.labelText = f"Estimated {label} ({done} of {total})"
            slicer.app.processEvents()
            return not dialog.wasCanceled

        with slicer.util.tryWithErrorDisplay("Batch estimation failed.", waitCursor=True):
            batch = self.logic.engine.estimate_batch(sources, slicer.mrmlScene, parameters.modelFolder or None,
                                                     parameters.side, parameters.device, progress=progress,
                                                     name=f"BMD-GAN {name}")
            failed = sum(1 for row in batch.rows if row.error)
            self.ui.batchStatusLabel.text = (f"{len(batch.rows)} rows in table '{batch.table_node.GetName()}', "
                                             f"{failed} failed" + (" (stopped)" if batch.cancelled else ""))
            self._showTable(batch.table_node)
        dialog.close()

    @staticmethod
    def _showTable(table) -> None:
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()


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
        self.setUp()
        self.test_batch_and_exports()

    def test_load_sample_radiograph(self) -> None:
        from bmdgan.sample_data import SAMPLE_RADIOGRAPH, sample_data_dir

        sample = sample_data_dir() / SAMPLE_RADIOGRAPH
        logic = BMDGANLogic()
        node, radiograph = logic.engine.load_radiograph(sample, slicer.mrmlScene)
        self.assertEqual(slicer.util.arrayFromVolume(node).shape, (1, 331, 331))
        self.assertEqual(node.GetSpacing()[:2], (1.0, 1.0))
        self.assertEqual(radiograph.modality, "DX")
        self.delayDisplay("Sample radiograph loaded with its spacing")

    def test_batch_and_exports(self) -> None:
        """Both sample radiographs in one batch (rows equal to single estimates), then the exports of one."""
        import json
        import tempfile
        from pathlib import Path

        from bmdgan.sample_data import SAMPLE_RADIOGRAPH, SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir
        from BMDGANLib.estimation_logic import study_radiographs

        logic = BMDGANLogic().engine
        nodes = [logic.load_radiograph(sample_data_dir() / name, slicer.mrmlScene)[0]
                 for name in (SAMPLE_SIMULATED_RADIOGRAPH, SAMPLE_RADIOGRAPH)]
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
