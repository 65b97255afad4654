"""Automatic femur and pelvis labels from a CT (threshold, a joint-space cut, connected components).

Why not a plain threshold and connected components: on clinical CT (3 mm slices, smooth kernels) the
thin hip joint space is bridged by partial-volume voxels, so femur and pelvis come out as one object.
The cut used here comes from the fitted femoral head (:mod:`.head`): along every ray on which the
head's surface was seen, a shell from just outside that surface (0.8 mm) to 6 mm beyond it is removed
before the connected components are taken. Rays that leave the head through the neck get no cut, so
the femur stays one piece. What is connected to the head after the cut is the femur; the bone the
cut separated from it is the pelvis.

Steps: bone = smoothed CT > ``BONE_HU``; metal = CT > ``METAL_HU`` (dilated by ``METAL_MARGIN_MM``);
femur = the part of (bone minus the cut) connected to the head, then its marrow and holes filled and
the head's inside added; pelvis = the bone next to the cut that is not femur, filled the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..io.volume import Volume
from . import grid
from . import labels as L
from .head import FemoralHead, neck_direction
from .shaft import Shaft

BONE_HU = 150.0
"""Smoothed CT number (HU) above which a voxel is bone (cortex and dense cancellous bone)."""
SURFACE_HU = 100.0
"""Voxels touching the bone and brighter than this (HU, smoothed) are its partial-volume rim. It lies above
muscle and blood (40-60 HU), so a rim voxel holds some bone: at 0 HU every muscle voxel next to the cortex
was taken, a 3 mm shell on 3 mm scans (TotalSegmentator example: right femur 117 cm3 against 106 cm3,
Dice 0.863 against 0.901 with its mask; see docs/labels.md)."""
METAL_HU = 2000.0
"""CT number (HU) above which a voxel is metal (cortical bone stays below ~1900 HU at 80-140 kVp)."""
METAL_MARGIN_MM = 2.0
"""Metal is dilated by this much to also exclude the blooming around it."""
CUT_START_MM = 0.8
CUT_END_MM = 6.0
"""Without a seen joint space the cut runs from 0.8 to 6 mm outside the head surface (mm)."""
JOINT_HALF_WIDTH_MM = 1.0
CUT_BEYOND_JOINT_MM = 2.5
"""Where the joint space was seen, the cut runs from 1 mm inside to 2.5 mm outside its darkest point."""
PRUNE_RADIUS_MM = 4.0
"""Bone joined to the femur through a contact thinner than twice this (mm) is not femur."""
NECK_CONE_DEG = 50.0
"""No joint cut within this angle (degrees) of the neck direction: that is where the neck leaves the head."""


@dataclass
class FemurSegmentation:
    """Labels (project convention, :mod:`.labels`) and what was found on the way."""

    labels: Volume
    metal: np.ndarray
    head: FemoralHead | None
    shaft: Shaft | None
    notes: list[str] = field(default_factory=list)
    side: str | None = None
    """'left'/'right' as found by :mod:`.hips` (None where not known)."""

    @property
    def femur(self) -> np.ndarray:
        return L.femur_mask(self.labels.array)


def metal_mask(ct: Volume) -> np.ndarray:
    """Metal voxels (CT > ``METAL_HU``) dilated by ``METAL_MARGIN_MM``."""
    return grid.dilate_mm(ct.array > METAL_HU, METAL_MARGIN_MM, ct.geometry)


def neck_rays(head: FemoralHead, shaft: Shaft | None) -> np.ndarray:
    """Rays of ``head`` within ``NECK_CONE_DEG`` of the neck direction: no cut is made along them."""
    direction = neck_direction(head, shaft)
    if not np.any(direction):
        return np.zeros(len(head.directions), bool)
    return head.directions @ direction > np.cos(np.radians(NECK_CONE_DEG))


def _cut_limits(head: FemoralHead) -> tuple[np.ndarray, np.ndarray]:
    """Per ray: inner and outer radius (mm) of the cut between femoral head and acetabulum.

    Where the joint space was seen (a dark gap before the socket) the cut is centred on it, elsewhere
    it starts just outside the head surface (or the fitted sphere).
    """
    surface = np.where(head.on_sphere, head.edge_radius_mm, head.radius_mm)
    joint = head.joint_radius_mm
    has_joint = np.isfinite(joint)
    inner = np.where(has_joint, joint - JOINT_HALF_WIDTH_MM, surface + CUT_START_MM)
    outer = np.where(has_joint, joint + CUT_BEYOND_JOINT_MM, surface + CUT_END_MM)
    # per-ray evidence may be fooled (a trabecular gap inside the head): stay near the fitted sphere
    inner = np.clip(inner, head.radius_mm - 1.0, head.radius_mm + 3.0)
    outer = np.maximum(np.clip(outer, head.radius_mm + 2.0, head.radius_mm + CUT_END_MM), inner + 2.0)
    return inner, outer


def head_cut(shape, ct: Volume, head: FemoralHead, neck: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the joint cut (not towards the neck) and of the head's inside, ``[k, j, i]``."""
    inner, outer = _cut_limits(head)
    reach = float(np.max(outer)) + 2.0
    centre_kji = grid.lps_to_index(ct.geometry, head.centre_lps)[0]
    half = np.ceil(reach / grid.spacing_kji(ct.geometry)).astype(int) + 1
    low = np.maximum(np.floor(centre_kji).astype(int) - half, 0)
    high = np.minimum(np.floor(centre_kji).astype(int) + half + 1, shape)
    cut = np.zeros(shape, bool)
    inside = np.zeros(shape, bool)
    if np.any(high <= low):
        return cut, inside
    box = np.indices(tuple(high - low)).reshape(3, -1).T + low
    offsets = grid.index_to_lps(ct.geometry, box) - head.centre_lps
    distance = np.linalg.norm(offsets, axis=1)
    near = distance < reach
    box, offsets, distance = box[near], offsets[near], distance[near]
    _, ray = cKDTree(head.directions).query(offsets / np.maximum(distance[:, None], 1e-6))
    is_cut = ~neck[ray] & (distance > inner[ray]) & (distance < outer[ray])
    is_inside = ((distance <= inner[ray]) & ~neck[ray]) | (distance < 0.6 * head.radius_mm)
    cut[tuple(box[is_cut].T)] = True
    inside[tuple(box[is_inside].T)] = True
    return cut, inside


def _fill(mask: np.ndarray, ct: Volume) -> np.ndarray:
    """Close small cortical gaps (1.5 mm) and fill marrow: 2D holes in all three planes, then 3D holes."""
    closed = ndimage.binary_closing(mask, grid.ball(1.5, ct.geometry)) | mask
    for axis in range(3):
        closed = grid.fill_holes_per_slice(closed, axis)
    return ndimage.binary_fill_holes(closed)


def _markers(
    ct: Volume, bone: np.ndarray, head: FemoralHead, shaft: Shaft | None, neck: np.ndarray, inside: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Seeds of the femur (head inside, shaft cortex) and of the pelvis (acetabulum beyond the cut)."""
    femur_seed = inside & bone
    if shaft is not None:
        where = np.argwhere(bone)
        offset = grid.index_to_lps(ct.geometry, where) - shaft.point_lps
        along = offset @ shaft.direction
        radial = np.linalg.norm(offset - along[:, None] * shaft.direction, axis=1)
        length = shaft.t_max - shaft.t_min
        tube = (
            (radial < shaft.radius_mm + 2.0)
            & (along > shaft.t_min + 0.1 * length)
            & (along < shaft.t_max - 0.3 * length)
        )
        femur_seed[tuple(where[tube].T)] = True
    axis = head.directions[neck].mean(axis=0) if neck.any() else np.zeros(3)
    if np.any(axis):
        axis /= np.linalg.norm(axis)
        # Neck: a narrow cone (25 degrees) around the neck axis, 8-25 mm beyond the head surface.
        rays = np.nonzero(head.directions @ axis > np.cos(np.radians(25)))[0]
        depths = np.arange(head.radius_mm + 8.0, head.radius_mm + 25.0, 1.0)
        points = (head.centre_lps + head.directions[rays, None, :] * depths[None, :, None]).reshape(-1, 3)
        kji = np.round(grid.lps_to_index(ct.geometry, points)).astype(int)
        ok = np.all((kji >= 0) & (kji < np.array(bone.shape)), axis=1)
        neck_seed = np.zeros(bone.shape, bool)
        neck_seed[tuple(kji[ok].T)] = True
        femur_seed |= neck_seed & bone
    # Acetabulum: rays that saw a socket, well away from the neck, just beyond the cut.
    away = head.directions @ axis < np.cos(np.radians(80))
    _, outer = _cut_limits(head)
    rays = np.nonzero(np.isfinite(head.joint_radius_mm) & away)[0]
    depths = np.arange(0.5, 4.6, 0.5)
    points = (
        head.centre_lps + head.directions[rays, None, :] * (outer[rays, None, None] + depths[None, :, None])
    ).reshape(-1, 3)
    kji = np.round(grid.lps_to_index(ct.geometry, points)).astype(int)
    ok = np.all((kji >= 0) & (kji < np.array(bone.shape)), axis=1)
    pelvis_seed = np.zeros(bone.shape, bool)
    pelvis_seed[tuple(kji[ok].T)] = True
    pelvis_seed &= bone & ~femur_seed
    return femur_seed, pelvis_seed


def _add_surface_layer(mask: np.ndarray, smooth: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Grow by one voxel into neighbours brighter than ``SURFACE_HU``: the partial-volume rim of the cortex.

    The ``BONE_HU`` threshold sits inside the blurred cortical edge; the voxels just outside it that are
    brighter than the soft tissue around the bone still hold part of the bone (and its mineral), and manual
    or learned labels (e.g. TotalSegmentator's) include them.
    """
    rim = ndimage.binary_dilation(mask) & ~mask & (smooth > SURFACE_HU) & allowed
    return mask | rim


def _prune_thin_contacts(mask: np.ndarray, seeds: np.ndarray, ct: Volume) -> np.ndarray:
    """Drop parts joined to the seeded body only through contacts thinner than ``PRUNE_RADIUS_MM`` x 2.

    An opening breaks the thin contacts; the opened parts that hold a seed are kept and grown back
    into the original mask by the opening radius, so the kept surface is unchanged.
    """
    opened = grid.open_mm(mask, PRUNE_RADIUS_MM, ct.geometry)
    parts, _ = ndimage.label(opened)
    keep_ids = np.unique(parts[seeds & opened])
    kept = np.isin(parts, keep_ids[keep_ids > 0])
    if not kept.any():
        return grid.largest_component(mask)
    grown = grid.dilate_mm(kept, PRUNE_RADIUS_MM + 0.5, ct.geometry) & mask
    return grid.largest_component(grown)


def segment_with_head(
    ct: Volume, smooth: np.ndarray, head: FemoralHead, shaft: Shaft | None, metal: np.ndarray | None = None
) -> FemurSegmentation:
    """Femur and pelvis labels given the fitted femoral head (and the shaft, if in view).

    ``metal``: the CT's :func:`metal_mask`, if already made (a CT's hips share it). The work is done in the
    box around the head and the shaft (:func:`_working_box`) and pasted back.
    """
    if metal is None:
        metal = metal_mask(ct)
    box = _working_box(ct, head, shaft)
    part = _segment_box(grid.crop(ct, box), smooth[box], head, shaft, metal[box])
    label_map = np.zeros(ct.array.shape, np.uint8)
    label_map[box] = part.labels.array
    return FemurSegmentation(ct.with_array(label_map, unit="label"), metal, head, shaft, part.notes)


def _working_box(ct: Volume, head: FemoralHead, shaft: Shaft | None) -> tuple[slice, ...]:
    """Array box holding the head (plus 70 mm: neck, trochanters, acetabulum) and the shaft (plus 25 mm)."""
    boxes = [grid.box_around(ct.array.shape, ct.geometry, head.centre_lps, head.radius_mm + 70.0)]
    if shaft is not None:
        ends = np.array([shaft.at(shaft.t_min), shaft.at(shaft.t_max)])
        boxes.append(grid.box_around(ct.array.shape, ct.geometry, ends, shaft.radius_mm + 25.0))
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))


def _segment_box(
    ct: Volume, smooth: np.ndarray, head: FemoralHead, shaft: Shaft | None, metal: np.ndarray
) -> FemurSegmentation:
    """:func:`segment_with_head` on a cropped volume (see there).

    A marker watershed on the bone's thickness splits femur from pelvis: seeds in the head and shaft,
    seeds in the acetabulum, the joint cut as a wall, and bone thickness (distance to the bone surface)
    as the relief, so that thin contacts (partial volume across the joint, the ischium touching the
    femur in a flexed hip) become the borders.
    """
    notes = []
    bone = (smooth > BONE_HU) | metal
    neck = neck_rays(head, shaft)
    if neck.sum() < 3:
        notes.append("no neck was seen leaving the femoral head: the femur may be cut at the head")
    cut, inside = head_cut(bone.shape, ct, head, neck)
    solid = bone & ~cut
    solid[inside] = True
    for axis in range(3):
        solid = grid.fill_holes_per_slice(solid, axis) & ~cut
    thickness = ndimage.distance_transform_edt(solid, sampling=grid.spacing_kji(ct.geometry))
    # relief: high where bone is thin (contacts) or dark (a joint space bridged by partial volume)
    thin = np.clip(25.0 - thickness, 0, 25) / 25.0
    dark = np.clip((500.0 - smooth) / 400.0, 0, 1)
    relief = np.round(120 * thin + 120 * dark).astype(np.uint8)
    relief[~solid] = 255
    femur_seed, pelvis_seed = _markers(ct, solid, head, shaft, neck, inside)
    markers = np.zeros(bone.shape, np.int16)
    markers[pelvis_seed] = 2
    markers[femur_seed] = 1
    flooded = ndimage.watershed_ift(relief, markers)
    femur = _prune_thin_contacts((flooded == 1) & solid, femur_seed, ct)
    femur = _fill(femur, ct) & ~cut
    femur |= inside
    femur = grid.largest_component(femur)
    pelvis = (flooded == 2) & solid & ~femur
    if pelvis.any():
        pelvis = grid.fill_holes_per_slice(grid.largest_component(pelvis), 0) & ~femur
    femur = _add_surface_layer(femur, smooth, ~(pelvis | cut))
    if shaft is None:
        notes.append("no femoral shaft in the field of view")
    label_map = L.compose(pelvis, femur)
    return FemurSegmentation(ct.with_array(label_map, unit="label"), metal, head, shaft, notes)
