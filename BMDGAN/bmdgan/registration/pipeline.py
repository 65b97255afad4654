"""Intensity-based 2D-3D registration of a CT to a radiograph: the pipeline.

Steps (:func:`register`):

1. Inputs: the radiograph (bone bright), its detector geometry with the starting pose (from landmarks,
   a given pose or the default AP view), the CT in HU, optionally a structure mask (e.g. the femur
   labels: the DRR is then made of that structure only) and a 2D region of interest.
2. The CT becomes linear attenuation at ``energy_kev`` (water-like HU scaling). Bone voxels (the
   structure mask, else HU > ``bone_threshold_hu``) give the centre of rotation (their centroid) and the
   points whose projection the sanity checks and the detector windows use.
3. Optional global search (no trustworthy start): starts from the hips the bundled hip detector finds
   (:mod:`.hip_start`) and from FFT template matching of in-plane shifts and rotations (:mod:`.global_search`),
   each refined briefly; the best is the start.
4. Coarse to fine (:data:`.problem.DEFAULT_LEVELS`): at each level the radiograph and detector are block-averaged
   to the level's pitch, the CT is block-averaged to match, and CMA-ES optimises the six pose parameters
   (:mod:`.optimiser`), each population rendered in one batched projector call. Fine levels render only
   the bone's window of the detector; every level ignores a uniform (collimated) border and the edges of
   the CT's own field of view. Depth along the beam, the least determined parameter of one view, is held
   at the 2 mm level and scanned along the bone centroid's ray at the 1 mm level. Optional Adam steps
   through the differentiable projector finish.
5. Quality (:mod:`.quality`): "good", "uncertain" or "failed" with the reasons, from the final gradient
   correlation and sanity checks (bone present in the CT, projected bone inside the exposed field, agreement
   with landmarks, the bone's scale); when not good, the likely cause (:mod:`.diagnosis`: start pose, side,
   pixel spacing, field of view).

Pose parameters are relative to the starting pose, about the bone centroid, in camera axes
(:func:`bmdgan.projection.pose.camera_pose`): rotations in degrees, translations in mm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ..progress import progress_bar
from ..projection.geometry import ProjectionGeometry
from ..projection.pose import camera_pose
from .diagnosis import diagnose, scale_ratio
from .global_search import global_search
from .hip_start import detector_starts
from .optimiser import adam_refine, cmaes_search
from .problem import (
    DEFAULT_LEVELS,
    PARAMETER_SCALE,
    LevelSettings,
    PoseCost,
    RegistrationSettings,
    prepare,
)
from .quality import GOOD_GC, Quality, assess_quality
from .roi import inside_fraction

__all__ = ["DEFAULT_LEVELS", "LevelReport", "LevelSettings", "RegistrationResult", "RegistrationSettings", "register"]

RESULT_FORMAT = "bmdgan-registration"
RESULT_VERSION = 3
"""2: the quality flag may be "uncertain"; quality gained cause, reason, grade_basis and diagnosis. 3: "start_search"
(which start the global search chose: hip detector, in-plane search or the start itself, and the hips found)."""

SEARCH_RETRIES = 1
"""Without a start pose, when the final GC stays below :data:`~.quality.GOOD_GC`: how many other global-search
candidates are refined all the way too (the one whose final GC is highest is kept)."""
DEPTH_SCAN_STEP_MM = 3.0
"""Step of the depth scan (mm); the CMA-ES that follows starts with a 1.6 mm depth step."""
FINE_SCAN_MM = 4.0
"""Half range (mm, 1 mm steps) of the depth scan after CMA-ES: depth is so flat that CMA-ES stops 1-3 mm
from the best depth of the final level (measured on simulated radiographs)."""


@dataclass
class LevelReport:
    """What one level did: pitch (mm), detector size used, evaluations, generations, best similarity, seconds."""

    pitch_mm: float
    detector_shape: tuple[int, int]
    volume_shape: tuple[int, int, int]
    evaluations: int
    generations: int
    similarity: float
    seconds: float
    stopped: str


@dataclass
class RegistrationResult:
    """Registered pose and everything needed to judge it (see :meth:`to_dict` for the JSON)."""

    geometry: ProjectionGeometry
    initial_geometry: ProjectionGeometry
    parameters: np.ndarray
    centre_lps_mm: np.ndarray
    similarity_name: str
    similarity: float
    initial_similarity: float
    quality: Quality
    levels: list[LevelReport]
    seconds: float
    start: str = "given"
    bone_volume_cm3: float = 0.0
    bone_in_view: float = 0.0
    collimated_fraction: float = 0.0
    landmark_residual_mm: float | None = None
    settings: RegistrationSettings = field(default_factory=RegistrationSettings)
    start_search: dict | None = None
    """Without a usable start: the global search's choice and candidates, and the hips the detector found."""

    def to_dict(self) -> dict:
        """Versioned plain data: pose change, geometry JSON, similarity, quality flag and messages, timings."""
        return {
            "format": RESULT_FORMAT,
            "version": RESULT_VERSION,
            "quality": self.quality.to_dict(),
            "similarity": {
                "name": self.similarity_name,
                "final": self.similarity,
                "initial": self.initial_similarity,
                "measured_at_pitch_mm": self.levels[-1].pitch_mm if self.levels else None,
            },
            "geometry": self.geometry.to_dict(),
            "initial_geometry": self.initial_geometry.to_dict(),
            "start": self.start,
            "start_search": self.start_search,
            "pose_change": {
                "rotation_deg": [float(v) for v in self.parameters[:3]],
                "translation_mm": [float(v) for v in self.parameters[3:]],
                "about_lps_mm": [float(v) for v in self.centre_lps_mm],
                "convention": "camera_pose(params, initial camera_from_lps, about_lps_mm): rotations "
                "about the camera x, y, z axes (x first) through the centre, then "
                "translations along camera x, y, z (z = depth along the beam)",
            },
            "checks": {
                "bone_volume_cm3": self.bone_volume_cm3,
                "bone_in_view_fraction": self.bone_in_view,
                "collimated_fraction": self.collimated_fraction,
                "landmark_residual_mm": self.landmark_residual_mm,
            },
            "levels": [dict(level.__dict__) for level in self.levels],
            "seconds": self.seconds,
            "settings": self.settings.to_dict(),
        }


def register(
    pixels: np.ndarray,
    geometry: ProjectionGeometry,
    ct,
    *,
    settings: RegistrationSettings | None = None,
    structure_mask: np.ndarray | None = None,
    bone_mask: np.ndarray | None = None,
    roi: np.ndarray | None = None,
    start: str = "given",
    landmarks=None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> RegistrationResult:
    """Register the CT (:class:`bmdgan.io.Volume` in HU) to the radiograph ``pixels`` (rows, cols; bone bright).

    geometry: the radiograph's detector (SID, pitch, principal point, mm) with the starting pose.
    structure_mask: optional bool [k, j, i] on the CT grid: the DRR shows only this structure.
    bone_mask: optional bool [k, j, i]: the voxels of the checks, windows and centre of rotation (default:
    the structure mask, else HU > ``settings.bone_threshold_hu``).
    roi: optional bool (rows, cols): pixels the similarity may use.
    start: how the starting pose was found ("landmarks", "given", "default"), for the report.
    landmarks: optional :class:`~.landmark_pose.Landmarks` (their residual under the final pose is checked).
    """
    settings = settings or RegistrationSettings()
    say = log or (lambda message: None)
    began = time.perf_counter()
    problem = prepare(pixels, geometry, ct, settings, structure_mask, roi, bone_mask)
    say(
        f"CT {ct.shape_ijk} voxels, bone {problem.bone_volume_cm3:.1f} cm3; radiograph {pixels.shape[1]}x"
        f"{pixels.shape[0]} px, pitch {geometry.column_spacing_mm:g} mm, uniform border (collimation or empty "
        f"background) {100 * problem.field.collimated_fraction:.0f}% excluded"
    )
    base = np.asarray(geometry.camera_from_lps, dtype=float)
    parameters = np.zeros(6)
    bounds = np.array(
        [[-settings.search_range_deg, settings.search_range_deg]] * 3
        + [[-settings.search_range_mm, settings.search_range_mm]] * 2
        + [[-2 * settings.search_range_mm, 2 * settings.search_range_mm]]
    )
    start_search, alternatives = None, []
    if settings.global_search:
        hips = []
        if settings.hip_detector_start and problem.bone_volume_cm3 > 0:
            hips = detector_starts(pixels, geometry, ct, problem.centre_lps_mm, log=say)
        outcome = global_search(problem, settings, base, log=say, hip_starts=[hip.parameters for hip in hips])
        parameters, alternatives = outcome.parameters, outcome.alternatives[:SEARCH_RETRIES]
        start_search = {**outcome.to_dict(), "hips": [hip.to_dict() for hip in hips], "retried": False}
        say(f"global search: start from the {outcome.source.replace('_', ' ')}")
    parameters, reports, cost, initial_similarity, final_similarity = _levels(
        problem, settings, base, parameters, bounds, progress, say
    )
    quality_gc = cost.gradient_correlation(parameters)
    for source, alternative in alternatives if quality_gc < GOOD_GC else ():
        # the short coarse runs of the global search can rank a wrong basin first: the finest level's GC decides
        again = _levels(problem, settings, base, alternative, bounds, progress, say)
        again_gc = again[2].gradient_correlation(again[0])
        say(f"global search: final GC {quality_gc:.3f} < {GOOD_GC:g}, the next candidate ended at {again_gc:.3f}")
        start_search["retried"] = True
        if again_gc > quality_gc:
            (parameters, reports, cost, initial_similarity, final_similarity), quality_gc = again, again_gc
            start_search["chosen"] = source
    final_pose = camera_pose(parameters, base, problem.centre_lps_mm).numpy()
    final_geometry = geometry.with_pose(final_pose)
    bone_in_view = inside_fraction(final_geometry, problem.bone_points, problem.field.mask)
    residual_mm = None
    if landmarks is not None:
        residual_mm = landmark_residual_mm(final_geometry, landmarks, problem.centre_lps_mm)
    measured = dict(
        bone_volume_cm3=problem.bone_volume_cm3,
        bone_in_view=bone_in_view,
        fixed_is_flat=cost.similarity.fixed_is_flat,
        landmark_residual_mm=residual_mm,
        collimated_fraction=problem.field.collimated_fraction,
        scale_ratio=scale_ratio(geometry, final_geometry, problem.centre_lps_mm),
    )
    quality = assess_quality(quality_gc, **measured)
    if not quality.good and problem.bone_volume_cm3 > 0:
        diagnosis = diagnose(problem, settings, base, parameters, bounds, geometry, final_geometry)
        quality = assess_quality(quality_gc, diagnosis=diagnosis, **measured)
    seconds = time.perf_counter() - began
    say(f"quality: {quality.flag} ({'; '.join(quality.messages)}); {seconds:.1f} s in all")
    return RegistrationResult(
        final_geometry,
        geometry,
        parameters,
        problem.centre_lps_mm,
        settings.similarity,
        final_similarity,
        float(initial_similarity),
        quality,
        reports,
        seconds,
        start,
        problem.bone_volume_cm3,
        bone_in_view,
        problem.field.collimated_fraction,
        residual_mm,
        settings,
        start_search,
    )


def _levels(problem, settings: RegistrationSettings, base, parameters, bounds, progress: bool, say):
    """Coarse to fine from ``parameters``, with the Adam steps of ``settings.refine_steps``: (parameters, level
    reports, the last level's cost, the similarity at the start and at the end)."""
    reports: list[LevelReport] = []
    cost = None
    initial_similarity = None
    for number, level in enumerate(settings.levels, start=1):
        pose = camera_pose(parameters, base, problem.centre_lps_mm).numpy()
        cost = PoseCost(problem, level, settings, base, pose)
        if initial_similarity is None:
            initial_similarity = float(-cost(np.zeros((1, 6)))[0])
        parameters, report = _optimise_level(cost, parameters, level, number, settings, base, bounds, progress, say)
        reports.append(report)
    final_similarity = reports[-1].similarity
    if settings.refine_steps > 0:
        level_began = time.perf_counter()
        refined = adam_refine(
            lambda p: -cost.similarity_of(p[None])[0],
            parameters,
            PARAMETER_SCALE,
            steps=settings.refine_steps,
            learning_rate=settings.refine_learning_rate,
        )
        if -refined.cost > final_similarity:
            parameters, final_similarity = refined.parameters, -refined.cost
        say(
            f"gradient refinement: {settings.refine_steps} Adam steps, {settings.similarity} {final_similarity:.4f}, "
            f"{time.perf_counter() - level_began:.1f} s"
        )
    return parameters, reports, cost, initial_similarity, final_similarity


def _optimise_level(
    cost: PoseCost,
    parameters: np.ndarray,
    level: LevelSettings,
    number: int,
    settings: RegistrationSettings,
    base: np.ndarray,
    bounds: np.ndarray,
    progress: bool,
    say: Callable[[str], None],
) -> tuple[np.ndarray, LevelReport]:
    """One level: optional depth scan, CMA-ES (restarted on the first level while it stays poor), and a
    final fine depth scan on levels that scan depth. Returns the parameters (6,) and the level's report."""
    began = time.perf_counter()
    centre = cost.centre.numpy()
    rendered = 0
    if level.depth_scan_mm > 0:
        parameters, _, rendered = depth_scan(cost, parameters, centre, base, level.depth_scan_mm, DEPTH_SCAN_STEP_MM)
    label = f"level {number}/{len(settings.levels)} ({level.pitch_mm:g} mm)"
    search = _search_level(
        cost,
        parameters,
        level,
        settings,
        bounds,
        seed=settings.seed + number,
        sigma=level.sigma,
        progress=progress,
        label=label,
    )
    restarts = settings.coarse_restarts if number == 1 else 0
    for restart in range(1, restarts + 1):
        if -search.cost >= settings.restart_below:
            break
        again = _search_level(
            cost,
            parameters,
            level,
            settings,
            bounds,
            seed=settings.seed + 1000 * restart,
            sigma=level.sigma * 1.5,
            progress=progress,
            label=f"{label} restart {restart}",
        )
        say(
            f"level 1 restart {restart}: {settings.similarity} {-search.cost:.4f} < {settings.restart_below:g}, "
            f"restarted with a 1.5x wider step -> {-again.cost:.4f}"
        )
        rendered += search.evaluations
        search = again if again.cost < search.cost else replace(search, evaluations=again.evaluations)
    if level.depth_scan_mm > 0:  # depth is the flattest direction: a last 1 mm scan with interpolation
        refined, refined_cost, more = depth_scan(
            cost, search.parameters, centre, base, FINE_SCAN_MM, 1.0, interpolate=True
        )
        rendered += more
        if refined_cost <= search.cost:
            search = replace(search, parameters=refined, cost=refined_cost)
    evaluations = search.evaluations + rendered
    report = LevelReport(
        cost.pitch_mm,
        cost.geometry.shape,
        tuple(cost.volume_shape),
        evaluations,
        search.iterations,
        -search.cost,
        time.perf_counter() - began,
        search.stopped,
    )
    say(
        f"level {number}: pitch {cost.pitch_mm:g} mm, detector {cost.geometry.detector_columns}x"
        f"{cost.geometry.detector_rows} px, CT {cost.volume_shape[::-1]} voxels, {evaluations} DRRs in "
        f"{search.iterations} generations ({search.stopped}), {settings.similarity} {-search.cost:.4f}, "
        f"{report.seconds:.1f} s"
    )
    return search.parameters, report


def _search_level(
    cost: PoseCost,
    parameters: np.ndarray,
    level: LevelSettings,
    settings: RegistrationSettings,
    bounds: np.ndarray,
    *,
    seed: int,
    sigma: float,
    progress: bool,
    label: str,
):
    """One CMA-ES run of a level (depth fixed or free as the level says), with a progress bar."""
    bar = _progress_bar(progress, level.generations, label)
    free = np.array([True] * 5 + [not level.fix_depth])
    # a depth scan or the (unbounded) global search may end beyond a bound: CMA-ES must start inside them
    parameters = np.clip(parameters, bounds[:, 0], bounds[:, 1])
    search = cmaes_search(
        cost,
        parameters,
        PARAMETER_SCALE,
        bounds=bounds,
        population=settings.population,
        max_generations=level.generations,
        sigma=sigma,
        seed=seed,
        free=free,
        on_generation=None if bar is None else _updater(bar),
    )
    if bar is not None:
        bar.close()
    return search


def depth_scan(
    cost: PoseCost,
    parameters: np.ndarray,
    centre_lps_mm: np.ndarray,
    base: np.ndarray,
    half_range_mm: float,
    step_mm: float,
    interpolate: bool = False,
) -> tuple[np.ndarray, float, int]:
    """Best of the poses moved along the ray through the bone centroid by -half_range..+half_range mm of
    depth (one batched render): the centroid's projection stays put, only the magnification changes.
    ``interpolate``: move to the vertex of the parabola through the best sample and its neighbours (kept
    only if it scores at least as well). Returns the parameters (6,), their cost and the DRRs rendered."""
    offsets = np.arange(-half_range_mm, half_range_mm + 1e-9, step_mm)
    pose = camera_pose(parameters, base, centre_lps_mm).numpy()
    centre_camera = pose[:3, :3] @ centre_lps_mm + pose[:3, 3]
    ray = centre_camera / centre_camera[2]  # camera displacement per mm of depth, along the centroid's ray
    candidates = np.repeat(parameters[None], len(offsets), axis=0)
    candidates[:, 3:] += offsets[:, None] * ray[None]
    costs = cost(candidates)
    best = int(np.argmin(costs))
    if not interpolate or best in (0, len(offsets) - 1):
        return candidates[best], float(costs[best]), len(offsets)
    left, middle, right = costs[best - 1 : best + 2]
    curvature = left - 2.0 * middle + right
    if curvature <= 0:
        return candidates[best], float(middle), len(offsets)
    shift = 0.5 * (left - right) / curvature * step_mm  # parabola vertex, within half a step of the best
    refined = candidates[best].copy()
    refined[3:] += shift * ray
    refined_cost = float(cost(refined[None])[0])
    if refined_cost <= middle:
        return refined, refined_cost, len(offsets) + 1
    return candidates[best], float(middle), len(offsets) + 1


def landmark_residual_mm(geometry: ProjectionGeometry, landmarks, centre_lps_mm: np.ndarray) -> float:
    """RMS distance (mm, at the patient: detector mm / magnification) between the clicked landmark pixels
    and the projections of their CT points under ``geometry``."""
    projected = geometry.project_points(landmarks.lps_mm)
    delta = (projected - landmarks.pixels) * np.array([geometry.column_spacing_mm, geometry.row_spacing_mm])
    return float(np.sqrt(np.mean(np.sum(delta**2, axis=1))) / geometry.magnification_at(centre_lps_mm))


def _progress_bar(enabled: bool, total: int, description: str):
    if not enabled:
        return None

    return progress_bar(total=total, desc=description, unit="generation", leave=False)


def _updater(bar):
    def update(generation: int, best_cost: float) -> None:
        bar.update(1)
        bar.set_postfix(similarity=f"{-best_cost:.4f}")

    return update
