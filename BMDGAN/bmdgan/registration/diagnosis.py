"""Why did a registration fail? Cheap measurements at the final pose that tell the likely causes apart.

Run by :func:`.pipeline.register` only when the quality is not "good" (about a second on a hip radiograph):

* **in-plane placement** (:func:`.global_search.in_plane_scores`): the FFT gradient correlation of the bone's
  DRR at every in-plane shift and turn. When the best placement lies far from where the registration ended and
  scores clearly better, the search started too far off to reach it (start pose).
* **side**: the same with the DRR mirrored left-right. A radiograph of the other hip (or a flipped image)
  matches the mirrored DRR better than the DRR itself.
* **pixel spacing** (:func:`spacing_scores`): the best in-plane placement's score when the detector pitch is each of
  :data:`SCALE_RATIOS` times the geometry's, at the start pose. A wrong pixel
  spacing (or SID) makes the bone look too large or too small: another spacing then fits clearly better.
* **pose change**: parameters that ended at their search bound, or moved beyond the capture range of the
  search (:data:`CAPTURE_DEG`, :data:`CAPTURE_MM`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

SCALE_RATIOS = np.round(1.1 ** np.arange(-5, 6), 3)
"""Pixel spacings tried (x the geometry's): 0.62-1.61 in steps of 10% (the best one is refined by a parabola).
A patient's hip lies 100-300 mm from the detector: at SID 1000-1150 mm its magnification varies by about +-12%
around the default geometry's, hence :data:`SCALE_TOLERANCE`."""
SCALE_ANGLES_DEG = np.array([-10.0, 0.0, 10.0])
"""In-plane turns (degrees) tried at each pixel spacing."""
SCALE_TOLERANCE = 0.15
"""A best-fitting pixel spacing (or final magnification) more than this fraction from the geometry's points at the
pixel spacing or SID."""
SCALE_MARGIN = 0.08
"""Least gain of the best placement's FFT score at another pixel spacing over the given one. Measured (hip phantom,
1 mm pixels, FAST settings of the tests): spacings given x0.7, x0.8, x1.2 and x1.4 gained 0.09-0.26 at the true one
(found within 2%); a whole-pelvis CT at its true spacing lost 0.32 to the next ratio; starts 60-70 mm off gained
0.02 at most; a mirrored radiograph gained 0.06 (its cause, side, is named first)."""
SIDE_MARGIN = 0.10
"""Least gain of the mirrored DRR's best placement over the DRR's. Measured (hip phantom): a mirrored radiograph
gained 0.25; right-side radiographs lost 0.22-0.24."""
SHIFT_MM = 10.0
"""A best in-plane placement at least this far (mm at the bone) or :data:`TURN_DEG` away means "elsewhere"."""
TURN_DEG = 10.0
SCORE_MARGIN = 0.05
"""Least gain of FFT score of a placement elsewhere over the final one's that counts as a better match."""
CAPTURE_DEG = 12.0
CAPTURE_MM = 25.0
"""Capture range of the coarse-to-fine search (degrees, mm in the image plane): starts within about 10 degrees
and 20 mm converge on simulated radiographs (``benchmarks/bench_registration.py``)."""
AT_BOUND = 0.95
"""A parameter beyond this fraction of its search bound ended at the bound."""
PARAMETER_NAMES = ("rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm")


@dataclass
class Diagnosis:
    """The measurements behind the likely cause of a poor registration (see the module docstring)."""

    at_bound: list[str] = field(default_factory=list)
    beyond_capture: bool = False
    placement_here: float | None = None
    placement_best: float | None = None
    placement_shift_mm: tuple[float, float] | None = None
    placement_turn_deg: float | None = None
    mirrored_best: float | None = None
    scale_ratios: list[float] = field(default_factory=list)
    scale_scores: list[float] = field(default_factory=list)
    final_scale_ratio: float = 1.0
    pitch_mm: tuple[float, float] = (0.0, 0.0)

    @property
    def best_scale_ratio(self) -> float:
        """Pixel spacing (x the geometry's) that fits best: the vertex of the parabola (in log ratio) through the
        best scanned ratio and its neighbours; without a scan, the final pose's magnification change."""
        if not self.scale_scores:
            return self.final_scale_ratio
        scores, ratios = np.asarray(self.scale_scores), np.log(self.scale_ratios)
        best = int(np.argmax(scores))
        if 0 < best < len(scores) - 1 and min(scores[best - 1], scores[best + 1]) > -1.0:
            left, middle, right = scores[best - 1 : best + 2]
            curvature = left - 2.0 * middle + right
            if curvature < 0:
                step = 0.5 * (ratios[best + 1] - ratios[best - 1])
                return float(np.exp(ratios[best] + 0.5 * (left - right) / curvature * step))
        return float(self.scale_ratios[best])

    @property
    def score_at_scale_one(self) -> float:
        """Best placement score at the geometry's own pixel spacing (-1: not scored)."""
        return float(self.scale_scores[self.scale_ratios.index(1.0)]) if 1.0 in self.scale_ratios else -1.0

    def side_mismatch(self) -> bool:
        """The mirrored DRR's best placement beats the DRR's by :data:`SIDE_MARGIN`."""
        return (
            self.mirrored_best is not None
            and self.placement_best is not None
            and self.mirrored_best > self.placement_best + SIDE_MARGIN
        )

    def scale_mismatch(self) -> bool:
        """Another pixel spacing, more than :data:`SCALE_TOLERANCE` off, beats the given one by :data:`SCALE_MARGIN`
        (only when the given one could be scored at all)."""
        if not self.scale_scores or abs(self.best_scale_ratio - 1.0) <= SCALE_TOLERANCE:
            return False
        nominal = self.score_at_scale_one
        return nominal > -1.0 and max(self.scale_scores) > nominal + SCALE_MARGIN

    def placement_elsewhere(self) -> bool:
        if self.placement_best is None or self.placement_here is None:
            return False
        far = np.hypot(*self.placement_shift_mm) >= SHIFT_MM or abs(self.placement_turn_deg) >= TURN_DEG
        return far and self.placement_best > self.placement_here + SCORE_MARGIN

    def start_far_off(self) -> bool:
        return self.placement_elsewhere() or self.beyond_capture or bool(self.at_bound)

    def to_dict(self) -> dict:
        return {
            "parameters_at_search_bound": list(self.at_bound),
            "pose_change_beyond_capture": self.beyond_capture,
            "in_plane_fft_score_here": self.placement_here,
            "in_plane_fft_score_best": self.placement_best,
            "in_plane_best_shift_mm": None if self.placement_shift_mm is None else list(self.placement_shift_mm),
            "in_plane_best_turn_deg": self.placement_turn_deg,
            "mirrored_fft_score_best": self.mirrored_best,
            "scale_ratios": list(self.scale_ratios),
            "scale_fft_score_best": list(self.scale_scores),
            "final_scale_ratio": self.final_scale_ratio,
            "best_scale_ratio": self.best_scale_ratio,
            "geometry_pitch_mm": list(self.pitch_mm),
        }


def pose_change_checks(parameters: np.ndarray, bounds: np.ndarray) -> tuple[list[str], bool]:
    """Names of the parameters (degrees, mm) at their search bound, and whether the pose moved beyond the
    search's capture range (a start that far off is rarely found)."""
    parameters = np.asarray(parameters, dtype=float)
    limits = np.maximum(np.abs(np.asarray(bounds, dtype=float)).min(axis=1), 1e-9)
    at_bound = [
        name for name, value, limit in zip(PARAMETER_NAMES, parameters, limits) if abs(value) >= AT_BOUND * limit
    ]
    beyond = bool(np.max(np.abs(parameters[:3])) > CAPTURE_DEG or np.hypot(*parameters[3:5]) > CAPTURE_MM)
    return at_bound, beyond


def scale_ratio(initial, final, centre_lps_mm: np.ndarray) -> float:
    """Magnification at the bone centroid of the final geometry over the initial one's."""
    return float(final.magnification_at(centre_lps_mm) / initial.magnification_at(centre_lps_mm))


def spacing_scores(problem, settings, pose: np.ndarray, ratios: np.ndarray = SCALE_RATIOS) -> list[float]:
    """Best in-plane placement score (shifts, :data:`SCALE_ANGLES_DEG`) of the DRR at ``pose`` (camera_from_lps)
    when the radiograph's pixel spacing is each ratio x the geometry's: the detector pitch is scaled about the
    principal point, the FFT search covers the shift that this causes."""
    from .global_search import in_plane_scores

    scores = []
    for ratio in ratios:
        geometry = replace(
            problem.geometry,
            column_spacing_mm=problem.geometry.column_spacing_mm * float(ratio),
            row_spacing_mm=problem.geometry.row_spacing_mm * float(ratio),
        )
        scaled = replace(problem, geometry=geometry)
        scores.append(in_plane_scores(scaled, settings, pose, angles_deg=SCALE_ANGLES_DEG).best()[0])
    return scores


def diagnose(
    problem, settings, base: np.ndarray, parameters: np.ndarray, bounds: np.ndarray, initial_geometry, final_geometry
) -> Diagnosis:
    """All the measurements of the module docstring at the final ``parameters`` (relative to ``base``)."""
    from ..projection.pose import camera_pose
    from .global_search import in_plane_scores

    at_bound, beyond = pose_change_checks(parameters, bounds)
    centre = problem.centre_lps_mm
    final_pose = camera_pose(parameters, base, centre).numpy()
    here = in_plane_scores(problem, settings, final_pose)
    best, turn, tx, ty = here.best()
    mirrored = in_plane_scores(problem, settings, final_pose, mirror=True)
    # the spacing is judged at the start pose, where the magnification is the geometry's: a search that went
    # astray (or changed the depth to make up for a wrong spacing) does not bias it
    scale_scores = spacing_scores(problem, settings, np.asarray(base, dtype=float))
    return Diagnosis(
        at_bound,
        beyond,
        here.at_zero(),
        best,
        (float(tx), float(ty)),
        turn,
        mirrored.best()[0],
        [float(r) for r in SCALE_RATIOS],
        [float(v) for v in scale_scores],
        scale_ratio(initial_geometry, final_geometry, centre),
        (problem.geometry.column_spacing_mm, problem.geometry.row_spacing_mm),
    )
