"""Global start without landmarks: where in the radiograph is the CT's bone, and roughly how turned?

Why: CMA-ES refines a start that is within about 10 degrees and 20 mm. Without landmarks the default AP
start (CT centre on the central ray) can be 100 mm off in the image plane (a hip on a pelvis radiograph).
In-plane shifts are found exhaustively and cheaply: the DRR's gradient images at the start pose, turned
by a few in-plane angles, are matched against the radiograph's at every shift at once by masked normalised
cross-correlation in the Fourier domain (Padfield 2012), i.e. a gradient correlation per shift. The best
few (shift, angle) candidates then each get a short coarse CMA-ES run; the best one is the start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.fft import irfft2, next_fast_len, rfft2

from ..projection.pose import camera_pose
from ..projection.projector import Projector
from . import levels as pyramid
from .optimiser import cmaes_search
from .problem import PARAMETER_SCALE, LevelSettings, PoseCost
from .roi import away_from_ct_border, crop_geometry, projected_box
from .similarity import sobel_gradients

SEARCH_PITCH_MM = 4.0
"""Detector pitch of the exhaustive search (mm)."""
IN_PLANE_ANGLES_DEG = np.array([-20.0, -10.0, 0.0, 10.0, 20.0])
"""In-plane rotations tried (degrees about the beam)."""
CANDIDATES = 3
"""Best distinct (shift, angle) candidates refined by a short CMA-ES run each."""
CANDIDATE_GENERATIONS = 15
"""CMA-ES generations of each candidate's short run (the first level then continues from the best)."""
DISTINCT_MM, DISTINCT_DEG = 10.0, 5.0
"""Candidates' end poses this far apart in the image plane (mm) or in-plane turn (degrees) are different basins."""
MIN_OVERLAP = 0.5
"""Least fraction of the template that must overlap the exposed field for a shift to count."""


def _correlate(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Full cross-correlation of ``a`` with template ``b`` (FFT): out[s] = sum_x a[x + s - (h-1)] b[x]."""
    fa = rfft2(a, shape)
    fb = rfft2(b[::-1, ::-1], shape)
    return irfft2(fa * fb, shape)


def masked_ncc_map(
    fixed: np.ndarray, fixed_mask: np.ndarray, template: np.ndarray, template_mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """NCC of ``template`` (h, w) placed at every offset over ``fixed`` (H, W), counting only the pixels
    where both masks are true. Returns (ncc, overlap fraction of the template's mask), both
    (H + h - 1, W + w - 1); offset index (r, c) puts the template's top-left pixel at fixed pixel
    (r - h + 1, c - w + 1)."""
    h, w = template.shape
    H, W = fixed.shape
    shape = (next_fast_len(H + h - 1), next_fast_len(W + w - 1))
    mask = fixed_mask.astype(np.float64)
    f = fixed * mask
    weights = np.ones((h, w)) if template_mask is None else template_mask.astype(np.float64)
    t = template * weights
    n = _correlate(mask, weights, shape)
    sum_f = _correlate(f, weights, shape)
    sum_f2 = _correlate(f * f, weights, shape)
    sum_t = _correlate(mask, t, shape)
    sum_t2 = _correlate(mask, t * template, shape)
    sum_ft = _correlate(f, t, shape)
    crop = (slice(0, H + h - 1), slice(0, W + w - 1))
    n, sum_f, sum_f2, sum_t, sum_t2, sum_ft = (x[crop] for x in (n, sum_f, sum_f2, sum_t, sum_t2, sum_ft))
    safe_n = np.maximum(n, 1.0)
    covariance = sum_ft - sum_f * sum_t / safe_n
    variance = np.maximum(sum_f2 - sum_f**2 / safe_n, 0.0) * np.maximum(sum_t2 - sum_t**2 / safe_n, 0.0)
    overlap = n / max(float(weights.sum()), 1.0)
    ok = (overlap >= MIN_OVERLAP) & (variance > 1e-12 * max(float(variance.max()), 1e-300))
    ncc = np.where(ok, covariance / np.sqrt(np.where(ok, variance, 1.0)), -1.0)
    return ncc, overlap


def _top_peaks(score: np.ndarray, count: int, *, spacing: int) -> list[tuple[int, int, float]]:
    """The ``count`` highest local values at least ``spacing`` pixels apart: (row, col, value)."""
    work = score.copy()
    peaks = []
    for _ in range(count):
        index = int(np.argmax(work))
        row, col = divmod(index, work.shape[1])
        value = float(work[row, col])
        if value <= -1.0:
            break
        peaks.append((row, col, value))
        work[max(0, row - spacing) : row + spacing + 1, max(0, col - spacing) : col + spacing + 1] = -np.inf
    return peaks


@dataclass
class InPlaneScores:
    """FFT gradient-correlation maps of the bone's DRR over the radiograph, one per in-plane angle.

    scores: (angles, offsets rows, offsets columns); index (r, c) moves the DRR by ``r - zero[0]`` rows and
    ``c - zero[1]`` columns of ``pitch_mm`` (detector mm), ``mm_per_pixel`` mm at the bone's centroid each."""

    angles_deg: np.ndarray
    scores: np.ndarray
    zero: tuple[int, int]
    pitch_mm: tuple[float, float]
    mm_per_pixel: float

    def shift_mm(self, row: int, col: int) -> tuple[float, float]:
        """Camera x and y shift (mm at the bone) of offset index (row, col)."""
        return (
            (col - self.zero[1]) * self.pitch_mm[0] * self.mm_per_pixel,
            (row - self.zero[0]) * self.pitch_mm[1] * self.mm_per_pixel,
        )

    def at_zero(self) -> float:
        """Score of the DRR where it is (angle 0, no shift); -1 when that placement is not scored."""
        row, col = self.zero
        middle = int(np.argmin(np.abs(self.angles_deg)))
        inside = 0 <= row < self.scores.shape[1] and 0 <= col < self.scores.shape[2]
        return float(self.scores[middle, row, col]) if inside and self.angles_deg[middle] == 0 else -1.0

    def best(self) -> tuple[float, float, float, float]:
        """(score, angle in degrees, camera x and y shift in mm) of the best placement."""
        index = int(np.argmax(self.scores))
        angle, row, col = np.unravel_index(index, self.scores.shape)
        return (float(self.scores[angle, row, col]), float(self.angles_deg[angle]), *self.shift_mm(row, col))


def in_plane_scores(
    problem, settings, base: np.ndarray, mirror: bool = False, angles_deg: np.ndarray = IN_PLANE_ANGLES_DEG
) -> InPlaneScores:
    """Score every in-plane placement (shift, ``angles_deg`` about the beam) of the bone's DRR at pose ``base``
    over the radiograph. ``mirror``: flip the DRR left-right first (a radiograph of the other side matches the
    mirrored DRR better than the DRR itself)."""
    factor = pyramid.detector_factor(problem.geometry, SEARCH_PITCH_MM)
    geometry = pyramid.downsample_geometry(problem.geometry, factor)
    image = pyramid.downsample_image(problem.fixed, factor)
    field = pyramid.downsample_mask(problem.field.mask, factor)
    centre = problem.centre_lps_mm
    start_view = geometry.with_pose(base)
    # template detector: the bone's projected box at the start, even where it leaves the radiograph
    row0, row1, col0, col1 = projected_box(start_view, problem.bone_points, settings.window_margin_mm)
    template_geometry = crop_geometry(start_view, (row0, row1, col0, col1))
    pitch = 0.5 * (geometry.column_spacing_mm + geometry.row_spacing_mm)
    factors = pyramid.volume_factors(
        problem.spacing_mm, pyramid.beam_axis(problem.ijk_to_lps, base), pitch / start_view.magnification_at(centre)
    )
    values, ijk_to_lps = pyramid.pool_volume(problem.attenuation, problem.ijk_to_lps, factors)
    angles_deg = np.asarray(angles_deg, dtype=float)
    parameters = np.zeros((len(angles_deg), 6))
    parameters[:, 2] = angles_deg
    with torch.no_grad():
        drrs = (
            Projector(values, ijk_to_lps, unit="1/mm")
            .render(camera_pose(parameters, base, centre), template_geometry)[:, 0]
            .double()
        )
    fixed_gx, fixed_gy = (g.numpy() for g in sobel_gradients(torch.as_tensor(image, dtype=torch.float64)))
    fixed_mask = field[1:-1, 1:-1]  # the Sobel gradients' valid region
    # the template ignores the edges of the CT's field of view (no radiograph has them)
    template_mask = away_from_ct_border(
        template_geometry, problem.shape_ijk, problem.ijk_to_lps, settings.levels[0].border_mm
    )[1:-1, 1:-1]
    if mirror:
        drrs, template_mask = drrs.flip(-1), template_mask[:, ::-1]
    mm_per_pixel = 1.0 if geometry.parallel else float(start_view.to_camera(centre)[2]) / geometry.source_to_detector_mm
    scores = []
    for drr in drrs:
        gx, gy = (g.numpy() for g in sobel_gradients(drr))
        scores.append(
            0.5
            * (
                masked_ncc_map(fixed_gx, fixed_mask, gx, template_mask)[0]
                + masked_ncc_map(fixed_gy, fixed_mask, gy, template_mask)[0]
            )
        )
    # the template's top-left pixel moves from (row0, col0) to (row - h + 1, col - w + 1): no shift at this index
    h, w = template_mask.shape
    return InPlaneScores(
        angles_deg,
        np.stack(scores),
        (row0 + h - 1, col0 + w - 1),
        (geometry.column_spacing_mm, geometry.row_spacing_mm),
        mm_per_pixel,
    )


def in_plane_candidates(problem, settings, base: np.ndarray) -> list[tuple[float, float, float, float]]:
    """(FFT gradient-correlation score, in-plane angle in degrees, camera x and y shifts in mm) of the best
    placements of the bone's DRR over the radiograph, best first, for each of :data:`IN_PLANE_ANGLES_DEG`."""
    maps = in_plane_scores(problem, settings, base)
    pitch = 0.5 * sum(maps.pitch_mm)
    candidates = []
    for angle, score in zip(maps.angles_deg, maps.scores):
        for row, col, value in _top_peaks(score, CANDIDATES, spacing=max(2, int(round(20.0 / pitch)))):
            candidates.append((value, float(angle), *maps.shift_mm(row, col)))
    return sorted(candidates, key=lambda candidate: -candidate[0])


@dataclass
class SearchOutcome:
    """What the global search chose: parameters (6,) relative to the start view (degrees, mm), where the winner
    came from ("hip_detector", "in_plane_search" or "start": none did better than the start itself), every
    candidate tried (source, its starting parameters, the similarity its short run reached) and the others' end
    parameters at least :data:`DISTINCT_MM` or :data:`DISTINCT_DEG` from the winner, best first (source,
    parameters)."""

    parameters: np.ndarray
    source: str
    candidates: list[dict]
    alternatives: list[tuple[str, np.ndarray]]

    def to_dict(self) -> dict:
        return {"chosen": self.source, "candidates": list(self.candidates)}


def global_search(
    problem,
    settings,
    base: np.ndarray,
    log: Callable[[str], None] | None = None,
    hip_starts: list[np.ndarray] = (),
) -> SearchOutcome:
    """The best of short coarse CMA-ES runs from the ``hip_starts`` (parameters (6,) relative to ``base`` from the hip
    detector, :mod:`.hip_start`) and the :func:`in_plane_candidates` (and the start itself, kept if none does
    better)."""
    say = log or (lambda message: None)
    level = LevelSettings(
        pitch_mm=SEARCH_PITCH_MM,
        generations=CANDIDATE_GENERATIONS,
        sigma=0.5,
        patch_mm=settings.levels[0].patch_mm,
        window=False,
        border_mm=settings.levels[0].border_mm,
    )
    cost = PoseCost(problem, level, settings, base, base)
    start_cost = float(cost(np.zeros((1, 6)))[0])
    starts = [("hip_detector", np.asarray(start, dtype=float), None) for start in hip_starts]
    for value, angle, tx, ty in in_plane_candidates(problem, settings, base)[:CANDIDATES]:
        starts.append(("in_plane_search", np.array([0.0, 0.0, angle, tx, ty, 0.0]), value))
    tried, ended = [], [("start", np.zeros(6), start_cost)]
    for rank, (kind, start, value) in enumerate(starts):
        search = cmaes_search(
            cost,
            start,
            PARAMETER_SCALE,
            population=settings.population,
            max_generations=level.generations,
            sigma=level.sigma,
            seed=settings.seed + 100 + rank,
        )
        score = f"FFT score {value:.3f}" if value is not None else "hip detector"
        say(
            f"global search candidate {rank + 1} ({score}): in-plane {start[2]:+.0f} deg, shift ({start[3]:+.0f}, "
            f"{start[4]:+.0f}) mm -> {settings.similarity} {-search.cost:.4f}"
        )
        tried.append({"source": kind, "start_parameters": [float(v) for v in start], "similarity": -search.cost})
        ended.append((kind, search.parameters, search.cost))
    ended.sort(key=lambda item: item[2])
    source, best = ended[0][0], ended[0][1]
    alternatives = [
        (kind, parameters)
        for kind, parameters, _ in ended[1:]
        if np.hypot(*(parameters[3:5] - best[3:5])) >= DISTINCT_MM or abs(parameters[2] - best[2]) >= DISTINCT_DEG
    ]
    return SearchOutcome(best, source, tried, alternatives)
