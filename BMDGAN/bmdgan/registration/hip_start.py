"""Start pose without landmarks from the hip detector: where the femoral head and neck are on the radiograph.

Why: the FFT search of :mod:`.global_search` scores the bone's DRR at every shift, and on radiographs unlike our
simulated ones (other processing, other noise) a wrong placement can score best. The bundled hip detector
(:class:`bmdgan.detection.detector.HipDetector`, trained on radiographs simulated from the shared CTs) finds each
hip's femoral head centre and neck point (40 mm along the femur's lateral axis) whatever the image processing.

The CT's own two points come from its femoral heads (:func:`bmdgan.ct.hips.find_hips`): the head centre, and the
point :data:`~bmdgan.datasets.normalise.NECK_POINT_MM` along the neck axis made perpendicular to the shaft (the
detector's definition). A detected hip of the CT hip's side gives the start: the AP start view turned about the
beam and shifted in the image plane (:func:`hip_pose_parameters`: the two points' reprojection, least squares) so
that the CT's head and neck point land on the detected ones. Depth stays at the start's: a 40 mm segment found
to 2-5 mm fixes the magnification to no better than 10 %, worse than the usual table-to-detector prior.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ..ct.head import neck_direction
from ..ct.hips import find_hips, fitted_head
from ..datasets.normalise import NECK_POINT_MM
from ..detection.detector import HipDetector
from ..projection.geometry import ProjectionGeometry
from ..projection.pose import camera_pose

MAX_TURN_DEG = 60.0
"""Largest in-plane turn (degrees) of a detector start; beyond it the pairing is taken as wrong."""


@dataclass(frozen=True)
class HipStart:
    """One detector start: the hip's ``side``, the detected head centre and neck point (column, row px), the CT's
    (LPS mm), the detector's confidence, the pose parameters relative to the start view (degrees, mm; see
    :func:`bmdgan.projection.pose.camera_pose`) and the two points' RMS reprojection distance there (mm at the
    detector)."""

    side: str
    head_px: tuple[float, float]
    neck_px: tuple[float, float]
    head_lps_mm: tuple[float, float, float]
    neck_lps_mm: tuple[float, float, float]
    confidence: float
    parameters: np.ndarray
    residual_mm: float

    def to_dict(self) -> dict:
        return {
            "side": self.side,
            "head_centre_px": [float(v) for v in self.head_px],
            "neck_point_px": [float(v) for v in self.neck_px],
            "ct_head_centre_lps_mm": [float(v) for v in self.head_lps_mm],
            "ct_neck_point_lps_mm": [float(v) for v in self.neck_lps_mm],
            "detector_confidence": self.confidence,
            "start_parameters": [float(v) for v in self.parameters],
            "two_point_residual_mm": self.residual_mm,
        }


def ct_hip_points(ct) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """side -> (femoral head centre, neck point) in LPS mm of each hip found in the CT (HU ``Volume``). The neck
    point lies :data:`NECK_POINT_MM` from the head along the neck axis made perpendicular to the shaft (the shaft
    runs along the header's z axis when it is out of view)."""
    points = {}
    for hip in find_hips(ct):
        head = fitted_head(ct, hip)
        if hip.shaft is not None:
            up = hip.shaft.direction * np.sign((head.centre_lps - hip.shaft.point_lps) @ hip.shaft.direction)
        else:
            up = np.array([0.0, 0.0, 1.0])
        neck = neck_direction(head, hip.shaft)
        lateral = neck - (neck @ up) * up
        if np.linalg.norm(lateral) < 1e-6:
            continue
        centre = np.asarray(head.centre_lps, float)
        points[hip.side] = (centre, centre + NECK_POINT_MM * lateral / np.linalg.norm(lateral))
    return points


def hip_pose_parameters(
    geometry: ProjectionGeometry,
    centre_lps_mm: np.ndarray,
    points_lps_mm: np.ndarray,
    pixels_px: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Parameters (6,) relative to ``geometry``'s pose (turn about the beam in degrees, in-plane shift in mm; the
    other three zero) that project the CT points (2, 3) onto the pixels (2, 2) as (column, row), and their RMS
    reprojection distance (mm at the detector)."""
    base = geometry.camera_from_lps
    pitch = np.array([geometry.column_spacing_mm, geometry.row_spacing_mm])

    def pose(x: np.ndarray) -> np.ndarray:
        return camera_pose(np.array([0.0, 0.0, x[0], x[1], x[2], 0.0]), base, centre_lps_mm).numpy()

    def residuals(x: np.ndarray) -> np.ndarray:
        return ((geometry.with_pose(pose(x)).project_points(points_lps_mm) - pixels_px) * pitch).ravel()

    # first guess: turn the CT's head-to-neck vector onto the detected one
    projected = geometry.project_points(points_lps_mm)
    given, found = projected[1] - projected[0], pixels_px[1] - pixels_px[0]
    turn = np.degrees(np.arctan2(given[0] * found[1] - given[1] * found[0], given @ found))
    fit = least_squares(residuals, np.array([turn, 0.0, 0.0]), x_scale=np.array([10.0, 20.0, 20.0]))
    parameters = np.array([0.0, 0.0, fit.x[0], fit.x[1], fit.x[2], 0.0])
    return parameters, float(np.sqrt(np.sum(fit.fun**2) / 2))


def detector_starts(
    pixels: np.ndarray,
    geometry: ProjectionGeometry,
    ct,
    centre_lps_mm: np.ndarray,
    detector: HipDetector | None = None,
    log: Callable[[str], None] | None = None,
) -> list[HipStart]:
    """Starts from the hips the detector finds on the radiograph (bone bright) that the CT also holds (same side),
    surest first; empty when none pairs. ``geometry``: the radiograph's detector with the start view, whose
    magnification at ``centre_lps_mm`` (the bone centroid) turns its pitch into the spacing at the patient."""
    say = log or (lambda message: None)
    ct_points = ct_hip_points(ct)
    if not ct_points:
        say("hip detector start: no femoral head found in the CT")
        return []
    detector = detector or HipDetector.load(None)
    spacing = geometry.spacing_at_mm(centre_lps_mm)
    hips = detector.detect(pixels, spacing)
    starts = []
    for hip in sorted(hips, key=lambda found: -found.confidence):
        if hip.side not in ct_points:
            say(
                f"hip detector: the {hip.side} hip on the radiograph (confidence {hip.confidence:.2f}) is not in the "
                f"CT (it holds the {' and '.join(ct_points)})"
            )
            continue
        head, neck = ct_points[hip.side]
        detected = np.array([hip.head_centre_px, hip.neck_point_px], dtype=float)
        parameters, residual = hip_pose_parameters(geometry, centre_lps_mm, np.stack([head, neck]), detected)
        if abs(parameters[2]) > MAX_TURN_DEG:
            say(f"hip detector: the {hip.side} hip would need a {parameters[2]:.0f} degree turn: not used")
            continue
        starts.append(
            HipStart(
                hip.side,
                tuple(hip.head_centre_px),
                tuple(hip.neck_point_px),
                tuple(head),
                tuple(neck),
                hip.confidence,
                parameters,
                residual,
            )
        )
        say(
            f"hip detector: {hip.side} hip (confidence {hip.confidence:.2f}) -> start turned "
            f"{parameters[2]:+.0f} deg, shifted ({parameters[3]:+.0f}, {parameters[4]:+.0f}) mm, two-point "
            f"residual {residual:.1f} mm"
        )
    if not hips:
        say("hip detector start: no hip found on the radiograph")
    return starts
