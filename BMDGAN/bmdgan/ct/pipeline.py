"""CT -> femur label -> landmarks -> PF region -> calibrated vBMD and CT-aBMD, per hip, in one call.

Each step takes what the user gave instead of computing it: a segmentation (project labels), landmark
points (named LPS points that override the automatic ones one by one), a calibration record. Without a
calibration the phantomless one (:mod:`.phantomless`) is used, and the record says so.

Hips (:mod:`.hips`): ``side`` is 'left' or 'right' (that hip, or an InputError naming the sides the CT
holds), 'auto' (the best implant-free hip) or, for :func:`analyse_hips`, 'both' (every hip present). The
head search, the smoothed CT and the phantomless calibration are made once per CT and shared by its hips.

Body and bones: the patient's body (:mod:`.body`, without couch, wires and markers) calibrates the CT, and
the label map of a hip holds, besides its femur and PF region, its whole hip bone, the other side's femur
and hip bone and the sacrum (:mod:`.labels`, :mod:`.pelvis`): the stage-1 target is pelvis + femur.

Implants: metal (CT > ``METAL_HU``) in a hip's PF region makes that hip unmeasurable (InputError naming the
side and the metal volume; ``allow_metal=True`` measures it with the metal left out of the density); metal
near the hip but outside the PF region is measured with a note.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..errors import InputError
from ..io.volume import Volume
from . import grid
from . import labels as L
from .body import body_mask
from .calibration import Calibration
from .hips import (
    MIN_IMPLANT_CM3,
    SIDES,
    Hip,
    fitted_head,
    hip_search,
    present_sides,
    select_hips,
)
from .landmarks import LANDMARK_NAMES, Landmarks, estimate_landmarks
from .measurement import PFMeasurement, measure_pf
from .pelvis import PelvisLabels, label_pelvis
from .pf_region import PFRegion, pf_region
from .phantomless import phantomless_calibration
from .segmentation import METAL_HU, FemurSegmentation, metal_mask, segment_with_head

STEPS = ("segment", "landmarks", "PF region", "calibrate", "measure", "hip bones")


class ImplantError(InputError):
    """A hip whose PF region holds metal: not measured (its side is ``side``)."""

    def __init__(self, path, side: str, metal_cm3: float):
        self.side = side
        self.metal_cm3 = metal_cm3
        super().__init__(
            path,
            f"the {side} hip has metal (an implant, {metal_cm3:.2f} cm3 over {METAL_HU:.0f} HU) "
            "in its proximal-femur region: not measured",
            "measure the other hip, or measure this one with the metal left out (--allow-metal)",
        )


@dataclass
class CTAnalysis:
    """Everything found for one hip of one CT."""

    ct: Volume
    segmentation: FemurSegmentation
    landmarks: Landmarks
    region: PFRegion
    calibration: Calibration
    measurement: PFMeasurement
    notes: list[str] = field(default_factory=list)
    pelvis: PelvisLabels | None = None
    """Hip bones and sacrum of the CT (None with a user's label map, whose own pelvis label is kept)."""
    other_femur: np.ndarray | None = None
    """The other hip's femur (bool [k, j, i]) on a whole-pelvis CT, else None."""

    @property
    def side(self) -> str:
        """'left' or 'right': the hip found (:mod:`.hips`), else the landmarks' reading."""
        return self.segmentation.side or self.landmarks.frame.side

    def label_volume(self) -> Volume:
        """Project label map on the CT grid (:mod:`.labels`: 1 hip bone, 2 femur, 3 PF region of this hip; 4 the
        other femur, 5 the other hip bone, 6 sacrum where found)."""
        if self.pelvis is None:
            array = self.segmentation.labels.array.copy()
            array[self.region.mask & L.femur_mask(array)] = L.PF_REGION
            return self.ct.with_array(array, unit="label")
        other_side = next((side for side in self.pelvis.hip if side != self.side), None)
        array = L.compose(
            self.pelvis.hip.get(self.side),
            self.segmentation.femur,
            self.region.mask,
            other_femur=self.other_femur,
            other_pelvis=self.pelvis.hip.get(other_side),
            sacrum=self.pelvis.sacrum,
        )
        return self.ct.with_array(array, unit="label")


def hip_sides(ct: Volume) -> list[str]:
    """Sides of the hips in the CT ('left', 'right'; in that order); the search is kept for the analyses."""
    return present_sides(hip_search(ct).hips)


def _metal(ct: Volume) -> np.ndarray:
    search = hip_search(ct)
    if search.metal is None:
        search.metal = metal_mask(ct)
    return search.metal


def body_of(ct: Volume) -> np.ndarray:
    """The patient's body (bool [k, j, i], :func:`.body.body_mask`), found once per CT."""
    search = hip_search(ct)
    if search.body is None:
        search.body = body_mask(ct)
    return search.body


def _segment(ct: Volume, hip: Hip) -> FemurSegmentation:
    """The femur segmentation of one hip, made once per CT and hip."""
    search = hip_search(ct)
    if hip.side not in search.segmentations:
        segmentation = segment_with_head(ct, search.smooth, fitted_head(ct, hip), hip.shaft, _metal(ct))
        segmentation.side = hip.side
        segmentation.notes = hip.notes + segmentation.notes
        search.segmentations[hip.side] = segmentation
    return search.segmentations[hip.side]


def pelvis_labels(ct: Volume) -> PelvisLabels:
    """Hip bone of every hip in the CT and the sacrum (:func:`.pelvis.label_pelvis`), found once per CT
    around the femurs of all its hips (so that one hip's bone is never taken for the other's)."""
    search = hip_search(ct)
    if search.pelvis is None:
        femurs = {hip.side: _segment(ct, hip).femur for hip in search.hips}
        search.pelvis = label_pelvis(ct, body_of(ct), femurs)
    return search.pelvis


def femurs_by_side(ct: Volume) -> dict[str, FemurSegmentation]:
    """The automatic femur segmentation of every hip in the CT, by side."""
    return {hip.side: _segment(ct, hip) for hip in hip_search(ct).hips}


def segment_hips(ct: Volume, side: str = "auto") -> list[FemurSegmentation]:
    """Femur and pelvis labels of the hips ``side`` asks for (one for 'left', 'right' and 'auto')."""
    hips = select_hips(hip_search(ct).hips, side, ct)
    return [_segment(ct, hip) for hip in (hips[:1] if side == "auto" else hips)]


def segmentation_from_labels(ct: Volume, label_volume: Volume) -> FemurSegmentation:
    """Wrap user labels: the head and shaft are still found in the CT, the head inside the given femur."""
    femur = L.femur_mask(label_volume.array)
    if not femur.any():
        raise InputError(label_volume.source or None, "the segmentation has no femur", "check the labels (femur = 2)")
    for hip in hip_search(ct).hips:
        index = np.round(_grid_index(ct, hip.head.centre_lps)).astype(int)
        if femur[tuple(np.clip(index, 0, np.array(femur.shape) - 1))]:
            return FemurSegmentation(
                label_volume,
                _metal(ct),
                fitted_head(ct, hip),
                hip.shaft,
                ["femur label given by the user"] + hip.notes,
                hip.side,
            )
    raise InputError(
        label_volume.source or None,
        "no femoral head was found inside the given femur label",
        "give the femoral head centre as a landmark, or check the segmentation's side",
    )


def _grid_index(ct: Volume, point_lps: np.ndarray) -> np.ndarray:
    """Fractional (k, j, i) index of one LPS point (mm)."""
    return grid.lps_to_index(ct.geometry, np.asarray(point_lps, float)[None])[0]


def _calibration(ct: Volume) -> Calibration:
    search = hip_search(ct)
    if search.calibration is None:
        search.calibration = phantomless_calibration(ct, body=body_of(ct))
    return search.calibration


def _analyse(
    ct: Volume,
    segmentation: FemurSegmentation,
    landmark_points: dict[str, np.ndarray] | None,
    calibration: Calibration | None,
    allow_metal: bool,
    tell: Callable[[str], None],
) -> CTAnalysis:
    """Landmarks, PF region, calibration and measurement of one segmented hip."""
    notes = list(segmentation.notes)
    tell("landmarks")
    landmarks = estimate_landmarks(segmentation.femur, ct.geometry, segmentation.head, segmentation.shaft)
    if landmark_points:
        unknown = sorted(set(landmark_points) - set(LANDMARK_NAMES))
        if unknown:
            raise InputError(None, f"unknown landmark names: {', '.join(unknown)}", f"use {', '.join(LANDMARK_NAMES)}")
        landmarks.points.update({name: np.asarray(p, float) for name, p in landmark_points.items()})
        landmarks.source = "automatic, edited by the user: " + ", ".join(sorted(landmark_points))
    notes += landmarks.notes
    missing = landmarks.missing()
    needed = [name for name in missing if name not in ("shaft_2cm", "shaft_5cm")]
    if needed:
        raise InputError(
            ct.source or None,
            f"landmarks could not be found: {', '.join(needed)}",
            "give them by hand (a .mrk.json with those names)",
        )
    tell("PF region")
    region = pf_region(segmentation.femur, ct.geometry, landmarks)
    notes += region.notes
    side = segmentation.side or landmarks.frame.side
    metal = segmentation.metal
    voxel_cm3 = ct.voxel_volume_mm3() / 1000.0
    in_region_cm3 = float((region.mask & metal).sum() * voxel_cm3)
    if in_region_cm3 > MIN_IMPLANT_CM3 and not allow_metal:
        raise ImplantError(ct.source or None, side, in_region_cm3)
    near_cm3 = float((metal & segmentation.femur).sum() * voxel_cm3) - in_region_cm3
    if near_cm3 > MIN_IMPLANT_CM3:
        notes.append(
            f"metal in the {side} femur outside its PF region ({near_cm3:.2f} cm3): measured without it; "
            "check the montage"
        )
    tell("calibrate")
    if calibration is None:
        calibration = _calibration(ct)
        notes.append("no phantom calibration given: phantomless (internal) calibration used")
    tell("measure")
    measurement = measure_pf(ct, segmentation.femur, region, landmarks, calibration, metal)
    if measurement.metal_volume_cm3 > 0:
        notes.append(f"metal in the PF region ({measurement.metal_volume_cm3:.2f} cm3) excluded from the density")
    return CTAnalysis(ct, segmentation, landmarks, region, calibration, measurement, notes)


def analyse_ct(
    ct: Volume,
    *,
    label_volume: Volume | None = None,
    landmark_points: dict[str, np.ndarray] | None = None,
    calibration: Calibration | None = None,
    side: str = "auto",
    progress: Callable[[str], None] | None = None,
    allow_metal: bool = False,
) -> CTAnalysis:
    """Run the CT steps (see the module docstring) on one hip; ``progress`` is called with each step's name.

    ``side``: 'left', 'right' or 'auto' (with ``label_volume``: the hip whose head lies in the given femur).
    """
    if side == "both":
        raise InputError(None, "analyse_ct measures one hip", "use analyse_hips for every hip, or side left/right/auto")
    if label_volume is None:
        return analyse_hips(
            ct,
            side=side,
            landmark_points=landmark_points,
            calibration=calibration,
            progress=progress,
            allow_metal=allow_metal,
        )[0]
    tell = progress or (lambda step: None)
    tell("segment")
    segmentation = segmentation_from_labels(ct, label_volume)
    if side in SIDES and segmentation.side != side:
        raise InputError(
            label_volume.source or None,
            f"the given femur label is the {segmentation.side} femur, not the {side} one",
            f"ask for --side {segmentation.side}, or give the {side} femur",
        )
    return _analyse(ct, segmentation, landmark_points, calibration, allow_metal, tell)


def analyse_hips(
    ct: Volume,
    *,
    side: str = "both",
    landmark_points: dict[str, np.ndarray] | None = None,
    calibration: Calibration | None = None,
    progress: Callable[[str], None] | None = None,
    allow_metal: bool = False,
    refused: dict[str, str] | None = None,
) -> list[CTAnalysis]:
    """Analyse the hips ``side`` asks for ('both': every hip, in ``SIDES`` order; 'auto': the first hip, in
    order of preference, without an implant in its PF region; 'left'/'right': that hip).

    ``refused``: if given, a hip refused for an implant under 'both' is recorded there (side -> reason) and
    left out instead of raising; an InputError is still raised when no hip at all is measured.
    ``progress`` is called with each step's name, per hip. ``landmark_points`` needs a single hip.
    """
    tell = progress or (lambda step: None)
    tell("segment")
    hips = select_hips(hip_search(ct).hips, side, ct)
    if landmark_points and side == "both" and len(hips) > 1:
        raise InputError(None, "landmarks given for more than one hip", "ask for --side left or --side right")
    if landmark_points and side == "auto":
        hips = hips[:1]  # the given points belong to one hip: no falling back to the other
    analyses: list[CTAnalysis] = []
    reasons: list[str] = []
    for index, hip in enumerate(hips):
        if index:
            tell("segment")
        try:
            analysis = _analyse(ct, _segment(ct, hip), landmark_points, calibration, allow_metal, tell)
        except ImplantError as error:
            reasons.append(error.problem)
            if side == "auto" and index + 1 < len(hips):
                continue
            if side == "both" and refused is not None:
                refused[hip.side] = error.problem
                continue
            raise
        tell("hip bones")
        try:
            analysis.pelvis = pelvis_labels(ct)
        except InputError as error:  # the density does not need them: keep the segmentation's own pelvis label
            analysis.notes.append(f"hip bones not labelled ({error.problem}): the pelvis label is the acetabulum only")
        others = [femur for other, femur in femurs_by_side(ct).items() if other != hip.side]
        analysis.other_femur = others[0].femur if others else None
        analyses.append(analysis)
        if side == "auto" and reasons:
            analyses[-1].notes.insert(0, f"{'; '.join(reasons)}: the {hip.side} hip was measured instead")
        if side != "both":
            break
    if not analyses:
        raise InputError(ct.source or None, "no hip could be measured: " + "; ".join(reasons))
    return analyses


def left_right_difference(analyses: list[CTAnalysis]) -> dict | None:
    """Left minus right aBMD (g/cm2) and vBMD (mg/cm3), absolute and in % of their mean; None unless both."""
    by_side = {analysis.side: analysis.measurement for analysis in analyses}
    if set(by_side) != set(SIDES):
        return None
    left, right = by_side["left"], by_side["right"]
    record = {}
    for key, unit, digits in (("ct_abmd", "g_cm2", 5), ("qct_vbmd", "mg_cm3", 3)):
        a, b = getattr(left, f"{key}_{unit}"), getattr(right, f"{key}_{unit}")
        record[f"{key}_left_minus_right_{unit}"] = round(a - b, digits)
        record[f"{key}_left_minus_right_percent"] = round(200.0 * (a - b) / (a + b), 2)
    return record


def measurement_record(analysis: CTAnalysis) -> dict:
    """The ``measurement.json`` content: numbers with units in their names, and how they were obtained."""
    m = analysis.measurement
    landmarks = analysis.landmarks
    frame = landmarks.frame
    return {
        "bmdgan_version": __version__,
        "ct": analysis.ct.source,
        "side": analysis.side,
        "side_from_handedness": frame.side_from_handedness,
        "qct_vbmd_mg_cm3": round(m.qct_vbmd_mg_cm3, 3),
        "ct_abmd_g_cm2": round(m.ct_abmd_g_cm2, 5),
        "pf_volume_cm3": round(m.pf_volume_cm3, 3),
        "pf_projected_area_cm2": round(m.pf_projected_area_cm2, 3),
        "bone_mineral_content_g": round(m.bone_mineral_content_g, 4),
        "metal_volume_cm3": round(m.metal_volume_cm3, 3),
        "pf_region_complete": analysis.region.complete,
        "calibration": analysis.calibration.to_dict(),
        "phantomless": analysis.calibration.method.startswith("phantomless"),
        "landmarks_lps_mm": {name: [round(float(v), 2) for v in p] for name, p in landmarks.points.items()},
        "landmarks_source": landmarks.source,
        "head_radius_mm": round(float(landmarks.head_radius_mm), 2),
        "lesser_trochanter_lps_mm": None
        if landmarks.lesser_trochanter_lps is None
        else [round(float(v), 2) for v in landmarks.lesser_trochanter_lps],
        "notes": analysis.notes,
    }
