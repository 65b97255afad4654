"""The clinic's AP pelvis radiograph of a whole-pelvis CT: both hips, the pelvis and the upper thighs.

Frame: the patient's axes come from the CT's LPS frame (the beam runs anterior to posterior along LPS +y,
image right = patient left, image up = superior: :data:`~bmdgan.projection.geometry.AP_ROTATION`), not from
one femur; this needs a header that can be trusted (true of the ``pelvic_reference`` CTs: head-first supine,
identity direction). Detector: a 43 x 35 cm cassette laid across the patient (:data:`AP_PELVIS_DETECTOR_MM`,
430 mm wide, 350 mm high) at :data:`AP_PELVIS_SOURCE_TO_DETECTOR_MM` with a :data:`AP_PELVIS_PIXEL_MM`
pitch (see the constants for why).

Nothing outside the body: :func:`clean_outside_body` sets every voxel outside a body mask to air, so the couch,
wires and markers outside the skin do not reach the projection.

Where the scan ends: a whole-pelvis CT stops at about L3 and mid-thigh, but the body does not. A ray through
the body that leaves the scanned range would lose the tissue beyond it, and the image would show a hard edge
(the body cut off). :func:`collimate_to_scan` keeps only the detector rows (and columns) whose rays stay
inside the scanned range wherever they cross the body, as a technologist's collimator would, and says so in a
:class:`Collimation` record that goes into the image's JSON. Nothing is made up beyond the scan.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .geometry import ProjectionGeometry, ap_pose
from .simulator import material_projections

AP_PELVIS_DETECTOR_MM = (350.0, 430.0)
"""Detector height (rows, along the patient's long axis) and width (columns, left-right) in mm: the 35 x 43 cm
cassette of an adult AP pelvis laid landscape, so both iliac crests and greater trochanters fit. Width/height
1.23, the upper end of the paper's radiographs (0.88-1.23)."""
AP_PELVIS_SOURCE_TO_DETECTOR_MM = 1100.0
"""Source-to-image distance of an AP pelvis (clinical 1000-1150 mm; 1100 mm is the middle)."""
AP_PELVIS_PIXEL_MM = 0.5
"""Default detector pitch (mm). Clinical flat panels have 0.14-0.2 mm; 0.5 mm keeps a full AP pelvis at
860 x 700 pixels and the model's input (each half resized to 512 rows over 350 mm: 0.68 mm per pixel) is
coarser still. ``simulate-xray --pixel-mm 0.15`` gives the clinical pitch."""
AP_PELVIS_CENTRE_ABOVE_HEADS_MM = 30.0
"""The central ray of an AP pelvis aims midway between the anterior superior iliac spines and the pubic
symphysis, about 30 mm above the femoral head centres."""
WHOLE_PELVIS_MIN_WIDTH_MM = 300.0
"""A CT narrower than this (LPS x, mm) cannot hold both hips (the greater trochanters of an adult lie 300-380 mm
apart): ``--view auto`` does not look for two hips in it."""
AIR_HU = -1000.0
"""What voxels outside the body become (HU)."""
BODY_HU = -500.0
"""Voxels above this HU count as body on a CT already cleaned outside the body (fat is -100, lung/gas -1000)."""
COLLIMATION_MARGIN_PX = 1
"""Extra rows or columns dropped beyond the last ray that leaves the scan inside the body."""


def clean_outside_body(ct, body_mask: np.ndarray):
    """The CT (a :class:`bmdgan.io.Volume` in HU) with every voxel outside ``body_mask`` (bool [k, j, i]) set
    to :data:`AIR_HU`: couch, wires and skin markers outside the patient contribute nothing to a projection.
    A CT already clean is returned as it is (the same object: analyses cached per CT object stay valid)."""
    body = np.asarray(body_mask, dtype=bool)
    if body.shape != ct.array.shape:
        raise InputError(
            ct.source or None,
            f"the body mask's shape {body.shape} differs from the CT's {ct.array.shape}",
            "give a body mask on the CT grid",
        )
    if not body.any():
        raise InputError(ct.source or None, "the body mask is empty", "check the body mask")
    if np.all(ct.array[~body] == np.float32(AIR_HU)):
        return ct
    return ct.with_array(np.where(body, ct.array, np.float32(AIR_HU)).astype(np.float32))


def body_of_cleaned(hu: np.ndarray) -> np.ndarray:
    """Body mask (bool [k, j, i]) of a CT already cleaned outside the body: tissue above :data:`BODY_HU`, with
    the gas inside it (bowel) filled slice by slice."""
    body = np.asarray(hu) > BODY_HU
    return np.stack([ndimage.binary_fill_holes(plane) for plane in body])


@dataclass(frozen=True)
class Collimation:
    """Which part of the full detector was kept so that no ray leaves the scanned range inside the body.

    full_rows / full_columns: the uncollimated detector (pixels). first_row / first_column: the kept
    rectangle's top-left pixel in the full detector; rows / columns: its size. limited_by: the CT faces that set
    each limit (e.g. "superior end of the scan"). depth_truncated: faces along the beam that the body touches
    (collimation cannot help there; the body is cut in depth)."""

    full_rows: int
    full_columns: int
    first_row: int
    first_column: int
    rows: int
    columns: int
    limited_by: tuple[str, ...]
    depth_truncated: tuple[str, ...]

    @property
    def collimated(self) -> bool:
        return (self.rows, self.columns) != (self.full_rows, self.full_columns)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "collimated": self.collimated,
            "about": "detector cut to the rows/columns whose rays stay inside the scanned CT range wherever "
            "they cross the body (no tissue beyond the scan is invented); first_row/first_column in "
            "pixels of the full detector",
        }


_FACE_NAMES = {
    (0, 0): "patient-right end of the scan",
    (0, 1): "patient-left end of the scan",
    (1, 0): "anterior end of the scan",
    (1, 1): "posterior end of the scan",
    (2, 0): "inferior end of the scan",
    (2, 1): "superior end of the scan",
}


def _face_name(lps_normal: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(lps_normal)))
    return _FACE_NAMES[(axis, int(lps_normal[axis] > 0))]


def _face_points(body: np.ndarray, axis: int, high: bool, ijk_to_lps: np.ndarray) -> np.ndarray:
    """LPS points (n, 3) mm of the body where it meets one face of the voxel box (on the face plane)."""
    shape_kji = body.shape
    index = shape_kji[2 - axis] - 1 if high else 0
    plane = np.take(body, index, axis=2 - axis)
    rows, columns = np.nonzero(plane)
    if rows.size == 0:
        return np.zeros((0, 3))
    other = [a for a in range(3) if a != axis]  # index axes left in the plane, in (i, j, k) order
    ijk = np.empty((rows.size, 3))
    # np.take along kji axis (2 - axis) leaves the other kji axes in order: (rows, columns) = higher, lower ijk
    ijk[:, other[1]], ijk[:, other[0]] = rows, columns
    ijk[:, axis] = index + (0.5 if high else -0.5)
    return ijk @ ijk_to_lps[:3, :3].T + ijk_to_lps[:3, 3]


def collimate_to_scan(
    geometry: ProjectionGeometry, body_mask: np.ndarray, ijk_to_lps: np.ndarray
) -> tuple[ProjectionGeometry, Collimation]:
    """Cut the detector to the rows and columns whose rays stay inside the scanned volume wherever they cross
    the body (``body_mask`` bool [k, j, i] on the CT grid ``ijk_to_lps``).

    A face of the voxel box where the body is cut off (e.g. the superior end of the scan) projects to a band of
    pixels; a ray beyond that band leaves the scan before or inside the body, so the rows (for faces across the
    image's vertical axis) or columns (horizontal axis) from the band outward are dropped. Faces along the beam
    cannot be collimated away and are reported in ``depth_truncated``. Raises :class:`InputError` when nothing
    is left."""
    body = np.asarray(body_mask, dtype=bool)
    ijk_to_lps = np.asarray(ijk_to_lps, dtype=float)
    rotation = geometry.camera_from_lps[:3, :3]
    rows, columns = geometry.detector_rows, geometry.detector_columns
    limits = {"first_row": 0, "last_row": rows - 1, "first_column": 0, "last_column": columns - 1}
    reasons: dict[str, str] = {}
    depth_truncated = []
    faces = []
    for axis in range(3):
        for high in (False, True):
            points = _face_points(body, axis, high, ijk_to_lps)
            if len(points) == 0:
                continue
            outward = ijk_to_lps[:3, axis] * (1.0 if high else -1.0)
            camera_normal = rotation @ (outward / np.linalg.norm(outward))
            faces.append((int(np.argmax(np.abs(camera_normal))), camera_normal, points, _face_name(outward)))
    # Rows first (faces across the image's vertical axis), then columns among the kept rows.
    for camera_axis in (1, 0, 2):
        for axis_of_face, normal, points, name in faces:
            if axis_of_face != camera_axis:
                continue
            if camera_axis == 2:
                depth_truncated.append(name)
                continue
            pixels = geometry.project_points(points)
            if camera_axis == 0:  # only what lands on the kept rows matters for the columns
                on_rows = (pixels[:, 1] >= limits["first_row"] - 0.5) & (pixels[:, 1] <= limits["last_row"] + 0.5)
                pixels = pixels[on_rows]
                if len(pixels) == 0:
                    continue
            coordinate = pixels[:, 1] if camera_axis == 1 else pixels[:, 0]
            kind = "row" if camera_axis == 1 else "column"
            if normal[camera_axis] < 0:  # the face looks toward the first rows/columns: keep what lies beyond
                first = int(math.floor(coordinate.max())) + 1 + COLLIMATION_MARGIN_PX
                if first > limits[f"first_{kind}"]:
                    limits[f"first_{kind}"] = first
                    reasons[f"first_{kind}"] = name
            else:
                last = int(math.ceil(coordinate.min())) - 1 - COLLIMATION_MARGIN_PX
                if last < limits[f"last_{kind}"]:
                    limits[f"last_{kind}"] = last
                    reasons[f"last_{kind}"] = name
    kept_rows = limits["last_row"] - limits["first_row"] + 1
    kept_columns = limits["last_column"] - limits["first_column"] + 1
    if kept_rows < 2 or kept_columns < 2:
        raise InputError(
            None,
            "no detector row keeps its rays inside the scanned range through the body",
            "give a CT that covers the whole pelvis (about L4 to below the lesser trochanters)",
        )
    principal_column, principal_row = geometry.principal_point_px
    cropped = replace(
        geometry,
        detector_rows=kept_rows,
        detector_columns=kept_columns,
        principal_point_px=(principal_column - limits["first_column"], principal_row - limits["first_row"]),
    )
    return cropped, Collimation(
        rows,
        columns,
        limits["first_row"],
        limits["first_column"],
        kept_rows,
        kept_columns,
        tuple(sorted(set(reasons.values()))),
        tuple(sorted(set(depth_truncated))),
    )


BODY_CENTRE_SLAB_MM = 50.0
"""Half-height (mm) of the slab of slices whose body sets the mid-depth (and, without two hips, the midline) at a
given height: arms raised beside the upper abdomen do not move it."""


def body_centre_lps(body_mask: np.ndarray, ijk_to_lps: np.ndarray, height_lps_mm: float | None = None) -> np.ndarray:
    """Centre (LPS mm) of the body's bounding box: the midline, the mid-depth and the middle of the scan; with
    ``height_lps_mm`` (LPS z) the box of the slices within :data:`BODY_CENTRE_SLAB_MM` of that height."""
    body = np.asarray(body_mask, dtype=bool)
    ijk_to_lps = np.asarray(ijk_to_lps, float)
    if height_lps_mm is not None:
        middle = ((body.shape[2] - 1) / 2.0, (body.shape[1] - 1) / 2.0)  # LPS z of each slice's centre
        slice_z = ijk_to_lps[2] @ np.array([[*middle, k, 1.0] for k in range(body.shape[0])]).T
        near = np.abs(slice_z - height_lps_mm) <= BODY_CENTRE_SLAB_MM
        if body[near].any():
            body = body & near[:, None, None]
    k, j, i = (np.nonzero(body.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1)))
    if k.size == 0:
        raise InputError(None, "the body mask is empty", "check the body mask")
    corners = np.array([[i.min(), j.min(), k.min(), 1.0], [i.max(), j.max(), k.max(), 1.0]]) @ ijk_to_lps.T
    return corners[:, :3].mean(axis=0)


def ap_pelvis_centre(
    body_mask: np.ndarray, ijk_to_lps: np.ndarray, head_centres_lps: list[np.ndarray] | None = None
) -> np.ndarray:
    """Where the central ray aims (LPS mm). With the femoral head centres: in height
    :data:`AP_PELVIS_CENTRE_ABOVE_HEADS_MM` above them, in x midway between two heads (the midline) and in depth
    the body's middle at that height. Without: the middle of the body's box and of the scanned range."""
    if not head_centres_lps:
        return body_centre_lps(body_mask, ijk_to_lps)
    heads = np.array([np.asarray(h, float) for h in head_centres_lps])
    height = float(heads[:, 2].mean()) + AP_PELVIS_CENTRE_ABOVE_HEADS_MM
    centre = body_centre_lps(body_mask, ijk_to_lps, height)
    centre[2] = height
    if len(heads) >= 2:
        centre[0] = float(heads[:, 0].mean())
    return centre


def ap_pelvis_geometry(
    body_mask: np.ndarray,
    ijk_to_lps: np.ndarray,
    centre_lps_mm: np.ndarray,
    *,
    source_to_detector_mm: float = AP_PELVIS_SOURCE_TO_DETECTOR_MM,
    object_to_detector_mm: float = 200.0,
    pixel_spacing_mm: float = AP_PELVIS_PIXEL_MM,
    detector_mm: tuple[float, float] = AP_PELVIS_DETECTOR_MM,
    turn: np.ndarray | None = None,
    detector_shift_mm: tuple[float, float] = (0.0, 0.0),
    collimate: bool = True,
) -> tuple[ProjectionGeometry, Collimation | None]:
    """Cone-beam AP pelvis view in the CT's LPS frame, its central ray through ``centre_lps_mm`` (mm) at
    ``object_to_detector_mm`` in front of the detector; ``turn`` (3x3) rotates the patient about that centre
    (positioning), ``detector_shift_mm`` (rows, columns; mm at the detector) moves the detector in its plane.
    The detector covers ``detector_mm`` (height, width) and is then collimated to the scanned range
    (:func:`collimate_to_scan`) unless ``collimate`` is False."""
    if not 0 < object_to_detector_mm < source_to_detector_mm:
        raise InputError(
            None,
            f"object-to-detector distance {object_to_detector_mm} mm must lie between 0 and the "
            f"SID {source_to_detector_mm} mm",
            "choose a smaller object-to-detector distance",
        )
    centre = np.asarray(centre_lps_mm, float)
    pose = ap_pose(centre, source_to_detector_mm - object_to_detector_mm)
    if turn is not None:
        about = np.eye(4)
        about[:3, :3] = turn
        about[:3, 3] = centre - turn @ centre
        pose = pose @ about
    rows = max(2, int(round(detector_mm[0] / pixel_spacing_mm)))
    columns = max(2, int(round(detector_mm[1] / pixel_spacing_mm)))
    shift_rows, shift_columns = np.asarray(detector_shift_mm, float) / pixel_spacing_mm
    geometry = ProjectionGeometry(
        source_to_detector_mm,
        columns,
        rows,
        pixel_spacing_mm,
        pixel_spacing_mm,
        ((columns - 1) / 2.0 + shift_columns, (rows - 1) / 2.0 + shift_rows),
        pose,
    )
    if not collimate:
        return geometry, None
    return collimate_to_scan(geometry, body_mask, ijk_to_lps)


def project_ap_pelvis(
    ct,
    body_mask: np.ndarray,
    centre_lps_mm: np.ndarray | None = None,
    *,
    bone_density_mg_per_cm3: np.ndarray | None = None,
    device=None,
    **view,
) -> tuple[np.ndarray, ProjectionGeometry, Collimation | None]:
    """Material DRRs (3, rows, cols; g/cm2 of adipose, soft tissue, bone mineral) of the AP pelvis view of a CT
    in HU with everything outside ``body_mask`` removed; ``view``: keyword arguments of
    :func:`ap_pelvis_geometry`. Returns (areal densities, geometry, collimation)."""
    cleaned = clean_outside_body(ct, body_mask)
    ijk_to_lps = ct.geometry.ijk_to_lps()
    centre = ap_pelvis_centre(body_mask, ijk_to_lps) if centre_lps_mm is None else centre_lps_mm
    geometry, collimation = ap_pelvis_geometry(body_mask, ijk_to_lps, centre, **view)
    return material_projections(cleaned, geometry, bone_density_mg_per_cm3, device=device), geometry, collimation
