"""A femur placed into another body: the proximal femur of one real CT (the donor: a thigh crop, or a hip of the
other whole pelvis) set into the hip joint of a whole-pelvis CT (the host), in place of the host's own femur, so
every body carries every femur. The new CT is then measured again by :func:`bmdgan.cohort.prepared_ct.prepare_ct`:
its labels, landmarks, PF region and ground truth are the new CT's own, never copied from either source.

The donor's femur is aligned at the hip joint: its femoral head centre on the host's, its neutral frame (neck axis,
anterior, shaft axis) on the host's, mirrored when the sides differ (a right femur in a left hip), at its own size
(scaled to the host's head radius, tried, the hip search lost more femurs). A head whose top the donor's scan cut
(five of the nine IBSI thigh crops end 11-16 mm above the head centre) is completed from its own lower half,
mirrored across the cut's plane through the centre, within the head's radius (:func:`completed_head`); a donor whose
scan cut its head otherwise, or its PF region, is refused. A donor scanned less far down the thigh than the host
ends the new scan where its shaft ends (:func:`trimmed_to_reach`). Its mineral is kept, not its CT numbers: each
donor voxel's HU goes to mg/cm3 through the donor's calibration and back to HU through the host's, so the new CT's
own calibration reads the donor's density. The host's femur is first replaced by the host's own soft tissue (the
median HU of the body a few mm around it, muscle and fat), and the donor's femur is blended in with a 1-3 mm margin
of its own surroundings, so neither femur leaves a seam or a ghost.

A transplant has two source CTs. Its hips keep the host's ``ct_id`` and record the donor's in ``donor_ct``; folds by
CT (:mod:`bmdgan.datasets.folds`) train on it only when neither CT is held out and test it only when both are.

The same machinery moves a body's own femurs in their hip joints (:func:`prepare_moved_femurs`): each femur set back
into its own hip a few mm off (:data:`MOVE_MM`), within the joint space, so the femoral head sits elsewhere against
the acetabulum, teardrop and foramina than in the scan. The hip detector's views of such bodies teach it that the
pelvis around a head does not fix where the head is (it placed a held-out body's heads where its training pelvises
put them, docs/hip-detection.md). A moved femur is the host's moved rigidly, so its landmarks, labels and PF region
are the host's carried by the move (landmarks exactly, labels to the nearest voxel) rather than measured again: on
Pelvic-Ref-005's left hip the hip search fits another sphere 6 mm off once the femur's surroundings are rewritten,
even unmoved. Where the head moves towards its socket, only its bone overwrites the acetabulum, not the margin of
soft tissue it brings. Such a body has one source CT: its hips record the host as their donor.
Lengths are in mm, HU in HU, densities in mg/cm3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..ct.grid import index_to_lps, lps_to_index
from ..errors import BMDGANError, InputError
from ..io import Volume
from ..progress import progress_bar
from .anatomy import MAX_HEAD_DRIFT_MM
from .prepared_ct import (
    PreparedCT,
    has_prepared,
    head_radius_mm,
    load_prepared,
    prepare_ct,
    real_bones,
    save_prepared,
    side_key,
)
from .virtual_patient import seeded_rng

FILL_MARGIN_MM = 2.0
"""The host's femur, and this margin around it (its partial-volume rim), becomes the host's soft tissue."""
SOFT_TISSUE_SHELL_MM = (3.0, 10.0)
"""The host's soft tissue HU is the median over the body this far outside its femur (mm): muscle and fat."""
DONOR_MARGIN_MM = (1.0, 3.0)
"""The donor's femur comes with its surroundings up to the first distance (mm), fading to the host's by the
second: its partial-volume rim and periosteum, with no hard edge."""
BOX_MARGIN_MM = 30.0
"""The work is done in the host femur's bounding box grown by this (mm): room for a donor with another offset."""
MIN_CUT_FACE_MM = 5.0
"""A head whose top the scan cut (a face of the scan within its radius + 2 mm of its centre, facing up the shaft
within 45 deg: five IBSI thigh crops end 11-16 mm above the head centre) is completed by mirroring its own lower part
across the plane through its centre parallel to that face (the head is a sphere), if the face lies at least this far
above the centre (mm). A head cut closer, on its side, or by two faces is refused."""
MAX_DONOR_PF_CUT = 0.05
"""A donor whose scan cuts its PF region by more than this share of the region's section
(:func:`bmdgan.ct.pf_region.scan_cut_shares`: a trochanter or neck cut off) is refused: the cut would be copied."""
MIN_DONOR_SHAFT_MM = 100.0
"""A donor's whole shaft section must reach this far below its head centre (mm): the lesser trochanter and the
shaft the hip search starts from lie within it."""
SECTION_KEPT = 0.7
"""A shaft level counts as whole while its section holds this share of the section 60-100 mm below the head: a scan
cut obliquely across the shaft ends it where the section starts to shrink."""
MAX_OUTSIDE_BODY = 0.01
"""Share of the placed femur's voxels allowed outside the host's body (the body mask sets them to air)."""
MOVE_MM = 3.0
"""Largest move of a femur in its own hip joint along each axis of its neutral frame (lateral, AP, up; mm):
about the thickness of the joint's two cartilage layers (3-5 mm together at the acetabular roof), so the head moves
within the joint space rather than through the acetabulum."""


def donor_points(host: PreparedCT, donor: PreparedCT, host_points_lps: np.ndarray) -> np.ndarray:
    """The donor points (LPS mm) whose values the host points take: the host's neutral frame coordinates (lateral,
    AP, up about its head centre) read in the donor's frame, the AP axis reversed when the sides differ (a mirror).
    The neutral frames of both sides share a handedness (AP = up x lateral), so matching them alone would turn a
    femur from the other side front to back."""
    local = (np.asarray(host_points_lps, float) - host.head_centre_lps) @ np.asarray(host.frame_axes, float).T
    if host.side != donor.side:
        local[:, 1] = -local[:, 1]
    return donor.head_centre_lps + local @ np.asarray(donor.frame_axes, float)


def _femur_of(prepared: PreparedCT, role: str) -> np.ndarray:
    if prepared.femur_mask is None or not prepared.femur_mask.any():
        raise InputError(
            None,
            f"the {role} hip {prepared.cache_key} has no femur label in its prepared cache",
            "prepare the CT again with this version (its cache predates the femur label)",
        )
    return prepared.femur_mask


def shaft_reach_mm(prepared: PreparedCT, femur: np.ndarray) -> float:
    """How far down the shaft axis from the head centre the femur's whole section reaches in its scan (mm, in 5 mm
    levels; :data:`SECTION_KEPT`)."""
    points = index_to_lps(prepared.hu.geometry, np.argwhere(femur))
    below = -((points - prepared.head_centre_lps) @ np.asarray(prepared.frame_axes, float)[2])
    counts = np.bincount(np.floor(below[below >= 0] / 5.0).astype(int))
    if len(counts) < 21:  # shorter than the reference levels: where it ends
        return float(below.max())
    whole = counts >= SECTION_KEPT * np.median(counts[12:20])
    level = 12
    while level + 1 < len(counts) and whole[level + 1]:
        level += 1
    return 5.0 * (level + 1)


def cut_face(donor: PreparedCT, femur: np.ndarray, radius_mm: float) -> tuple[int, int] | None:
    """(array axis 0-2 of [k, j, i], index of the face on it) of the face of the scan that cuts the top of the
    donor's head (radius ``radius_mm``), None if none cuts the head; refuses a head the scan cut otherwise
    (:data:`MIN_CUT_FACE_MM`)."""
    cuts = []
    for axis in range(3):
        for face in (0, femur.shape[axis] - 1):
            on_face = np.argwhere(np.take(femur, face, axis=axis))
            if not len(on_face):
                continue
            kji = np.insert(on_face, axis, face, axis=1)
            near = np.linalg.norm(index_to_lps(donor.hu.geometry, kji) - donor.head_centre_lps, axis=1).min()
            if near < radius_mm + 2.0:
                cuts.append((axis, face))
    if not cuts:
        return None
    axis, face = cuts[0]
    geometry = donor.hu.geometry
    normal = np.asarray(geometry.direction, float)[:, 2 - axis]  # the face's grid axis (direction columns: i, j, k)
    centre = lps_to_index(geometry, donor.head_centre_lps[None])[0]
    beyond_mm = (face - centre[axis] if face else centre[axis]) * geometry.spacing_mm[2 - axis]
    reason = None
    if len(cuts) > 1:
        reason = "on two faces"
    elif abs(normal @ np.asarray(donor.frame_axes, float)[2]) < np.cos(np.radians(45.0)):
        reason = "on its side"
    elif beyond_mm < MIN_CUT_FACE_MM:
        reason = f"{beyond_mm:.0f} mm from its centre: less than half is in view"
    if reason:
        raise InputError(
            None,
            f"{donor.cache_key}'s scan cuts its femoral head {reason}",
            "use a donor whose femoral head is in view",
        )
    return axis, face


@dataclass(frozen=True)
class DonorFemur:
    """What the transplant needs to know of a donor it accepted (:func:`check_donor`)."""

    reach_mm: float
    """How far below its head centre its whole shaft section reaches (mm, :func:`shaft_reach_mm`)."""
    head_radius_mm: float
    """Its femoral head radius (mm, :func:`head_radius_mm`)."""
    cut_face: tuple[int, int] | None
    """The face of its scan that cut its head's top (:func:`cut_face`), None if the head is whole."""


def check_donor(donor: PreparedCT) -> DonorFemur:
    """Measure a donor once, refusing one whose femur the transplant would spoil: a head its scan cut beyond
    mending (:func:`cut_face`), a PF region its scan cut (:data:`MAX_DONOR_PF_CUT`), or too little shaft
    (:data:`MIN_DONOR_SHAFT_MM`)."""
    from ..ct.pf_region import scan_cut_shares

    femur = _femur_of(donor, "donor")
    radius = head_radius_mm(donor, femur)
    cut = cut_face(donor, femur, radius)
    face, share = max(scan_cut_shares(donor.pf_mask).items(), key=lambda item: item[1], default=("", 0.0))
    if share > MAX_DONOR_PF_CUT:
        raise InputError(
            None,
            f"{donor.cache_key}'s scan cuts its PF region ({face} face, {100 * share:.0f} % of its section)",
            "use a donor whose proximal femur is in view",
        )
    reach = shaft_reach_mm(donor, femur)
    if reach < MIN_DONOR_SHAFT_MM:
        raise InputError(
            None,
            f"{donor.cache_key}'s scan shows its whole shaft only {reach:.0f} mm below its head centre (less than "
            f"{MIN_DONOR_SHAFT_MM:.0f} mm)",
            "use a donor scanned further down the thigh",
        )
    return DonorFemur(reach, radius, cut)


def completed_head(donor: PreparedCT, femur: DonorFemur, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(donor indices [3, n], weight factor [n]): ``at`` (fractional [k, j, i] indices, [3, n]) with the points
    beyond the face that cut the donor's head (``femur.cut_face``), within its radius plus 2 mm, mirrored across the
    plane through the head centre parallel to that face; the factor fades those from 1 at the radius to 0 at 2 mm
    beyond it, so only the sphere is completed."""
    factor = np.ones(at.shape[1], np.float32)
    if femur.cut_face is None:
        return at, factor
    axis, face = femur.cut_face
    radius = femur.head_radius_mm
    centre = lps_to_index(donor.hu.geometry, donor.head_centre_lps[None])[0]
    direction = 1.0 if face > centre[axis] else -1.0
    beyond = direction * (at[axis] - face) > -0.5  # past the last half voxel, which holds the cut's partial volume
    distance = np.linalg.norm(index_to_lps(donor.hu.geometry, at.T) - donor.head_centre_lps, axis=1)
    mirrored = beyond & (distance < radius + 2.0)
    at = at.copy()
    at[axis, mirrored] = 2.0 * centre[axis] - at[axis, mirrored]
    factor[mirrored] = np.clip((radius + 2.0 - distance[mirrored]) / 2.0, 0.0, 1.0)
    factor[beyond & ~mirrored] = 0.0
    return at, factor


def trimmed_to_reach(volume: Volume, body: np.ndarray, host: PreparedCT, reach_mm: float) -> tuple[Volume, np.ndarray]:
    """The new CT without its axial slices in which the host's femur lies further than ``reach_mm`` below the head
    centre (the donor's scan ended above them: its shaft would stop short there), cut at that end of the scan, as a
    collimator would; the other slices keep their place (the origin moves)."""
    femur = _femur_of(host, "host")
    slices = np.nonzero(femur.any(axis=(1, 2)))[0]
    centroids = np.array([np.argwhere(femur[k]).mean(axis=0) for k in slices])
    points = index_to_lps(host.hu.geometry, np.c_[slices, centroids])
    below = -((points - host.head_centre_lps) @ np.asarray(host.frame_axes, float)[2])
    cut = slices[below > reach_mm]
    if not len(cut):
        return volume, body
    head_slice = slices[np.argmin(np.abs(below))]
    keep = slice(int(cut.max()) + 1, None) if cut.max() < head_slice else slice(0, int(cut.min()))
    start = keep.start or 0
    origin = (volume.geometry.ijk_to_lps() @ np.array([0.0, 0.0, start, 1.0]))[:3]
    geometry = replace(volume.geometry, origin_mm=tuple(origin))
    return Volume(volume.array[keep], geometry, volume.unit, volume.source), body[keep]


def _box(host: PreparedCT, femur: np.ndarray) -> tuple[slice, ...]:
    """The host femur's bounding box grown by :data:`BOX_MARGIN_MM`, in voxels."""
    margin = np.ceil(BOX_MARGIN_MM / np.asarray(host.hu.geometry.spacing_mm)[::-1]).astype(int)
    where = np.argwhere(femur)
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + margin + 1, femur.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def host_soft_tissue_hu(host: PreparedCT, femur: np.ndarray, distance_mm: np.ndarray, box) -> float:
    """Median HU of the host's body :data:`SOFT_TISSUE_SHELL_MM` outside its femur, bone excluded."""
    near, far = SOFT_TISSUE_SHELL_MM
    shell = (distance_mm >= near) & (distance_mm <= far) & ~host.bone_mask[box]
    if host.body_mask is not None:
        shell &= host.body_mask[box]
    if shell.sum() < 100:
        raise InputError(
            None, f"{host.cache_key}: no soft tissue around its femur", "use a host with its thigh in view"
        )
    return float(np.median(host.hu.array[box][shell]))


def make_transplant(
    pairs: list[tuple[PreparedCT, PreparedCT]], moves_lps: list[np.ndarray] | None = None
) -> tuple[Volume, np.ndarray]:
    """(new CT in HU, its body mask): each (host hip, donor hip) pair's donor femur set into that host hip, all
    hips of one host CT at once, the scan then ending where the shortest donor's does (:func:`trimmed_to_reach`);
    ``moves_lps``: each placed femur moved by this much from the host's head centre (LPS mm; default none).
    Raises :class:`InputError` for a donor :func:`check_donor` refuses or whose placed femur leaves the host's body."""
    return _transplanted(pairs, [check_donor(donor) for _, donor in pairs], moves_lps)


def _transplanted(
    pairs: list[tuple[PreparedCT, PreparedCT]],
    femurs: list[DonorFemur],
    moves_lps: list[np.ndarray] | None = None,
    trim: bool = True,
) -> tuple[Volume, np.ndarray]:
    """:func:`make_transplant` of donors already measured (``femurs``, one per pair, by :func:`check_donor`);
    ``trim``: end the scan where the shortest donor's shaft does (a body's own femurs need not: the grid stays)."""
    from scipy.ndimage import distance_transform_edt, map_coordinates

    host_ct = pairs[0][0]
    if any(host.hu.array.shape != host_ct.hu.array.shape for host, _ in pairs):
        raise InputError(None, "transplant: hosts of different CTs", "set one CT's hips at a time")
    out = host_ct.hu.array.astype(np.float32).copy()
    body = host_ct.body_mask if host_ct.body_mask is not None else np.ones(out.shape, bool)
    moves = moves_lps if moves_lps is not None else [np.zeros(3)] * len(pairs)
    for (host, donor), measured, move in zip(pairs, femurs, moves, strict=True):
        femur = _femur_of(host, "host")
        box = _box(host, femur)
        spacing = np.asarray(host.hu.geometry.spacing_mm)[::-1]
        outside = distance_transform_edt(~femur[box], sampling=spacing)
        region = out[box]
        other_bone = host.bone_mask[box] & ~femur[box]  # the acetabulum stays
        region[(outside <= FILL_MARGIN_MM) & body[box] & ~other_bone] = host_soft_tissue_hu(host, femur, outside, box)
        # The donor's femur, pulled back onto every voxel of the box, with a soft margin of its surroundings.
        donor_femur = _femur_of(donor, "donor")
        donor_outside = distance_transform_edt(~donor_femur, sampling=np.asarray(donor.hu.geometry.spacing_mm)[::-1])
        inner, outer = DONOR_MARGIN_MM
        weight = np.clip((outer - donor_outside) / (outer - inner), 0.0, 1.0).astype(np.float32)
        weight[donor.bone_mask & ~donor_femur] = 0.0  # not the donor's acetabulum
        kji = np.indices(region.shape).reshape(3, -1).T + [b.start for b in box]
        host_points = index_to_lps(host.hu.geometry, kji) - np.asarray(move, float)  # a moved femur: read it back
        at = lps_to_index(donor.hu.geometry, donor_points(host, donor, host_points)).T
        at, factor = completed_head(donor, measured, at)
        share = (factor * map_coordinates(weight, at, order=1, mode="constant", cval=0.0)).reshape(region.shape)
        # On the host's acetabulum only the femur's bone writes, not the margin of soft tissue it brings: a head
        # moved or placed towards the socket must not hollow the socket out.
        socket = other_bone.reshape(-1)
        femur_share = map_coordinates(donor_femur.astype(np.float32), at[:, socket], order=1, mode="constant", cval=0.0)
        share.reshape(-1)[socket] = np.minimum(share.reshape(-1)[socket], femur_share)
        donor_hu = map_coordinates(donor.hu.array.astype(np.float32), at, order=1, mode="nearest")
        donor_cal, host_cal = donor.calibration, host.calibration
        density = donor_cal["slope"] * donor_hu + donor_cal["intercept"]
        as_host_hu = ((density - host_cal["intercept"]) / host_cal["slope"]).reshape(region.shape)
        placed = share > 0.5
        if placed.any() and (~body[box][placed]).mean() > MAX_OUTSIDE_BODY:
            raise InputError(
                None,
                f"{donor.cache_key}'s femur placed in {host.cache_key} lies {100 * (~body[box][placed]).mean():.0f} % "
                "outside the body",
                "use another donor",
            )
        out[box] = share * as_host_hu + (1.0 - share) * region
    names = " + ".join(f"{donor.cache_key} in {host.cache_key}" for host, donor in pairs)
    volume = Volume(out, host_ct.hu.geometry, "HU", f"{host_ct.hu.source} ({names})")
    if not trim:
        return volume, body
    shortest = int(np.argmin([femur.reach_mm for femur in femurs]))
    return trimmed_to_reach(volume, body, pairs[shortest][0], femurs[shortest].reach_mm)


def transplant_hips(
    folder: str | Path, host_ct: str, index: int, ct_ids: list[str] | None = None
) -> tuple[str, list[tuple[str, str, str]]]:
    """(entry id, [(host hip key, donor hip key, transplant hip key)]) of the ``index``-th transplant into a host
    CT: every real hip of the other CTs (of ``ct_ids``, if given) in sorted order is a donor, two per entry for a whole
    pelvis (left, then right), so ``ceil(donors / 2)`` entries give the body every femur once. Entry ``<host>-tNN``,
    hips ``<host>-tNN_<side>``."""
    bones = real_bones(Path(folder))
    donors = sorted(
        key for ct_id, keys in bones.items() if ct_id != host_ct and (ct_ids is None or ct_id in ct_ids) for key in keys
    )
    entry = transplant_entry(host_ct, index)
    if not donors:
        return entry, []
    sides = [side for side in ("left", "right") if side_key(host_ct, side) in bones.get(host_ct, [])]
    hips = []
    for offset, side in enumerate(sides):
        donor = donors[(len(sides) * index + offset) % len(donors)]
        hips.append((side_key(host_ct, side), donor, side_key(entry, side)))
    return entry, hips


def transplant_entry(host_ct: str, index: int) -> str:
    """The id of the ``index``-th transplant entry of a host CT: ``<host>-tNN`` (:func:`transplant_host` reads it)."""
    return f"{host_ct}-t{index:02d}"


def transplant_host(entry: str) -> str:
    """The host CT of a transplant or moved-femur entry (:func:`transplant_entry`, :func:`moved_entry`)."""
    return entry.rsplit("-", 1)[0]


def moved_entry(host_ct: str, index: int) -> str:
    """The id of the ``index``-th body of a CT with its femurs moved in their joints: ``<host>-mNN``."""
    return f"{host_ct}-m{index:02d}"


def femur_move_lps(host: PreparedCT, seed: int, index: int) -> np.ndarray:
    """The move (LPS mm) of one hip's femur in the ``index``-th moved-femur body: uniform within :data:`MOVE_MM` along
    each axis of that femur's neutral frame, drawn from the seed, the hip and the index alone."""
    local = seeded_rng(seed, host.cache_key, "femur move", index).uniform(-MOVE_MM, MOVE_MM, 3)
    return local @ np.asarray(host.frame_axes, float)


def host_cts(folder: str | Path) -> list[str]:
    """The real CTs that can take another femur: those with both hips prepared, a whole pelvis with the soft tissue
    of both thighs (a thigh crop, cut just above its head, has no hip joint to receive one)."""
    both = {side_key("", "left"), side_key("", "right")}
    return [ct_id for ct_id, keys in real_bones(Path(folder)).items() if {key[len(ct_id) :] for key in keys} == both]


def _body_tasks(folder: Path, count: int, ct_ids: list[str] | None) -> list[tuple[str, int]]:
    """(host CT, body index) of ``count`` bodies of every host CT (:func:`host_cts`; of ``ct_ids``, if given)."""
    hosts = [host for host in host_cts(folder) if ct_ids is None or host in ct_ids]
    return [(host, index) for host in hosts for index in range(count)]


def _record(
    folder: Path,
    host_key: str,
    donor_key: str,
    hip_key: str,
    move: list[float] | None = None,
    refused: str | None = None,
) -> None:
    record = {"host_key": host_key, "donor_key": donor_key, "move_lps_mm": move or [0.0, 0.0, 0.0]}
    record.update({"refused": refused} if refused else {})
    atomic_write_text(folder / f"{hip_key}.transplant.json", json.dumps(record, indent=2) + "\n")


def _refusal_of(folder: Path, hip_key: str, donor_key: str, move: list[float] | None = None) -> str | None:
    """The reason a transplant hip was refused before, or None; refuses to resume one made with another donor or
    move (the donors of an entry follow from the CTs given, a move from the seed, and a hip's key names neither)."""
    record = folder / f"{hip_key}.transplant.json"
    if not record.is_file():
        return None
    made = json.loads(record.read_text())
    made_move = made.get("move_lps_mm", [0.0, 0.0, 0.0])
    move = move or [0.0, 0.0, 0.0]
    if made.get("donor_key") != donor_key or not np.allclose(made_move, move, atol=1e-3):
        raise InputError(
            folder,
            f"holds {hip_key} made with {made.get('donor_key')}'s femur moved by {np.round(made_move, 2).tolist()} mm, "
            f"where this run would place {donor_key}'s moved by {np.round(move, 2).tolist()} mm (the CTs or seed "
            "given differ from that run's)",
            "give the same CTs and seed as before, or a new output folder",
        )
    return made.get("refused")


def prepare_transplants(
    prepared_folder: str | Path, count: int, ct_ids: list[str] | None = None, progress: bool = True
) -> tuple[list[str], dict[str, str]]:
    """Make ``count`` transplant entries (:func:`transplant_hips`) of every host CT (:func:`host_cts`; of ``ct_ids``,
    with donors of ``ct_ids``, if given) and prepare each hip from the new CT. A hip whose CT analysis fails, or
    finds its head further than :data:`bmdgan.cohort.anatomy.MAX_HEAD_DRIFT_MM` from the host's head centre (where
    the donor's head was put), is refused with the reason, recorded in ``<hip>.transplant.json`` so a resumed run
    does not make it again.
    Returns (entry ids with a prepared hip, refused hip key -> reason)."""
    folder = Path(prepared_folder)
    tasks, entries, refused = _body_tasks(folder, count, ct_ids), [], {}
    for host_ct, index in progress_bar(tasks, desc="transplants", unit="body", disable=not progress or not tasks):
        entry, hips = transplant_hips(folder, host_ct, index, ct_ids)
        before = {hip_key: _refusal_of(folder, hip_key, donor_key) for _, donor_key, hip_key in hips}
        refused.update({key: reason for key, reason in before.items() if reason})
        todo = [(h, d, k) for h, d, k in hips if not has_prepared(folder, k) and not before[k]]
        if todo:
            refused.update(_make_entry(folder, hips, todo))
        if any(has_prepared(folder, hip_key) for _, _, hip_key in hips):
            entries.append(entry)
    return entries, refused


def moved_femurs(hosts: list[PreparedCT], moves_lps: list[np.ndarray]) -> list[PreparedCT]:
    """The hips of one body (``hosts``: every prepared hip of one CT) with each femur moved by its ``moves_lps``
    entry (LPS mm) in its own hip joint: the new CT (each femur transplanted into its own hip as by
    :func:`make_transplant`, on the same grid, the scan not trimmed), and each hip's landmarks moved with it exactly,
    its femur label and PF region to the nearest voxel; the pelvis and the rest of the bone label stay. Its
    CT-aBMD/vBMD stay the host's: the same mineral, moved."""
    from scipy.ndimage import shift

    femurs = [check_donor(host) for host in hosts]
    volume, body = _transplanted([(host, host) for host in hosts], femurs, moves_lps, trim=False)
    geometry = volume.geometry
    moved_masks, own_femurs = [], np.zeros(volume.array.shape, bool)
    for host, move in zip(hosts, moves_lps, strict=True):
        own_femurs |= _femur_of(host, "host")
        head = np.asarray(host.head_centre_lps, float)
        step = lps_to_index(geometry, (head + move)[None])[0] - lps_to_index(geometry, head[None])[0]
        moved_masks.append(
            [shift(mask.astype(np.uint8), step, order=0) > 0 for mask in (host.femur_mask, host.pf_mask)]
        )
    bone = np.zeros(volume.array.shape, bool)
    for femur, _ in moved_masks:
        bone |= femur
    density = (hosts[0].calibration["slope"] * volume.array + hosts[0].calibration["intercept"]).astype(np.float32)
    return [
        replace(
            host,
            hu=volume,
            density_mg_cm3=density,
            bone_mask=(host.bone_mask & ~own_femurs) | bone,
            pf_mask=pf,
            head_centre_lps=np.asarray(host.head_centre_lps, float) + move,
            shaft_point_lps=np.asarray(host.shaft_point_lps, float) + move,
            body_mask=body,
            femur_mask=femur,
        )
        for host, move, (femur, pf) in zip(hosts, moves_lps, moved_masks, strict=True)
    ]


def prepare_moved_femurs(
    prepared_folder: str | Path, count: int, seed: int, ct_ids: list[str] | None = None, progress: bool = True
) -> tuple[list[str], dict[str, str]]:
    """Make ``count`` bodies (:func:`moved_entry`) of every host CT (:func:`host_cts`; of ``ct_ids``, if given) with
    each of its femurs moved in its own hip joint (:func:`femur_move_lps`, :func:`moved_femurs`) and save their hips,
    each recorded as derived from its host hip with its move. Returns (entry ids made, refused hip key -> reason)."""
    folder = Path(prepared_folder)
    tasks, entries, refused = _body_tasks(folder, count, ct_ids), [], {}
    loaded_ct, bodies = None, []
    for host_ct, index in progress_bar(tasks, desc="moved femurs", unit="body", disable=not progress or not tasks):
        entry = moved_entry(host_ct, index)
        if host_ct != loaded_ct:  # the tasks come host by host: each host's hips are read once
            loaded_ct, bodies = host_ct, [load_prepared(folder, key) for key in real_bones(folder)[host_ct]]
        moves = [femur_move_lps(host, seed, index) for host in bodies]
        hip_keys = [side_key(entry, host.side) for host in bodies]
        before = [_refusal_of(folder, k, h.cache_key, m.tolist()) for k, h, m in zip(hip_keys, bodies, moves)]
        if any(before):
            refused.update({key: reason for key, reason in zip(hip_keys, before) if reason})
            continue
        if not all(has_prepared(folder, key) for key in hip_keys):
            try:
                made = moved_femurs(bodies, moves)
            except BMDGANError as error:
                for key, host, move in zip(hip_keys, bodies, moves):
                    _record(folder, host.cache_key, host.cache_key, key, move.tolist(), str(error))
                    refused[key] = str(error)
                continue
            for key, host, move, hip in zip(hip_keys, bodies, moves, made):
                _record(folder, host.cache_key, host.cache_key, key, move.tolist())
                save_prepared(replace(hip, key=key, donor_ct=host.ct_id), folder)  # its json last: complete
        entries.append(entry)
    return entries, refused


def _make_entry(folder: Path, hips: list[tuple[str, str, str]], todo: list[tuple[str, str, str]]) -> dict[str, str]:
    """Make one transplant entry's new CT (all its hips, so the body is whole) and prepare the hips in ``todo``."""
    hosts = {host_key: load_prepared(folder, host_key) for host_key, _, _ in hips}
    donors = {donor_key: load_prepared(folder, donor_key) for _, donor_key, _ in hips}
    reasons: dict[str, str] = {}
    pairs, femurs = [], []
    for host_key, donor_key, hip_key in hips:
        try:
            femurs.append(check_donor(donors[donor_key]))
            pairs.append((hosts[host_key], donors[donor_key]))
        except BMDGANError as error:
            reasons[hip_key] = str(error)  # that side keeps the host's own femur
    volume, body = _transplanted(pairs, femurs) if pairs else (None, None)
    for host_key, donor_key, hip_key in todo:
        if hip_key in reasons:
            continue
        host, donor = hosts[host_key], donors[donor_key]
        try:
            made = prepare_ct(volume, host.ct_id, side=host.side, body_mask=body)
        except BMDGANError as error:
            reasons[hip_key] = str(error)
            continue
        drift = float(np.linalg.norm(made.head_centre_lps - host.head_centre_lps))
        if drift > MAX_HEAD_DRIFT_MM:
            reasons[hip_key] = (
                f"its femoral head was found {drift:.1f} mm from where the donor's head was put (more than "
                f"{MAX_HEAD_DRIFT_MM:.0f} mm): the hip search fitted another sphere"
            )
            continue
        _record(folder, host_key, donor_key, hip_key)
        save_prepared(replace(made, key=hip_key, donor_ct=donor.ct_id), folder)  # its json last: complete
    for host_key, donor_key, hip_key in todo:
        if hip_key in reasons:
            _record(folder, host_key, donor_key, hip_key, refused=reasons[hip_key])
    return {hip_key: reasons[hip_key] for _, _, hip_key in todo if hip_key in reasons}
