"""2D-3D registration in the curation workbench, without Qt: every function takes the scene or nodes.

* **Register**: :meth:`RegistrationLogic.start` writes the radiograph, CT, labels, detector geometry and landmark
  pairs to a work folder and runs ``bmdgan register`` in a separate process. Why a process: a registration is
  10-30 s of PyTorch on a CPU, which in Slicer's GUI thread would freeze the application, and splitting the engine's
  coarse-to-fine CMA-ES into timer-sized steps would rewrite it; a process keeps the GUI live, is stopped like
  Ctrl+C (:meth:`RegistrationLogic.cancel`) and, should it crash, takes nothing of the scene with it. The widget
  polls :meth:`RegistrationJob.status` on a timer; :meth:`RegistrationLogic.finish` reads the outputs back.
* **Pose as a transform node**: the registered pose is the CT's rigid motion (LPS mm, shown in RAS) from a reference
  geometry (the detector with the nominal AP pose, kept as JSON in :data:`REFERENCE_GEOMETRY_ATTRIBUTE`). Whatever
  the node holds, edited in the Transforms module or by :func:`nudge`, defines the pose (:func:`pose_geometry`).
* **Overlay**: :func:`update_overlay` renders the DRR at that pose and draws its edges (value 1) and the projected bone
  outline (value 2) into a volume node on the radiograph's pixel grid; :func:`show_overlay` puts it over the
  radiograph in every slice view at an opacity.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk

from bmdgan.cli.commands.register import EXIT_FAILED_QUALITY
from bmdgan.errors import BMDGANError, InputError
from bmdgan.io import LPS_TO_RAS, Volume, write_volume
from bmdgan.projection.geometry import (
    DEFAULT_OBJECT_TO_DETECTOR_MM,
    ProjectionGeometry,
    ap_pose,
    volume_centre_lps,
)
from bmdgan.registration.defaults import BONE_THRESHOLD_HU, ENERGY_KEV
from BMDGANLib.engine_process import interrupt, start_engine_process
from BMDGANLib.mrml_conversion import (
    GEOMETRY_ATTRIBUTE,
    UNIT_ATTRIBUTE,
    markups_node_to_points,
    matrix_to_transform_node,
    node_to_radiograph,
    numpy_matrix,
    segmentation_node_to_labels,
    transform_node_to_matrix,
    vtk_matrix,
)
from BMDGANRegistrationLib.curation_logic import SEGMENT_NAMES, CurationLogic

REFERENCE_GEOMETRY_ATTRIBUTE = "BMDGAN.ReferenceGeometry"
"""Transform-node attribute: the projection geometry JSON whose pose the node's matrix moves the CT from."""
QUALITY_ATTRIBUTE = "BMDGAN.RegistrationQuality"
"""Transform-node attribute: the registration's quality grade ("good", "uncertain" or "failed")."""
OVERLAY_EDGE, OVERLAY_BONE = 1, 2
"""Overlay voxel values: DRR edge (green), projected bone outline (magenta); 0 is transparent."""
OVERLAY_COLOURS = ((0.0, 0.0, 0.0, 0.0), (0.16, 0.9, 0.16, 1.0), (1.0, 0.16, 1.0, 1.0))
OVERLAY_MAX_SIDE_PX = 512
"""The overlay's DRR is rendered on the detector binned to at most this many pixels a side (fast enough to
redraw while the user nudges: about 0.1-0.3 s on a CPU)."""
RESULT_NAME = "registration"
"""File prefix of the ``bmdgan register`` outputs in a job's folder."""


# --- geometry, landmarks, the pose in a transform node -------------------------------------------------------


def radiograph_geometry(radiograph_node, ct: Volume, source_to_detector_mm: float = 1000.0) -> ProjectionGeometry:
    """The radiograph's detector with the nominal AP pose: the CT's centre on the central ray, 200 mm in front of the
    detector. Detector: the node's geometry attribute (DICOM with DistanceSourceToDetector and ImagerPixelSpacing,
    DRRs), else the node's pixel spacing taken as the detector pitch (mm) with ``source_to_detector_mm``."""
    radiograph = node_to_radiograph(radiograph_node)
    rows, columns = radiograph.shape
    stored = radiograph_node.GetAttribute(GEOMETRY_ATTRIBUTE)
    if stored:
        detector = ProjectionGeometry.from_dict(json.loads(stored), radiograph_node.GetName())
    else:
        row_mm, column_mm = radiograph.pixel_spacing_mm
        detector = ProjectionGeometry(
            source_to_detector_mm, columns, rows, column_mm, row_mm, ((columns - 1) / 2.0, (rows - 1) / 2.0), np.eye(4)
        )
    if detector.shape != (rows, columns):
        raise InputError(
            None,
            f"'{radiograph_node.GetName()}' has {columns}x{rows} pixels but its geometry "
            f"describes a {detector.detector_columns}x{detector.detector_rows} detector",
            "remove the BMDGAN.ProjectionGeometry attribute or select the matching radiograph",
        )
    centre = volume_centre_lps(ct.shape_ijk, ct.geometry.ijk_to_lps())
    return detector.with_pose(ap_pose(centre, detector.source_to_detector_mm - DEFAULT_OBJECT_TO_DETECTOR_MM))


def landmarks_from_markups(radiograph_node, radiograph_points_node, ct_points_node):
    """Landmark pairs for the start pose: the points of ``radiograph_points_node`` (placed on the radiograph's slice)
    as pixel (column, row) and the equally named points of ``ct_points_node`` as LPS mm."""
    from bmdgan.registration.landmark_pose import MIN_LANDMARKS, Landmarks

    on_image = markups_node_to_points(radiograph_points_node)
    in_ct = markups_node_to_points(ct_points_node)
    names = [name for name in on_image if name in in_ct]
    unpaired = sorted(set(on_image) ^ set(in_ct))
    if len(names) < MIN_LANDMARKS:
        raise InputError(
            None,
            f"{len(names)} landmark pairs with the same name on the radiograph and in the CT, "
            f"at least {MIN_LANDMARKS} are needed" + (f"; unpaired: {', '.join(unpaired)}" if unpaired else ""),
            "name each radiograph point like its CT point",
        )
    ras_to_ijk = vtk.vtkMatrix4x4()
    radiograph_node.GetRASToIJKMatrix(ras_to_ijk)
    lps = np.array([on_image[name] for name in names])
    ras = np.c_[lps @ LPS_TO_RAS[:3, :3].T, np.ones(len(names))]
    ijk = ras @ numpy_matrix(ras_to_ijk).T
    off_slice = [name for name, k in zip(names, ijk[:, 2]) if abs(k) > 0.5]
    if off_slice:
        raise InputError(
            None,
            f"radiograph point(s) {', '.join(off_slice)} do not lie on the radiograph",
            "place the radiograph points in the slice view that shows the radiograph",
        )
    return Landmarks(tuple(names), ijk[:, :2].copy(), np.array([in_ct[name] for name in names]))


def reference_geometry(transform_node) -> ProjectionGeometry:
    """The geometry the transform node's motion starts from (see :data:`REFERENCE_GEOMETRY_ATTRIBUTE`)."""
    stored = transform_node.GetAttribute(REFERENCE_GEOMETRY_ATTRIBUTE)
    if not stored:
        raise InputError(
            None,
            f"the transform '{transform_node.GetName()}' holds no registration pose",
            "select the transform that registration made, or register first",
        )
    return ProjectionGeometry.from_dict(json.loads(stored), transform_node.GetName())


def pose_geometry(transform_node) -> ProjectionGeometry:
    """The projection geometry at the transform node's pose: ``reference pose @ motion`` (a non-rigid edit of the
    transform, e.g. a scaling, is refused with the reason)."""
    reference = reference_geometry(transform_node)
    return reference.with_pose(reference.camera_from_lps @ transform_node_to_matrix(transform_node))


def pose_transform_node(reference: ProjectionGeometry, posed: ProjectionGeometry, scene, name: str, node=None):
    """A linear transform node holding the CT's motion from ``reference``'s pose to ``posed``'s, nudgeable."""
    motion = np.linalg.inv(reference.camera_from_lps) @ posed.camera_from_lps
    node = matrix_to_transform_node(motion, scene, name, node)
    node.SetAttribute(REFERENCE_GEOMETRY_ATTRIBUTE, json.dumps(reference.to_dict()))
    return node


def ct_centre_lps(ct_node) -> np.ndarray:
    """Centre (LPS mm) of the CT node's voxel box, in its own frame (any parent transform is ignored): the point
    the rotation nudges turn about."""
    bounds = [0.0] * 6
    ct_node.GetBounds(bounds)
    centre_ras = np.array([(bounds[0] + bounds[1]) / 2.0, (bounds[2] + bounds[3]) / 2.0, (bounds[4] + bounds[5]) / 2.0])
    return LPS_TO_RAS[:3, :3] @ centre_ras


def nudge(transform_node, centre_lps_mm, translation_mm=(0.0, 0.0, 0.0), rotation_deg: float = 0.0) -> None:
    """Move the pose held by the transform node: by ``translation_mm`` along the camera axes (x: image right,
    y: image down, z: along the beam, away from the source) and by ``rotation_deg`` about the beam through the CT
    point ``centre_lps_mm`` (positive: clockwise as the image is viewed)."""
    from bmdgan.projection.pose import camera_pose

    reference = reference_geometry(transform_node)
    current = pose_geometry(transform_node).camera_from_lps
    parameters = np.array([0.0, 0.0, float(rotation_deg), *np.asarray(translation_mm, dtype=float)])
    moved = camera_pose(parameters, current, np.asarray(centre_lps_mm, dtype=float)).double().numpy()
    pose_transform_node(
        reference, reference.with_pose(moved), transform_node.GetScene(), transform_node.GetName(), transform_node
    )


# --- the registration process ---------------------------------------------------------------------------------


@dataclass
class RegistrationJob:
    """A running (or finished) ``bmdgan register`` process, its work folder and the reference geometry."""

    process: subprocess.Popen
    folder: Path
    reference: ProjectionGeometry
    name: str

    @property
    def output_path(self) -> Path:
        return self.folder / f"{RESULT_NAME}.out"

    def running(self) -> bool:
        return self.process.poll() is None

    def status(self) -> str:
        """The process's last log line (e.g. "level 2: pitch 2 mm, ... gc 0.71, 3.2 s"), without its time stamp."""
        lines = (
            [line for line in self.output_path.read_text(errors="replace").splitlines() if line.strip()]
            if self.output_path.exists()
            else []
        )
        return lines[-1].split("] ", 1)[-1] if lines else "starting"


class RegistrationLogic:
    """Runs registrations in a separate process, keeps the pose in a transform node and draws the overlay."""

    def start(
        self,
        radiograph_node,
        ct_node,
        scene,
        folder: str | Path,
        geometry: ProjectionGeometry,
        segmentation_node=None,
        landmarks=None,
        python: str | None = None,
    ) -> RegistrationJob:
        """Write the inputs into ``folder`` and start ``bmdgan register`` from ``geometry``'s pose (the reference of
        the transform node that :meth:`finish` makes), or from the pose solved from ``landmarks``
        (:func:`landmarks_from_markups`). With a segmentation, its bones are the structure whose outline and
        checks the registration uses."""
        import tifffile

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = node_to_radiograph(radiograph_node).pixels
        if pixels.shape != geometry.shape:
            raise InputError(
                None,
                f"the radiograph has {pixels.shape[1]}x{pixels.shape[0]} pixels, the geometry "
                f"{geometry.detector_columns}x{geometry.detector_rows}",
                "give its geometry",
            )
        ct = CurationLogic().ct_from_node(ct_node)
        tifffile.imwrite(folder / "radiograph.tif", pixels.astype(np.float32))
        write_volume(ct, folder / "ct.nii.gz")
        geometry.save(folder / "start.geometry.json")
        arguments = [
            str(folder / "radiograph.tif"),
            str(folder / "ct.nii.gz"),
            "--out",
            str(folder),
            "--name",
            RESULT_NAME,
            "--geometry",
            str(folder / "start.geometry.json"),
        ]
        if segmentation_node is not None:
            labels = segmentation_node_to_labels(segmentation_node, ct, scene, SEGMENT_NAMES)
            write_volume(labels, folder / "labels.nii.gz")
            arguments += ["--labels", str(folder / "labels.nii.gz")]
        if landmarks is not None:
            (folder / "landmarks.json").write_text(json.dumps(landmarks.to_dict(), indent=2))
            arguments += ["--landmarks", str(folder / "landmarks.json")]
        return self._launch(arguments, folder, geometry, ct_node.GetName(), python)

    @staticmethod
    def _launch(
        arguments: list[str], folder: Path, reference: ProjectionGeometry, name: str, python: str | None
    ) -> RegistrationJob:
        process = start_engine_process(["register", *arguments], folder / f"{RESULT_NAME}.out", python)
        return RegistrationJob(process, folder, reference, name)

    @staticmethod
    def cancel(job: RegistrationJob, timeout_s: float = 10.0) -> int:
        """Stop the process like Ctrl+C (it then writes nothing), killing it if it does not stop; the exit code."""
        return interrupt(job.process, timeout_s)

    @staticmethod
    def finish(job: RegistrationJob, scene, transform_node=None) -> tuple[dict, object]:
        """The finished job's record (``bmdgan register``'s registration JSON: quality, similarity, pose change,
        timings) and the transform node holding the registered pose (a given node is updated in place)."""
        if job.running():
            raise BMDGANError("the registration is still running")
        if job.process.returncode not in (0, EXIT_FAILED_QUALITY):  # a failed registration still has its outputs
            tail = job.output_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise BMDGANError(f"the registration stopped with exit code {job.process.returncode}: " + " | ".join(tail))
        registered = ProjectionGeometry.load(job.folder / f"{RESULT_NAME}.geometry.json")
        record = json.loads((job.folder / f"{RESULT_NAME}.registration.json").read_text())
        node = pose_transform_node(job.reference, registered, scene, f"{job.name} registration", transform_node)
        node.SetAttribute(QUALITY_ATTRIBUTE, record["quality"]["flag"])
        return record, node


# --- overlay --------------------------------------------------------------------------------------------------


def overlay_colour_table(scene, name: str = "BMD-GAN registration overlay"):
    """Colour table of the overlay: 0 transparent, 1 green (DRR edges), 2 magenta (bone outline)."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None:
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(len(OVERLAY_COLOURS))
    for index, (red, green, blue, alpha) in enumerate(OVERLAY_COLOURS):
        node.SetColor(index, ("none", "DRR edge", "bone outline")[index], red, green, blue, alpha)
    return node


def overlay_ijk_to_radiograph_ijk(factor: int) -> np.ndarray:
    """4x4 taking an overlay voxel (binned by ``factor``) to radiograph voxel indices: block centres."""
    matrix = np.diag([float(factor), float(factor), 1.0, 1.0])
    matrix[:2, 3] = (factor - 1) / 2.0
    return matrix


def overlay_picture(geometry: ProjectionGeometry, ct: Volume, structure_mask=None) -> tuple[np.ndarray, int]:
    """Overlay values (rows, columns) on the detector binned by the returned factor: DRR edges and bone outline."""
    from bmdgan.registration.levels import downsample_geometry
    from bmdgan.registration.overlay import bone_outline, display_projections, drr_edges

    factor = max(1, int(np.ceil(max(geometry.shape) / OVERLAY_MAX_SIDE_PX)))
    display = downsample_geometry(geometry, factor)
    centre = volume_centre_lps(ct.shape_ijk, ct.geometry.ijk_to_lps())
    drr, bone = display_projections(display, ct, centre, ENERGY_KEV, BONE_THRESHOLD_HU, structure_mask)
    values = np.zeros(display.shape, dtype=np.float32)
    values[drr_edges(drr)] = OVERLAY_EDGE
    values[bone_outline(bone)] = OVERLAY_BONE
    return values, factor


def update_overlay(radiograph_node, ct_node, transform_node, scene, segmentation_node=None, overlay_node=None):
    """Draw the DRR edges and bone outline at the transform node's pose into a volume node over the radiograph
    (a given overlay node is redrawn in place); values :data:`OVERLAY_EDGE`, :data:`OVERLAY_BONE`, 0 elsewhere."""
    geometry = pose_geometry(transform_node)
    radiograph = node_to_radiograph(radiograph_node)
    if radiograph.shape != geometry.shape:
        raise InputError(
            None,
            f"the pose's detector is {geometry.detector_columns}x{geometry.detector_rows} pixels, "
            f"'{radiograph_node.GetName()}' {radiograph.shape[1]}x{radiograph.shape[0]}",
            "select the radiograph that was registered",
        )
    ct = CurationLogic().ct_from_node(ct_node)
    structure = None
    if segmentation_node is not None:
        structure = segmentation_node_to_labels(segmentation_node, ct, scene, SEGMENT_NAMES).array > 0
    values, factor = overlay_picture(geometry, ct, structure)
    node = overlay_node or scene.AddNewNodeByClass(
        "vtkMRMLScalarVolumeNode", f"{radiograph_node.GetName()} registration overlay"
    )
    slicer.util.updateVolumeFromArray(node, values[np.newaxis])
    radiograph_ijk_to_ras = vtk.vtkMatrix4x4()
    radiograph_node.GetIJKToRASMatrix(radiograph_ijk_to_ras)
    node.SetIJKToRASMatrix(vtk_matrix(numpy_matrix(radiograph_ijk_to_ras) @ overlay_ijk_to_radiograph_ijk(factor)))
    node.SetAttribute(UNIT_ATTRIBUTE, "overlay label")
    _style_overlay(node, scene)
    return node


def _style_overlay(node, scene) -> None:
    """Colours of :func:`overlay_colour_table`, window 0-2, and 0 transparent (below the display threshold)."""
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(overlay_colour_table(scene).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, float(OVERLAY_BONE))
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(0.5)
    display.SetUpperThreshold(float(OVERLAY_BONE))
    display.SetInterpolate(False)


def show_overlay(scene, radiograph_node, overlay_node, opacity: float) -> int:
    """Show the radiograph as background and the overlay as foreground at ``opacity`` (0-1) in every slice view
    of the scene; returns the number of slice views set."""
    if not 0.0 <= float(opacity) <= 1.0:
        raise InputError(None, f"overlay opacity {opacity} is outside 0-1", "give an opacity between 0 and 1")
    composites = [
        scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))
    ]
    for composite in composites:
        composite.SetBackgroundVolumeID(radiograph_node.GetID())
        composite.SetForegroundVolumeID(overlay_node.GetID())
        composite.SetForegroundOpacity(float(opacity))
    return len(composites)
