"""Intensity-based 2D-3D registration of a CT to a radiograph: the pipeline.

Steps (:func:`register`):

1. Inputs: the radiograph (bone bright), its detector geometry with the starting pose (from landmarks,
   a given pose or the default AP view), the CT in HU, optionally a structure mask (e.g. the femur
   labels: the DRR is then made of that structure only) and a 2D region of interest.
2. The CT becomes linear attenuation at ``energy_kev`` (water-like HU scaling). Bone voxels (the
   structure mask, else HU > ``bone_threshold_hu``) give the centre of rotation (their centroid) and the
   points whose projection the sanity checks and the detector windows use.
3. Optional global search (no trustworthy start): FFT template matching of in-plane shifts and rotations
   (:mod:`.global_search`).
4. Coarse to fine (:data:`DEFAULT_LEVELS`): at each level the radiograph and detector are block-averaged
   to the level's pitch, the CT is block-averaged to match, and CMA-ES optimises the six pose parameters
   (:mod:`.optimiser`), each population rendered in one batched projector call. Fine levels render only
   the bone's window of the detector; every level ignores a uniform (collimated) border and the edges of
   the CT's own field of view. Depth along the beam, the least determined parameter of one view, is held
   at the 2 mm level and scanned along the bone centroid's ray at the 1 mm level. Optional Adam steps
   through the differentiable projector finish.
5. Quality (:mod:`.quality`): "good" or "failed" with the reasons, from the final gradient correlation
   and sanity checks (bone present in the CT, projected bone inside the exposed field, agreement with
   landmarks).

Pose parameters are relative to the starting pose, about the bone centroid, in camera axes
(:func:`bmdgan.projection.pose.camera_pose`): rotations in degrees, translations in mm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import InputError
from ..projection.attenuation import hu_to_attenuation
from ..projection.geometry import ProjectionGeometry, volume_centre_lps
from ..projection.pose import camera_pose
from ..projection.projector import Projector
from . import levels as pyramid
from .optimiser import adam_refine, cmaes_search
from .quality import Quality, assess_quality
from .roi import Field, away_from_ct_border, bone_window, crop_geometry, exposed_field, inside_fraction
from .similarity import make_similarity

RESULT_FORMAT = "bmdgan-registration"
RESULT_VERSION = 1

PARAMETER_SCALE = np.array([4.0, 4.0, 4.0, 8.0, 8.0, 16.0])
"""One CMA-ES unit per parameter (degrees, degrees, degrees, mm, mm, mm): a start off by 10 degrees and
20 mm is about 2.5 units away; depth (the last, along the beam) is the least determined by one view,
so it gets the widest step."""
MAX_BONE_POINTS = 20000
"""Bone voxel centres kept (evenly subsampled) for windows, centroid and sanity checks."""


@dataclass(frozen=True)
class LevelSettings:
    """One resolution level: detector pitch (mm), CMA-ES generations and initial step (in units of
    :data:`PARAMETER_SCALE`), similarity patch side at the detector (mm; None: one global correlation),
    whether only the bone's window of the detector is rendered, the margin (mm at the detector) kept
    from the edge of the CT's projected field of view (see :func:`.roi.away_from_ct_border`), whether the
    depth (along the beam) stays fixed, and the half range (mm) of a depth scan before CMA-ES (0: none)."""

    pitch_mm: float
    generations: int
    sigma: float
    patch_mm: float | None = None
    window: bool = False
    border_mm: float = 10.0
    fix_depth: bool = False
    depth_scan_mm: float = 0.0


DEFAULT_LEVELS = (
    LevelSettings(pitch_mm=4.0, generations=30, sigma=1.0, patch_mm=32.0, window=False, border_mm=15.0),
    LevelSettings(pitch_mm=2.0, generations=20, sigma=0.3, patch_mm=16.0, window=True, border_mm=8.0,
                  fix_depth=True),
    LevelSettings(pitch_mm=1.0, generations=14, sigma=0.1, patch_mm=12.0, window=True, border_mm=5.0,
                  depth_scan_mm=24.0),
)
"""Coarse to fine (about 4x, 2x, 1x of a 0.5 mm detector at 1 mm with 2x2 binning). The coarse level
captures the start offset (up to ~10 degrees and 20 mm; depth free so that a large depth offset does not
trap the other parameters); the 2 mm level refines with the depth fixed; the 1 mm level scans the depth
along the bone centroid's ray, then refines all six parameters to sub-millimetre accuracy.
Why depth is settled at the 1 mm level: the clinical tone curve of a radiograph moves blurred bone edges,
so at 4 mm (2 mm) pitch the best GC lies 10-20 mm (about 5 mm) too deep on simulated radiographs, at 1 mm
within 1-2 mm. A native 0.2-0.5 mm level would cost 4-25x more per DRR for little gain."""
DEPTH_SCAN_STEP_MM = 3.0
"""Step of the depth scan (mm); the CMA-ES that follows starts with a 1.6 mm depth step."""
FINE_SCAN_MM = 4.0
"""Half range (mm, 1 mm steps) of the depth scan after CMA-ES: depth is so flat that CMA-ES stops 1-3 mm
from the best depth of the final level (measured on simulated radiographs)."""


@dataclass(frozen=True)
class RegistrationSettings:
    """Knobs of :func:`register` (units in the names). ``coarse_restarts``: extra runs of the first level,
    with another seed and a 1.5x wider step, while its similarity stays below ``restart_below`` (a stuck
    coarse search costs 2-3 s to redo; a wrong basin costs the whole registration). ``max_level_pixels``:
    a level whose detector (window) has more pixels is binned further, which bounds the time per case
    (a whole pelvis at 1 mm is 450 x 500 pixels: 40 s for the last level on 2 cores; capped, about 18 s)."""

    similarity: str = "gc"
    levels: tuple[LevelSettings, ...] = DEFAULT_LEVELS
    population: int = 10
    refine_steps: int = 0
    refine_learning_rate: float = 0.02
    energy_kev: float = 50.0
    bone_threshold_hu: float = 200.0
    window_margin_mm: float = 25.0
    search_range_deg: float = 30.0
    search_range_mm: float = 60.0
    global_search: bool = False
    coarse_restarts: int = 1
    restart_below: float = 0.6
    max_level_pixels: int = 120_000
    seed: int = 0

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["levels"] = [dict(level.__dict__) for level in self.levels]
        return data


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

    def to_dict(self) -> dict:
        """Versioned plain data: pose change, geometry JSON, similarity, quality flag and messages, timings."""
        return {
            "format": RESULT_FORMAT,
            "version": RESULT_VERSION,
            "quality": self.quality.to_dict(),
            "similarity": {"name": self.similarity_name, "final": self.similarity, "initial": self.initial_similarity,
                           "measured_at_pitch_mm": self.levels[-1].pitch_mm if self.levels else None},
            "geometry": self.geometry.to_dict(),
            "initial_geometry": self.initial_geometry.to_dict(),
            "start": self.start,
            "pose_change": {"rotation_deg": [float(v) for v in self.parameters[:3]],
                            "translation_mm": [float(v) for v in self.parameters[3:]],
                            "about_lps_mm": [float(v) for v in self.centre_lps_mm],
                            "convention": "camera_pose(params, initial camera_from_lps, about_lps_mm): rotations "
                                          "about the camera x, y, z axes (x first) through the centre, then "
                                          "translations along camera x, y, z (z = depth along the beam)"},
            "checks": {"bone_volume_cm3": self.bone_volume_cm3, "bone_in_view_fraction": self.bone_in_view,
                       "collimated_fraction": self.collimated_fraction,
                       "landmark_residual_mm": self.landmark_residual_mm},
            "levels": [dict(level.__dict__) for level in self.levels],
            "seconds": self.seconds,
            "settings": self.settings.to_dict(),
        }


@dataclass
class _Problem:
    """Prepared inputs shared by the levels."""

    fixed: np.ndarray
    field: Field
    geometry: ProjectionGeometry
    attenuation: np.ndarray          # what the DRRs show: the CT, or the structure alone (1/mm)
    whole_attenuation: np.ndarray    # always the whole CT (1/mm): the quality GC is calibrated on it
    ijk_to_lps: np.ndarray
    spacing_mm: tuple[float, float, float]
    shape_ijk: tuple[int, int, int]
    bone_points: np.ndarray
    bone_volume_cm3: float
    centre_lps_mm: np.ndarray


class PoseCost:
    """Minus the similarity of the DRR at pose parameters (B, 6) to the level's radiograph: costs (B,).

    One level: block-averaged radiograph and CT, detector (or its bone window), similarity measure.
    """

    def __init__(self, problem: _Problem, level: LevelSettings, settings: RegistrationSettings,
                 base_pose: np.ndarray, current_pose: np.ndarray):
        factor = pyramid.detector_factor(problem.geometry, level.pitch_mm)
        while True:
            geometry, image, mask = self._detector(problem, level, settings, current_pose, factor)
            pixels = geometry.detector_columns * geometry.detector_rows
            if pixels <= settings.max_level_pixels:
                break
            factor = max(factor + 1, int(np.ceil(factor * np.sqrt(pixels / settings.max_level_pixels))))
        mask = mask & away_from_ct_border(geometry.with_pose(current_pose), problem.shape_ijk, problem.ijk_to_lps,
                                          level.border_mm)
        pitch = 0.5 * (geometry.column_spacing_mm + geometry.row_spacing_mm)
        magnification = geometry.with_pose(current_pose).magnification_at(problem.centre_lps_mm)
        axis = pyramid.beam_axis(problem.ijk_to_lps, current_pose)
        factors = pyramid.volume_factors(problem.spacing_mm, axis, pitch / magnification)
        values, ijk_to_lps = pyramid.pool_volume(problem.attenuation, problem.ijk_to_lps, factors)
        self.projector = Projector(values, ijk_to_lps, unit="1/mm")
        self._whole = (problem.whole_attenuation, problem.ijk_to_lps, factors) \
            if problem.whole_attenuation is not problem.attenuation else None
        self.patch_px = None if level.patch_mm is None else max(4, int(round(level.patch_mm / pitch)))
        self.similarity = make_similarity(settings.similarity, image, mask, self.patch_px)
        self.image, self.mask = image, mask
        self.geometry = geometry
        self.volume_shape = values.shape
        self.base = torch.as_tensor(base_pose, dtype=torch.float64)
        self.centre = torch.as_tensor(problem.centre_lps_mm, dtype=torch.float64)

    @staticmethod
    def _detector(problem: _Problem, level: LevelSettings, settings: RegistrationSettings, pose: np.ndarray,
                  factor: int):
        """Detector geometry, radiograph and field mask of the level (binned by ``factor``, bone window)."""
        geometry = pyramid.downsample_geometry(problem.geometry, factor)
        image = pyramid.downsample_image(problem.fixed, factor)
        mask = pyramid.downsample_mask(problem.field.mask, factor)
        if level.window:
            box = bone_window(geometry.with_pose(pose), problem.bone_points, settings.window_margin_mm)
            if box is not None:
                row0, row1, col0, col1 = box
                geometry = crop_geometry(geometry, box)
                image, mask = image[row0:row1, col0:col1], mask[row0:row1, col0:col1]
        return geometry, image, mask

    @property
    def pitch_mm(self) -> float:
        """Detector pitch of this level (mm): the level's, or coarser where the pixel cap applied."""
        return 0.5 * (self.geometry.column_spacing_mm + self.geometry.row_spacing_mm)

    def similarity_of(self, parameters) -> torch.Tensor:
        """Similarity (B,) of the DRRs at parameters (B, 6) (tensor: differentiable)."""
        poses = camera_pose(parameters, self.base, self.centre)
        images = self.projector.render(poses, self.geometry)
        return self.similarity(images[..., 0, :, :])

    def __call__(self, parameters: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return -self.similarity_of(torch.as_tensor(np.asarray(parameters, dtype=float))).numpy()

    def gradient_correlation(self, parameters: np.ndarray) -> float:
        """Patch GC of the whole CT's DRR at one parameter vector (6,), whatever measure is optimised and
        whatever structure the DRRs show: the quality flag is calibrated on exactly this."""
        measure = self.similarity if self.similarity.name == "gc" else \
            make_similarity("gc", self.image, self.mask, self.patch_px)
        projector = self.projector
        if self._whole is not None:
            values, ijk_to_lps = pyramid.pool_volume(*self._whole)
            projector = Projector(values, ijk_to_lps, unit="1/mm")
        with torch.no_grad():
            poses = camera_pose(torch.as_tensor(np.asarray(parameters, dtype=float)), self.base, self.centre)
            return float(measure(projector.render(poses, self.geometry)[0]))


def bone_mask_of(hu: np.ndarray, threshold_hu: float, structure: np.ndarray | None = None) -> np.ndarray:
    """Voxels treated as bone: the given mask (labels) when there is one, else HU above the threshold."""
    if structure is not None:
        return np.asarray(structure, dtype=bool)
    return np.asarray(hu) > threshold_hu


def _bone_points(mask: np.ndarray, ijk_to_lps: np.ndarray) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    if len(i) > MAX_BONE_POINTS:
        keep = np.linspace(0, len(i) - 1, MAX_BONE_POINTS).astype(np.int64)
        k, j, i = k[keep], j[keep], i[keep]
    return (np.c_[i, j, k, np.ones(len(i))] @ np.asarray(ijk_to_lps).T)[:, :3]


def prepare(pixels: np.ndarray, geometry: ProjectionGeometry, ct, settings: RegistrationSettings,
            structure_mask: np.ndarray | None = None, roi: np.ndarray | None = None,
            bone_mask: np.ndarray | None = None) -> _Problem:
    """Check and prepare the inputs (see :func:`register`)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.shape != geometry.shape:
        raise InputError(None, f"the radiograph has {pixels.shape[1]}x{pixels.shape[0]} pixels but the geometry "
                               f"describes a {geometry.detector_columns}x{geometry.detector_rows} detector",
                         "give the geometry of this radiograph")
    if ct.unit != "HU":
        raise InputError(ct.source or None, f"registration needs a CT in HU, got {ct.unit!r}", "give the CT in HU")
    if min(ct.shape_ijk) < 2:
        raise InputError(ct.source or None, f"the CT has {ct.shape_ijk} voxels: too thin to project",
                         "give a 3D CT with at least 2 voxels along each axis")
    for mask in (structure_mask, bone_mask):
        if mask is not None and np.asarray(mask).shape != ct.array.shape:
            raise InputError(None, "the structure mask is not on the CT grid", "resample the labels onto the CT")
    field_ = exposed_field(pixels)
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        if roi.shape != pixels.shape:
            raise InputError(None, f"the ROI mask has shape {roi.shape}, the radiograph {pixels.shape}",
                             "give an ROI mask on the radiograph's pixel grid")
        field_ = Field(field_.mask & roi, field_.collimated_fraction, field_.box)
    ijk_to_lps = ct.geometry.ijk_to_lps()
    whole = hu_to_attenuation(ct.array, settings.energy_kev)
    attenuation = whole if structure_mask is None else whole * np.asarray(structure_mask, dtype=np.float32)
    bone = bone_mask_of(ct.array, settings.bone_threshold_hu, bone_mask if bone_mask is not None else structure_mask)
    bone_volume_cm3 = float(bone.sum()) * ct.voxel_volume_mm3() / 1000.0
    points = _bone_points(bone, ijk_to_lps)
    centre = points.mean(axis=0) if len(points) else volume_centre_lps(ct.shape_ijk, ijk_to_lps)
    if len(points) == 0:
        points = centre[None]
    return _Problem(pixels, field_, geometry, attenuation, whole, ijk_to_lps, ct.geometry.spacing_mm, ct.shape_ijk,
                    points, bone_volume_cm3, np.asarray(centre, dtype=float))


def register(pixels: np.ndarray, geometry: ProjectionGeometry, ct, *, settings: RegistrationSettings | None = None,
             structure_mask: np.ndarray | None = None, bone_mask: np.ndarray | None = None,
             roi: np.ndarray | None = None, start: str = "given", landmarks=None, progress: bool = False,
             log: Callable[[str], None] | None = None) -> RegistrationResult:
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
    say(f"CT {ct.shape_ijk} voxels, bone {problem.bone_volume_cm3:.1f} cm3; radiograph {pixels.shape[1]}x"
        f"{pixels.shape[0]} px, pitch {geometry.column_spacing_mm:g} mm, uniform border (collimation or empty "
        f"background) {100 * problem.field.collimated_fraction:.0f}% excluded")
    base = np.asarray(geometry.camera_from_lps, dtype=float)
    parameters = np.zeros(6)
    bounds = np.array([[-settings.search_range_deg, settings.search_range_deg]] * 3
                      + [[-settings.search_range_mm, settings.search_range_mm]] * 2
                      + [[-2 * settings.search_range_mm, 2 * settings.search_range_mm]])
    if settings.global_search:
        from .global_search import global_search

        parameters = global_search(problem, settings, base, log=say)
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
        refined = adam_refine(lambda p: -cost.similarity_of(p[None])[0], parameters, PARAMETER_SCALE,
                              steps=settings.refine_steps, learning_rate=settings.refine_learning_rate)
        if -refined.cost > final_similarity:
            parameters, final_similarity = refined.parameters, -refined.cost
        say(f"gradient refinement: {settings.refine_steps} Adam steps, {settings.similarity} {final_similarity:.4f}, "
            f"{time.perf_counter() - level_began:.1f} s")
    final_pose = camera_pose(parameters, base, problem.centre_lps_mm).numpy()
    final_geometry = geometry.with_pose(final_pose)
    bone_in_view = inside_fraction(final_geometry, problem.bone_points, problem.field.mask)
    residual_mm = None
    if landmarks is not None:
        residual_mm = landmark_residual_mm(final_geometry, landmarks, problem.centre_lps_mm)
    quality_gc = cost.gradient_correlation(parameters)
    quality = assess_quality(quality_gc, bone_volume_cm3=problem.bone_volume_cm3,
                             bone_in_view=bone_in_view, fixed_is_flat=cost.similarity.fixed_is_flat,
                             landmark_residual_mm=residual_mm, collimated_fraction=problem.field.collimated_fraction)
    seconds = time.perf_counter() - began
    say(f"quality: {quality.flag} ({'; '.join(quality.messages)}); {seconds:.1f} s in all")
    return RegistrationResult(final_geometry, geometry, parameters, problem.centre_lps_mm, settings.similarity,
                              final_similarity, float(initial_similarity), quality, reports, seconds, start,
                              problem.bone_volume_cm3, bone_in_view, problem.field.collimated_fraction, residual_mm,
                              settings)


def _optimise_level(cost: PoseCost, parameters: np.ndarray, level: LevelSettings, number: int,
                    settings: RegistrationSettings, base: np.ndarray, bounds: np.ndarray, progress: bool,
                    say: Callable[[str], None]) -> tuple[np.ndarray, LevelReport]:
    """One level: optional depth scan, CMA-ES (restarted on the first level while it stays poor), and a
    final fine depth scan on levels that scan depth. Returns the parameters (6,) and the level's report."""
    began = time.perf_counter()
    centre = cost.centre.numpy()
    rendered = 0
    if level.depth_scan_mm > 0:
        parameters, _, rendered = depth_scan(cost, parameters, centre, base, level.depth_scan_mm, DEPTH_SCAN_STEP_MM)
    label = f"level {number}/{len(settings.levels)} ({level.pitch_mm:g} mm)"
    search = _search_level(cost, parameters, level, settings, bounds, seed=settings.seed + number, sigma=level.sigma,
                           progress=progress, label=label)
    restarts = settings.coarse_restarts if number == 1 else 0
    for restart in range(1, restarts + 1):
        if -search.cost >= settings.restart_below:
            break
        again = _search_level(cost, parameters, level, settings, bounds, seed=settings.seed + 1000 * restart,
                              sigma=level.sigma * 1.5, progress=progress, label=f"{label} restart {restart}")
        say(f"level 1 restart {restart}: {settings.similarity} {-search.cost:.4f} < {settings.restart_below:g}, "
            f"restarted with a 1.5x wider step -> {-again.cost:.4f}")
        rendered += search.evaluations
        search = again if again.cost < search.cost else replace(search, evaluations=again.evaluations)
    if level.depth_scan_mm > 0:  # depth is the flattest direction: a last 1 mm scan with interpolation
        refined, refined_cost, more = depth_scan(cost, search.parameters, centre, base, FINE_SCAN_MM, 1.0,
                                                 interpolate=True)
        rendered += more
        if refined_cost <= search.cost:
            search = replace(search, parameters=refined, cost=refined_cost)
    evaluations = search.evaluations + rendered
    report = LevelReport(cost.pitch_mm, cost.geometry.shape, tuple(cost.volume_shape), evaluations, search.iterations,
                         -search.cost, time.perf_counter() - began, search.stopped)
    say(f"level {number}: pitch {cost.pitch_mm:g} mm, detector {cost.geometry.detector_columns}x"
        f"{cost.geometry.detector_rows} px, CT {cost.volume_shape[::-1]} voxels, {evaluations} DRRs in "
        f"{search.iterations} generations ({search.stopped}), {settings.similarity} {-search.cost:.4f}, "
        f"{report.seconds:.1f} s")
    return search.parameters, report


def _search_level(cost: PoseCost, parameters: np.ndarray, level: LevelSettings, settings: RegistrationSettings,
                  bounds: np.ndarray, *, seed: int, sigma: float, progress: bool, label: str):
    """One CMA-ES run of a level (depth fixed or free as the level says), with a progress bar."""
    bar = _progress_bar(progress, level.generations, label)
    free = np.array([True] * 5 + [not level.fix_depth])
    search = cmaes_search(cost, parameters, PARAMETER_SCALE, bounds=bounds, population=settings.population,
                          max_generations=level.generations, sigma=sigma, seed=seed, free=free,
                          on_generation=None if bar is None else _updater(bar))
    if bar is not None:
        bar.close()
    return search


def depth_scan(cost: PoseCost, parameters: np.ndarray, centre_lps_mm: np.ndarray, base: np.ndarray,
               half_range_mm: float, step_mm: float, interpolate: bool = False) -> tuple[np.ndarray, float, int]:
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
    left, middle, right = costs[best - 1:best + 2]
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
    return float(np.sqrt(np.mean(np.sum(delta ** 2, axis=1))) / geometry.magnification_at(centre_lps_mm))


def _progress_bar(enabled: bool, total: int, description: str):
    if not enabled:
        return None
    from ..progress import progress_bar

    return progress_bar(total=total, desc=description, unit="generation", leave=False)


def _updater(bar):
    def update(generation: int, best_cost: float) -> None:
        bar.update(1)
        bar.set_postfix(similarity=f"{-best_cost:.4f}")
    return update
