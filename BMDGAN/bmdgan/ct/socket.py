"""Place the femoral head at the centre of its socket: the hip joint is concentric.

Why: on coarse pelvic CTs (3 mm voxels, no femoral shaft in view) the head's own surface is hardly
seen: its top differs from the joint space and the acetabular roof by only ~100 HU, its inside is
partly fatty (50-150 HU), and the head sphere of :mod:`.head` settles in the acetabular roof
(~15 mm too high on the TotalSegmentator example CT). The socket is seen better: its bony shell
(subchondral plate, ~430 HU) wraps the head at a larger radius (27-36 mm from the head centre on
that scan). Its sphere is fitted with the same ray method from starting points around the first
head estimate; its centre is the head's, and the head radius is the socket's minus the joint
layer (cartilage of head and acetabulum plus the plate's half thickness, ``JOINT_LAYER_MM``).

Only used without a shaft in view (see :func:`.hips.fitted_head`): with a shaft the head
sphere is constrained by it and found well on the IBSI CTs.
"""

from __future__ import annotations

import numpy as np

from ..io.volume import Volume
from .head import (
    HEAD_RADIUS_RANGE_MM,
    FemoralHead,
    describe_sphere,
    refine_head,
    smoothed_hu,
)

SOCKET_RADIUS_RANGE_MM = (27.0, 36.0)
"""Radius (mm) of the acetabular shell's sphere around an adult femoral head."""
JOINT_LAYER_MM = 6.0
"""Socket radius minus head radius (mm): two cartilage layers (~2-4 mm) and the shell's half thickness."""
SOCKET_SMOOTHING_MM = 2.0
"""Gaussian sigma (mm) for the socket fit: the shell is seen at this scale, the head's mottled inside is not."""
SEED_OFFSETS_MM = (-12.0, -6.0, 0.0, 6.0, 12.0)
"""Starting points for the socket fit: this grid (mm, along each axis) around the first head estimate."""
MAX_SHIFT_MM = 20.0
"""A socket centre further than this (mm) from the first head estimate belongs to another structure."""


def centre_in_socket(volume: Volume, head: FemoralHead) -> FemoralHead:
    """``head`` moved to the centre of the best-seen socket sphere near it (or unchanged if none is found).

    Best seen: the largest fraction of rays with a shell edge on the sphere (coverage).
    """
    smooth = smoothed_hu(volume, SOCKET_SMOOTHING_MM)
    offsets = np.stack(np.meshgrid(*[SEED_OFFSETS_MM] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    best = None
    for seed in head.centre_lps + offsets:
        socket = refine_head(
            volume, smooth, seed, head.directions, iterations=6, radius_range_mm=SOCKET_RADIUS_RANGE_MM
        )
        if socket is None or np.linalg.norm(socket.centre_lps - head.centre_lps) > MAX_SHIFT_MM:
            continue
        if best is None or socket.coverage > best.coverage:
            best = socket
    if best is None:
        return head
    radius = float(np.clip(best.radius_mm - JOINT_LAYER_MM, *HEAD_RADIUS_RANGE_MM))
    moved = describe_sphere(volume, smoothed_hu(volume), best.centre_lps, radius, head.directions)
    return head if moved is None else moved
