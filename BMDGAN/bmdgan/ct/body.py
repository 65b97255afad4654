"""The patient's body in a CT: skin inwards, internal air (bowel, lungs) included; couch, wires and markers out.

Why: a radiotherapy or diagnostic CT holds more than the patient. The couch (a foam board with thin
shells and dense rails), external ECG wires (metal, up to 3071 HU), skin markers and positioning aids
lie in the field of view; they would count as air or fat in a phantomless calibration and cast shadows
in a simulated radiograph.

How (all sizes in mm, so the result does not depend on the voxel size):

1. Foreground = CT number above ``BODY_HU`` (-300 HU: fat is about -100 HU, the couch's foam core about
   -930 HU and its thin shells reach only about -500 HU after partial volume), on a grid coarsened in the
   slice plane to about ``WORK_SPACING_MM`` (block means), for speed.
2. Opening by a ball of ``OPENING_RADIUS_MM``: wires, cables, blankets, thin shells, the couch's rails
   and contacts thinner than twice that radius (a couch pad touching the skin, a wire lying on it) break
   off. Beyond the first and last slice counts as body (the scan's range cuts the patient), beyond the
   in-plane border as outside (rails along the border are eroded from both sides; a body cut by the
   border grows back to it).
3. Connected parts: the largest is the body; other parts are kept when they hold at least
   ``MIN_PART_FRACTION`` of its volume (the second leg of a thigh-only scan), so the couch's remains and
   wires (well under 1 %) are dropped.
4. Internal air: holes of the opened body are filled slice by slice (axial slices: the array's first
   axis) and in 3D, so bowel gas and lungs are body; a hole that reaches the grid's border is not filled
   (it may be outside). What lies deeper than one coarse voxel inside the filled body is body.
5. The skin, on the full grid: the voxels above ``BODY_HU`` and not above ``METAL_HU`` within
   ``SKIN_MARGIN_MM`` of the opened body (the partial-volume rim the opening and the coarse grid shaved
   off; metal on the skin is a wire or a marker, metal deep inside an implant or a fiducial).

A 512 x 512 x 160 CT takes about 0.5-1 s on one core.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..io.volume import Volume
from . import grid

BODY_HU = -300.0
"""CT number (HU) above which a voxel is body tissue (fat, soft tissue, bone) rather than air, foam or shell."""
AIR_HU = -1000.0
"""CT number (HU) given to everything outside the body by :func:`clean_body`."""
METAL_HU = 2000.0
"""CT number (HU) above which a voxel is metal; metal on the skin (wires, markers) is not body."""
WORK_SPACING_MM = 4.0
"""In-plane voxel size (mm) of the coarse grid on which the body's parts are found."""
OPENING_RADIUS_MM = 8.0
"""Radius (mm) of the opening that breaks off wires, shells and thin contacts with the couch."""
MIN_PART_FRACTION = 0.05
"""A part is body when it holds at least this fraction of the largest part's volume."""
SKIN_MARGIN_MM = 3.0
"""Foreground within this distance (mm) of the opened body is its skin rim."""


def _ball(radius_mm: float, spacing_kji: np.ndarray) -> np.ndarray:
    """Boolean structuring element: voxel offsets within ``radius_mm`` (mm) of the centre."""
    half = np.floor(radius_mm / spacing_kji).astype(int)
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing_kji)]
    dk, dj, di = np.meshgrid(*axes, indexing="ij")
    return dk**2 + dj**2 + di**2 <= radius_mm**2 + 1e-9


def _erode(mask: np.ndarray, radius_mm: float, spacing_kji: np.ndarray, border_inside: bool) -> np.ndarray:
    """Erosion by a ball of ``radius_mm``; ``border_inside``: beyond the grid's border counts as foreground."""
    return ndimage.binary_erosion(mask, _ball(radius_mm, spacing_kji), border_value=int(border_inside))


def _open(mask: np.ndarray, radius_mm: float, spacing_kji: np.ndarray) -> np.ndarray:
    """Opening by a ball of ``radius_mm``.

    Beyond the first and last slice is foreground (the scan's range cuts the body), beyond the in-plane
    border is outside: couch rails lying along the border are eroded from both sides; a body cut by the
    in-plane border grows back to it in the dilation (and its skin rim is restored afterwards).
    """
    pad = int(np.ceil(radius_mm / spacing_kji[0]))
    padded = np.pad(mask, ((pad, pad), (0, 0), (0, 0)), mode="edge")
    opened = _dilate(_erode(padded, radius_mm, spacing_kji, False), radius_mm, spacing_kji)
    return opened[pad : pad + mask.shape[0]]


def _dilate(mask: np.ndarray, radius_mm: float, spacing_kji: np.ndarray) -> np.ndarray:
    """Dilation by a ball of ``radius_mm``."""
    return ndimage.binary_dilation(mask, _ball(radius_mm, spacing_kji))


def _parts(mask: np.ndarray) -> np.ndarray:
    """The largest connected part and those holding at least ``MIN_PART_FRACTION`` of its volume."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.nonzero(sizes >= MIN_PART_FRACTION * sizes.max())[0]
    return np.isin(labels, keep[keep > 0])


def body_mask(ct: Volume) -> np.ndarray:
    """Boolean ``[k, j, i]`` mask of the patient: skin inwards, internal air included (see the module docstring)."""
    array = ct.array
    spacing = grid.spacing_kji(ct.geometry)
    factors = tuple(max(1, int(round(WORK_SPACING_MM / s))) for s in spacing[1:])
    coarse_spacing = spacing * np.array([1, *factors])
    coarse = grid.coarsen_in_plane(ct, factors).array > BODY_HU
    opened = _parts(_open(coarse, OPENING_RADIUS_MM, coarse_spacing))
    filled = ndimage.binary_fill_holes(grid.fill_holes_per_slice(opened, axis=0))
    block = float(np.linalg.norm(coarse_spacing[1:]))  # a coarse voxel's diagonal (mm)
    near = grid.refine_in_plane(_dilate(opened, SKIN_MARGIN_MM + block / 2, coarse_spacing), factors, array.shape)
    core = grid.refine_in_plane(_erode(filled, block, coarse_spacing, True), factors, array.shape)
    return core | (near & (array > BODY_HU) & (array <= METAL_HU))


def clean_body(ct: Volume, mask: np.ndarray | None = None) -> Volume:
    """The CT with everything outside the body (``mask``, or :func:`body_mask`) set to air (``AIR_HU``)."""
    if mask is None:
        mask = body_mask(ct)
    return ct.with_array(np.where(mask, ct.array, np.asarray(AIR_HU, ct.array.dtype)))
