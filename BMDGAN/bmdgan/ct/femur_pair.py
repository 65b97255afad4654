"""Both femurs of a bilateral CT, each with its side, for labelling the whole pelvis.

Why here: :func:`.segmentation.segment_femur` returns one hip, and on the Pelvic-Ref CTs it finds only one
femoral head (heads must fit the one shaft in view). Until it finds both sides itself, the hip-bone labels
(:mod:`.pelvis`) and ``bmdgan compare-labels`` get the second femur from here: the heads found are given
their sides by the body's midline (LPS: the patient's left is +x), and a side without a head is searched
where the found head's mirror image across the midline lies (the pelvis is nearly symmetric), fitted,
centred in its socket and segmented like any head without a shaft.
"""

from __future__ import annotations

import numpy as np

from ..io.volume import Volume
from . import grid
from .head import RAY_COUNT, fibonacci_directions, find_femoral_heads, is_plausible_head, refine_head, smoothed_hu
from .segmentation import FemurSegmentation, segment_with_head
from .shaft import find_shaft
from .socket import centre_in_socket

SAME_HEAD_MM = 30.0
"""Two head centres closer than this (mm) are the same head."""


def _body_midline_x(body: np.ndarray, ct: Volume, centre_lps: np.ndarray) -> float:
    """LPS x (mm) of the body's centroid in the axial slice through ``centre_lps``."""
    k = int(np.clip(round(float(grid.lps_to_index(ct.geometry, centre_lps)[0][0])), 0, body.shape[0] - 1))
    jj, ii = np.nonzero(body[k])
    points = np.column_stack([np.full(len(jj), k), jj, ii]).astype(float)
    return float(grid.index_to_lps(ct.geometry, points)[:, 0].mean())


def segment_femurs_by_side(ct: Volume, body: np.ndarray) -> tuple[dict[str, FemurSegmentation], list[str]]:
    """Femur segmentations by side ('left', 'right'; a side whose head cannot be found is missing) and notes."""
    smooth = smoothed_hu(ct)
    shaft = find_shaft(ct, smooth)
    heads = find_femoral_heads(ct, smooth, shaft)
    notes: list[str] = []
    if not heads:
        return {}, ["no femoral head was found"]
    midline = _body_midline_x(body, ct, heads[0].centre_lps)
    by_side = {}
    for head in heads:
        side = "left" if head.centre_lps[0] > midline else "right"
        by_side.setdefault(side, head)
    for side in ("left", "right"):
        if side in by_side:
            continue
        found_side, found = next(iter(by_side.items()))
        seed = found.centre_lps.copy()
        seed[0] = 2.0 * midline - seed[0]
        head = refine_head(ct, smooth, seed, fibonacci_directions(RAY_COUNT))
        if (head is None or not is_plausible_head(head)
                or np.linalg.norm(head.centre_lps - found.centre_lps) < SAME_HEAD_MM):
            notes.append(f"no {side} femoral head at the mirror image of the {found_side} one")
            continue
        by_side[side] = head
        notes.append(f"{side} femoral head found at the mirror image of the other across the midline")
    segmentations = {}
    for side, head in by_side.items():
        own_shaft = shaft if shaft is not None and (shaft.at(shaft.t_max)[0] > midline) == (side == "left") else None
        if own_shaft is None:
            head = centre_in_socket(ct, head)
        segmentations[side] = segment_with_head(ct, smooth, head, own_shaft)
    return segmentations, notes
