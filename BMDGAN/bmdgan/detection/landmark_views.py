"""Radiographs with exact landmarks for the hip detector, simulated from prepared CTs.

Views of each prepared CT, each with its own virtual patient (bone, fat) and acquisition (``varied``: every
image its own site and processing):

- ``ap-pelvis`` (a CT with both hips prepared): the clinic's AP pelvis (:func:`bmdgan.cohort.pelvis_case.
  render_pelvis`), rotated and tilted on the table (the cohorts' ranges, or wider ones: ``ap_positioning_deg``), both
  hips labelled;
- ``hip`` and ``thigh``: one hip in the cohort's single-hip geometry with a wider field (:data:`FIELDS_MM`), the
  second centred lower down the shaft; shown as the patient's side appears in an AP radiograph (a left hip on the
  image's right);
- ``ct-as-scanned``: the CT itself (its HU, no virtual patient) in an AP view at a detector pitch of 0.5-0.7 mm,
  as the registration module pairs a CT with its own patient's radiograph: the whole scan (a thigh crop's edges
  show), no fat added, the projection simulator's own acquisition draws (:func:`ct_scan_view`); only of a CT whose
  every hip is labelled.

Also of each virtual anatomy (:mod:`bmdgan.cohort.anatomy`), from its own deformed CT and landmarks, under its source
CT (so whole-CT folds keep them with it): hip and thigh views of each of its hips, and AP pelvis views of an anatomy
of both hips of a whole pelvis: more distinct femurs to learn the head from, in the view users bring. The same of
each transplant entry (:mod:`bmdgan.cohort.transplant`: other CTs' femurs in a whole pelvis), whose views also name
the donor CTs they show (``donor_cts``), so whole-CT folds keep them away from those CTs' folds too.

Landmarks (head centre and neck point per side, :data:`bmdgan.detection.network.CHANNELS`) are the CT's, projected
by the same geometry that made the image. A side whose hip is not in the CT has none (null). A hip with an implant
(screws, a nail) is labelled like any other when it was prepared with ``allow_metal``: users' radiographs show such
hips, and a CT with one (the TotalSegmentator example) then gives AP pelvis views of one more body.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cohort.generator import (
    CohortSettings,
    ct_projector,
    hip_geometry,
    oriented_hip_view,
    pelvis_scene_of,
    prepared_hips_of,
)
from ..cohort.prepared_ct import head_radius_mm, prepared_bones, sides_record_path
from ..cohort.virtual_patient import POSES, sample_patient, sample_pose, seeded_rng
from ..errors import InputError
from ..io.members import read_json_object
from ..progress import progress_bar
from ..projection.geometry import default_ap_geometry
from ..projection.pose import camera_pose
from ..projection.simulator import simulate_radiograph
from .landmark_folder import LandmarkView, add_view, done_ids, read_views
from .layout import CHANNELS

SIDES = ("right", "left")
FIELDS_MM = {"hip": ((380.0, 260.0), 0.0), "thigh": ((420.0, 240.0), 110.0)}
"""Per single-hip view: (height, width) covered at the proximal femur (mm) and how far below the PF centre the
view is centred along the shaft (mm)."""
SCREW_KINDS = ("hip", "thigh")
"""The single-hip views a hip with virtual screws is shown in, in turn."""
RENDER_MM_PER_PX = 1.25
"""Pitch the views are rendered at (mm at the object; the detector resamples to 2 mm)."""
CT_VIEW_PITCH_MM = (0.5, 0.7)
"""Detector pitch range of the ``ct-as-scanned`` views (mm): what DR detectors and the registration tests use."""
CT_VIEW_SHIFT_MM = 30.0
"""Largest move of the ``ct-as-scanned`` view's central ray across the beam (mm), within a field that covers the CT
with :data:`CT_VIEW_MARGIN` to spare, so each hip stays whole in view."""
CT_VIEW_MARGIN = 0.25
"""Share of the CT's projected box added around it by the ``ct-as-scanned`` view's detector (the field)."""
SCREWS_SUFFIX = "_neck_screws"
"""Ends the variant id of a hip given virtual neck screws (``--screw-views``)."""
CT_VIEW_TURN_DEG = (5.0, 10.0)
"""Largest tilt out of the image plane and turn about the beam (degrees) of a ``ct-as-scanned`` view."""


def _empty_landmarks() -> dict:
    return {name: None for name in CHANNELS}


def view_id(name: str, kind: str, index: int) -> str:
    """A view's id: its CT, anatomy entry or hip key, its kind (``ap``, ``hip``, ``thigh``, ``ct``) and its index."""
    return f"{name}-{kind}-{index:03d}"


def _as_list(point: np.ndarray) -> list[float]:
    return [round(float(point[0]), 2), round(float(point[1]), 2)]


def _rounded(radius_mm: float | None) -> float | None:
    return None if radius_mm is None else round(float(radius_mm), 2)


_RADII: dict[tuple[str, str], float | None] = {}


def _head_radius_mm(prepared) -> float | None:
    """A prepared hip's femoral head radius (mm; None without a femur label), measured once per hip and process:
    its views come one after another."""
    key = (prepared.ct_id, prepared.cache_key)
    if key not in _RADII:
        femur = prepared.femur_mask
        _RADII[key] = _rounded(head_radius_mm(prepared, femur)) if femur is not None else None
    return _RADII[key]


def ap_pelvis_view(
    prepared_folder: str,
    ct_id: str,
    index: int,
    seed: int,
    anatomy: str | None = None,
    with_metal: bool = False,
    screws_side: str | None = None,
    positioning_deg: tuple[float, float, float] | None = None,
) -> tuple[LandmarkView, np.ndarray]:
    """One AP pelvis radiograph of a CT with both hips prepared (``anatomy``: of that virtual anatomy entry of
    the CT; ``with_metal``: a hip prepared with its implant counts; ``screws_side``: that hip of the real CT given
    virtual neck screws, a view of its own variant :func:`screws_variant`), with both hips' landmarks;
    ``positioning_deg``: the patient's rotation on the table within these half-ranges (degrees about the long,
    left-right and beam axes; default :data:`bmdgan.cohort.pelvis_case.POSITIONING_DEG`)."""
    from ..cohort.pelvis_case import render_pelvis, sample_positioning

    entry = anatomy or ct_id
    scene = pelvis_scene_of(prepared_folder, entry, with_metal, screws_side)
    settings = CohortSettings(prepared_folder, seed=seed, acquisition="varied")
    if screws_side is not None:
        entry = anatomy = screws_variant(f"{ct_id}_{screws_side}")
    patient = sample_patient(seed, f"{entry}-landmarks", index)
    pose = list(POSES)[index % len(POSES)]
    positioning = sample_positioning(seed, patient, pose, positioning_deg)
    full = render_pelvis(settings, scene, patient, pose, positioning, pitch_mm=RENDER_MM_PER_PX)
    geometry = full["geometry"]
    landmarks = _empty_landmarks()
    for hip in scene.bones:
        head, neck = geometry.project_points(np.stack([hip.head_centre_lps, hip.neck_point_lps]))
        landmarks[f"head_{hip.side}"], landmarks[f"neck_{hip.side}"] = _as_list(head), _as_list(neck)
    magnification = np.mean([geometry.magnification_at(np.asarray(hip.head_centre_lps)) for hip in scene.bones])
    spacing = (geometry.row_spacing_mm / magnification, geometry.column_spacing_mm / magnification)
    donors = tuple(sorted({hip.donor_ct for hip in scene.bones if hip.donor_ct}))
    radii = {hip.side: _rounded(hip.head_radius_mm) for hip in scene.bones}
    view = LandmarkView(view_id(entry, "ap", index), ct_id, "ap-pelvis", spacing, landmarks, anatomy, donors, radii)
    return view, full["images"]["radiograph"]


def screws_variant(hip: str) -> str:
    """The variant id of a hip (``<CT id>_<side>``) given virtual neck screws: its views' ``anatomy``, so that they
    train the detector but are never measured as the real bone."""
    return f"{hip}{SCREWS_SUFFIX}"


def screw_turn(index: int) -> int:
    """Which of two (view kind, or side) the ``index``-th screw view takes: in turn, swapped after every round of
    :data:`POSES` (views take the pose ``index % 4``), so each of the two gets every pose in the first eight."""
    return (index + index // len(POSES)) % 2


def every_hip_labelled(prepared_folder: Path, ct_id: str, labelled: int) -> bool:
    """Whether ``labelled`` prepared hips are every hip found in the CT (its sides record): a ``ct-as-scanned`` view
    shows the whole scan, so a hip left unprepared (an implant without ``allow_metal``) would be taught as absent."""
    record = sides_record_path(prepared_folder, ct_id)
    found = read_json_object(record, "prepared CT's sides record").get("sides", []) if record.is_file() else []
    return labelled >= len(found)


def ct_scan_view(
    prepared_folder: str, ct_id: str, index: int, seed: int, with_metal: bool = False
) -> tuple[LandmarkView, np.ndarray]:
    """One ``ct-as-scanned`` view of a CT (module docstring), with the landmarks of each of its prepared hips
    (``with_metal``: an implanted hip's too). The CT is the prepared one (HU, air outside the body)."""
    hips = prepared_hips_of(prepared_folder, ct_id, with_metal)
    hu = hips[0].hu  # every side of a CT keeps the whole CT
    rng = seeded_rng(seed, ct_id, "ct-as-scanned", index)
    start = default_ap_geometry(hu, pixel_spacing_mm=rng.uniform(*CT_VIEW_PITCH_MM), margin=CT_VIEW_MARGIN)
    tilt_deg, turn_deg = CT_VIEW_TURN_DEG
    angle = rng.uniform(0.0, 2.0 * np.pi)
    shift = rng.uniform(0.0, CT_VIEW_SHIFT_MM) * np.array([np.cos(angle), np.sin(angle)])
    pose = [*rng.uniform(-tilt_deg, tilt_deg, 2), rng.uniform(-turn_deg, turn_deg), *shift, 0.0]
    centre = np.mean([hip.head_centre_lps for hip in hips], axis=0)
    geometry = start.with_pose(camera_pose(np.array(pose), start.camera_from_lps, centre).numpy())
    image = simulate_radiograph(hu, geometry, rng=rng).pixels.astype(np.float32)
    landmarks = _empty_landmarks()
    for hip in hips:
        head, neck = geometry.project_points(np.stack([hip.head_centre_lps, hip.neck_point_lps]))
        landmarks[f"head_{hip.side}"], landmarks[f"neck_{hip.side}"] = _as_list(head), _as_list(neck)
    spacing = geometry.spacing_at_mm(centre)
    radii = {hip.side: _head_radius_mm(hip) for hip in hips}
    view = LandmarkView(view_id(ct_id, "ct", index), ct_id, "ct-as-scanned", spacing, landmarks, head_radius_mm=radii)
    return view, image


def single_hip_view(
    prepared_folder: str,
    key: str,
    ct_id: str,
    crop_to_hip: bool,
    kind: str,
    index: int,
    seed: int,
    anatomy: bool = False,
    screws: bool = False,
) -> tuple[LandmarkView, np.ndarray]:
    """One ``hip`` or ``thigh`` view (:data:`FIELDS_MM`) of one prepared hip (``anatomy``: a virtual anatomy's
    entry ``key``; ``screws``: the hip given virtual neck screws, a view of its variant :func:`screws_variant`), as
    that side looks in an AP image."""
    prepared, projector = ct_projector(prepared_folder, key, crop_to_hip=crop_to_hip, screws=screws)
    if screws:
        key, anatomy = screws_variant(key), True
    patient = sample_patient(seed, f"{key}-landmarks-{kind}", index)
    pose = sample_pose(seed, patient, list(POSES)[index % len(POSES)])
    field_mm, down_mm = FIELDS_MM[kind]
    shape = (int(round(field_mm[0] / RENDER_MM_PER_PX)), int(round(field_mm[1] / RENDER_MM_PER_PX)))
    geometry = hip_geometry(prepared, pose, shape, field_mm, down_mm)
    rng = seeded_rng(seed, key, kind, index, "acquisition")
    views, points, _, _ = oriented_hip_view(prepared, projector, patient, geometry, None, rng)
    image = views["radiograph"]
    if prepared.side == "left":  # a left hip as an AP radiograph shows it: head left of the shaft
        image, points[:, 0] = image[:, ::-1], image.shape[1] - 1 - points[:, 0]
    landmarks = _empty_landmarks()
    landmarks[f"head_{prepared.side}"], landmarks[f"neck_{prepared.side}"] = _as_list(points[0]), _as_list(points[1])
    spacing = geometry.spacing_at_mm(prepared.head_centre_lps)
    donors = (prepared.donor_ct,) if prepared.donor_ct else ()  # a whole pelvis's hip views are cropped to the hip
    radii = {prepared.side: _head_radius_mm(prepared)}
    view = LandmarkView(
        view_id(key, kind, index), ct_id, kind, spacing, landmarks, key if anatomy else None, donors, radii
    )
    return view, np.ascontiguousarray(image)


def simulate_landmark_views(
    prepared_folder: str,
    ct_ids: list[str],
    out: str,
    per_hip: int,
    ap_per_ct: int,
    seed: int,
    progress: bool = True,
    anatomies: dict[str, list[str]] | None = None,
    per_anatomy: int = 0,
    ap_per_anatomy: int = 0,
    with_metal: bool = False,
    ct_views: int = 0,
    screw_views: int = 0,
    ap_positioning_deg: tuple[float, float, float] | None = None,
) -> dict:
    """Make (or finish) the landmark views of every prepared hip of ``ct_ids`` in ``out``
    (:mod:`.landmark_folder`): ``per_hip`` ``hip`` and as many ``thigh`` views of each hip and, for a CT with both
    hips prepared, ``ap_per_ct`` AP pelvis views; the same of every prepared virtual anatomy in ``anatomies``
    ({CT id: anatomy or transplant entry ids}, :func:`bmdgan.cohort.anatomy.prepare_anatomies`,
    :func:`bmdgan.cohort.transplant.prepare_transplants`) with ``per_anatomy`` and ``ap_per_anatomy``;
    ``with_metal``: hips prepared with an implant too (users' radiographs show them; such a CT's AP pelvis views
    need both hips); ``ct_views`` ``ct-as-scanned`` views of each CT (of the real CTs only); ``screw_views`` views of
    each implant-free real hip with virtual neck screws (:mod:`bmdgan.cohort.implant`; ``hip`` and ``thigh`` in
    turn), and as many AP pelvis views of a CT with two such hips, the screws in each side in turn;
    ``ap_positioning_deg``: the AP pelvis views' rotation ranges on the table (:func:`ap_pelvis_view`). Returns the
    counts per view (``hip (anatomies)`` etc. apart)."""

    import torch

    torch.set_num_threads(1)
    done = done_ids(out)
    folder = Path(prepared_folder)
    tasks, hips_per_ct, anatomy_keys = [], {}, set()
    for ct_id in ct_ids:
        keys = prepared_bones(folder, ct_id, with_metal)
        hips_per_ct[ct_id] = len(keys)
        if keys and every_hip_labelled(folder, ct_id, len(keys)):
            tasks += [
                ("ct", ct_id, None, index, False)
                for index in range(ct_views)
                if view_id(ct_id, "ct", index) not in done
            ]
        plain = prepared_bones(folder, ct_id)
        screwed = [
            (SCREW_KINDS[screw_turn(index)], ct_id, key, index, True) for key in plain for index in range(screw_views)
        ]
        tasks += [task for task in screwed if view_id(screws_variant(task[2]), task[0], task[3]) not in done]
        if len(plain) >= 2:
            screwed_ap = [("ap", ct_id, SIDES[screw_turn(index)], index, True) for index in range(screw_views)]
            tasks += sorted(  # one side after the other: a worker builds each side's scene once
                (
                    task
                    for task in screwed_ap
                    if view_id(screws_variant(f"{ct_id}_{task[2]}"), "ap", task[3]) not in done
                ),
                key=lambda task: task[2],
            )
        entries = [(None, keys, per_hip, ap_per_ct)]  # (anatomy entry, its hips, views per hip, AP views)
        for entry in (anatomies or {}).get(ct_id, []):
            bones = prepared_bones(folder, entry)
            anatomy_keys.update(bones)
            entries.append((entry, bones, per_anatomy, ap_per_anatomy))
        for entry, bones, count, ap_count in entries:
            if len(bones) >= 2:
                tasks += [
                    ("ap", ct_id, entry, index, False)
                    for index in range(ap_count)
                    if view_id(entry or ct_id, "ap", index) not in done
                ]
            tasks += [
                (kind, ct_id, key, index, False)
                for key in bones
                for kind in FIELDS_MM
                for index in range(count)
                if view_id(key, kind, index) not in done
            ]
    if not tasks and not done:
        raise InputError(
            out,
            "no view to render: these CTs have none of the views asked for (an AP pelvis view needs a CT or body "
            "with both hips prepared; moved femurs and transplants need a whole pelvis with both hips measurable)",
            "ask for views the CTs have: --per-hip, --ap-per-ct, --ct-views, --screw-views, or bodies with "
            "--ap-per-anatomy",
        )
    # a task: (view kind, CT id, anatomy entry / hip key / screwed side, view index, with virtual screws)
    for kind, ct_id, key, index, screws in progress_bar(tasks, desc="landmark views", disable=not progress):
        if kind == "ap" and screws:
            view, image = ap_pelvis_view(
                prepared_folder, ct_id, index, seed, screws_side=key, positioning_deg=ap_positioning_deg
            )
        elif kind == "ap":
            view, image = ap_pelvis_view(
                prepared_folder, ct_id, index, seed, key, with_metal and key is None, positioning_deg=ap_positioning_deg
            )
        elif kind == "ct":
            view, image = ct_scan_view(prepared_folder, ct_id, index, seed, with_metal)
        else:  # a single-hip view, of the hip as it is or with screws
            crop = hips_per_ct[ct_id] > 1
            view, image = single_hip_view(
                prepared_folder, key, ct_id, crop, kind, index, seed, key in anatomy_keys, screws=screws
            )
        add_view(out, view, image)
    counts: dict[str, int] = {}
    for view in read_views(out):
        variant = " (screws)" if (view.anatomy or "").endswith(SCREWS_SUFFIX) else " (anatomies)"
        name = view.view + (variant if view.anatomy else "")
        counts[name] = counts.get(name, 0) + 1
    return counts
