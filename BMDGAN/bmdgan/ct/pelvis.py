"""Hip bones (ilium, ischium, pubis; left and right) and the sacrum, labelled from the CT and the femurs.

Why: the stage-1 target of the paper is the DRR of pelvis + femur; the hip bone is the whole innominate
bone, not the acetabular rim the femur segmentation leaves next to its joint cut.

Given the CT, the body mask (:mod:`.body`) and the femur masks of the sides present (from
:mod:`.segmentation`, with its joint-space cut), in the box of the pelvis and on a grid coarsened in-plane
to about ``WORK_SPACING_MM`` (for speed; the labels are brought back to the CT's grid at the end):

1. Bone = CT smoothed by ``SMOOTHING_MM`` above ``BONE_HU``, inside the body, less the femurs and
   ``FEMUR_MARGIN_MM`` around them (the hip joint space, bridged by partial volume).
2. Seeds, each the start of one label:
   * hip bone: bone within ``SOCKET_REACH_MM`` of the upper ``HEAD_PART_MM`` of a femur (the acetabulum),
     and bone more than ``ILIUM_OFFSET_MM`` from the midline up to ``ILIUM_LEVEL_MM`` above the femoral
     heads' tops (the iliac wings) in the bone connected to an acetabulum (not bowel content or vessels);
   * sacrum: the pieces of a narrow midline strip of bone (``SPINE_HALF_WIDTH_MM``, posterior half of the
     body) that reach ``SACRUM_LEVEL_MM`` above the femoral heads' tops (the mid-sacrum);
   * lumbar spine: the strip's pieces wholly above the sacrum's (the discs are not bone; where they are
     bridged, the sacrum is cut ``SACRUM_ABOVE_JOINT_MM`` above the top of the sacroiliac joints);
   * everything that is not bone is a background seed (negative: processed last), so labels grow only
     through bone.
3. A marker watershed (``scipy.ndimage.watershed_ift``) on a relief that is high where bone is dark
   (``RELIEF_LEVELS`` steps from ``DENSE_HU`` down to ``BONE_HU``): labels meet at the dark gaps between
   bones (the sacroiliac joints, the discs), within a step they grow by distance.
4. Each label keeps its parts that hold a seed; it is made solid (cortical gaps closed, marrow above
   ``MARROW_HU`` filled: all holes in axial slices, small ones in the other planes, where the obturator
   foramen is a large hole) and its partial-volume rim above ``SURFACE_HU`` added.
5. Left and right hip bone: the hip label on either side of the midline (the pubic symphysis is on it).
   The sacrum ends ``SACRUM_ABOVE_JOINT_MM`` above the top of its contact with the hip bones (the
   sacroiliac joints), or at the iliac crests where no contact is seen.

The midline is the mid-point of the two femoral heads (both sides present) or the body's centroid
in the slices of the femoral head (one side, the body whole in the field of view). With one femur in a
crop that cuts the body (the IBSI thigh crops) there is no midline: the hip bone is what the acetabulum
seed reaches, unsplit, and no sacrum is sought. Superior is found from the anatomy (the femoral head's
end of the femurs has the acetabulum next to it), not from the header. Sides are the caller's (LPS: the
patient's left is +x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..io.volume import Volume
from . import grid

WORK_SPACING_MM = 2.0
"""In-plane voxel size (mm) of the grid the labels are found on (finer CTs are coarsened to it, for speed)."""
BONE_HU = 180.0
"""Smoothed CT number (HU) above which a voxel is hip bone or sacrum (cortex and cancellous bone)."""
SMOOTHING_MM = 1.0
"""Gaussian sigma (mm) of the smoothing before the bone threshold."""
HEAD_PART_MM = 45.0
"""The top this many mm (along z) of a femur mask is its head and neck: the acetabulum lies around it."""
SOCKET_REACH_MM = 10.0
"""Bone up to this far (mm) outside the femoral head is acetabulum (hip-bone seed)."""
SPINE_HALF_WIDTH_MM = 8.0
"""Half width (mm) of the midline strip in which the sacrum and lumbar seeds lie: narrower than the
vertebral bodies, wide of the facet joints and pedicles, so the vertebrae are separate pieces in it."""
SACRUM_LEVEL_MM = (10.0, 50.0)
"""The sacrum seed is the midline bone that reaches this far above (mm, z) the femoral heads' tops."""
LUMBAR_OVERLAP_MM = 10.0
"""A midline piece whose lowest point is at most this far (mm) below the sacrum's top is a lumbar vertebra
(the L5/S1 disc is tilted: L5's lower endplate reaches below the top of S1 in axial slices)."""
SACRUM_ABOVE_JOINT_MM = 12.0
"""The sacrum's top (S1's upper endplate) lies at most this far (mm) above the top of the sacroiliac joints."""
BELOW_HEAD_MM = 90.0
"""The pelvis box reaches this far (mm) below the femoral heads' tops (ischial tuberosities ~ 60 mm)."""
CLOSING_MM = 3.0
"""Gaps in the cortex up to twice this (mm) are closed before the marrow is filled."""
MARROW_HU = -50.0
"""Filled marrow must be above this CT number (HU, smoothed): fatty marrow, not the fat outside the bone."""
SURFACE_HU = 60.0
"""Voxels next to the bone and above this (HU, smoothed) are its partial-volume rim."""
MAX_SMALL_HOLE_MM2 = 300.0
"""Marrow holes up to this area (mm2) are filled in coronal and sagittal slices (the obturator foramen
is larger)."""

FEMUR_MARGIN_MM = 1.5
"""Bone within this distance (mm) of a femur mask is joint space bridged by partial volume: not hip bone."""
ILIUM_OFFSET_MM = 65.0
ILIUM_LEVEL_MM = 100.0
"""Bone more than 65 mm from the midline, up to 100 mm above the femoral heads' tops, is ilium (hip-bone
seed): lateral of the sacral ala (about 50-55 mm from the midline at S1)."""
DENSE_HU = 450.0
RELIEF_LEVELS = 8
"""Watershed relief: bone from ``BONE_HU`` (high) to ``DENSE_HU`` (low) in this many steps; within a step the
labels grow by distance, so a seed does not win a region merely by holding more voxels."""

"""Parameters chosen on the TotalSegmentator example CT (the only one with a reference here), see docs/labels.md."""

HIP_SEED = 1
SACRUM_SEED = 2
LUMBAR_SEED = 3
BACKGROUND_SEED = -1


@dataclass
class PelvisLabels:
    """Boolean masks ``[k, j, i]`` on the CT grid: hip bone per side present, sacrum (may be empty)."""

    hip: dict[str, np.ndarray]
    sacrum: np.ndarray
    midline_x_mm: float | None
    """LPS x (mm) of the body's midline; None where it cannot be known (a crop with one femur)."""
    notes: list[str]


def _z_coordinates(geometry, shape) -> np.ndarray:
    """LPS z (mm) of each slice's centre, ``(k,)`` (the slices are taken as axial)."""
    centre = np.array([[k, (shape[1] - 1) / 2, (shape[2] - 1) / 2] for k in range(shape[0])], float)
    return grid.index_to_lps(geometry, centre)[:, 2]


def _head_top(femur: np.ndarray, z_of_k: np.ndarray) -> float:
    """Highest z (mm) of a femur mask: the top of its head."""
    ks = np.nonzero(femur.any(axis=(1, 2)))[0]
    return float(np.max(z_of_k[ks]))


def _centroid_x(mask: np.ndarray, geometry) -> float:
    """Mean LPS x (mm) of a mask's voxels."""
    return float(grid.index_to_lps(geometry, np.argwhere(mask))[:, 0].mean())


def _solid(mask: np.ndarray, smooth: np.ndarray, allowed: np.ndarray, geometry) -> np.ndarray:
    """A bone label made solid: cortical gaps closed (``CLOSING_MM``), marrow filled (all 2D holes in axial
    slices, holes up to ``MAX_SMALL_HOLE_MM2`` in the other planes, 3D holes) where the CT is above
    ``MARROW_HU``, and the partial-volume rim (one voxel above ``SURFACE_HU``) added, within ``allowed``.
    """
    spacing = grid.spacing_kji(geometry)
    closed = mask | (ndimage.binary_closing(mask, grid.ball(CLOSING_MM, geometry)) & allowed)
    filled = grid.fill_holes_per_slice(closed, axis=0)
    for axis in (1, 2):
        holes = grid.fill_holes_per_slice(filled, axis=axis) & ~filled
        structure = np.zeros((3, 3, 3), bool)
        plane = [slice(None)] * 3
        plane[axis] = 1
        structure[tuple(plane)] = ndimage.generate_binary_structure(2, 1)
        parts, count = ndimage.label(holes, structure)
        if count:
            pixel_mm2 = float(np.prod([s for a, s in enumerate(spacing) if a != axis]))
            sizes = np.bincount(parts.ravel()) * pixel_mm2
            small = np.nonzero(sizes <= MAX_SMALL_HOLE_MM2)[0]
            filled |= np.isin(parts, small[small > 0])
    filled = ndimage.binary_fill_holes(filled)
    solid = mask | (filled & (smooth > MARROW_HU) & allowed)
    rim = ndimage.binary_dilation(solid) & ~solid & (smooth > SURFACE_HU) & allowed
    return solid | rim


def _seeded_part(label: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The parts of ``label`` (26-connected) that hold a seed voxel."""
    parts, _ = ndimage.label(label, np.ones((3, 3, 3), bool))
    keep = np.unique(parts[seed & label])
    return np.isin(parts, keep[keep > 0])


def superior_sign(ct: Volume, femurs: dict[str, np.ndarray]) -> float:
    """+1 if the header's z points to the head (superior), -1 if the volume is stored the other way round.

    Found from the anatomy, not the header (some CTs' headers are wrong): of the two ends of the femurs
    along the slices, the femoral head's end has other bone next to it (the acetabulum), the shaft's none.
    """
    femur = np.zeros(ct.array.shape, bool)
    for mask in femurs.values():
        femur |= mask
    ks = np.nonzero(femur.any(axis=(1, 2)))[0]
    quarter = max(1, (ks[-1] - ks[0] + 1) // 4)
    near = {}
    ends = {"low": slice(int(ks[0]), int(ks[0]) + quarter), "high": slice(int(ks[-1]) - quarter + 1, int(ks[-1]) + 1)}
    for name, slices in ends.items():
        end = np.zeros(femur.shape, bool)
        end[slices] = femur[slices]
        near[name] = int((grid.dilate_mm(end, 10.0, ct.geometry) & ~femur & (ct.array > BONE_HU)).sum())
    z_of_k = _z_coordinates(ct.geometry, ct.array.shape)
    high_is_up = z_of_k[-1] > z_of_k[0]
    head_is_high = near["high"] >= near["low"]
    return 1.0 if head_is_high == high_is_up else -1.0


def _spine_seeds(strip: np.ndarray, sacral_level: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sacrum and lumbar seeds in the midline strip of bone (posterior half of the body).

    Within the strip the vertebrae are separate pieces (the discs are not bone; the facet joints lie
    outside it): the pieces that reach the mid-sacrum's level are the sacrum (with the coccyx), the
    pieces wholly above the sacrum's top are lumbar vertebrae (L5 and up).
    """
    parts, _ = ndimage.label(strip, np.ones((3, 3, 3), bool))
    ids = np.unique(parts[sacral_level & strip])
    sacral = np.isin(parts, ids[ids > 0])
    if not sacral.any():
        return sacral, np.zeros_like(strip)
    top = float(np.max(np.broadcast_to(z, strip.shape)[sacral]))
    lowest = ndimage.minimum(np.broadcast_to(z, strip.shape), parts, index=np.arange(1, parts.max() + 1))
    above = np.nonzero(np.asarray(lowest) > top - LUMBAR_OVERLAP_MM)[0] + 1
    return sacral, np.isin(parts, above) & ~sacral


def label_pelvis(ct: Volume, body: np.ndarray, femurs: dict[str, np.ndarray]) -> PelvisLabels:
    """Hip bone of each side in ``femurs`` ('left'/'right' -> femur mask ``[k, j, i]``) and the sacrum.

    The labels are found on a grid coarsened in-plane to about ``WORK_SPACING_MM`` and brought back to the
    CT's grid (where they keep the voxels of the body above ``MARROW_HU``). Raises :class:`InputError`
    without a femur (the acetabulum is found around the femoral head).
    """
    femurs = {side: np.asarray(mask, bool) for side, mask in femurs.items() if mask is not None and np.any(mask)}
    if not femurs:
        raise InputError(
            ct.source or None,
            "no femur mask: hip bones are found around the femoral heads",
            "segment the femur first (bmdgan segment)",
        )
    unknown = set(femurs) - {"left", "right"}
    if unknown:
        raise InputError(
            None, f"femur sides must be 'left' or 'right', got {sorted(unknown)}", "name the sides left/right"
        )
    shape = ct.array.shape
    z_of_k = _z_coordinates(ct.geometry, shape) * superior_sign(ct, femurs)
    head_top = float(np.mean([_head_top(mask, z_of_k) for mask in femurs.values()]))
    head_slices = np.nonzero(np.abs(z_of_k - head_top) < 30.0)[0]
    at_head = body[head_slices]
    body_cut = bool(at_head[:, [0, -1], :].any() or at_head[:, :, [0, -1]].any())
    # the pelvis box: from below the ischial tuberosities to the top of the scan, the body's extent in-plane
    ks = np.nonzero(z_of_k >= head_top - BELOW_HEAD_MM)[0]
    body_box = grid.mask_box(body, 0.0, ct.geometry)
    if body_box is None or len(ks) == 0:
        raise InputError(ct.source or None, "no body around the femoral heads", "check the CT and the body mask")
    box = (slice(int(ks.min()), int(ks.max()) + 1), body_box[1], body_box[2])
    spacing = grid.spacing_kji(ct.geometry)
    factors = tuple(max(1, int(round(WORK_SPACING_MM / s))) for s in spacing[1:])
    cropped = grid.crop(ct, box)
    work = grid.coarsen_in_plane(cropped, factors)

    def coarse(mask: np.ndarray) -> np.ndarray:
        return grid.coarsen_in_plane(cropped.with_array(mask[box].astype(np.float32)), factors).array > 0.5

    hips, sacrum, midline, notes = _label_work(
        work, coarse(body), {side: coarse(m) for side, m in femurs.items()}, z_of_k[box[0]], body_cut
    )
    keep = (ct.array[box] > MARROW_HU) & body[box]
    out_hip = {}
    for side, mask in hips.items():
        out_hip[side] = np.zeros(shape, bool)
        out_hip[side][box] = grid.refine_in_plane(mask, factors, keep.shape) & keep
        if midline is not None:  # split again on the CT grid: a coarse voxel on the midline spans both sides
            where = np.argwhere(out_hip[side])
            x = grid.index_to_lps(ct.geometry, where)[:, 0]
            wrong = where[(x <= midline) if side == "left" else (x > midline)]
            out_hip[side][tuple(wrong.T)] = False
    out_sacrum = np.zeros(shape, bool)
    out_sacrum[box] = grid.refine_in_plane(sacrum, factors, keep.shape) & keep
    for mask in femurs.values():
        out_sacrum &= ~mask
        for hip in out_hip.values():
            hip &= ~mask
    return PelvisLabels(out_hip, out_sacrum, midline, notes)


def _label_work(sub: Volume, body: np.ndarray, femur_box: dict[str, np.ndarray], z_of_k: np.ndarray, body_cut: bool):
    """:func:`label_pelvis` on the (coarse) pelvis box: hip masks by side, sacrum, midline x (mm; None if
    unknown), notes. ``z_of_k``: superior coordinate (mm) of each slice; ``body_cut``: the field of view cuts
    the body at the femoral heads' level (a crop: its centroid is not the midline)."""
    spacing = grid.spacing_kji(sub.geometry)
    smooth = ndimage.gaussian_filter(sub.array.astype(np.float32), np.maximum(SMOOTHING_MM / spacing, 0.3))
    bone = (smooth > BONE_HU) & body
    any_femur = np.zeros(bone.shape, bool)
    for mask in femur_box.values():
        any_femur |= mask
    x, y, _ = grid.voxel_lps_coordinates(bone.shape, sub.geometry)
    z = z_of_k[:, None, None]
    tops = {side: _head_top(mask, z_of_k) for side, mask in femur_box.items()}
    head_top = float(np.mean(list(tops.values())))

    notes = []
    if len(femur_box) == 2:
        midline = float(
            np.mean([_centroid_x(mask & (z > tops[side] - 20.0), sub.geometry) for side, mask in femur_box.items()])
        )
    elif not body_cut:
        side = next(iter(femur_box))
        midline = _centroid_x(body & (z > tops[side] - 40.0) & (z < tops[side]), sub.geometry)
        notes.append(f"one femur only ({side}): the midline is the body's centroid at the femoral head")
    else:
        midline = None
        notes.append(
            "one femur in a field of view that cuts the body: no midline, so no sacrum and only the "
            "hip bone connected to the acetabulum"
        )

    femur_zone = grid.dilate_mm(any_femur, FEMUR_MARGIN_MM, sub.geometry)
    bone &= ~femur_zone
    markers = np.zeros(bone.shape, np.int16)
    markers[~bone] = BACKGROUND_SEED
    socket = np.zeros(bone.shape, bool)
    for side, mask in femur_box.items():
        socket |= grid.dilate_mm(mask & (z > tops[side] - HEAD_PART_MM), SOCKET_REACH_MM, sub.geometry) & bone
    # the ilium: lateral bone above the heads, in the bone that holds an acetabulum (not bowel content, vessels)
    parts, _ = ndimage.label(bone, np.ones((3, 3, 3), bool))
    ids = np.unique(parts[socket])
    pelvic_bone = np.isin(parts, ids[ids > 0])
    hip_seed = socket.copy()
    sacral = lumbar = np.zeros(bone.shape, bool)
    if midline is not None:
        lateral = np.abs(x - midline) > ILIUM_OFFSET_MM
        if len(femur_box) == 1:  # the other side's ilium is not this side's hip bone
            lateral &= (x > midline) if "left" in femur_box else (x < midline)
        hip_seed |= pelvic_bone & lateral & (z > head_top) & (z < head_top + ILIUM_LEVEL_MM)
        body_y = np.nonzero(body.any(axis=(0, 2)))[0]
        middle_y = float(grid.index_to_lps(sub.geometry, np.array([[0, (body_y.min() + body_y.max()) / 2, 0]]))[0, 1])
        sacral, lumbar = _spine_seeds(
            bone & (np.abs(x - midline) < SPINE_HALF_WIDTH_MM) & (y > middle_y),
            (z > head_top + SACRUM_LEVEL_MM[0]) & (z < head_top + SACRUM_LEVEL_MM[1]),
            z,
        )
        if not sacral.any():
            notes.append("no bone at the mid-sacrum's level on the midline: no sacrum")
    markers[hip_seed] = HIP_SEED
    markers[sacral] = SACRUM_SEED
    markers[lumbar] = LUMBAR_SEED

    relief = np.clip((DENSE_HU - smooth) / (DENSE_HU - BONE_HU), 0.0, 1.0)
    relief = np.round(RELIEF_LEVELS * relief).astype(np.uint8)
    relief[~bone] = 255
    flooded = ndimage.watershed_ift(relief, markers)
    hip = _solid(_seeded_part(flooded == HIP_SEED, hip_seed), smooth, ~femur_zone, sub.geometry)
    if midline is None:
        hips = {side: hip for side in femur_box}
    else:
        hips = {side: hip & ((x > midline) if side == "left" else (x <= midline)) for side in femur_box}
    sacrum = np.zeros(bone.shape, bool)
    if sacral.any():
        sacrum = _seeded_part(flooded == SACRUM_SEED, sacral)
        # L5, where the L5/S1 disc is bridged in the strip: nothing above the sacroiliac joints' top (plus
        # the height of S1's body above it) or, without joints seen, above the iliac crests
        joint = sacrum & grid.dilate_mm(hip, 2.0 * float(max(spacing)), sub.geometry)
        if joint.any():
            sacrum &= z <= z_of_k[np.nonzero(joint.any(axis=(1, 2)))[0]].max() + SACRUM_ABOVE_JOINT_MM
        elif hip.any():
            sacrum &= z <= z_of_k[np.nonzero(hip.any(axis=(1, 2)))[0]].max()
        sacrum = _solid(sacrum, smooth, ~(femur_zone | hip), sub.geometry)
    return hips, sacrum, midline, notes
