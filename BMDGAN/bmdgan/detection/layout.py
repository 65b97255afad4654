"""What the hip detector's network, its training and its reading share, without importing torch: the landmark
channels and the grid the network needs."""

from __future__ import annotations

CHANNELS = ("head_right", "neck_right", "head_left", "neck_left")
"""Landmark maps, in order: per side the femoral head centre and the neck point (40 mm along the femur's lateral
axis, :data:`bmdgan.datasets.normalise.NECK_POINT_MM`)."""
MIRRORED = {"right": "left", "left": "right"}


def mirrored(name: str) -> str:
    """A side or a channel name as the mirror image shows it: right and left swap ("auto" stays)."""
    for side, other in MIRRORED.items():
        if side in name:
            return name.replace(side, other)
    return name


LEVELS = 5
"""Resolution levels of the network: four stride-2 steps."""
DOWNSAMPLING = 2 ** (LEVELS - 1)
"""Input sides must be a multiple of this (the detector pads to it)."""
