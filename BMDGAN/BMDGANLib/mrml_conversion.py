"""Move engine data (LPS, numpy) in and out of MRML nodes (RAS, VTK).

The engine works in LPS mm; MRML stores RAS. Every conversion goes through :data:`bmdgan.io.LPS_TO_RAS`
here and nowhere else. Functions take the scene or nodes as arguments and use no Qt, so they run
in Slicer and headless on the ``slicer-core`` wheel alike.
"""

from __future__ import annotations

import json

import numpy as np
import slicer
import vtk

from bmdgan.errors import InputError
from bmdgan.io import LPS_TO_RAS, Radiograph, Volume, VolumeGeometry
from bmdgan.io.radiograph import is_spacing_warning

UNIT_ATTRIBUTE = "BMDGAN.Unit"
"""Node attribute holding the voxel unit ("HU", "mg/cm3", "g/cm2") of a volume node that BMD-GAN made or read
as a CT; radiographs have none."""
GEOMETRY_ATTRIBUTE = "BMDGAN.ProjectionGeometry"
"""Node attribute holding the projection geometry JSON (bmdgan.projection.geometry) of a radiograph or DRR node."""
HEADER_ATTRIBUTE = "BMDGAN.RadiographHeader"
"""Node attribute holding what the engine read from a radiograph file beside its pixels (JSON): laterality, view,
age, body part, the pixel spacing and where it came from, and the reader's warnings. An estimate from the node then
judges the image as ``bmdgan estimate`` judges the file (a child's age or a spacing at the detector withholds the
category). The spacing part holds while the node keeps the spacing it was read with: a spacing set in Slicer is the
user's statement, and the warnings about the file's spacing go."""
HEADER_FIELDS = ("modality", "laterality", "view_position", "patient_age_years", "body_part")
SPACING_FIELDS = ("spacing_source", "imager_pixel_spacing_mm", "magnification_factor")


def vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            result.SetElement(row, column, float(matrix[row, column]))
    return result


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def volume_to_node(volume: Volume, scene, name: str, node=None, node_class: str = "vtkMRMLScalarVolumeNode"):
    """Put a volume into a (new or given) volume node: voxels as they are, IJK-to-RAS from the LPS geometry."""
    if node is None:
        node = scene.AddNewNodeByClass(node_class, name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
    node.SetIJKToRASMatrix(vtk_matrix(volume.geometry.ijk_to_ras()))
    return node


def node_to_volume(node, unit: str = "HU") -> Volume:
    """Copy a volume node's voxels and geometry into an engine :class:`Volume` (LPS)."""
    if node is None or node.GetImageData() is None:
        raise InputError(None, "the volume node has no image data", "select a loaded volume")
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    geometry = VolumeGeometry.from_ijk_to_lps(LPS_TO_RAS @ numpy_matrix(ijk_to_ras))
    array = np.array(slicer.util.arrayFromVolume(node))
    return Volume(array, geometry, unit=unit, source=node.GetName())


def radiograph_to_node(radiograph: Radiograph, scene, name: str, node=None):
    """A radiograph as a single-slice volume node laid out as Slicer lays out a 2D image file: columns
    along LPS x, rows along LPS y (identity direction), pixel spacing in mm when known (else 1 mm)."""
    row_mm, column_mm = radiograph.pixel_spacing_mm or (1.0, 1.0)
    geometry = VolumeGeometry((column_mm, row_mm, 1.0), (0.0, 0.0, 0.0))
    node = volume_to_node(
        Volume(radiograph.pixels[np.newaxis], geometry, unit="a.u.", source=radiograph.source), scene, name, node
    )
    header = {key: getattr(radiograph, key) for key in (*HEADER_FIELDS, *SPACING_FIELDS)}
    header.update(pixel_spacing_mm=[row_mm, column_mm], warnings=list(radiograph.warnings))
    node.SetAttribute(HEADER_ATTRIBUTE, json.dumps(header, default=float))
    return node


def node_to_radiograph(node) -> Radiograph:
    """The pixels and spacing of a single-slice volume node (e.g. a radiograph loaded by Slicer's DICOM module)."""
    volume = node_to_volume(node, unit="a.u.")
    if volume.array.shape[0] != 1:
        raise InputError(
            None,
            f"'{node.GetName()}' has {volume.array.shape[0]} slices, not a single radiograph",
            "select a 2D X-ray image",
        )
    column_mm, row_mm, _ = volume.geometry.spacing_mm
    radiograph = Radiograph(
        pixels=volume.array[0].astype(np.float32),
        source=node.GetName(),
        pixel_spacing_mm=(row_mm, column_mm),
        spacing_source="MRML volume node spacing",
    )
    header = json.loads(node.GetAttribute(HEADER_ATTRIBUTE) or "{}")
    for key in HEADER_FIELDS:
        setattr(radiograph, key, header.get(key))
    warnings = header.get("warnings", [])
    if header and np.allclose(header["pixel_spacing_mm"], (row_mm, column_mm), rtol=1e-6):
        if header["spacing_source"] != "missing":  # a file without one keeps the node's 1 mm and the warning
            for key in SPACING_FIELDS:
                value = header.get(key)
                setattr(radiograph, key, tuple(value) if isinstance(value, list) else value)
    else:  # the spacing was set in Slicer (or the node was not read by BMD-GAN): the file's spacing notes go
        warnings = [warning for warning in warnings if not is_spacing_warning(warning)]
    radiograph.warnings = warnings
    return radiograph


def labels_to_segmentation_node(labels: Volume, scene, names: dict[int, str], name: str = "Bones", node=None):
    """One segment per label value in ``names`` (value -> segment name); empty labels are skipped."""
    labelmap_node = volume_to_node(
        labels.with_array(labels.array.astype(np.int16)),
        scene,
        name + " labelmap",
        node_class="vtkMRMLLabelMapVolumeNode",
    )
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    try:
        for value, segment_name in names.items():
            mask = (labels.array == value).astype(np.int16)
            if not mask.any():
                continue
            slicer.util.updateVolumeFromArray(labelmap_node, mask)
            before = node.GetSegmentation().GetNumberOfSegments()
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap_node, node):
                raise InputError(None, f"segment '{segment_name}' could not be imported", "")
            segment = node.GetSegmentation().GetNthSegment(before)
            segment.SetName(segment_name)
    finally:
        scene.RemoveNode(labelmap_node)
    return node


def segmentation_node_to_labels(node, reference: Volume, scene, names: dict[int, str]) -> Volume:
    """Rasterise the named segments onto the reference grid: voxel = label value of its segment (0 elsewhere).

    Segments whose names are not in ``names`` are ignored; later names win where segments overlap.
    """
    reference_node = volume_to_node(reference, scene, "bmdgan reference grid")
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "bmdgan export")
    labels = np.zeros(reference.array.shape, dtype=np.int16)
    segmentation = node.GetSegmentation()
    try:
        for value, segment_name in names.items():
            segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
            if not segment_id:
                continue
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                node, ids, labelmap_node, reference_node
            )
            labels[np.array(slicer.util.arrayFromVolume(labelmap_node)) > 0] = value
    finally:
        scene.RemoveNode(reference_node)
        scene.RemoveNode(labelmap_node)
    return reference.with_array(labels, unit="label")


def points_to_markups_node(points_lps_mm: dict[str, np.ndarray], scene, name: str, node=None):
    """Named points (LPS mm) as control points of a markups fiducial node, in the given order."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.RemoveAllControlPoints()
    for label, point in points_lps_mm.items():
        ras = LPS_TO_RAS[:3, :3] @ np.asarray(point, dtype=float)
        node.AddControlPoint(vtk.vtkVector3d(*ras), label)
    return node


def markups_node_to_points(node) -> dict[str, np.ndarray]:
    """Control points of a markups node as {label: LPS mm}; duplicate labels are an error."""
    points: dict[str, np.ndarray] = {}
    for index in range(node.GetNumberOfControlPoints()):
        label = node.GetNthControlPointLabel(index)
        if label in points:
            raise InputError(
                None,
                f"the markups node '{node.GetName()}' has two points named '{label}'",
                "rename or delete one of them",
            )
        ras = np.array(node.GetNthControlPointPosition(index))
        points[label] = LPS_TO_RAS[:3, :3] @ ras
    return points


def matrix_to_transform_node(matrix_lps: np.ndarray, scene, name: str, node=None):
    """A 4x4 rigid transform between LPS frames into a linear transform node (stored in RAS)."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(vtk_matrix(LPS_TO_RAS @ np.asarray(matrix_lps, dtype=float) @ LPS_TO_RAS))
    return node


def transform_node_to_matrix(node) -> np.ndarray:
    """The to-parent 4x4 of a linear transform node, expressed between LPS frames."""
    matrix = vtk.vtkMatrix4x4()
    node.GetMatrixTransformToParent(matrix)
    return LPS_TO_RAS @ numpy_matrix(matrix) @ LPS_TO_RAS
