"""The virtual cohort: many virtual patients per real CT, each in several poses, with ground truth.

For one image: the CT is turned about the femoral-head centre (the pose), viewed AP by a cone beam centred on
the proximal femur, projected once into the linear channels of :mod:`.channels`, combined with the patient's
bone and fat, turned into a radiograph by the simulator (acquisition drawn per image), and oriented like
a right hip with the head up (:mod:`bmdgan.datasets.normalise`'s convention) from the projected landmarks:
the CT headers' orientation is never trusted. Ground truth comes from the same projection (DRRs) and from
the CT measurements scaled by the same factors (aBMD, vBMD are linear in the mineral).

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

from ..datasets.folds import assign_patient_folds, check_fold_count, group_of_records, source_ct_of
from ..datasets.format import (CaseRecord, DatasetWriter, existing_header, read_manifest, refuse_changed_settings,
                               rewrite_manifest, update_header)
from ..errors import InputError
from ..worker_lifetime import die_with_parent
from .channels import CHANNELS, channel_volumes, combine, pad_across_beam
from .prepared_ct import PreparedCT, has_prepared, load_prepared, prepare_ct, save_prepared
from .virtual_patient import POSES, PoseDraw, VirtualPatient, sample_patient, sample_pose, seeded_rng

FIELD_OF_VIEW_MM = (280.0, 140.0)
"""Height and width covered at the femoral head (mm): one hip from above the acetabulum to the upper shaft."""


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


def hip_geometry(prepared: PreparedCT, pose: PoseDraw, image_shape: tuple[int, int]):
    """Cone-beam view of the hip in its anatomical frame: columns along the neck (lateral), rows down the shaft,
    the beam along the frame's AP axis; the pose turns the CT about the head centre (internal rotation about the
    shaft axis, abduction about the AP axis); the PF region is centred, plus a shift."""
    from ..projection.geometry import ProjectionGeometry

    lateral, ap, up = np.asarray(prepared.frame_axes, float)
    head = prepared.head_centre_lps
    turn = _rotation_about(up, pose.internal_rotation_deg) @ _rotation_about(ap, pose.abduction_deg)
    about_head = np.eye(4)
    about_head[:3, :3] = turn
    about_head[:3, 3] = head - turn @ head
    view = np.stack([lateral, -up, np.cross(lateral, -up)])  # camera x, y (rows go down), z (beam)
    source_to_centre = pose.source_to_detector_mm - pose.object_to_detector_mm
    camera_from_lps = np.eye(4)
    camera_from_lps[:3, :3] = view
    camera_from_lps[:3, 3] = np.array([0.0, 0.0, source_to_centre]) - view @ prepared.pf_centre_lps
    camera_from_lps = camera_from_lps @ about_head
    magnification = pose.source_to_detector_mm / source_to_centre
    rows, columns = image_shape
    pitch = FIELD_OF_VIEW_MM[0] / rows * magnification
    shift_rows, shift_columns = (np.asarray(pose.detector_shift_mm) * magnification / pitch)
    return ProjectionGeometry(pose.source_to_detector_mm, columns, rows, pitch, pitch,
                              ((columns - 1) / 2.0 + shift_columns, (rows - 1) / 2.0 + shift_rows), camera_from_lps)


def _rotation_about(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rodrigues rotation matrix about a unit ``axis`` (LPS) by ``angle_deg``."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(angle_deg)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def orientation_flips(prepared: PreparedCT, geometry) -> tuple[bool, bool]:
    """(flip rows, flip columns) that put the head above the shaft and medial to it on the image's right,
    like a right hip in an AP view (the dataset convention); decided from the projected landmarks."""
    head, shaft = geometry.project_points(np.stack([prepared.head_centre_lps, prepared.shaft_point_lps]))
    return bool(head[1] > shaft[1]), bool(head[0] < shaft[0])


_WORKER_CACHE: dict = {}


def ct_projector(prepared_folder: str, ct_id: str):
    """The CT's 8-channel projector, built once per worker process."""
    if _WORKER_CACHE.get("ct_id") != ct_id:
        from ..projection.projector import Projector

        prepared = load_prepared(Path(prepared_folder), ct_id)
        hu, (density, bone, pf), geometry = pad_across_beam(
            prepared.hu.array, [prepared.density_mg_cm3, prepared.bone_mask, prepared.pf_mask], prepared.hu.geometry)
        volumes = channel_volumes(hu, density, bone, pf)
        _WORKER_CACHE.update(ct_id=ct_id, prepared=prepared,
                             projector=Projector(volumes, geometry.ijk_to_lps(), unit="mg/cm3",
                                                 channel_names=list(CHANNELS)))
    return _WORKER_CACHE["prepared"], _WORKER_CACHE["projector"]


def simulate_case(settings: CohortSettings, prepared: PreparedCT, projector, patient: VirtualPatient, pose_name: str):
    """One image: (manifest record, oriented images, the simulator's SimulatedRadiograph before orientation)."""
    from ..projection.simulator import simulate_radiograph
    from ..projection.site_protocol import parse_acquisition

    pose = sample_pose(settings.seed, patient, pose_name)
    geometry = hip_geometry(prepared, pose, settings.image_shape)
    projected = dict(zip(CHANNELS, projector.project(geometry)))
    parts = combine(projected, patient.trabecular_factor, patient.cortical_factor, patient.extra_fat_mm,
                    geometry.row_spacing_mm)
    case_id = f"{patient.patient_id}-{pose_name}"
    rng = seeded_rng(settings.seed, case_id, "acquisition")
    site = parse_acquisition(settings.acquisition)
    parameters = site.parameters_for(rng, patient.extra_fat_mm) if site else None
    simulated = simulate_radiograph(prepared.hu, geometry, parameters, rng=rng,
                                    areal_density_g_per_cm2=parts["materials"])
    flip_rows, flip_columns = orientation_flips(prepared, geometry)
    images = {"radiograph": simulated.pixels.astype(np.float32), "drr_stage1": parts["drr_stage1"],
              "drr_pf": parts["drr_pf"]}
    for name, image in images.items():
        image = image[::-1] if flip_rows else image
        images[name] = np.ascontiguousarray(image[:, ::-1] if flip_columns else image)
    record = CaseRecord(
        case_id, patient.patient_id, prepared.side, pose=pose_name, mirrored=flip_columns,
        ct_abmd_g_cm2=patient.trabecular_factor * prepared.abmd_components_g_cm2[0]
        + patient.cortical_factor * prepared.abmd_components_g_cm2[1],
        qct_vbmd_mg_cm3=patient.trabecular_factor * prepared.vbmd_components_mg_cm3[0]
        + patient.cortical_factor * prepared.vbmd_components_mg_cm3[1],
        provenance=json.dumps({"ct": prepared.ct_id, "k_trab": round(patient.trabecular_factor, 4),
                               "k_cort": round(patient.cortical_factor, 4), "bmi": round(patient.bmi_kg_m2, 1),
                               "rotation_deg": round(pose.internal_rotation_deg, 2),
                               "abduction_deg": round(pose.abduction_deg, 2),
                               "sid_mm": round(pose.source_to_detector_mm, 1),
                               "kev": round(simulated.parameters.effective_energy_kev, 1)}, separators=(",", ":")))
    return record, images, simulated


def make_patient_cases(settings: CohortSettings, ct_id: str, index: int) -> list[tuple[CaseRecord, dict]]:
    """Every pose of one virtual patient: (manifest record, images) each."""
    import torch

    torch.set_num_threads(1)
    prepared, projector = ct_projector(settings.prepared_folder, ct_id)
    patient = sample_patient(settings.seed, ct_id, index)
    return [simulate_case(settings, prepared, projector, patient, pose)[:2] for pose in settings.poses]


KEPT_ON_RESUME = ("seed", "acquisition", "folds", "fold_by")
"""Settings a cohort keeps when resumed or extended: others would mix two cohorts' patients or move cases between
folds under a training run (which would then train on its held-out fold)."""


def check_cohort_request(settings: CohortSettings, ct_ids: list[str], out: str | Path) -> list[str]:
    """Refuse, before any work, what ``simulate_cohort`` could not finish well: a cohort in ``out`` made with other
    :data:`KEPT_ON_RESUME` settings, an unknown fold grouping, fewer than two folds, or folds by CT with fewer CTs
    (already in the cohort and given now) than folds. Returns every CT id the cohort will then hold."""
    header = existing_header(out)
    refuse_changed_settings(out, header.get("settings"), {key: getattr(settings, key) for key in KEPT_ON_RESUME},
                            defaults={"fold_by": "patient", "acquisition": "varied"})  # made before these existed
    group_of_records(settings.fold_by)
    check_fold_count(settings.folds)
    earlier = [*header.get("ct_ids", []), *(source_ct_of(r) for r in read_manifest(out))] if header else []
    all_ct_ids = list(dict.fromkeys([*earlier, *ct_ids]))
    if settings.fold_by == "ct" and len(all_ct_ids) < settings.folds:
        raise InputError(out, f"{len(all_ct_ids)} CTs cannot fill {settings.folds} folds by CT",
                         "give more CTs, a smaller --fold-count, or --fold-by patient")
    return all_ct_ids


def simulate_cohort(settings: CohortSettings, ct_ids: list[str], out: str | Path, workers: int = 2,
                    progress: bool = True) -> dict:
    """Generate (or finish, or extend with more CTs or patients) the cohort in ``out``; returns counts and the time
    taken. ``dataset.json`` then lists every CT of the cohort and the settings of this latest call."""
    from ..progress import progress_bar

    start = time.perf_counter()
    all_ct_ids = check_cohort_request(settings, ct_ids, out)
    header_settings = {**settings.__dict__, "poses": list(settings.poses)}
    writer = DatasetWriter(out, settings.image_shape, {
        "source": "bmdgan simulate-cohort", "settings": header_settings,
        "ct_ids": all_ct_ids, "normalisation": "one hip per image, oriented as a right hip in an AP view, "
                                               "head up (bmdgan.datasets.normalise)"})
    tasks = [(ct_id, index) for ct_id in ct_ids for index in range(settings.patients_per_ct)
             if any(f"{ct_id}-v{index:03d}-{pose}" not in writer.done for pose in settings.poses)]
    written = 0
    with ProcessPoolExecutor(max_workers=max(1, workers), initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:  # SIGKILL of this process ends the workers too
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
    return {"images": len(records), "written_now": written, "patients": len({r.patient_id for r in records}),
            "cts": len({source_ct_of(r) for r in records}), "seconds": time.perf_counter() - start}


def ct_id_of(path: Path) -> str:
    return path.name.split(".")[0]


def prepare_cts(paths: list[Path], prepared_folder: Path, progress: bool = True,
                segmentations: dict[str, tuple[str, list[Path]]] | None = None) -> tuple[list[str], dict[str, str]]:
    """Prepare (or reuse the cache of) every CT; returns (usable CT ids, {skipped CT id: reason}).
    ``segmentations``: {CT id: (side, label files)} for CTs whose femur should come from a given segmentation."""
    from ..progress import progress_bar

    from ..errors import BMDGANError

    usable, skipped = [], {}
    for path in progress_bar(paths, desc="preparing CTs", disable=not progress):
        ct_id = ct_id_of(path)
        if not has_prepared(prepared_folder, ct_id):
            try:
                side, files = (segmentations or {}).get(ct_id, ("auto", None))
                save_prepared(prepare_ct(path, ct_id, side, files), prepared_folder)
            except BMDGANError as error:
                skipped[ct_id] = str(error)
                continue
        usable.append(ct_id)
    return usable, skipped
