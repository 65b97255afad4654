"""The detector's second stage: the femoral head centre found again at 1 mm per pixel in a 96 mm window around
the first stage's estimate.

The first stage (2 mm per pixel, 256 mm of context) tells a hip from a left or right one and from no hip, but
on CTs it never saw it places the head 4-6 mm off (docs/hip-detection.md): with a few training CTs it learns
where their heads sit relative to the neck and shaft. The window here shows little but the head, its rim
against the acetabulum and the start of the neck, which look alike in every hip. It is cut in the image's axes
around the first estimate, a left hip mirrored (so every window shows a right hip: neck to the window's left),
and its intensities scaled by its own percentiles. One map of logits (softmax over its pixels: where the head
centre is) comes out; its peak, found to a tenth of a pixel, is the refined head. A second pass re-centres the
window on the first pass's answer.
"""

from __future__ import annotations

import math

import numpy as np

from ..datasets.normalise import resample
from .layout import heatmap_peak

REFINER_MM_PER_PX = 1.0
"""Resolution of the refinement window (mm per pixel in the image plane): a femoral head spans ~50 px."""
REFINER_PATCH_PX = 96
"""Side of the refinement window (pixels, so 96 mm): a head (radius ~25 mm) stays inside it for any first-stage
error within :data:`REFINER_SEARCH_MM`."""
REFINER_SEARCH_MM = 20.0
"""First-stage errors the refiner is trained to undo (mm; the first stage's 95th percentile was 17 mm)."""
REFINER_SIGMA_PX = 1.5
"""Standard deviation of the target Gaussian at the head centre (pixels: 1.5 mm)."""
REFINER_PASSES = 2


def window_matrix(
    centre_px: tuple[float, float],
    pixel_spacing_mm: tuple[float, float],
    mirror: bool,
    angle_rad: float = 0.0,
    scale: float = 1.0,
    mm_per_px: float = REFINER_MM_PER_PX,
    side_px: int = REFINER_PATCH_PX,
) -> np.ndarray:
    """3x3 affine from window pixels (column, row, 1) to source pixels: ``side_px`` pixels of ``mm_per_px`` (times
    ``scale``) centred on ``centre_px``, turned by ``angle_rad`` and mirrored left to right when ``mirror`` (a left
    hip). The defaults cut the refinement window; the first stage's training windows use it too."""
    row_mm, column_mm = pixel_spacing_mm
    step = mm_per_px * scale
    cosine, sine = math.cos(angle_rad), math.sin(angle_rad)
    x_axis = np.array([cosine, sine]) * (-1.0 if mirror else 1.0)
    y_axis = np.array([-sine, cosine])
    matrix = np.eye(3)
    matrix[:2, 0] = x_axis * step / np.array([column_mm, row_mm])
    matrix[:2, 1] = y_axis * step / np.array([column_mm, row_mm])
    matrix[:2, 2] = np.asarray(centre_px, float) - matrix[:2, :2] @ np.full(2, side_px / 2.0)
    return matrix


def scaled_window(pixels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The window [REFINER_PATCH_PX, REFINER_PATCH_PX] sampled through ``matrix``, its 0.5/99.5 percentiles mapped to
    [-1, 1] (the network's input)."""
    window = resample(pixels, matrix, (REFINER_PATCH_PX, REFINER_PATCH_PX), outside="edge")
    low, high = np.percentile(window, [0.5, 99.5])
    return np.clip((window - low) / max(float(high - low), 1e-6) * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def refine_head(
    network, pixels: np.ndarray, pixel_spacing_mm: tuple[float, float], head_px: tuple[float, float], side: str
) -> tuple[float, float]:
    """The head centre (column, row source pixels) found again by the refinement ``network`` from a first
    estimate ``head_px`` of a ``side`` ("right"/"left") hip, in :data:`REFINER_PASSES` passes."""
    import torch

    centre = np.asarray(head_px, float)
    for _ in range(REFINER_PASSES):
        matrix = window_matrix(tuple(centre), pixel_spacing_mm, mirror=side == "left")
        with torch.no_grad():
            logits, _ = network(torch.from_numpy(scaled_window(pixels, matrix))[None, None])
        heat = logits[0, 0].numpy()
        column, row, _ = heatmap_peak(np.exp(heat - heat.max()))
        centre = (matrix @ np.array([column, row, 1.0]))[:2]
    return float(centre[0]), float(centre[1])
