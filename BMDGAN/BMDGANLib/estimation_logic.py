"""Logic of the BMDGAN (one-click estimation) module: no Qt, the scene is an argument.

Results go into the scene as: one PF-DRR volume node per hip (g/cm2), placed exactly over the radiograph
(its IJK-to-RAS composes the radiograph's with the input region that the network saw), shown with a density
colour table; a segmentation with each hip's PF region; one point list per hip with the detected femoral head
centre and neck point, which the user can move and estimate again from (:meth:`EstimationLogic.estimate` with
``landmark_nodes``); and a table node with the numbers and warnings.

Several radiographs (the scene's, a study's in the subject hierarchy, or a folder's files) are estimated into one
table, a row per hip or per failed image; a result exports as the report picture (PNG) and the result JSON, each
written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk

from bmdgan.atomic import atomic_path, atomic_write_text
from bmdgan.datasets.normalise import HipROI
from bmdgan.detection.detector import DetectedHip, HipDetector
from bmdgan.errors import BMDGANError, InputError
from bmdgan.inference.default_model import resolve_model_folder
from bmdgan.inference.estimation import NO_HIP_FOUND, areal_summary, estimate_hip, estimate_radiograph, result_summary
from bmdgan.inference.report import draw_report
from bmdgan.inference.tscore import load_reference
from bmdgan.io import Radiograph, Volume, read_radiograph
from bmdgan.io.radiograph import IMAGE_SUFFIXES
from bmdgan.projection.geometry import geometry_from_radiograph

from .mrml_conversion import (
    GEOMETRY_ATTRIBUTE,
    UNIT_ATTRIBUTE,
    labels_to_segmentation_node,
    node_to_radiograph,
    node_to_volume,
    numpy_matrix,
    radiograph_to_node,
    vtk_matrix,
)

DENSITY_COLOURS = 256
TABLE_COLUMNS = (
    "side",
    "aBMD (g/cm2)",
    "aBMD 90 % interval (g/cm2)",
    "vBMD (mg/cm3)",
    "T-score",
    "WHO category",
    "P(category)",
    "trustworthy",
    "warnings",
)
BATCH_COLUMNS = ("radiograph",) + TABLE_COLUMNS + ("error",)


LANDMARK_SIDE_ATTRIBUTE = "BMDGAN.HipSide"
"""Attribute of a hip's point list: the patient's side ("left"/"right")."""
LANDMARK_LABELS = ("femoral head centre", "neck point")
"""The two control points of a hip's point list, in this order."""
USER_PLACED_CONFIDENCE = 1.0
"""The detector confidence recorded for landmarks the user placed or moved."""


def crop_ijk_to_source_ijk(roi: HipROI) -> np.ndarray:
    """4x4 taking a PF-DRR voxel (i = column, j = row, k = 0) to radiograph voxel indices (same convention)."""
    affine = roi.output_to_source_matrix()
    matrix = np.eye(4)
    matrix[:2, :2], matrix[:2, 3] = affine[:2, :2], affine[:2, 2]
    return matrix


def density_colour_table(scene, name: str = "BMD-GAN density (g/cm2)"):
    """A perceptually uniform (inferno) colour table node, shared by all PF-DRR volumes of the scene."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None:
        return existing
    from matplotlib import colormaps

    colours = colormaps["inferno"](np.linspace(0.0, 1.0, DENSITY_COLOURS))
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(DENSITY_COLOURS)
    for index, (red, green, blue, _) in enumerate(colours):
        node.SetColor(index, f"{index}", red, green, blue, 1.0)
    return node


@dataclass
class EstimationResult:
    """The engine's per-hip results and the MRML nodes that show them, with what the exports need: the radiograph
    as the engine saw it, each hip's decomposition, the model folder and its PF-region threshold (g/cm2)."""

    hips: list = field(default_factory=list)
    pf_drr_nodes: list = field(default_factory=list)
    segmentation_node: object = None
    table_node: object = None
    radiograph: Radiograph | None = None
    decompositions: list = field(default_factory=list)
    model_folder: str = ""
    region_threshold_g_cm2: float = 0.0
    landmark_nodes: list = field(default_factory=list)


@dataclass
class BatchRow:
    """One row of a batch: a hip's estimate, or the error that stopped this radiograph."""

    radiograph: str
    hip: object = None
    error: str | None = None


@dataclass
class BatchResult:
    """Rows in input order, the table node that shows them, and whether the progress callback stopped the batch."""

    rows: list[BatchRow]
    table_node: object
    cancelled: bool = False


def error_text(error: Exception) -> str:
    """An error as one line for a table cell: the engine's own message, else the exception type and message."""
    return str(error) if isinstance(error, BMDGANError) else f"{type(error).__name__}: {error}"


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part 10 file ("DICM" after the 128-byte preamble), whatever its name."""
    with open(path, "rb") as stream:
        stream.seek(128)
        return stream.read(4) == b"DICM"


def study_files(folder: str | Path) -> list[Path]:
    """The radiograph files under ``folder`` (recursively, sorted): DICOM files with or without an extension (not
    DICOMDIR), PNG, JPEG and TIFF images. Other files (JSON, text) are left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "is not a folder", "choose the folder that holds the study's radiographs")
    files = [
        path
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and path.name.upper() != "DICOMDIR"
        and (path.suffix.lower() in IMAGE_SUFFIXES or is_dicom_file(path))
    ]
    if not files:
        raise InputError(folder, "holds no DICOM, PNG, JPEG or TIFF file", "choose the study's folder")
    return files


def is_radiograph_node(node) -> bool:
    """A single-slice scalar volume (not a label map) that BMD-GAN did not derive (see :data:`UNIT_ATTRIBUTE`)."""
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        return False
    if node.GetAttribute(UNIT_ATTRIBUTE) or node.GetImageData() is None:
        return False
    return node.GetImageData().GetDimensions()[2] == 1


def study_radiographs(scene, node=None) -> list:
    """The radiograph nodes of ``node``'s study in the subject hierarchy (the study that Slicer's DICOM module made),
    in hierarchy order; every radiograph node of the scene when ``node`` is None or in no study."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = 0
    if node is not None:
        study = hierarchy.GetItemAncestorAtLevel(hierarchy.GetItemByDataNode(node), "Study")
    if study:
        items = vtk.vtkIdList()
        hierarchy.GetItemChildren(study, items, True)
        candidates = [hierarchy.GetItemDataNode(items.GetId(index)) for index in range(items.GetNumberOfIds())]
    else:
        candidates = [
            scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
            for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
        ]
    return [candidate for candidate in candidates if candidate is not None and is_radiograph_node(candidate)]


RADIOGRAPH_ATTRIBUTE = "BMDGAN.Radiograph"
"""Node attribute marking volume nodes that hold a radiograph read by the engine."""


class EstimationLogic:
    """Reads radiographs into the scene the way the engine reads them (bone bright, spacing checked)."""

    def load_radiograph(self, path: str | Path, scene, name: str | None = None):
        """Read a DICOM/PNG/JPEG/TIFF radiograph into a new volume node; returns (node, radiograph)."""
        radiograph = read_radiograph(path)
        node = radiograph_to_node(radiograph, scene, name or Path(path).stem)
        node.SetAttribute(RADIOGRAPH_ATTRIBUTE, "1")
        if radiograph.source_to_detector_mm and (radiograph.imager_pixel_spacing_mm or radiograph.pixel_spacing_mm):
            detector = geometry_from_radiograph(radiograph)  # for registration: SID and detector pitch (mm)
            node.SetAttribute(GEOMETRY_ATTRIBUTE, json.dumps(detector.to_dict()))
        return node, radiograph

    def radiograph_from_node(self, node) -> Radiograph:
        """The engine's view of a radiograph volume node (e.g. one loaded by Slicer's DICOM module)."""
        return node_to_radiograph(node)

    @staticmethod
    def load_model(model_folder: str | Path | None = None, device: str = "cpu"):
        """The decomposition model of ``model_folder`` ("" or None: the default model) and its folder."""
        from bmdgan.inference.model import DecompositionModel

        folder = resolve_model_folder(model_folder and str(model_folder))
        return DecompositionModel.load(folder, device), folder

    def hip_detector(self) -> HipDetector:
        """The bundled hip detector, loaded once."""
        if getattr(self, "_hip_detector", None) is None:
            self._hip_detector = HipDetector.load()
        return self._hip_detector

    def estimate_hips(
        self, model, radiograph: Radiograph, side: str = "auto", reference: str | None = None, hips: list | None = None
    ) -> list:
        """[(HipEstimate, Decomposition)] of each hip the detector finds (``side``: "left", "right", or "auto": the
        DICOM laterality, else every hip), or of the given ``hips`` (:class:`DetectedHip`, e.g. moved by the user)."""

        table = load_reference(reference)
        if hips is not None:
            return [estimate_hip(model, radiograph, hip, table) for hip in hips]
        return estimate_radiograph(model, self.hip_detector(), radiograph, table, side)

    @staticmethod
    def _ras_to_ijk(radiograph_node) -> np.ndarray:
        matrix = vtk.vtkMatrix4x4()
        radiograph_node.GetRASToIJKMatrix(matrix)
        return numpy_matrix(matrix)

    def hips_from_landmarks(self, landmark_nodes, radiograph_node) -> list[DetectedHip]:
        """The hips that point lists of :data:`LANDMARK_LABELS` mark (RAS mm) on the radiograph node."""
        ras_to_ijk = self._ras_to_ijk(radiograph_node)
        hips = []
        for node in landmark_nodes:
            side = node.GetAttribute(LANDMARK_SIDE_ATTRIBUTE)
            if side not in ("left", "right") or node.GetNumberOfControlPoints() != len(LANDMARK_LABELS):
                raise InputError(
                    None,
                    f"the point list {node.GetName()} is not a BMD-GAN hip (a side and {len(LANDMARK_LABELS)} points)",
                    "estimate the radiograph again to get its hips' points",
                )
            points = []
            for index in range(len(LANDMARK_LABELS)):
                ras = [0.0, 0.0, 0.0]
                node.GetNthControlPointPosition(index, ras)
                column, row = (ras_to_ijk @ np.array([*ras, 1.0]))[:2]
                points.append((float(column), float(row)))
            hips.append(DetectedHip(side, points[0], points[1], USER_PLACED_CONFIDENCE, USER_PLACED_CONFIDENCE))
        return hips

    @staticmethod
    def _landmark_node(scene, radiograph_node, hip) -> object:
        """A point list with the hip's femoral head centre and neck point at their RAS positions."""
        ijk_to_ras = vtk.vtkMatrix4x4()
        radiograph_node.GetIJKToRASMatrix(ijk_to_ras)
        to_ras = numpy_matrix(ijk_to_ras)
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{radiograph_node.GetName()} {hip.side} hip")
        node.SetAttribute(LANDMARK_SIDE_ATTRIBUTE, hip.side)
        for label, (column, row) in zip(LANDMARK_LABELS, (hip.femoral_head_centre_px, hip.neck_point_px)):
            ras = (to_ras @ np.array([column, row, 0.0, 1.0]))[:3]
            node.AddControlPoint(vtk.vtkVector3d(*ras), label)
        return node

    def estimate(
        self,
        radiograph_node,
        scene,
        model_folder: str | Path | None = None,
        side: str = "auto",
        device: str = "cpu",
        reference: str | None = None,
        landmark_nodes: list | None = None,
    ) -> EstimationResult:
        """Run the decomposition model on a radiograph node and put the results into the scene: on the hips the
        detector finds, or on those that ``landmark_nodes`` (point lists of an earlier estimate, perhaps moved)
        mark; those point lists are then kept, else new ones are made."""
        radiograph = self.radiograph_from_node(radiograph_node)
        model, folder = self.load_model(model_folder, device)
        given = self.hips_from_landmarks(landmark_nodes, radiograph_node) if landmark_nodes else None
        results = self.estimate_hips(model, radiograph, side, reference, given)
        if not results:
            raise InputError(None, NO_HIP_FOUND, "place the hip's points by hand, or load a hip radiograph")
        result = EstimationResult(
            hips=[hip for hip, _ in results],
            radiograph=radiograph,
            decompositions=[decomposition for _, decomposition in results],
            model_folder=str(folder),
            region_threshold_g_cm2=model.distribution.threshold_g_cm2,
            landmark_nodes=list(landmark_nodes)
            if landmark_nodes
            else [self._landmark_node(scene, radiograph_node, hip) for hip, _ in results],
        )
        source_ijk_to_ras = vtk.vtkMatrix4x4()
        radiograph_node.GetIJKToRASMatrix(source_ijk_to_ras)
        colours = density_colour_table(scene)
        labels = []
        for hip, decomposition in results:
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{radiograph_node.GetName()} PF-DRR {hip.side}")
            slicer.util.updateVolumeFromArray(node, decomposition.pf_drr_g_cm2[np.newaxis])
            crop_to_ras = numpy_matrix(source_ijk_to_ras) @ crop_ijk_to_source_ijk(decomposition.roi)
            node.SetIJKToRASMatrix(vtk_matrix(crop_to_ras))
            node.SetAttribute(UNIT_ATTRIBUTE, "g/cm2")
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetAndObserveColorNodeID(colours.GetID())
            result.pf_drr_nodes.append(node)
            labels.append((hip.side, node, decomposition.pf_drr_g_cm2 >= model.distribution.threshold_g_cm2))
        result.segmentation_node = self._pf_segmentation(scene, radiograph_node.GetName(), labels)
        result.table_node = self._results_table(
            scene, f"{radiograph_node.GetName()} BMD", TABLE_COLUMNS, [self._hip_cells(hip) for hip in result.hips]
        )
        return result

    # --- several radiographs ----------------------------------------------------------------------------------

    def _radiograph_of(self, source) -> Radiograph:
        """A volume node or a file path as the engine's radiograph."""
        if isinstance(source, (str, Path)):
            return read_radiograph(source)
        return self.radiograph_from_node(source)

    def estimate_batch(
        self,
        sources: list,
        scene,
        model_folder: str | Path | None = None,
        side: str = "auto",
        device: str = "cpu",
        reference: str | None = None,
        progress=None,
        name: str = "BMD-GAN batch",
    ) -> BatchResult:
        """Estimate every radiograph of ``sources`` (volume nodes and/or file paths) with one model load, into one
        table node: a row per analysed hip, with the same numbers as :meth:`estimate`, or one row with the error
        for a radiograph that cannot be estimated (unreadable file, not a single-slice image...), and the batch goes
        on. ``progress(done, total, name)`` is called after each radiograph; when it returns False the batch stops
        there (``cancelled``)."""
        if not sources:
            raise InputError(None, "no radiograph to estimate", "load radiographs or choose a folder that holds some")
        model, _ = self.load_model(model_folder, device)
        rows: list[BatchRow] = []
        cancelled = False
        for done, source in enumerate(sources, start=1):
            label = Path(source).name if isinstance(source, (str, Path)) else source.GetName()
            try:
                hips = self.estimate_hips(model, self._radiograph_of(source), side, reference)
                rows += [BatchRow(label, hip=hip) for hip, _ in hips] or [BatchRow(label, error=NO_HIP_FOUND)]
            except Exception as error:  # one bad image must not stop a study: its row says why
                rows.append(BatchRow(label, error=error_text(error)))
            if progress is not None and progress(done, len(sources), label) is False:
                cancelled = done < len(sources)
                break
        cells = [
            (row.radiograph,)
            + (self._hip_cells(row.hip) if row.hip else ("",) * len(TABLE_COLUMNS))
            + (row.error or "",)
            for row in rows
        ]
        return BatchResult(rows, self._results_table(scene, name, BATCH_COLUMNS, cells), cancelled)

    # --- exports ---------------------------------------------------------------------------------------------

    @staticmethod
    def _check_exportable(result: EstimationResult, path: str | Path, suffix: str) -> Path:
        path = Path(path)
        if result.radiograph is None or not result.hips:
            raise InputError(None, "there is no estimate to export", "estimate a radiograph first")
        if path.suffix.lower() != suffix:
            raise InputError(path, f"does not end in {suffix}", f"give a {suffix} file name")
        return path

    def export_json(self, result: EstimationResult, path: str | Path) -> Path:
        """Write the result JSON (as ``bmdgan estimate`` writes it: each hip's aBMD g/cm2, vBMD mg/cm3, T-score,
        WHO category, warnings) atomically: a failed write leaves no partial file."""

        path = self._check_exportable(result, path, ".json")
        summary = result_summary(result.radiograph, list(zip(result.hips, result.decompositions)), result.model_folder)
        return atomic_write_text(path, json.dumps(summary, indent=2) + "\n")

    def export_report(self, result: EstimationResult, path: str | Path) -> Path:
        """Write the report picture (radiograph with the PF regions, PF-DRR maps, numbers) as a PNG, atomically."""
        path = self._check_exportable(result, path, ".png")
        with atomic_path(path) as temporary:
            draw_report(
                temporary,
                result.radiograph,
                list(zip(result.hips, result.decompositions)),
                result.region_threshold_g_cm2,
            )
        return path

    @staticmethod
    def _pf_segmentation(scene, name: str, labels):
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} PF regions")
        for side, node, mask in labels:
            grid = node_to_volume(node, unit="g/cm2")
            labels_to_segmentation_node(
                Volume(mask[np.newaxis].astype(np.int16), grid.geometry, "label"),
                scene,
                {1: f"proximal femur {side}"},
                node=segmentation,
            )
        return segmentation

    @staticmethod
    def _hip_cells(hip) -> tuple[str, ...]:
        """A hip's numbers as the text cells of :data:`TABLE_COLUMNS`."""

        def text(value, pattern):
            return "" if value is None else pattern.format(value)

        interval = hip.dxa_bmd_interval_g_cm2
        return (
            hip.side,
            text(hip.dxa_bmd_g_cm2, "{:.3f}"),
            f"{interval[0]:.2f}-{interval[1]:.2f}" if interval else "",
            text(hip.qct_bmd_mg_cm3, "{:.0f}"),
            text(hip.t_score, "{:+.1f}"),
            hip.who_category or "",
            text(hip.who_category_probability, "{:.2f}"),
            "yes" if hip.trustworthy else "no",
            "; ".join(hip.warnings),
        )

    @staticmethod
    def _results_table(scene, name: str, titles, rows):
        """A table node of text columns ``titles`` with one row per tuple of ``rows``."""
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        for title in titles:
            table.AddColumn(vtk.vtkStringArray()).SetName(title)
        for cells in rows:
            row = table.AddEmptyRow()
            for column, value in enumerate(cells):
                table.SetCellText(row, column, value)
        return table

    @staticmethod
    def describe(result: EstimationResult) -> str:
        """The numbers for the module panel, one hip per paragraph, warnings included."""
        paragraphs = []
        for hip in result.hips:
            lines = [f"{hip.side} hip: {areal_summary(hip)}"]
            if hip.qct_bmd_mg_cm3 is not None:
                lines.append(f"vBMD {hip.qct_bmd_mg_cm3:.0f} mg/cm3")
            lines += [f"warning: {warning}" for warning in hip.warnings]
            paragraphs.append("\n".join(lines))
        return "\n\n".join(paragraphs)

    @staticmethod
    def summary(radiograph: Radiograph) -> str:
        """One paragraph for the module panel: size, spacing and warnings."""
        rows, columns = radiograph.shape
        spacing = radiograph.pixel_spacing_mm
        lines = [
            f"{columns} x {rows} pixels",
            f"spacing {spacing[1]:.3f} x {spacing[0]:.3f} mm ({radiograph.spacing_source})"
            if spacing
            else "pixel spacing missing",
        ]
        lines += [f"warning: {warning}" for warning in radiograph.warnings]
        return "\n".join(lines)
