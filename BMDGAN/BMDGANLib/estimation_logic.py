"""Logic of the BMDGAN (one-click estimation) module: no Qt, the scene is an argument.

Results go into the scene as: one PF-DRR volume node per hip (g/cm2), placed exactly over the radiograph
(its IJK-to-RAS composes the radiograph's with the crop that the network saw), shown with a density colour
table; a segmentation with each hip's PF region; and a table node with the numbers and warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk

from bmdgan.datasets.normalise import HipCrop
from bmdgan.io import Radiograph, read_radiograph

from .mrml_conversion import numpy_matrix, vtk_matrix, node_to_radiograph, radiograph_to_node

DENSITY_COLOURS = 256
TABLE_COLUMNS = ("side", "aBMD (g/cm2)", "vBMD (mg/cm3)", "T-score", "WHO category", "trustworthy", "warnings")


def crop_ijk_to_source_ijk(crop: HipCrop) -> np.ndarray:
    """4x4 taking a PF-DRR voxel (i = column, j = row, k = 0) to radiograph voxel indices (same convention)."""
    affine = crop.output_to_source_matrix()
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
    """The engine's per-hip results and the MRML nodes that show them."""

    hips: list = field(default_factory=list)
    pf_drr_nodes: list = field(default_factory=list)
    segmentation_node: object = None
    table_node: object = None

RADIOGRAPH_ATTRIBUTE = "BMDGAN.Radiograph"
"""Node attribute marking volume nodes that hold a radiograph read by the engine."""


class EstimationLogic:
    """Reads radiographs into the scene the way the engine reads them (bone bright, spacing checked)."""

    def load_radiograph(self, path: str | Path, scene, name: str | None = None):
        """Read a DICOM/PNG/JPEG/TIFF radiograph into a new volume node; returns (node, radiograph)."""
        radiograph = read_radiograph(path)
        node = radiograph_to_node(radiograph, scene, name or Path(path).stem)
        node.SetAttribute(RADIOGRAPH_ATTRIBUTE, "1")
        node.SetAttribute("BMDGAN.SpacingSource", radiograph.spacing_source)
        return node, radiograph

    def radiograph_from_node(self, node) -> Radiograph:
        """The engine's view of a radiograph volume node (e.g. one loaded by Slicer's DICOM module)."""
        return node_to_radiograph(node)

    def estimate(self, radiograph_node, scene, model_folder: str | Path | None = None, side: str = "auto",
                 device: str = "cpu", reference: str | None = None) -> EstimationResult:
        """Run the decomposition model on a radiograph node and put the results into the scene."""
        from bmdgan.estimation import estimate_hip, sides_to_analyse
        from bmdgan.inference import DecompositionModel
        from bmdgan.models_default import resolve_model_folder
        from bmdgan.tscore import load_reference

        radiograph = self.radiograph_from_node(radiograph_node)
        model = DecompositionModel.load(resolve_model_folder(model_folder and str(model_folder)), device)
        results = [estimate_hip(model, radiograph, hip_side, load_reference(reference))
                   for hip_side in sides_to_analyse(radiograph, side)]
        result = EstimationResult(hips=[hip for hip, _ in results])
        source_ijk_to_ras = vtk.vtkMatrix4x4()
        radiograph_node.GetIJKToRASMatrix(source_ijk_to_ras)
        colours = density_colour_table(scene)
        labels = []
        for hip, decomposition in results:
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{radiograph_node.GetName()} PF-DRR {hip.side}")
            slicer.util.updateVolumeFromArray(node, decomposition.pf_drr_g_cm2[np.newaxis])
            node.SetIJKToRASMatrix(vtk_matrix(numpy_matrix(source_ijk_to_ras) @ crop_ijk_to_source_ijk(decomposition.crop)))
            node.SetAttribute("BMDGAN.Unit", "g/cm2")
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetAndObserveColorNodeID(colours.GetID())
            result.pf_drr_nodes.append(node)
            labels.append((hip.side, node, decomposition.pf_drr_g_cm2 >= model.distribution.threshold_g_cm2))
        result.segmentation_node = self._pf_segmentation(scene, radiograph_node.GetName(), labels)
        result.table_node = self._results_table(scene, radiograph_node.GetName(), result.hips)
        return result

    @staticmethod
    def _pf_segmentation(scene, name: str, labels):
        from bmdgan.io import Volume

        from .mrml_conversion import labels_to_segmentation_node, node_to_volume

        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} PF regions")
        for side, node, mask in labels:
            grid = node_to_volume(node, unit="g/cm2")
            labels_to_segmentation_node(Volume(mask[np.newaxis].astype(np.int16), grid.geometry, "label"), scene,
                                        {1: f"proximal femur {side}"}, node=segmentation)
        return segmentation

    @staticmethod
    def _results_table(scene, name: str, hips):
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} BMD")
        columns = []
        for title in TABLE_COLUMNS:
            column = table.AddColumn(vtk.vtkStringArray())
            column.SetName(title)
            columns.append(column)

        def text(value, pattern):
            return "" if value is None else pattern.format(value)

        for hip in hips:
            row = table.AddEmptyRow()
            values = (hip.side, text(hip.dxa_bmd_g_cm2, "{:.3f}"), text(hip.qct_bmd_mg_cm3, "{:.0f}"),
                      text(hip.t_score, "{:+.1f}"), hip.who_category or "", "yes" if hip.trustworthy else "no",
                      "; ".join(hip.warnings))
            for column, value in enumerate(values):
                table.SetCellText(row, column, value)
        return table

    @staticmethod
    def describe(result: EstimationResult) -> str:
        """The numbers for the module panel, one hip per paragraph, warnings included."""
        paragraphs = []
        for hip in result.hips:
            lines = [f"{hip.side} hip: " + (f"aBMD {hip.dxa_bmd_g_cm2:.3f} g/cm2, T-score {hip.t_score:+.1f} "
                                            f"({hip.who_category})" if hip.dxa_bmd_g_cm2 is not None else "no aBMD")]
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
        lines = [f"{columns} x {rows} pixels",
                 f"spacing {spacing[1]:.3f} x {spacing[0]:.3f} mm ({radiograph.spacing_source})" if spacing
                 else "pixel spacing missing"]
        lines += [f"warning: {warning}" for warning in radiograph.warnings]
        return "\n".join(lines)
