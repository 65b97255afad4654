"""Find and fit the femoral head as a sphere (centre in LPS mm, radius in mm) from the CT alone.

Why a sphere: the femoral head is close to spherical (radius 18-30 mm in adults), it is the one
structure of the hip that this holds for, and its centre is the first landmark (Uemura et al. 2022).

How:

1. Candidate centres: gradient Hough votes. Every bone edge votes at the points 18-28 mm away along
   its gradient (head surfaces point their gradient at the centre; the acetabular surface facing the
   head points away from it, so both signs are voted once). Near the shaft's proximal end, when a
   shaft is in view, a ring of extra starting points is added (heads cut by the edge of the field of
   view get few votes).
2. Each candidate is refined by casting 500 rays from the centre. Along a ray the head surface is a
   fall of CT number from bone to cartilage; the radius most rays have a fall at is taken, per ray the
   fall nearest to it, and a sphere fitted to those points with trimming (rays into the neck or the
   fovea have no fall there and drop out). Five rounds move the centre to the fit.
3. Along rays that meet the acetabulum the darkest point between head and socket is the joint space:
   its radius per ray (``joint_radius_mm``) is where :mod:`.segmentation` cuts femur from pelvis.
4. A candidate is kept when its inside is bone, the edge points fit the sphere within ``MAX_RMS_MM``,
   and a bony neck leaves it on one side. Candidates are ranked by how much of the sphere sits in a
   socket (the acetabulum), how much of it was seen, and how dense its inside is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..io.volume import Volume
from . import grid
from .midline import lateral_of, midline_offset_lps

HEAD_RADIUS_RANGE_MM = (17.0, 32.0)
"""Adult femoral head radius range (mm) accepted as a head."""
MAX_RMS_MM = 1.8
"""Maximum RMS distance (mm) of the edge points from the fitted sphere."""
EDGE_MIN_FALL_HU_PER_MM = 20.0
"""A head edge is a fall of CT number along the ray of at least this slope (HU/mm)..."""
EDGE_MIN_DROP_HU = 60.0
"""...and at least this drop (HU) within 3 mm (partial volume across a 3 mm joint keeps it small)."""
RAY_COUNT = 500
MAX_REFINE_SHIFT_MM = 25.0
"""A sphere fit that ends further than this (mm) from its starting point has found another structure."""
HOUGH_MAX_EDGES = 300_000
"""At most this many edge voxels vote for head centres (a random subset beyond; thigh crops have fewer)."""
NECK_SHAFT_ANGLE_DEG = 130.0
"""Typical adult neck-shaft angle (degrees), the prior for the neck direction."""


@dataclass
class FemoralHead:
    """A fitted femoral head: centre (LPS mm), radius (mm) and the per-ray evidence for it."""

    centre_lps: np.ndarray
    radius_mm: float
    coverage: float
    rms_mm: float
    neck_direction: np.ndarray
    neck_fraction: float
    socket_fraction: float
    interior_hu: float
    directions: np.ndarray = field(repr=False)
    edge_radius_mm: np.ndarray = field(repr=False)
    on_sphere: np.ndarray = field(repr=False)
    in_view: np.ndarray = field(repr=False)
    neck_rays: np.ndarray = field(repr=False)
    joint_radius_mm: np.ndarray = field(repr=False)
    midline_offset_lps: np.ndarray | None = field(default=None, repr=False)
    """LPS vector (mm, axial plane) from the body's midline to the centre (:mod:`.midline`); None if unknown."""

    @property
    def lateral(self) -> np.ndarray:
        """Unit LPS vector from the body's midline towards the head, axial plane; zeros if unknown."""
        return lateral_of(self.midline_offset_lps)

    @property
    def surface_points_lps(self) -> np.ndarray:
        """Edge points (LPS mm) that lie on the fitted sphere."""
        return self.centre_lps + self.directions[self.on_sphere] * self.edge_radius_mm[self.on_sphere, None]


def fibonacci_directions(count: int) -> np.ndarray:
    """``count`` unit vectors spread evenly over the sphere, shape ``(count, 3)``."""
    index = np.arange(count) + 0.5
    polar = np.arccos(1 - 2 * index / count)
    azimuth = np.pi * (1 + 5**0.5) * index
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


def smoothed_hu(volume: Volume, sigma_mm: float = 1.0) -> np.ndarray:
    """CT numbers (HU) smoothed with a Gaussian of ``sigma_mm`` (at least 0.3 voxel along each axis)."""
    sigma = np.maximum(sigma_mm / grid.spacing_kji(volume.geometry), 0.3)
    return ndimage.gaussian_filter(volume.array.astype(np.float32), sigma)


def hu_gradient(volume: Volume, smooth: np.ndarray) -> np.ndarray:
    """Gradient (HU/mm) of the smoothed CT along the array axes, shape ``(3, k, j, i)`` (float32)."""
    return np.stack(np.gradient(smooth, *grid.spacing_kji(volume.geometry))).astype(np.float32, copy=False)


def hough_candidates(
    volume: Volume, smooth: np.ndarray, count: int = 6, gradient: np.ndarray | None = None
) -> list[np.ndarray]:
    """LPS points (mm) that collect the most sphere-centre votes, best first.

    Two votes are taken and their peaks pooled: strong edges voting both ways (the joint), and weaker
    edges voting inwards only (heads on coarse 3 mm scans, where the joint edge is faint). ``gradient``:
    :func:`hu_gradient` of ``smooth`` if already made.
    """
    spacing = grid.spacing_kji(volume.geometry)
    if gradient is None:
        gradient = hu_gradient(volume, smooth)
    magnitude = gradient[0] * gradient[0]
    magnitude += gradient[1] * gradient[1]
    magnitude += gradient[2] * gradient[2]
    np.sqrt(magnitude, out=magnitude)
    cell_mm = 2.0
    shape = np.ceil(np.array(smooth.shape) * spacing / cell_mm).astype(int) + 1
    found: list[np.ndarray] = []
    for minimum_gradient, signs in ((80.0, (1.0, -1.0)), (40.0, (1.0,))):
        edges = (magnitude > minimum_gradient) & (smooth > 50) & (smooth < 900)
        where = np.nonzero(edges)
        if where[0].size == 0:
            continue
        if where[0].size > HOUGH_MAX_EDGES:  # whole-pelvis CTs: a random tenth or so votes as well as all
            keep = np.sort(np.random.default_rng(0).choice(where[0].size, HOUGH_MAX_EDGES, replace=False))
            where = tuple(w[keep] for w in where)
        points = np.stack(where, axis=1) * spacing
        unit = (gradient[:, where[0], where[1], where[2]] / magnitude[where]).T
        indices, weights = [], []
        for sign in signs:
            for radius in np.arange(18.0, 29.0, 1.0):
                cells = np.round((points + sign * radius * unit) / cell_mm).astype(int)
                ok = np.all((cells >= 0) & (cells < shape), axis=1)
                indices.append(np.ravel_multi_index(tuple(cells[ok].T), shape))
                weights.append(np.full(int(ok.sum()), 1.0 / radius**2))
        votes = np.bincount(np.concatenate(indices), np.concatenate(weights), minlength=int(np.prod(shape)))
        votes = ndimage.gaussian_filter(votes.reshape(shape).astype(np.float32), 1.0)
        peaks = (votes == ndimage.maximum_filter(votes, size=int(30 / cell_mm))) & (votes > 0)
        cells = np.argwhere(peaks)
        order = np.argsort(-votes[tuple(cells.T)])[:count]
        found += list(grid.index_to_lps(volume.geometry, cells[order] * cell_mm / spacing))
    return found


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through points (mm): centre, radius."""
    matrix = np.column_stack([2 * points, np.ones(len(points))])
    rhs = (points**2).sum(axis=1)
    solution, *_ = np.linalg.lstsq(matrix, rhs, rcond=None)
    centre = solution[:3]
    radius = float(np.sqrt(max(solution[3] + centre @ centre, 1e-6)))
    return centre, radius


def cast_rays(
    volume: Volume,
    smooth: np.ndarray,
    centre: np.ndarray,
    directions: np.ndarray,
    max_radius_mm: float = 48.0,
    step_mm: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed HU along rays from ``centre`` (LPS mm): profiles ``(rays, samples)`` (NaN outside) and radii."""
    radii = np.arange(0.0, max_radius_mm + step_mm / 2, step_mm)
    points = centre[None, None, :] + directions[:, None, :] * radii[None, :, None]
    profiles = grid.sample(smooth, volume.geometry, points.reshape(-1, 3)).reshape(len(directions), len(radii))
    return profiles, radii


def edge_window_mm(volume: Volume) -> float:
    """Length (mm) over which a bone edge falls: 3 mm, or twice the (geometric mean) voxel size if larger."""
    return max(3.0, 2.0 * float(np.prod(volume.geometry.spacing_mm)) ** (1 / 3))


def _falls(profiles: np.ndarray, radii: np.ndarray, low: float, high: float, window_mm: float = 3.0) -> np.ndarray:
    """Candidate bone-to-soft-tissue falls along each ray within [low, high] mm, ``(rays, samples)``.

    A fall is a local minimum of the radial slope steeper than ``EDGE_MIN_FALL_HU_PER_MM`` (scaled down
    for coarse voxels, whose edges are spread over ``window_mm``) where the CT number drops by more than
    ``EDGE_MIN_DROP_HU`` from bone (> 200 HU) within ``window_mm``.
    """
    step = radii[1] - radii[0]
    filled = np.where(np.isfinite(profiles), profiles, -1000.0)
    slope = np.gradient(filled, step, axis=1)
    min_fall = EDGE_MIN_FALL_HU_PER_MM * 3.0 / window_mm
    half = max(1, int(round(window_mm / step)))
    before = ndimage.maximum_filter1d(filled, size=half + 1, axis=1, origin=half // 2)
    after = ndimage.minimum_filter1d(filled, size=half + 1, axis=1, origin=-(half // 2))
    local_min = np.zeros_like(slope, dtype=bool)
    local_min[:, 1:-1] = (slope[:, 1:-1] < slope[:, :-2]) & (slope[:, 1:-1] <= slope[:, 2:])
    window = (radii >= low) & (radii <= high)
    return (
        local_min
        & window[None, :]
        & (slope < -min_fall)
        & (before - after > EDGE_MIN_DROP_HU)
        & (before > 200)
        & np.isfinite(profiles)
    )


def _common_radius(candidate: np.ndarray, radii: np.ndarray, radius_range_mm: tuple[float, float]) -> float:
    """The radius (mm) within ``radius_range_mm`` where most rays have a fall: the sphere the falls agree on.

    Falls are searched 3 mm beyond the range (a centre that starts off moves the surface), but the common
    radius is taken inside it: a deformed or dense head's inner edge (cortex to trabecular bone, about two
    thirds of the radius) can collect more falls than its outer surface, and a sphere fitted there is no head.
    """
    hits = candidate.sum(axis=0).astype(float)
    smoothed = ndimage.gaussian_filter1d(hits, 1.5 / (radii[1] - radii[0]))
    peak = np.zeros(len(radii), bool)
    peak[1:-1] = (smoothed[1:-1] >= smoothed[:-2]) & (smoothed[1:-1] >= smoothed[2:]) & (smoothed[1:-1] > 0)
    inside = (radii >= radius_range_mm[0]) & (radii <= radius_range_mm[1])
    choices = peak & inside if (peak & inside).any() else inside  # a peak, not the shoulder of one outside
    return float(radii[choices][int(np.argmax(smoothed[choices]))])


def _nearest_fall(
    candidate: np.ndarray, radii: np.ndarray, radius: float, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per ray: the fall closest to ``radius`` (mm) and whether it lies within ``tolerance`` mm."""
    gap = np.where(candidate, np.abs(radii[None, :] - radius), np.inf)
    best = np.argmin(gap, axis=1)
    nearest_gap = gap[np.arange(len(best)), best]
    return radii[best], np.isfinite(nearest_gap) & (nearest_gap <= tolerance)


def refine_head(
    volume: Volume,
    smooth: np.ndarray,
    start_lps: np.ndarray,
    directions: np.ndarray,
    iterations: int = 5,
    radius_range_mm: tuple[float, float] = HEAD_RADIUS_RANGE_MM,
) -> FemoralHead | None:
    """Fit the head sphere starting near ``start_lps`` (mm); None if nothing sphere-like is there.

    ``radius_range_mm``: accepted sphere radii (mm); :mod:`.socket` fits the acetabulum's larger sphere with it.
    """
    centre = np.asarray(start_lps, dtype=float)
    radius = None
    for round_index in range(iterations):
        profiles, radii = cast_rays(volume, smooth, centre, directions)
        candidate = _falls(profiles, radii, radius_range_mm[0] - 3, radius_range_mm[1] + 3, edge_window_mm(volume))
        if radius is None:
            radius = _common_radius(candidate, radii, radius_range_mm)
        edge_radius, found = _nearest_fall(candidate, radii, radius, 5.0 if round_index == 0 else 3.0)
        if found.sum() < 30:
            return None
        points = centre + directions[found] * edge_radius[found, None]
        keep = np.ones(len(points), bool)
        for _trim in range(3):
            fit_centre, fit_radius = fit_sphere(points[keep])
            residual = np.abs(np.linalg.norm(points - fit_centre, axis=1) - fit_radius)
            keep = residual < max(2.5, 2.5 * 1.4826 * np.median(residual[keep]))
            if keep.sum() < 30:
                return None
        if np.linalg.norm(fit_centre - np.asarray(start_lps)) > MAX_REFINE_SHIFT_MM:
            return None
        centre, radius = fit_centre, fit_radius
    if not (radius_range_mm[0] <= radius <= radius_range_mm[1]):
        return None
    return describe_sphere(volume, smooth, centre, radius, directions)


def _joint_radii(filled: np.ndarray, radii: np.ndarray, radius: float) -> np.ndarray:
    """Per ray: radius (mm) of the darkest point between head and acetabulum, NaN where no socket follows.

    Searched from 6 mm inside to 4 mm outside the fitted radius; a socket is bone (> 250 HU) within 6 mm
    beyond that darkest point, at least 60 HU brighter than it.
    """
    window = (radii >= radius - 6.0) & (radii <= radius + 4.0)
    inner = np.where(window[None, :], filled, np.inf)
    darkest = np.argmin(inner, axis=1)
    darkest_hu = filled[np.arange(len(darkest)), darkest]
    beyond = (radii[None, :] > radii[darkest][:, None]) & (radii[None, :] <= radii[darkest][:, None] + 6.0)
    brightest_beyond = np.where(beyond, filled, -1000.0).max(axis=1)
    socket = (brightest_beyond > 250) & (brightest_beyond - darkest_hu > 60)
    return np.where(socket, radii[darkest], np.nan)


def describe_sphere(
    volume: Volume, smooth: np.ndarray, centre: np.ndarray, radius: float, directions: np.ndarray
) -> FemoralHead | None:
    """Evidence that the sphere (centre LPS mm, radius mm) is a femoral head; None if its inside is not bone."""
    profiles, radii = cast_rays(volume, smooth, centre, directions, max_radius_mm=radius + 16.0)
    candidate = _falls(profiles, radii, radius - 5.0, radius + 5.0, edge_window_mm(volume))
    edge_radius, found = _nearest_fall(candidate, radii, radius, 2.5)
    in_view = np.isfinite(profiles[:, np.searchsorted(radii, radius + 3.0)])
    on_sphere = found & in_view
    residual = np.abs(edge_radius[on_sphere] - radius)
    rms = float(np.sqrt(np.mean(residual**2))) if on_sphere.any() else np.inf
    in_view_count = max(int(in_view.sum()), 1)
    filled = np.where(np.isfinite(profiles), profiles, -1000.0)
    interior = float(np.median(filled[:, radii <= 0.7 * radius][in_view]))
    if interior < 100:
        return None
    joint = _joint_radii(filled, radii, radius)
    socket = on_sphere & np.isfinite(joint)
    # Neck: rays that leave the head through bone, without an edge at the radius.
    beyond = (radii >= radius + 3) & (radii <= radius + 12)
    neck_rays = in_view & ~on_sphere & (filled[:, beyond].mean(axis=1) > 120)
    if neck_rays.sum() >= 3:
        neck_direction = directions[neck_rays].mean(axis=0)
        neck_direction = neck_direction / max(np.linalg.norm(neck_direction), 1e-9)
    else:
        neck_direction = np.zeros(3)
    return FemoralHead(
        np.asarray(centre, float),
        float(radius),
        float(on_sphere.sum() / in_view_count),
        rms,
        neck_direction,
        float(neck_rays.sum() / in_view_count),
        float(socket.sum() / in_view_count),
        interior,
        directions,
        edge_radius,
        on_sphere,
        in_view,
        neck_rays,
        joint,
        midline_offset_lps(volume, centre),
    )


MIN_IN_VIEW = 0.6
"""At least this fraction of the head's sphere must lie in the field of view (heads cut by its edge are refused)."""
MIN_SOCKET = 0.06
"""At least this fraction of the head must face an acetabulum across a joint space (greater trochanters do not)."""


def neck_direction(head: FemoralHead, shaft=None) -> np.ndarray:
    """Unit LPS vector from the head centre along the femoral neck.

    Prior: with a shaft in view, the neck leaves the head at ``NECK_SHAFT_ANGLE_DEG`` to the proximal shaft
    axis, towards the shaft (the plane of head centre and shaft axis). Without one the shaft is taken to
    run along the body axis (header z, as in :func:`neck_points_down`): the neck leaves the head at
    180 - ``NECK_SHAFT_ANGLE_DEG`` degrees (50) from straight down, towards lateral (``head.lateral``);
    where the side is unknown, along the head's own neck rays that point inferiorly. The prior is refined
    by the rays within 35 degrees of it that run through bone.
    """
    if shaft is not None:
        proximal = (
            shaft.direction if shaft.position(head.centre_lps) > (shaft.t_min + shaft.t_max) / 2 else -shaft.direction
        )
        offset = head.centre_lps - shaft.point_lps
        towards_axis = -(offset - (offset @ proximal) * proximal)
        towards_axis /= np.linalg.norm(towards_axis)
        angle = np.radians(NECK_SHAFT_ANGLE_DEG)
        prior = np.cos(angle) * proximal + np.sin(angle) * towards_axis
    elif np.any(head.lateral):
        # bone rays alone would take the acetabulum, joined to the head by partial volume, for the neck
        angle = np.radians(180.0 - NECK_SHAFT_ANGLE_DEG)
        prior = -np.cos(angle) * np.array([0.0, 0.0, 1.0]) + np.sin(angle) * head.lateral
    else:
        downward = head.neck_rays & (head.directions[:, 2] < -0.2)
        prior = head.directions[downward].mean(axis=0) if downward.sum() >= 3 else np.array([0.0, 0.0, -1.0])
    if not np.any(prior):
        return np.zeros(3)
    prior = prior / np.linalg.norm(prior)
    close = head.neck_rays & (head.directions @ prior > np.cos(np.radians(35)))
    if close.sum() < 5:
        return prior
    direction = head.directions[close].mean(axis=0)
    return direction / np.linalg.norm(direction)


def is_plausible_head(head: FemoralHead) -> bool:
    """A femoral head: mostly in view, seen on a fifth of its surface, fits, bone inside, a neck, a socket."""
    return (
        head.coverage >= 0.2
        and head.rms_mm <= MAX_RMS_MM
        and head.interior_hu >= 150
        and 0.03 <= head.neck_fraction <= 0.6
        and float(head.in_view.mean()) >= MIN_IN_VIEW
        and head.socket_fraction >= MIN_SOCKET
    )


def head_score(head: FemoralHead) -> float:
    """Ranks plausible heads: a socket (acetabulum) around it, surface coverage, dense inside."""
    return head.socket_fraction + 0.25 * head.coverage + min(head.interior_hu, 600.0) / 2000.0


HEAD_OFF_SHAFT_AXIS_MM = (20.0, 65.0)
"""Distance (mm) of a femoral head centre from its shaft's axis."""
HEAD_BEYOND_SHAFT_END_MM = (-20.0, 75.0)
"""Distance (mm) of a femoral head centre beyond its shaft's proximal end, along the axis. Negative: the tube
found may run up the greater trochanter, whose tip is level with the head centre. Positive: the tube ends where
the proximal femur widens, 12-31 mm below the head centre on the real CTs (52 mm for Pelvic-Ref-005's left femur on
the search grid), 71 mm on a virtual anatomy of it whose thinned cortex (74 % kept) ends it lower; a thin
osteoporotic cortex does the same."""


def fits_shaft(head: FemoralHead, shaft) -> bool:
    """Whether the head sits where a femoral head does next to ``shaft``: off its axis by
    :data:`HEAD_OFF_SHAFT_AXIS_MM`, near or beyond its proximal end by :data:`HEAD_BEYOND_SHAFT_END_MM`."""
    offset = float(shaft.distance_to_axis(head.centre_lps))
    position = float(shaft.position(head.centre_lps))
    beyond_end = max(position - shaft.t_max, shaft.t_min - position)
    low_offset, high_offset = HEAD_OFF_SHAFT_AXIS_MM
    low_end, high_end = HEAD_BEYOND_SHAFT_END_MM
    return low_offset <= offset <= high_offset and low_end <= beyond_end <= high_end


def neck_points_down(head: FemoralHead) -> bool:
    """Without a shaft in view: the femoral neck leaves the head inferiorly in the scan (header z).

    This tells the head from look-alikes in the acetabular roof, whose 'neck' is the ilium above.
    Only used when no shaft is visible, i.e. on pelvic scans, whose slice axis is the body axis.
    """
    return bool(np.any(head.neck_direction)) and float(head.neck_direction[2]) < 0.0


def seeds_near_shaft_ends(shaft) -> list[np.ndarray]:
    """Starting points around both shaft ends where a head would be (40 mm off axis, 15 mm beyond)."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(shaft.direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    first = np.cross(shaft.direction, helper)
    first /= np.linalg.norm(first)
    second = np.cross(shaft.direction, first)
    seeds = []
    for end, sign in ((shaft.t_max, 1.0), (shaft.t_min, -1.0)):
        for angle in np.radians(np.arange(0, 360, 45)):
            radial = np.cos(angle) * first + np.sin(angle) * second
            seeds.append(shaft.at(end + sign * 15.0) + 40.0 * radial)
    return seeds
