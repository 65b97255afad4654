"""CT -> femur label -> landmarks -> PF region -> calibrated vBMD and CT-aBMD, in one call.

Each step takes what the user gave instead of computing it: a segmentation (project labels), landmark
points (named LPS points that override the automatic ones one by one), a calibration record. Without a
calibration the phantomless one (:mod:`.phantomless`) is used, and the record says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import __version__
from ..errors import InputError
from ..io.volume import Volume
from . import grid, labels as L
from .calibration import Calibration
from .head import find_femoral_heads, smoothed_hu
from .landmarks import LANDMARK_NAMES, Landmarks, estimate_landmarks
from .measurement import PFMeasurement, measure_pf
from .pf_region import PFRegion, pf_region
from .phantomless import phantomless_calibration
from .segmentation import FemurSegmentation, metal_mask, segment_femur
from .shaft import find_shaft

STEPS = ("segment", "landmarks", "PF region", "calibrate", "measure")


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

    def label_volume(self) -> Volume:
        """Project label map (1 pelvis, 2 femur, 3 PF region) on the CT grid."""
        array = self.segmentation.labels.array.copy()
        array[self.region.mask & L.femur_mask(array)] = L.PF_REGION
        return self.ct.with_array(array, unit="label")


def segmentation_from_labels(ct: Volume, label_volume: Volume) -> FemurSegmentation:
    """Wrap user labels: the head and shaft are still found in the CT, the head inside the given femur."""
    femur = L.femur_mask(label_volume.array)
    if not femur.any():
        raise InputError(label_volume.source or None, "the segmentation has no femur", "check the labels (femur = 2)")
    smooth = smoothed_hu(ct)
    shaft = find_shaft(ct, smooth)
    heads = find_femoral_heads(ct, smooth, shaft, max_heads=4)
    inside = [h for h in heads if femur[tuple(np.clip(np.round(grid.lps_to_index(ct.geometry, h.centre_lps)[0]).astype(int),
                                                      0, np.array(femur.shape) - 1))]]
    if not inside:
        raise InputError(label_volume.source or None, "no femoral head was found inside the given femur label",
                         "give the femoral head centre as a landmark, or check the segmentation's side")
    return FemurSegmentation(label_volume, metal_mask(ct), inside[0], shaft, ["femur label given by the user"])


def analyse_ct(ct: Volume, *, label_volume: Volume | None = None, landmark_points: dict[str, np.ndarray] | None = None,
               calibration: Calibration | None = None, side: str = "auto",
               progress: Callable[[str], None] | None = None) -> CTAnalysis:
    """Run the CT steps (see the module docstring); ``progress`` is called with each step's name."""
    tell = progress or (lambda step: None)
    notes: list[str] = []
    tell("segment")
    if label_volume is None:
        segmentation = segment_femur(ct, side=side)
    else:
        segmentation = segmentation_from_labels(ct, label_volume)
    notes += segmentation.notes
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
        raise InputError(ct.source or None, f"landmarks could not be found: {', '.join(needed)}",
                         "give them by hand (a .mrk.json with those names)")
    tell("PF region")
    region = pf_region(segmentation.femur, ct.geometry, landmarks)
    notes += region.notes
    tell("calibrate")
    if calibration is None:
        calibration = phantomless_calibration(ct)
        notes.append("no phantom calibration given: phantomless (internal) calibration used")
    tell("measure")
    measurement = measure_pf(ct, segmentation.femur, region, landmarks, calibration, segmentation.metal)
    if measurement.metal_volume_cm3 > 0:
        notes.append(f"metal in the PF region ({measurement.metal_volume_cm3:.2f} cm3) excluded from the density")
    return CTAnalysis(ct, segmentation, landmarks, region, calibration, measurement, notes)


def measurement_record(analysis: CTAnalysis) -> dict:
    """The ``measurement.json`` content: numbers with units in their names, and how they were obtained."""
    m = analysis.measurement
    landmarks = analysis.landmarks
    frame = landmarks.frame
    return {
        "bmdgan_version": __version__,
        "ct": analysis.ct.source,
        "side": frame.side,
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
        "lesser_trochanter_lps_mm": None if landmarks.lesser_trochanter_lps is None
        else [round(float(v), 2) for v in landmarks.lesser_trochanter_lps],
        "notes": analysis.notes,
    }
