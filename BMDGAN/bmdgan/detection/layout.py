"""What the hip detector's network, its training and its reading share, without importing torch: the landmark
channels, the grid the network needs and how a map's peak is read."""

from __future__ import annotations

import numpy as np

CHANNELS = ("head_right", "neck_right", "head_left", "neck_left")
"""Landmark maps, in order: per side the femoral head centre and the neck point (40 mm along the femur's lateral
axis, :data:`bmdgan.datasets.normalise.NECK_POINT_MM`)."""
HEAD_DISKS = ("head_disk_right", "head_disk_left")
"""Maps a detector trained with head disks (``train-detector --head-disks``) adds after :data:`CHANNELS`: per side,
the femoral head's projected outline filled (a disc of the head's radius around its centre), learnt pixel by pixel.
A disc's edge is the head's own rim, which looks alike in every hip, and its centroid averages hundreds of pixels
into the centre, where one peak follows whatever context the training CTs shared."""
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


def heatmap_peak(heatmap: np.ndarray) -> tuple[float, float, float]:
    """(column, row, value) of a heatmap's maximum, refined to sub-pixel by a parabola through the logarithms of
    the maximum and its neighbours along each axis (exact for the Gaussians the detector is trained to draw)."""
    row, column = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    value = float(heatmap[row, column])

    def offset(before: float, centre: float, after: float) -> float:
        logs = np.log(np.clip([before, centre, after], 1e-6, None))
        curvature = logs[0] - 2 * logs[1] + logs[2]
        return float(np.clip(0.5 * (logs[0] - logs[2]) / curvature, -1.0, 1.0)) if curvature < 0 else 0.0

    rows, columns = heatmap.shape
    dx = offset(heatmap[row, column - 1], value, heatmap[row, column + 1]) if 0 < column < columns - 1 else 0.0
    dy = offset(heatmap[row - 1, column], value, heatmap[row + 1, column]) if 0 < row < rows - 1 else 0.0
    return float(column) + dx, float(row) + dy, value
