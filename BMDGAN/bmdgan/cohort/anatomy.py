"""Virtual anatomies: new proximal femurs made from a real one by a smooth deformation of its CT, and regional
trabecular loss, whose labels, landmarks and ground truth are then measured again on the new CT by
:func:`bmdgan.cohort.prepared_ct.prepare_ct` (never copied or scaled from the source's numbers).

Population ranges of adult proximal-femur geometry (rounded; the draws stay inside them):

- femoral head diameter 40-55 mm (mean ~46, SD ~3.5 mm, about 8 %), femoral offset and neck length SD ~15 %
  of their means (Noble PC et al., Clin Orthop 1988;235:148-165; Rubin PJ et al.,
  J Bone Joint Surg Br 1992;74:28-32): the size factor (isotropic, about the head centre) and the neck length
  factor below;
- neck-shaft angle 128 +/- 5 deg in adults (Boese CK et al., Skeletal Radiol 2016;45:19-28, a systematic review):
  the change of the angle below stays within +/-8 deg of the source's own;
- regional trabecular loss as osteoporosis distributes it, largest in Ward's area and the neck, then the
  trochanter (Riggs BL et al., J Bone Miner Res 2008;23:205-214; Mayhew PM et al., Lancet 2005;366:129-135):
  kept trabecular mineral 0.6-1.0 per region;
- cortical thinning, as the femoral neck's cortex thins with age and osteoporosis (Mayhew PM et al., Lancet
  2005;366:129-135): 70-100 % of the cortical thickness kept.

The deformation is a pull-back map (each voxel of the new CT takes the source's value at a mapped point), exact
inside a sphere around the femoral head (so a scaled femur is a true scaled copy there) and fading smoothly to the
identity far from the hip, so soft tissue and pelvis follow without a seam. Lengths are in mm, HU in HU.

A CT with both hips prepared (a whole pelvis) gets both femurs deformed at once, each by its own draw, in one new CT
prepared again on both sides: an AP pelvis radiograph of it shows two femurs no real CT has, in a real body.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import BMDGANError, InputError
from ..io import Volume
from ..progress import progress_bar
from .channels import CORTICAL_THRESHOLD_MG_CM3
from .prepared_ct import PreparedCT, has_prepared, load_prepared, prepare_ct, prepared_bones, save_prepared, side_key
from .virtual_patient import seeded_rng

SIZE_FACTOR_RANGE = (0.94, 1.06)
"""Isotropic size of the proximal femur (x the source's): about +/-1 SD of adult head diameters. Kept narrower
than the population because the landmark search on 3-mm-slice thigh crops is reliable within it: at 0.90 the
lesser trochanter of STS_012 was found 16 mm off its scaled place (measured 2026-12-03)."""
NECK_LENGTH_FACTOR_RANGE = (0.85, 1.15)
"""Neck length (head centre to the trochanteric line) x the source's."""
NECK_SHAFT_CHANGE_DEG_RANGE = (-8.0, 8.0)
"""Change of the neck-shaft angle (deg, + valgus: the head moves up)."""
TRABECULAR_KEPT_RANGE = (0.6, 1.0)
"""Share of the trabecular mineral kept in each region of :data:`LOSS_REGIONS`."""
CORTICAL_KEPT_RANGE = (0.7, 1.0)
"""Share of the cortical thickness kept (the inner rest becomes trabecular bone)."""
MAX_CORTEX_MM = 6.0
"""Cortical bone lies within this depth of the bone's outer surface (mm; the thickest proximal-femur cortex, at the
calcar and the shaft, is about 4-6 mm)."""

NECK_LENGTH_MM = 50.0
"""Typical distance from the head centre to the base of the neck along the neck axis (mm): where the neck
lengthening ends and the shaft turns for a change of angle."""
NECK_TURN_FADE_MM = 30.0
"""Medial of the head centre, a change of the neck-shaft angle fades out over this distance (mm: the head's medial
half and its socket, about an adult head radius), so the pelvis beyond does not move."""
NECK_JUNCTION_MM = 22.0
"""Distance from the head centre to the head-neck junction along the neck (mm, about an adult head radius)."""
EXACT_RADIUS_MM = 100.0
"""Inside this distance from the head centre the map is the exact transform (the PF region lies within it)."""
FADE_RADIUS_MM = 160.0
"""Beyond this distance from the head centre the map is the identity."""
LOSS_REGIONS = {
    # name: (centre in the neutral frame as (mm along the neck from the head centre, mm up), radius mm)
    "neck": ((25.0, 0.0), 14.0),
    "ward": ((40.0, -12.0), 12.0),
    "trochanter": ((65.0, 15.0), 16.0),
}
"""Regions of trabecular loss, placed in the source's neutral frame (lateral along the neck, up along the shaft);
each fades out over 5 mm beyond its radius."""
SLAB_SLICES = 16
"""Slices resampled at a time (bounds the memory of the coordinate arrays)."""
MAX_HEAD_DRIFT_MM = 3.0
"""An anatomy whose femoral head the CT analysis finds further than this from where the deformation carried the
source's head is refused: the hip search took another sphere (a second optimum of the head fit, 6.6-10.2 mm off on 5
of 24 anatomies of seed 0, 2026-12-05), so its landmarks, PF region and ground truth would not be this femur's."""


@dataclass(frozen=True)
class AnatomyDraw:
    """One virtual anatomy of a source femur (factors are x the source's; angles in degrees)."""

    anatomy_id: str
    size_factor: float = 1.0
    neck_length_factor: float = 1.0
    neck_shaft_change_deg: float = 0.0
    trabecular_kept: dict[str, float] = field(default_factory=dict)
    cortical_kept: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def sample_anatomy(seed: int, source_key: str, index: int) -> AnatomyDraw:
    """The ``index``-th anatomy of a source (same draw in any process and order)."""
    rng = seeded_rng(seed, source_key, index, "anatomy")
    return AnatomyDraw(
        anatomy_id=f"{source_key}-a{index:02d}",
        size_factor=float(rng.uniform(*SIZE_FACTOR_RANGE)),
        neck_length_factor=float(rng.uniform(*NECK_LENGTH_FACTOR_RANGE)),
        neck_shaft_change_deg=float(rng.uniform(*NECK_SHAFT_CHANGE_DEG_RANGE)),
        trabecular_kept={name: float(rng.uniform(*TRABECULAR_KEPT_RANGE)) for name in LOSS_REGIONS},
        cortical_kept=float(rng.uniform(*CORTICAL_KEPT_RANGE)),
    )


def _fade(distance_mm: np.ndarray, inner_mm: float, outer_mm: float) -> np.ndarray:
    """1 up to ``inner_mm``, 0 from ``outer_mm``, a raised cosine between (smooth, no seam)."""
    t = np.clip((distance_mm - inner_mm) / (outer_mm - inner_mm), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


class PullBack:
    """Maps points of the new CT (LPS mm, [n, 3]) to the source points whose values they take.

    ``frame``: rows lateral (along the neck, head to shaft), anterior-posterior, up (along the shaft) unit vectors.
    The head stays in its socket and the shaft in place: the neck-shaft angle changes by turning the neck about the head
    centre (the turn fading out across the head's medial half, so head and socket, turned about their own centre,
    stay spheres and the pelvis does not move); the neck lengthens between the head-neck junction and its base (the
    head and socket move along the neck as one), and the size scales about the head centre. Turning the shaft instead
    bends it where the turn fades back to the identity (within a whole-pelvis CT's field; the hip search lost such a
    femur), and turning the neck about its base lifts the head, out of the field of a thigh crop cut just above it.
    """

    def __init__(self, draw: AnatomyDraw, head_centre_lps: np.ndarray, frame: np.ndarray):
        self.draw = draw
        self.centre = np.asarray(head_centre_lps, float)
        self.lateral, self.ap, self.up = (np.asarray(v, float) for v in frame)
        self.base = self.centre + NECK_LENGTH_MM * self.lateral
        # + valgus: the neck turns down from the head (about lateral x up), towards the shaft.
        self.turn_axis = np.cross(self.lateral, self.up)
        self.turn_axis /= np.linalg.norm(self.turn_axis)

    def _turned_neck_side(self, points: np.ndarray) -> np.ndarray:
        """Source points of the neck's side after the angle change: each turned about the head centre by the full
        angle lateral of the centre (the neck), by less across the head's medial half (:data:`NECK_TURN_FADE_MM`), not
        at all further medially. A turn about the centre keeps every point's distance from it."""
        offset = points - self.centre
        medial = -(offset @ self.lateral)
        angle = np.deg2rad(self.draw.neck_shaft_change_deg) * _fade(medial, 0.0, NECK_TURN_FADE_MM)  # back turn
        k = self.turn_axis
        cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
        turned = offset * cos + np.cross(k, offset) * sin + np.outer(offset @ k, k) * (1.0 - cos)
        return self.centre + turned

    def _shaft_share(self, points: np.ndarray) -> np.ndarray:
        """0 in the neck's sector (within 50 deg of the direction from the neck base to the head), 1 from 90 deg
        (shaft, trochanters), smooth between and near the base itself."""
        offset = points - self.base
        angle = np.degrees(np.arctan2(offset @ self.up, -(offset @ self.lateral)))  # 0 deg: towards the head
        share = 1.0 - _fade(np.abs(angle), 50.0, 90.0)
        return share * (1.0 - _fade(np.linalg.norm(offset, axis=1), 5.0, 20.0))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, float)
        fade = _fade(np.linalg.norm(points - self.centre, axis=1), EXACT_RADIUS_MM, FADE_RADIUS_MM)[:, None]
        # 1. neck-shaft angle: the neck's side turns about the head centre, the shaft's side stays.
        neck_side = fade * (1.0 - self._shaft_share(points))[:, None]
        points = points + neck_side * (self._turned_neck_side(points) - points)
        # 2. neck length: stretched between the head-neck junction and the base; medial of the junction (head,
        # socket) everything moves rigidly along the neck, lateral of the base nothing moves.
        factor, base, junction = self.draw.neck_length_factor, NECK_LENGTH_MM, NECK_JUNCTION_MM
        along = (points - self.centre) @ self.lateral
        new_junction = base - factor * (base - junction)
        source_along = np.where(
            along < new_junction, along + (factor - 1.0) * (base - junction), base - (base - along) / factor
        )
        shift = np.where(along < base, source_along - along, 0.0)
        points = points + fade * shift[:, None] * self.lateral
        # 3. size: an isotropic scale about the head centre.
        scaled = self.centre + (points - self.centre) / self.draw.size_factor
        return points + fade * (scaled - points)

    def carried(self, source_point_lps: np.ndarray, iterations: int = 100) -> np.ndarray:
        """Where the deformation puts a source point (LPS mm): the new point this map pulls back onto it. The map
        is near the identity, so a fixed-point iteration converges."""
        target = np.asarray(source_point_lps, float)
        point = target.copy()
        for _ in range(iterations):
            point = point + (target - self(point[None])[0])
        return point


def trabecular_weights(points: np.ndarray, draw: AnatomyDraw, head_centre_lps: np.ndarray, frame: np.ndarray):
    """Share of trabecular mineral kept at ``points`` (LPS mm, source space): the product over the regions of
    1 - (1 - kept) * (1 inside the region, fading to 0 over 5 mm)."""
    kept = np.ones(len(points))
    lateral, _, up = (np.asarray(v, float) for v in frame)
    for name, ((along_mm, up_mm), radius_mm) in LOSS_REGIONS.items():
        share = draw.trabecular_kept.get(name, 1.0)
        if share == 1.0:
            continue
        centre = np.asarray(head_centre_lps, float) + along_mm * lateral + up_mm * up
        inside = _fade(np.linalg.norm(points - centre, axis=1), radius_mm, radius_mm + 5.0)
        kept *= 1.0 - (1.0 - share) * inside
    return kept


def thinned_cortex(prepared: PreparedCT, density_mg_cm3: np.ndarray, cortical_kept: float) -> np.ndarray:
    """Calibrated density (mg/cm3) after the cortex near the hip (within :data:`EXACT_RADIUS_MM` of the head
    centre, within :data:`MAX_CORTEX_MM` of the bone's outside, above :data:`CORTICAL_THRESHOLD_MG_CM3`) thins to
    ``cortical_kept`` of its thickness, its inner part becoming trabecular bone. The cortex is 1-3 voxels thick, so
    each voxel holds a partial volume of it: thinning keeps that share of its mineral above the trabecular level
    (the median trabecular density near the hip), d' = level + kept * (d - level)."""
    from scipy.ndimage import distance_transform_edt

    spacing = prepared.hu.geometry.spacing_mm[::-1]  # (k, j, i)
    bone = prepared.bone_mask
    cortical = bone & (density_mg_cm3 >= CORTICAL_THRESHOLD_MG_CM3)
    k, j, i = np.nonzero(cortical)
    points = (prepared.hu.geometry.ijk_to_lps() @ np.stack([i, j, k, np.ones_like(i)]).astype(float))[:3].T
    near = np.linalg.norm(points - prepared.head_centre_lps, axis=1) < EXACT_RADIUS_MM
    shell = near & (distance_transform_edt(bone, sampling=spacing)[k, j, i] <= MAX_CORTEX_MM)
    trabecular = bone & ~cortical & (density_mg_cm3 > 0)
    if not shell.any() or not trabecular.any():
        return density_mg_cm3
    level = float(np.median(density_mg_cm3[trabecular]))
    thinned = density_mg_cm3.copy()
    k, j, i = k[shell], j[shell], i[shell]
    thinned[k, j, i] = level + cortical_kept * (density_mg_cm3[k, j, i] - level)
    return thinned


def _with_changed_mineral(prepared: PreparedCT, draw: AnatomyDraw, source: np.ndarray) -> np.ndarray:
    """``source`` (HU) after ``draw``'s cortical thinning and regional trabecular loss of ``prepared``'s femur,
    applied to the calibrated mineral (mg/cm3) in the source's own space."""
    ijk_to_lps = prepared.hu.geometry.ijk_to_lps()
    slope, intercept = prepared.calibration["slope"], prepared.calibration["intercept"]
    if draw.cortical_kept < 1.0:
        source = (thinned_cortex(prepared, slope * source + intercept, draw.cortical_kept) - intercept) / slope
    if draw.trabecular_kept:
        density = slope * source + intercept
        trabecular = prepared.bone_mask & (density > 0) & (density < CORTICAL_THRESHOLD_MG_CM3)
        k, j, i = np.nonzero(trabecular)
        points = (ijk_to_lps @ np.stack([i, j, k, np.ones_like(i)]).astype(float))[:3].T
        kept = trabecular_weights(points, draw, prepared.head_centre_lps, prepared.frame_axes)
        source = source.copy()
        source[k, j, i] = ((density[k, j, i] * kept) - intercept) / slope
    return source


def make_anatomy(hips: list[tuple[PreparedCT, AnatomyDraw]]) -> tuple[Volume, np.ndarray]:
    """(new CT in HU, its body mask) of each draw applied to its prepared hip, all hips of one source CT (one grid:
    a whole pelvis's two sides deform in one new CT). Trabecular loss scales the calibrated mineral of femur voxels
    below the cortical threshold (mg/cm3) by the regional share, :func:`thinned_cortex` thins the cortex; the
    geometry then moves every voxel by the hips' :class:`PullBack` maps, composed (each is the identity beyond
    :data:`FADE_RADIUS_MM` of its head, so two hips 150-220 mm apart barely overlap)."""
    from scipy.ndimage import map_coordinates

    for prepared, draw in hips:
        if not (0.5 < draw.size_factor < 1.5 and 0.5 < draw.neck_length_factor < 1.5):
            raise InputError(None, f"anatomy {draw.anatomy_id}: factors out of range", "keep them within 0.5-1.5")
        if prepared.hu.array.shape != hips[0][0].hu.array.shape:
            raise InputError(None, f"anatomy {draw.anatomy_id}: hips of different CTs", "deform one CT's hips at once")
    first = hips[0][0]
    hu, geometry = first.hu, first.hu.geometry
    source = hu.array.astype(np.float32)
    for prepared, draw in hips:
        source = _with_changed_mineral(prepared, draw, source)
    body = first.body_mask if first.body_mask is not None else np.ones(source.shape, bool)
    pulls = [PullBack(draw, prepared.head_centre_lps, prepared.frame_axes) for prepared, draw in hips]
    ijk_to_lps = geometry.ijk_to_lps()
    lps_to_ijk = np.linalg.inv(ijk_to_lps)
    out, out_body = source.copy(), body.copy()
    slices, rows, columns = source.shape
    j, i = np.mgrid[0:rows, 0:columns]
    for start in range(0, slices, SLAB_SLICES):
        stop = min(start + SLAB_SLICES, slices)
        k = np.broadcast_to(np.arange(start, stop)[:, None, None], (stop - start, rows, columns))
        ijk = np.stack([np.broadcast_to(i, k.shape), np.broadcast_to(j, k.shape), k, np.ones(k.shape)]).reshape(4, -1)
        points = (ijk_to_lps @ ijk)[:3].T
        near = np.zeros(len(points), bool)
        for pull in pulls:
            near |= np.linalg.norm(points - pull.centre, axis=1) < FADE_RADIUS_MM
        if not near.any():
            continue
        mapped = points[near]
        for pull in pulls:
            mapped = pull(mapped)
        zyx = (lps_to_ijk @ np.c_[mapped, np.ones(len(mapped))].T)[:3][::-1]  # (k, j, i) for map_coordinates
        slab = out[start:stop].reshape(-1)
        slab[near] = map_coordinates(source, zyx, order=1, mode="nearest")
        out[start:stop] = slab.reshape(stop - start, rows, columns)
        body_slab = out_body[start:stop].reshape(-1)
        body_slab[near] = map_coordinates(body.astype(np.float32), zyx, order=1, mode="nearest") > 0.5
        out_body[start:stop] = body_slab.reshape(stop - start, rows, columns)
    names = " + ".join(draw.anatomy_id for _, draw in hips)
    return Volume(out, geometry, "HU", f"{hu.source} ({names})"), out_body


def head_drift_mm(source: PreparedCT, draw: AnatomyDraw, found_head_lps: np.ndarray) -> float:
    """Distance (mm) from the head centre the CT analysis found on an anatomy to where ``draw``'s deformation
    carried the source's head centre."""
    carried = PullBack(draw, source.head_centre_lps, source.frame_axes).carried(source.head_centre_lps)
    return float(np.linalg.norm(np.asarray(found_head_lps, float) - carried))


def anatomy_hips(folder: str | Path, ct_id: str, index: int, seed: int) -> tuple[str, list[tuple[str, AnatomyDraw]]]:
    """(entry id, [(source hip key, its draw)]) of the ``index``-th anatomy of a CT. A CT with both hips prepared
    makes one entry of both (``<ct_id>-aNN``, hips ``<ct_id>-aNN_left`` and ``_right``: the cohort renders it as an
    AP pelvis); a CT with one prepared hip, an entry of that hip (``<hip key>-aNN``). Each hip's draw is
    :func:`sample_anatomy` of its source key, whichever entry it falls in."""
    folder = Path(folder)
    keys = prepared_bones(folder, ct_id)
    if len(keys) == 1:
        draw = sample_anatomy(seed, keys[0], index)
        return draw.anatomy_id, [(keys[0], draw)]
    entry = f"{ct_id}-a{index:02d}"
    hips = []
    for side in ("left", "right"):
        key = side_key(ct_id, side)
        if key in keys:
            hips.append((key, replace(sample_anatomy(seed, key, index), anatomy_id=side_key(entry, side))))
    return entry, hips


def _refusal_of(folder: Path, anatomy_id: str) -> str | None:
    """The reason an anatomy hip was refused before (recorded in its ``.anatomy.json``), or None."""
    record = folder / f"{anatomy_id}.anatomy.json"
    return json.loads(record.read_text()).get("refused") if record.is_file() else None


def prepare_anatomies(
    prepared_folder: str | Path, ct_ids: list[str], count: int, seed: int = 0, progress: bool = True
) -> tuple[list[str], dict[str, str]]:
    """Make ``count`` virtual anatomies of every CT of ``ct_ids`` (:func:`anatomy_hips`) and prepare each hip from
    its own deformed CT.

    Each anatomy is a cohort entry of its own (hip cache keys as :func:`anatomy_hips` names them) whose ``ct_id``
    stays its source CT's, so folds by CT keep a source and all its anatomies on one side. ``<hip key>.anatomy.json``
    records each hip's draw, and the reason if it was refused: a hip whose CT analysis fails (e.g. a landmark not
    found) or finds its head elsewhere (:data:`MAX_HEAD_DRIFT_MM`) is left out, never patched. Resumes: an anatomy
    prepared or refused before is not made again. Returns (entry ids, refused hip key -> reason); an entry is kept
    while one of its hips is prepared."""
    folder = Path(prepared_folder)
    tasks = [(ct_id, index) for ct_id in ct_ids if prepared_bones(folder, ct_id) for index in range(count)]
    entries: list[str] = []
    skipped: dict[str, str] = {}
    sources: dict[str, PreparedCT] = {}
    for ct_id, index in progress_bar(tasks, desc="anatomies", unit="anatomy", disable=not progress or not tasks):
        entry, hips = anatomy_hips(folder, ct_id, index, seed)
        refused = {draw.anatomy_id: _refusal_of(folder, draw.anatomy_id) for _, draw in hips}
        skipped.update({anatomy_id: reason for anatomy_id, reason in refused.items() if reason})
        if all(has_prepared(folder, draw.anatomy_id) or refused[draw.anatomy_id] for _, draw in hips):
            if any(has_prepared(folder, draw.anatomy_id) for _, draw in hips):
                entries.append(entry)
            continue
        if set(sources) != {key for key, _ in hips}:
            sources = {key: load_prepared(folder, key) for key, _ in hips}  # one source CT in memory at a time
        reasons: dict[str, str] = {}
        try:
            volume, body = make_anatomy([(sources[key], draw) for key, draw in hips])
        except BMDGANError as error:
            reasons = {draw.anatomy_id: str(error) for _, draw in hips}
        for key, draw in hips:
            if draw.anatomy_id in reasons or has_prepared(folder, draw.anatomy_id) or refused[draw.anatomy_id]:
                continue
            source = sources[key]
            try:
                made = prepare_ct(volume, source.ct_id, side=source.side, body_mask=body)
            except BMDGANError as error:
                reasons[draw.anatomy_id] = str(error)
                continue
            if (drift := head_drift_mm(source, draw, made.head_centre_lps)) > MAX_HEAD_DRIFT_MM:
                reasons[draw.anatomy_id] = (
                    f"its femoral head was found {drift:.1f} mm from where the deformation put it (more than "
                    f"{MAX_HEAD_DRIFT_MM:.0f} mm): the hip search fitted another sphere"
                )
                continue
            _record_draw(folder, key, seed, index, draw)
            save_prepared(replace(made, key=draw.anatomy_id), folder)  # its json, written last, marks it complete
        for key, draw in hips:
            if draw.anatomy_id in reasons:
                _record_draw(folder, key, seed, index, draw, reasons[draw.anatomy_id])
        skipped.update(reasons)
        if any(has_prepared(folder, draw.anatomy_id) for _, draw in hips):
            entries.append(entry)
    return entries, skipped


def _record_draw(folder: Path, key: str, seed: int, index: int, draw: AnatomyDraw, refused: str | None = None):
    record = {"source_key": key, "seed": seed, "index": index, **draw.to_dict()}
    if refused:
        record["refused"] = refused
    atomic_write_text(folder / f"{draw.anatomy_id}.anatomy.json", json.dumps(record, indent=2) + "\n")
