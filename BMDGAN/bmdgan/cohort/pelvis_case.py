"""AP pelvis cases of the virtual cohort: one radiograph of both hips of a whole-pelvis CT, split at the centre
line into one case per hip with that hip's own ground truth (the paper's images, section 3.1).

The whole-pelvis CT's hips are prepared side by side (:mod:`.prepared_ct`); one projection of the body in the
CT's LPS frame (:mod:`bmdgan.projection.ap_pelvis`: couch and wires removed, detector collimated to the scanned
range) gives the radiograph, the stage-1 DRR (every labelled bone: pelvis and both femurs) and one PF-DRR per
hip. Each hip's input region is then cut around its projected head centre, oriented by its neck axis and mirrored for
a left hip by :mod:`bmdgan.datasets.normalise`, the code that cuts a user's radiograph at inference (there from
the hip detector's landmarks).

Positioning: a virtual patient lies on the table a little rotated or tilted (:data:`POSITIONING_DEG`); the
leg poses of the single-hip view (internal rotation, abduction) move the femur against the pelvis, which a
rigid CT cannot do, so in this view every pose name draws positioning only (the name is kept in the record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..datasets.format import CaseRecord
from ..datasets.normalise import apply_hip_roi, plan_hip_roi, render_pitch_mm
from ..io import Volume, VolumeGeometry
from ..projection.ap_pelvis import (
    Collimation,
    ap_pelvis_centre,
    ap_pelvis_geometry,
    body_of_cleaned,
)
from ..projection.geometry import rotation_about
from .channels import combine, pelvis_channel_volumes, side_channels
from .prepared_ct import PreparedCT, head_radius_mm
from .virtual_patient import VirtualPatient, seeded_rng

POSITIONING_DEG = {"about_long_axis": 5.0, "about_left_right_axis": 5.0, "about_ap_axis": 3.0}
"""Half-ranges (degrees) of the patient's rotation on the table in an AP pelvis: rotation about the long axis
(one side lifted; obturator foramina and iliac wings become asymmetric), pelvic tilt about the left-right
axis and in-plane tilt about the beam, as positioning varies between technologists."""
SOURCE_TO_DETECTOR_RANGE_MM = (1000.0, 1150.0)
OBJECT_TO_DETECTOR_RANGE_MM = (150.0, 250.0)
"""Pelvis mid-plane to detector: table-to-bucky gap plus half the body's depth (mm)."""
DETECTOR_SHIFT_MM = 15.0
"""Half-range of the centring error of the detector in its plane (mm, each direction)."""


@dataclass(frozen=True)
class Positioning:
    """One AP pelvis acquisition's patient rotation (degrees about LPS z, x, y), detector shift and distances."""

    about_long_axis_deg: float
    about_left_right_axis_deg: float
    about_ap_axis_deg: float
    detector_shift_mm: tuple[float, float]
    source_to_detector_mm: float
    object_to_detector_mm: float

    def turn(self) -> np.ndarray:
        """3x3 rotation (LPS) of the patient about the view's centre."""
        return (
            rotation_about(np.array([0.0, 0.0, 1.0]), self.about_long_axis_deg)
            @ rotation_about(np.array([1.0, 0.0, 0.0]), self.about_left_right_axis_deg)
            @ rotation_about(np.array([0.0, 1.0, 0.0]), self.about_ap_axis_deg)
        )


def sample_positioning(
    seed: int, patient: VirtualPatient, pose_name: str, limits_deg: tuple[float, float, float] | None = None
) -> Positioning:
    """The patient's rotation on the table (uniform within ``limits_deg``, half-ranges in degrees about the axes of
    :data:`POSITIONING_DEG` in its order; default its values), the detector's shift and the distances of one AP
    pelvis."""
    rng = seeded_rng(seed, patient.patient_id, pose_name, "ap-pelvis")
    angles = [float(rng.uniform(-limit, limit)) for limit in (limits_deg or tuple(POSITIONING_DEG.values()))]
    shift = (
        float(rng.uniform(-DETECTOR_SHIFT_MM, DETECTOR_SHIFT_MM)),
        float(rng.uniform(-DETECTOR_SHIFT_MM, DETECTOR_SHIFT_MM)),
    )
    return Positioning(
        *angles,
        shift,
        float(rng.uniform(*SOURCE_TO_DETECTOR_RANGE_MM)),
        float(rng.uniform(*OBJECT_TO_DETECTOR_RANGE_MM)),
    )


@dataclass(frozen=True)
class Hip:
    """What a case needs of one prepared hip once its channels are built: side and the parts of its ground truth."""

    ct_id: str
    side: str
    abmd_components_g_cm2: tuple[float, float]
    vbmd_components_mg_cm3: tuple[float, float]
    head_centre_lps: tuple[float, float, float]
    neck_point_lps: tuple[float, float, float]
    donor_ct: str = ""
    """The CT the femur came from when it was placed into this body (:mod:`bmdgan.cohort.transplant`), else empty."""
    head_radius_mm: float | None = None
    """The femoral head's radius (mm, :func:`bmdgan.cohort.prepared_ct.head_radius_mm`); None without a femur label."""


@dataclass
class PelvisScene:
    """A whole-pelvis CT ready to project: its hips, the body (cropped to it) and the projector of its channels
    (the prepared arrays are not kept: the channels hold what the projection needs)."""

    ct_id: str
    bones: list[Hip]
    hu: Volume
    body_mask: np.ndarray
    centre_lps: np.ndarray
    projector: object


def _body_box(body: np.ndarray) -> tuple[slice, ...]:
    """Index box [k, j, i] of the body plus one voxel where the volume allows (its faces then hold body only
    where the scan's own faces do, so collimation is unchanged)."""
    box = []
    for axis in range(3):
        present = np.nonzero(body.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        box.append(slice(max(int(present[0]) - 1, 0), min(int(present[-1]) + 2, body.shape[axis])))
    return tuple(box)


def pelvis_scene(bones: list[PreparedCT]) -> PelvisScene:
    """Build the projector of a CT's hips (all prepared from the same CT, so on one grid)."""
    from ..projection.projector import Projector

    first = bones[0]
    body = first.body_mask if first.body_mask is not None else body_of_cleaned(first.hu.array)
    box = _body_box(body)
    geometry = first.hu.geometry
    start = np.array([box[2].start, box[1].start, box[0].start], float)
    origin = np.asarray(geometry.origin_mm) + np.asarray(geometry.direction) @ (start * geometry.spacing_mm)
    cropped = VolumeGeometry(geometry.spacing_mm, tuple(origin), geometry.direction)
    hu = first.hu.array[box]
    bone = np.zeros(hu.shape, dtype=bool)
    for prepared in bones:
        bone |= prepared.bone_mask[box]
    names, volumes = pelvis_channel_volumes(
        hu,
        first.density_mg_cm3[box],
        bone,
        {prepared.side: (prepared.pf_mask[box], prepared.density_mg_cm3[box]) for prepared in bones},
    )
    body = body[box]
    centre = ap_pelvis_centre(body, cropped.ijk_to_lps(), [prepared.head_centre_lps for prepared in bones])
    hips = [
        Hip(
            prepared.ct_id,
            prepared.side,
            tuple(prepared.abmd_components_g_cm2),
            tuple(prepared.vbmd_components_mg_cm3),
            tuple(float(v) for v in prepared.head_centre_lps),
            tuple(float(v) for v in prepared.neck_point_lps),
            prepared.donor_ct,
            head_radius_mm(prepared, prepared.femur_mask) if prepared.femur_mask is not None else None,
        )
        for prepared in bones
    ]
    projector = Projector(volumes, cropped.ijk_to_lps(), unit="mg/cm3", channel_names=names)
    del volumes
    return PelvisScene(
        first.ct_id, hips, Volume(hu.copy(), cropped, "HU", first.hu.source), body.copy(), centre, projector
    )


def pelvis_case_id(patient_id: str, pose_name: str, side: str) -> str:
    return f"{patient_id}-{pose_name}-{side}"


def render_pelvis(
    settings,
    scene: PelvisScene,
    patient: VirtualPatient,
    pose_name: str,
    positioning: Positioning | None = None,
    pitch_mm: float | None = None,
) -> dict:
    """The full AP pelvis image of one virtual patient and pose: ``radiograph`` (pixels), ``drr_stage1`` and
    ``drr_pf_<side>`` (g/cm2), the simulator's output, the geometry, its collimation and the positioning
    (drawn for the patient and pose unless given). ``pitch_mm``: detector pixel size (default: fine enough for
    the model's input, :func:`bmdgan.datasets.normalise.render_pitch_mm`)."""
    from ..projection.simulator import simulate_radiograph
    from ..projection.site_protocol import parse_acquisition

    positioning = positioning or sample_positioning(settings.seed, patient, pose_name)
    pitch_mm = pitch_mm or render_pitch_mm(settings.image_shape)
    geometry, collimation = ap_pelvis_geometry(
        scene.body_mask,
        scene.hu.geometry.ijk_to_lps(),
        scene.centre_lps,
        source_to_detector_mm=positioning.source_to_detector_mm,
        object_to_detector_mm=positioning.object_to_detector_mm,
        pixel_spacing_mm=pitch_mm,
        turn=positioning.turn(),
        detector_shift_mm=positioning.detector_shift_mm,
    )
    projected = dict(zip(scene.projector.channel_names, scene.projector.project(geometry)))
    images, parts = {}, None
    for prepared in scene.bones:
        parts = combine(
            side_channels(projected, prepared.side),
            patient.trabecular_factor,
            patient.cortical_factor,
            patient.extra_fat_mm,
            geometry.row_spacing_mm,
        )
        images[f"drr_pf_{prepared.side}"] = parts["drr_pf"]
    rng = seeded_rng(settings.seed, patient.patient_id, pose_name, "acquisition")
    site = parse_acquisition(settings.acquisition)
    parameters = site.parameters_for(rng, patient.extra_fat_mm) if site else None
    simulated = simulate_radiograph(scene.hu, geometry, parameters, rng=rng, areal_density_g_per_cm2=parts["materials"])
    images.update(radiograph=simulated.pixels.astype(np.float32), drr_stage1=parts["drr_stage1"])
    return {
        "images": images,
        "simulated": simulated,
        "geometry": geometry,
        "collimation": collimation,
        "positioning": positioning,
    }


def hip_region(geometry, hip: Hip, output_shape: tuple[int, int]):
    """(input region, projected head centre, projected neck point) of one hip of an AP pelvis image: the region is
    cut at the pixel spacing at that hip's head (pixels of the full image)."""
    head, neck = geometry.project_points(np.stack([hip.head_centre_lps, hip.neck_point_lps]))
    return plan_hip_roi(head, neck, hip.side, geometry.spacing_at_mm(hip.head_centre_lps), output_shape), head, neck


def pelvis_cases(
    settings, scene: PelvisScene, patient: VirtualPatient, pose_name: str
) -> list[tuple[CaseRecord, dict]]:
    """One case per hip of one AP pelvis image: its input region (cut around the projected head, as the inference
    cuts it around the detected one), with its own stage-1 DRR, PF-DRR and CT-aBMD/vBMD; the provenance keeps the
    head centre and neck point in the full image (pixels) and its pixel size (mm)."""
    full = render_pelvis(settings, scene, patient, pose_name)
    images, positioning = full["images"], full["positioning"]
    collimation: Collimation = full["collimation"]
    cases = []
    geometry = full["geometry"]
    for prepared in scene.bones:
        roi, head, neck = hip_region(geometry, prepared, settings.image_shape)
        half = {
            "radiograph": apply_hip_roi(images["radiograph"], roi),
            "drr_stage1": apply_hip_roi(images["drr_stage1"], roi, outside=0.0),
            "drr_pf": apply_hip_roi(images[f"drr_pf_{prepared.side}"], roi, outside=0.0),
        }
        a_trab, a_cort = prepared.abmd_components_g_cm2
        v_trab, v_cort = prepared.vbmd_components_mg_cm3
        record = CaseRecord(
            pelvis_case_id(patient.patient_id, pose_name, prepared.side),
            patient.patient_id,
            prepared.side,
            pose=pose_name,
            mirrored=roi.mirrored,
            ct_abmd_g_cm2=patient.trabecular_factor * a_trab + patient.cortical_factor * a_cort,
            qct_vbmd_mg_cm3=patient.trabecular_factor * v_trab + patient.cortical_factor * v_cort,
            provenance=json.dumps(
                {
                    "ct": prepared.ct_id,
                    **({"donor_ct": prepared.donor_ct} if prepared.donor_ct else {}),
                    "side": prepared.side,
                    "view": "ap-pelvis",
                    "k_trab": round(patient.trabecular_factor, 4),
                    "k_cort": round(patient.cortical_factor, 4),
                    "bmi": round(patient.bmi_kg_m2, 1),
                    "rotation_deg": [
                        round(positioning.about_long_axis_deg, 2),
                        round(positioning.about_left_right_axis_deg, 2),
                        round(positioning.about_ap_axis_deg, 2),
                    ],
                    "sid_mm": round(positioning.source_to_detector_mm, 1),
                    "kev": round(full["simulated"].parameters.effective_energy_kev, 1),
                    "image_px": list(images["radiograph"].shape),
                    "head_centre_px": [round(float(head[0]), 1), round(float(head[1]), 1)],
                    "neck_point_px": [round(float(neck[0]), 1), round(float(neck[1]), 1)],
                    "pixel_mm_at_patient": round(float(roi.pixel_spacing_mm[0]), 4),
                    "collimated_rows": [collimation.first_row, collimation.rows, collimation.full_rows],
                },
                separators=(",", ":"),
            ),
        )
        cases.append((record, half))
    return cases
