"""The virtual cohort: many virtual patients per real CT, each in several poses, with ground truth.

For one image: the CT is turned about the femoral-head centre (the pose), viewed AP by a cone beam centred on
the proximal femur, projected once into the linear channels of :mod:`.channels`, combined with the patient's
bone and fat, turned into a radiograph by the simulator (acquisition drawn per image), and oriented like
a right hip with the head up (:mod:`bmdgan.datasets.normalise`'s convention) from the projected landmarks:
the CT headers' orientation is never trusted. Ground truth comes from the same projection (DRRs) and from
the CT measurements scaled by the same factors (aBMD, vBMD are linear in the mineral).

Views (``CohortSettings.view``): ``hip`` is the single-hip view above; ``ap-pelvis`` is the clinic's AP pelvis
radiograph of a whole-pelvis CT, split at the centre line into one case per hip (:mod:`.pelvis_case`);
``auto`` takes ``ap-pelvis`` for a CT whose two hips were prepared and ``hip`` for a CT with one. A CT with two
hips gives two virtual bones (one per side) in either view; its cases carry the side in their id.

Work is split by virtual patient over processes; the parent writes each case (images first, then its manifest
row) in a fixed order, so a killed run resumes where it stopped and a seed always gives the same dataset.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..datasets.folds import assign_patient_folds, check_fold_count, group_of_records, source_ct_of
from ..datasets.format import (
    CaseRecord,
    DatasetWriter,
    existing_header,
    read_manifest,
    refuse_changed_settings,
    rewrite_manifest,
    update_header,
)
from ..datasets.normalise import apply_hip_roi, plan_hip_roi, render_pitch_mm
from ..errors import BMDGANError, InputError
from ..io import VolumeGeometry, read_ct
from ..progress import progress_bar
from ..projection.geometry import ProjectionGeometry, rotation_about
from ..worker_lifetime import die_with_parent
from .channels import CHANNELS, channel_volumes, combine, pad_across_beam
from .implant import with_neck_screws, with_screws_on
from .prepared_ct import (
    PreparedCT,
    has_prepared,
    load_prepared,
    pf_scan_cuts,
    prepare_ct,
    prepared_bones,
    save_prepared,
    side_key,
    sides_record_path,
)
from .virtual_patient import BONE_DRAWS, POSES, PoseDraw, VirtualPatient, sample_patient, sample_pose, seeded_rng

FIELD_OF_VIEW_MM = (280.0, 140.0)
"""Height and width covered at the femoral head (mm): one hip from above the acetabulum to the upper shaft."""
RENDER_FIELD_MM = (360.0, 220.0)
"""Height and width (mm at the PF centre) a single-hip view is simulated over before the model's input region
(:data:`bmdgan.datasets.normalise.ROI_MM`) is cut from it around the head: room for the region's place and turn
to vary with the bone and pose."""


def render_shape(output_shape: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns a single-hip view over :data:`RENDER_FIELD_MM` is simulated with, for a model input of
    ``output_shape`` (:func:`bmdgan.datasets.normalise.render_pitch_mm`)."""
    pitch = render_pitch_mm(output_shape)
    return int(round(RENDER_FIELD_MM[0] / pitch)), int(round(RENDER_FIELD_MM[1] / pitch))


HIP_BOX_MM = (160.0, 220.0, 200.0)
"""Half-width (x), extent below and extent above (z) of the part of a whole-pelvis CT (mm, around the PF centre)
that one hip's single-hip view can reach (its field of view, magnified at the body's front, turned by the poses);
cropping to it keeps the projector's memory to one hip."""
VIEWS = ("auto", "hip", "ap-pelvis")


@dataclass(frozen=True)
class CohortSettings:
    prepared_folder: str
    seed: int = 0
    patients_per_ct: int = 9
    poses: tuple[str, ...] = tuple(POSES)
    image_shape: tuple[int, int] = (512, 256)
    folds: int = 5
    acquisition: str = "reference"
    """``reference``, ``site:N`` or ``varied`` (:func:`bmdgan.projection.site_protocol.parse_acquisition`)."""
    fold_by: str = "patient"
    """``patient`` (virtual patients, as the paper) or ``ct`` (whole source CTs: held-out bones never seen)."""
    view: str = "auto"
    """``hip``, ``ap-pelvis`` or ``auto`` (AP pelvis for a CT with two prepared hips; see the module docstring)."""
    bone_draw: str = "population"
    """``population`` (each patient's aBMD drawn from the adult population) or ``source`` (x the source's density):
    :data:`bmdgan.cohort.virtual_patient.BONE_DRAWS`."""


def view_of(view: str, bone_count: int) -> str:
    """The view a CT with ``bone_count`` prepared hips gets under the ``view`` setting."""
    if view not in VIEWS:
        raise InputError(None, f"unknown view {view!r}", f"use one of {', '.join(VIEWS)}")
    return ("ap-pelvis" if bone_count >= 2 else "hip") if view == "auto" else view


def bone_sides(prepared_folder: str | Path, ct_id: str) -> list[tuple[str, str]]:
    """(cache key, side) of every prepared hip of a CT (read from the small JSON descriptions only)."""
    folder = Path(prepared_folder)
    return [(key, json.loads((folder / f"{key}.json").read_text())["side"]) for key in prepared_bones(folder, ct_id)]


def case_ids(settings: CohortSettings, ct_id: str, index: int) -> list[str]:
    """Ids of every case one virtual patient of a CT gives (to find what a resumed run still has to make)."""
    from .pelvis_case import pelvis_case_id

    sides = [side for _, side in bone_sides(settings.prepared_folder, ct_id)]
    patient_id = f"{ct_id}-v{index:03d}"
    if view_of(settings.view, len(sides)) == "ap-pelvis" or len(sides) > 1:
        return [pelvis_case_id(patient_id, pose, side) for side in sides for pose in settings.poses]
    return [f"{patient_id}-{pose}" for pose in settings.poses]


def hip_geometry(
    prepared: PreparedCT,
    pose: PoseDraw,
    image_shape: tuple[int, int],
    field_of_view_mm: tuple[float, float] = FIELD_OF_VIEW_MM,
    centre_down_mm: float = 0.0,
):
    """Cone-beam view of the hip in its anatomical frame: columns along the neck (lateral), rows down the shaft,
    the beam along the frame's AP axis; the pose turns the CT about the head centre (internal rotation about the
    shaft axis, abduction about the AP axis); the PF region is centred (or a point ``centre_down_mm`` below it
    along the shaft), plus a shift. ``field_of_view_mm``: height and width covered at the centre (mm); the
    pixel pitch follows from its height and ``image_shape``."""

    lateral, ap, up = np.asarray(prepared.frame_axes, float)
    head = prepared.head_centre_lps
    turn = rotation_about(up, pose.internal_rotation_deg) @ rotation_about(ap, pose.abduction_deg)
    about_head = np.eye(4)
    about_head[:3, :3] = turn
    about_head[:3, 3] = head - turn @ head
    view = np.stack([lateral, -up, np.cross(lateral, -up)])  # camera x, y (rows go down), z (beam)
    source_to_centre = pose.source_to_detector_mm - pose.object_to_detector_mm
    camera_from_lps = np.eye(4)
    camera_from_lps[:3, :3] = view
    centre = prepared.pf_centre_lps - centre_down_mm * up
    camera_from_lps[:3, 3] = np.array([0.0, 0.0, source_to_centre]) - view @ centre
    camera_from_lps = camera_from_lps @ about_head
    magnification = pose.source_to_detector_mm / source_to_centre
    rows, columns = image_shape
    pitch = field_of_view_mm[0] / rows * magnification
    shift_rows, shift_columns = np.asarray(pose.detector_shift_mm) * magnification / pitch
    return ProjectionGeometry(
        pose.source_to_detector_mm,
        columns,
        rows,
        pitch,
        pitch,
        ((columns - 1) / 2.0 + shift_columns, (rows - 1) / 2.0 + shift_rows),
        camera_from_lps,
    )


def orientation_flips(prepared: PreparedCT, geometry) -> tuple[bool, bool]:
    """(flip rows, flip columns) that put the head above the shaft and medial to its neck, on the image's right,
    like a right hip in an AP view (the dataset convention); decided from the projected landmarks. The columns
    follow the neck point (lateral of the head by construction), not the shaft point: on a short scan the shaft
    point is set straight below the head and says nothing about the side."""
    head, shaft, neck = geometry.project_points(
        np.stack([prepared.head_centre_lps, prepared.shaft_point_lps, prepared.neck_point_lps])
    )
    return bool(head[1] > shaft[1]), bool(head[0] < neck[0])


def oriented(image: np.ndarray, flip_rows: bool, flip_columns: bool) -> np.ndarray:
    """``image`` flipped as :func:`orientation_flips` says: a right hip with the head up (a view, not a copy)."""
    image = image[::-1] if flip_rows else image
    return image[:, ::-1] if flip_columns else image


_WORKER_CACHE: dict = {}


def _hip_box(prepared: PreparedCT) -> tuple[slice, ...]:
    """Index box [k, j, i] of a whole-pelvis CT that one hip's single-hip view can reach (:data:`HIP_BOX_MM`)."""
    half_x, below, above = HIP_BOX_MM
    centre = prepared.pf_centre_lps
    corners = np.array(
        [
            [centre[0] + dx, centre[1] + dy, centre[2] + dz, 1.0]
            for dx in (-half_x, half_x)
            for dy in (-1e4, 1e4)
            for dz in (-below, above)
        ]
    )
    ijk = (np.linalg.inv(prepared.hu.geometry.ijk_to_lps()) @ corners.T)[:3]
    shape_ijk = prepared.hu.shape_ijk
    box = [
        slice(max(int(np.floor(ijk[a].min())), 0), min(int(np.ceil(ijk[a].max())) + 1, shape_ijk[a])) for a in range(3)
    ]
    if prepared.body_mask is not None and prepared.body_mask.any():  # nothing but air beyond the body in depth
        present = np.nonzero(prepared.body_mask.any(axis=(0, 2)))[0]
        box[1] = slice(max(box[1].start, int(present[0]) - 1), min(box[1].stop, int(present[-1]) + 2))
    return box[2], box[1], box[0]


def ct_projector(prepared_folder: str, key: str, crop_to_hip: bool = False, screws: bool = False):
    """One hip's 8-channel projector (single-hip view), built once per worker process; ``crop_to_hip``: keep only
    the part of a whole-pelvis CT around that hip (:data:`HIP_BOX_MM`); ``screws``: with virtual neck screws
    (:func:`bmdgan.cohort.implant.with_neck_screws`)."""
    if _WORKER_CACHE.get("key") != ("hip", key, screws):
        from ..projection.projector import Projector

        _WORKER_CACHE.clear()
        prepared = load_prepared(Path(prepared_folder), key)
        if screws:
            prepared = with_neck_screws(prepared)
        arrays = [prepared.hu.array, prepared.density_mg_cm3, prepared.bone_mask, prepared.pf_mask]
        geometry = prepared.hu.geometry
        if crop_to_hip:
            box = _hip_box(prepared)
            arrays = [array[box] for array in arrays]
            start = np.array([box[2].start, box[1].start, box[0].start], float)
            geometry = VolumeGeometry(
                geometry.spacing_mm,
                tuple(np.asarray(geometry.origin_mm) + np.asarray(geometry.direction) @ (start * geometry.spacing_mm)),
                geometry.direction,
            )
        hu, (density, bone, pf), geometry = pad_across_beam(arrays[0], arrays[1:], geometry)
        volumes = channel_volumes(hu, density, bone, pf)
        _WORKER_CACHE.update(
            key=("hip", key, screws),
            prepared=prepared,
            projector=Projector(volumes, geometry.ijk_to_lps(), unit="mg/cm3", channel_names=list(CHANNELS)),
        )
    return _WORKER_CACHE["prepared"], _WORKER_CACHE["projector"]


def _load_hips(prepared_folder: str, ct_id: str, with_metal: bool) -> list[PreparedCT]:
    """Every prepared hip of a CT, read from disk (``with_metal``: an implanted hip too)."""
    folder = Path(prepared_folder)
    return [load_prepared(folder, key) for key in prepared_bones(folder, ct_id, with_metal)]


def pelvis_scene_of(prepared_folder: str, ct_id: str, with_metal: bool = False, screws_side: str | None = None):
    """The AP pelvis projector of a CT's prepared hips (``with_metal``: an implanted hip's too, for the detector's
    views; ``screws_side``: that hip given virtual neck screws), built once per worker process."""
    if _WORKER_CACHE.get("key") != ("ap-pelvis", ct_id, with_metal, screws_side):
        from .pelvis_case import pelvis_scene

        _WORKER_CACHE.clear()
        hips = _load_hips(prepared_folder, ct_id, with_metal)
        if screws_side is not None:
            hips = with_screws_on(hips, screws_side)
        _WORKER_CACHE.update(key=("ap-pelvis", ct_id, with_metal, screws_side), scene=pelvis_scene(hips))
    return _WORKER_CACHE["scene"]


def prepared_hips_of(prepared_folder: str, ct_id: str, with_metal: bool = False) -> list[PreparedCT]:
    """Every prepared hip of a CT (``with_metal``: an implanted hip too), loaded once per worker process: the
    ``ct-as-scanned`` views of one CT come one after another."""
    if _WORKER_CACHE.get("key") != ("hips", ct_id, with_metal):
        _WORKER_CACHE.clear()
        _WORKER_CACHE.update(key=("hips", ct_id, with_metal), hips=_load_hips(prepared_folder, ct_id, with_metal))
    return _WORKER_CACHE["hips"]


def oriented_hip_view(prepared: PreparedCT, projector, patient: VirtualPatient, geometry, parameters, rng):
    """One single-hip view simulated and oriented as a right hip with the head up: (images {radiograph, drr_stage1,
    drr_pf (g/cm2)}, the head centre and neck point [2, (column, row)] in them (pixels), the simulator's
    SimulatedRadiograph before orientation, whether the columns were flipped). ``parameters``: the acquisition
    (None: drawn from ``rng``)."""
    from ..projection.simulator import simulate_radiograph

    projected = dict(zip(CHANNELS, projector.project(geometry)))
    parts = combine(
        projected, patient.trabecular_factor, patient.cortical_factor, patient.extra_fat_mm, geometry.row_spacing_mm
    )
    simulated = simulate_radiograph(
        prepared.hu, geometry, parameters, rng=rng, areal_density_g_per_cm2=parts["materials"]
    )
    flip_rows, flip_columns = orientation_flips(prepared, geometry)
    views = {
        "radiograph": simulated.pixels.astype(np.float32),
        "drr_stage1": parts["drr_stage1"],
        "drr_pf": parts["drr_pf"],
    }
    points = geometry.project_points(np.stack([prepared.head_centre_lps, prepared.neck_point_lps]))
    rows, columns = views["radiograph"].shape
    for name, image in views.items():
        views[name] = oriented(image, flip_rows, flip_columns)
    if flip_rows:
        points[:, 1] = rows - 1 - points[:, 1]
    if flip_columns:
        points[:, 0] = columns - 1 - points[:, 0]
    return views, points, simulated, flip_columns


def simulate_case(
    settings: CohortSettings,
    prepared: PreparedCT,
    projector,
    patient: VirtualPatient,
    pose_name: str,
    with_side: bool = False,
):
    """One image: (manifest record, the input region's images, the simulator's SimulatedRadiograph before
    orientation, the whole simulated radiograph oriented as a right hip with the head up). ``with_side``: the case
    id ends with the hip's side (a CT with two hips)."""
    from ..projection.site_protocol import parse_acquisition

    pose = sample_pose(settings.seed, patient, pose_name)
    geometry = hip_geometry(prepared, pose, render_shape(settings.image_shape), RENDER_FIELD_MM)
    case_id = f"{patient.patient_id}-{pose_name}" + (f"-{prepared.side}" if with_side else "")
    rng = seeded_rng(settings.seed, case_id, "acquisition")
    site = parse_acquisition(settings.acquisition)
    parameters = site.parameters_for(rng, patient.extra_fat_mm) if site else None
    views, (head, neck), simulated, flip_columns = oriented_hip_view(
        prepared, projector, patient, geometry, parameters, rng
    )
    roi = plan_hip_roi(head, neck, "right", geometry.spacing_at_mm(prepared.head_centre_lps), settings.image_shape)
    images = {name: apply_hip_roi(image, roi, "edge" if name == "radiograph" else 0.0) for name, image in views.items()}
    provenance = {
        "ct": prepared.ct_id,
        **({"donor_ct": prepared.donor_ct} if prepared.donor_ct else {}),
        "k_trab": round(patient.trabecular_factor, 4),
        "k_cort": round(patient.cortical_factor, 4),
        "bmi": round(patient.bmi_kg_m2, 1),
        "rotation_deg": round(pose.internal_rotation_deg, 2),
        "abduction_deg": round(pose.abduction_deg, 2),
        "sid_mm": round(pose.source_to_detector_mm, 1),
        "kev": round(simulated.parameters.effective_energy_kev, 1),
        "head_centre_px": [round(float(head[0]), 1), round(float(head[1]), 1)],
        "neck_point_px": [round(float(neck[0]), 1), round(float(neck[1]), 1)],
        "pixel_mm_at_patient": round(float(roi.pixel_spacing_mm[0]), 4),
    }
    if with_side:
        provenance.update(side=prepared.side, view="hip")
    record = CaseRecord(
        case_id,
        patient.patient_id,
        prepared.side,
        pose=pose_name,
        mirrored=flip_columns,
        ct_abmd_g_cm2=patient.trabecular_factor * prepared.abmd_components_g_cm2[0]
        + patient.cortical_factor * prepared.abmd_components_g_cm2[1],
        qct_vbmd_mg_cm3=patient.trabecular_factor * prepared.vbmd_components_mg_cm3[0]
        + patient.cortical_factor * prepared.vbmd_components_mg_cm3[1],
        provenance=json.dumps(provenance, separators=(",", ":")),
    )
    return record, images, simulated, views["radiograph"]


def patient_of(settings: CohortSettings, ct_id: str, index: int, key: str) -> VirtualPatient:
    """The ``index``-th virtual patient of a CT; a population draw aims at the bone ``key``'s aBMD (the patient's
    other hip, if any, gets the same factors: one person, one skeleton)."""
    if settings.bone_draw not in BONE_DRAWS:
        raise InputError(None, f"unknown bone draw {settings.bone_draw!r}", f"use one of {', '.join(BONE_DRAWS)}")
    if settings.bone_draw == "source":
        return sample_patient(settings.seed, ct_id, index)
    description = json.loads((Path(settings.prepared_folder) / f"{key}.json").read_text())
    return sample_patient(settings.seed, ct_id, index, tuple(description["abmd_components_g_cm2"]))


def make_patient_cases(
    settings: CohortSettings, ct_id: str, index: int, key: str | None = None
) -> list[tuple[CaseRecord, dict]]:
    """Every case of one virtual patient of a CT: (manifest record, images) each. In the single-hip view of a CT
    with two hips, ``key`` names the hip (None: both, one after the other)."""
    import torch

    from .pelvis_case import pelvis_cases

    torch.set_num_threads(1)
    keys = prepared_bones(Path(settings.prepared_folder), ct_id)
    patient = patient_of(settings, ct_id, index, keys[0])
    if view_of(settings.view, len(keys)) == "ap-pelvis":
        scene = pelvis_scene_of(settings.prepared_folder, ct_id)
        return [case for pose in settings.poses for case in pelvis_cases(settings, scene, patient, pose)]
    cases = []
    for bone in [key] if key else keys:
        prepared, projector = ct_projector(settings.prepared_folder, bone, crop_to_hip=len(keys) > 1)
        cases += [
            simulate_case(settings, prepared, projector, patient, pose, with_side=len(keys) > 1)[:2]
            for pose in settings.poses
        ]
    return cases


INPUT_REGION = (
    "one hip per image: the region ROI_MM around the femoral head centre, neck axis horizontal, as a right hip "
    "(bmdgan.datasets.normalise)"
)
"""What every image of a cohort shows; a cohort made with another definition (earlier: each half of the image,
resized) cannot be resumed or extended."""
KEPT_ON_RESUME = ("seed", "acquisition", "folds", "fold_by", "view", "bone_draw")
"""Settings a cohort keeps when resumed or extended: others would mix two cohorts' patients or move cases between
folds under a training run (which would then train on its held-out fold)."""


def check_cohort_request(settings: CohortSettings, ct_ids: list[str], out: str | Path) -> list[str]:
    """Refuse, before any work, what ``simulate_cohort`` could not finish well: a cohort in ``out`` made with other
    :data:`KEPT_ON_RESUME` settings, an unknown fold grouping, fewer than two folds, or folds by CT with fewer CTs
    (already in the cohort and given now) than folds. Returns every CT id the cohort will then hold."""
    header = existing_header(out)
    refuse_changed_settings(
        out,
        header.get("settings"),
        {key: getattr(settings, key) for key in KEPT_ON_RESUME},
        defaults={"fold_by": "patient", "acquisition": "varied", "view": "auto", "bone_draw": "source"},
    )  # made before
    view_of(settings.view, 1)  # these existed
    group_of_records(settings.fold_by)
    check_fold_count(settings.folds)
    earlier = [*header.get("ct_ids", []), *(source_ct_of(r) for r in read_manifest(out))] if header else []
    all_ct_ids = list(dict.fromkeys([*earlier, *ct_ids]))
    if settings.fold_by == "ct" and len(all_ct_ids) < settings.folds:
        raise InputError(
            out,
            f"{len(all_ct_ids)} CTs cannot fill {settings.folds} folds by CT",
            "give more CTs, a smaller --fold-count, or --fold-by patient",
        )
    return all_ct_ids


def refuse_cut_cts(prepared_folder: Path, ct_ids: list[str], max_share: float, out: str | Path) -> dict[str, str]:
    """Reasons by CT id for the CTs whose scan cuts one of their PF regions by more than ``max_share`` of the
    region's section (:func:`bmdgan.cohort.prepared_ct.pf_scan_cuts`): their CT-aBMD would be that of the part in
    view. Raises if the cohort in ``out`` already holds one (it would keep its cases)."""
    refused = {}
    for ct_id in ct_ids:
        for key in prepared_bones(Path(prepared_folder), ct_id):
            face, worst = max(
                pf_scan_cuts(Path(prepared_folder), key).items(), key=lambda item: item[1], default=("", 0)
            )
            if worst > max_share:
                refused[ct_id] = (
                    f"the scan cuts {key}'s PF region ({face} face, {worst:.0%} of its section > --max-pf-cut "
                    f"{max_share:.0%}): its CT-aBMD would be that of the part in view"
                )
                break
    if held := sorted(set(refused) & set(existing_header(out).get("ct_ids", []))):
        raise InputError(
            out,
            f"the cohort already holds {', '.join(held)}, which --max-pf-cut refuses",
            "make the cohort in a new folder, or leave --max-pf-cut out to extend this one",
        )
    return refused


def simulate_cohort(
    settings: CohortSettings, ct_ids: list[str], out: str | Path, workers: int = 2, progress: bool = True
) -> dict:
    """Generate (or finish, or extend with more CTs or patients) the cohort in ``out``; returns counts and the time
    taken. ``dataset.json`` then lists every CT of the cohort and the settings of this latest call."""

    start = time.perf_counter()
    all_ct_ids = check_cohort_request(settings, ct_ids, out)
    header_settings = {**settings.__dict__, "poses": list(settings.poses)}
    writer = DatasetWriter(
        out,
        settings.image_shape,
        {
            "source": "bmdgan simulate-cohort",
            "settings": header_settings,
            "ct_ids": all_ct_ids,
            "normalisation": INPUT_REGION,
        },
    )
    tasks = []
    for ct_id in ct_ids:
        keys = prepared_bones(Path(settings.prepared_folder), ct_id)
        per_hip = view_of(settings.view, len(keys)) == "hip" and len(keys) > 1  # one hip's projector at a time
        for key in keys if per_hip else [None]:
            tasks += [
                (ct_id, index, key)
                for index in range(settings.patients_per_ct)
                if any(case not in writer.done for case in _task_case_ids(settings, ct_id, index, key))
            ]
    written = 0
    with ProcessPoolExecutor(
        max_workers=max(1, workers), initializer=die_with_parent, initargs=(os.getpid(),)
    ) as pool:  # SIGKILL of this process ends the workers too
        results = pool.map(make_patient_cases, [settings] * len(tasks), *zip(*tasks)) if tasks else []
        for cases in progress_bar(results, total=len(tasks), desc="virtual patients", disable=not progress):
            for record, images in cases:
                if record.case_id not in writer.done:
                    writer.add(record, images)
                    written += 1
    update_header(out, {"settings": header_settings, "ct_ids": all_ct_ids})
    records = read_manifest(out)
    group_of = group_of_records(settings.fold_by)
    if len({group_of(r) for r in records}) >= settings.folds:  # a partial cohort may be too small for folds
        rewrite_manifest(out, assign_patient_folds(records, settings.folds, settings.seed, settings.fold_by))
    return {
        "images": len(records),
        "written_now": written,
        "patients": len({r.patient_id for r in records}),
        "cts": len({source_ct_of(r) for r in records}),
        "seconds": time.perf_counter() - start,
    }


def _task_case_ids(settings: CohortSettings, ct_id: str, index: int, key: str | None) -> list[str]:
    ids = case_ids(settings, ct_id, index)
    if key is None:
        return ids
    side = json.loads((Path(settings.prepared_folder) / f"{key}.json").read_text())["side"]
    return [case for case in ids if case.endswith(f"-{side}")]


def ct_id_of(path: Path) -> str:
    return path.name.split(".")[0]


def prepare_cts(
    paths: list[Path],
    prepared_folder: Path,
    progress: bool = True,
    segmentations: dict[str, tuple[str, list[Path]]] | None = None,
    body_mask=None,
    allow_metal: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """Prepare (or reuse the cache of) every hip of every CT: both sides of a CT that holds two
    (:func:`bmdgan.ct.pipeline.hip_sides`), each under its own key. Returns (CT ids with at least one prepared hip,
    {skipped CT id or "CT id:side": reason}). ``segmentations``: {CT id: (side, label files)} for CTs whose femur
    should come from a given segmentation (that side only). ``body_mask``: a function giving a CT's body (bool
    [k, j, i]; default :func:`bmdgan.ct.pipeline.body_of`). ``allow_metal``: also prepare a hip with an implant
    in its PF region, the sides skipped before for one included (the sides record names them under
    ``implanted``), for the hip detector's views only (:func:`bmdgan.cohort.prepared_ct.prepared_bones` lists
    such a hip only ``with_metal``)."""

    from ..ct.pipeline import ImplantError, body_of, hip_sides

    usable, skipped = [], {}
    for path in progress_bar(paths, desc="preparing CTs", disable=not progress):
        ct_id = ct_id_of(path)
        record = sides_record_path(prepared_folder, ct_id)
        done = json.loads(record.read_text()) if record.is_file() else {}
        skipped_sides = [side for side in done.get("skipped", {}) if side in done.get("sides", [])]
        for_metal = done.get("implanted", skipped_sides)  # a record made before it named them: any skipped side
        retry = [  # sides skipped before for an implant, tried again with allow_metal
            side
            for side in skipped_sides
            if allow_metal and side in for_metal and not has_prepared(prepared_folder, side_key(ct_id, side))
        ]
        if (record.is_file() or has_prepared(prepared_folder, ct_id)) and not retry:  # done (or made before sides)
            skipped.update({f"{ct_id}:{side}": reason for side, reason in done.get("skipped", {}).items()})
            if prepared_bones(prepared_folder, ct_id, with_metal=allow_metal):
                usable.append(ct_id)
            continue
        side, files = (segmentations or {}).get(ct_id, ("auto", None))
        try:  # one CT object: bmdgan.ct searches its hips once, for its sides and for each side's analysis
            ct = read_ct(path)
            body = body_mask(ct) if callable(body_mask) else body_of(ct)
            sides = done.get("sides") or ([side] if files else (hip_sides(ct) or ["auto"]))  # none: 'auto' says why
        except BMDGANError as error:
            skipped[ct_id] = str(error)
            continue
        failed, implanted = {}, []
        for side in sides:
            if has_prepared(prepared_folder, side_key(ct_id, side)):
                continue
            try:
                prepared = prepare_ct(ct, ct_id, side, files, body, allow_metal)
            except BMDGANError as error:
                failed[side] = str(error)
                implanted += [side] if isinstance(error, ImplantError) else []
                continue
            save_prepared(prepared, prepared_folder)
            if prepared.implanted:
                implanted.append(side)
                failed[side] = (
                    f"the {side} hip has metal ({prepared.metal_in_pf_cm3:.2f} cm3) in its proximal-femur region: "
                    "prepared for the hip detector's views only (--allow-metal), not measured"
                )
        skipped.update({f"{ct_id}:{side}" if len(sides) > 1 else ct_id: reason for side, reason in failed.items()})
        entry = {"ct_id": ct_id, "sides": sides, "skipped": failed, "implanted": implanted}
        atomic_write_text(record, json.dumps(entry, indent=2) + "\n")
        if prepared_bones(prepared_folder, ct_id, with_metal=allow_metal):
            usable.append(ct_id)
    return usable, skipped
