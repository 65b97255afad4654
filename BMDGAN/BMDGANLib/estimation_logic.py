"""Logic of the BMDGAN (one-click estimation) module: no Qt, the scene is an argument."""

from __future__ import annotations

from pathlib import Path

from bmdgan.io import Radiograph, read_radiograph

from .mrml_conversion import node_to_radiograph, radiograph_to_node

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
