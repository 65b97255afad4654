"""Logic of the dataset-curation workbench: CTs into the scene in HU with their LPS geometry."""

from __future__ import annotations

from pathlib import Path

from bmdgan.io import Volume, read_ct
from BMDGANLib.mrml_conversion import node_to_volume, volume_to_node

UNIT_ATTRIBUTE = "BMDGAN.Unit"
"""Node attribute holding the voxel unit ("HU" or "mg/cm3") of a CT volume node."""


class CurationLogic:
    """Moves CT volumes between files, MRML nodes and the engine."""

    def load_ct(self, path: str | Path, scene, name: str | None = None):
        """Read a CT (DICOM folder, NIfTI, NRRD, MHA) into a new scalar volume node; returns (node, volume)."""
        volume = read_ct(path)
        node = volume_to_node(volume, scene, name or Path(path).name.split(".")[0])
        node.SetAttribute(UNIT_ATTRIBUTE, volume.unit)
        return node, volume

    def ct_from_node(self, node) -> Volume:
        """The engine's view of a CT volume node, in the unit recorded on the node (HU by default)."""
        return node_to_volume(node, unit=node.GetAttribute(UNIT_ATTRIBUTE) or "HU")
