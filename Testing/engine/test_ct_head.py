"""The femoral-head sphere fit (:mod:`bmdgan.ct.head`) on analytic balls.

A femoral head seen by the ray fit is a dense shell (cortex) around a less dense inside; where a neck or a socket
touches it, its outer surface has no fall to soft tissue. A head with a dense core (sclerosis, or a core left dense
by a virtual anatomy's trabecular loss around it) also has an inner fall at about two thirds of its radius, on
every ray. The fit must take the outer surface, the one within the adult radius range.
"""

from __future__ import annotations

import numpy as np
import pytest

from bmdgan.ct.head import HEAD_RADIUS_RANGE_MM, fibonacci_directions, refine_head, smoothed_hu
from bmdgan.io.volume import Volume, VolumeGeometry

SPACING_MM = 1.0
CENTRE_LPS = np.array([2.0, -3.0, 1.5])


def _layered_ball(radius_mm: float, core_radius_mm: float, covered_below_z_mm: float) -> Volume:
    """A head of ``radius_mm``: core (900 HU) inside ``core_radius_mm``, trabecular bone (300 HU), a 2 mm cortex
    (800 HU), soft tissue (40 HU) outside, and dense bone (800 HU) outside it below ``covered_below_z_mm``
    (LPS z from the centre), as where the neck joins it: no fall at the surface there."""
    size = 80
    geometry = VolumeGeometry((SPACING_MM,) * 3, tuple(-(size - 1) / 2 * SPACING_MM for _ in range(3)))
    k, j, i = np.mgrid[0:size, 0:size, 0:size].astype(float)
    lps = np.stack([i, j, k], axis=-1) * SPACING_MM + np.array(geometry.origin_mm)
    offset = lps - CENTRE_LPS
    distance = np.linalg.norm(offset, axis=-1)
    hu = np.full(distance.shape, 40.0, np.float32)
    hu[offset[..., 2] < covered_below_z_mm] = 800.0
    hu[distance < radius_mm] = 800.0
    hu[distance < radius_mm - 2.0] = 300.0
    hu[distance < core_radius_mm] = 900.0
    return Volume(hu, geometry, "HU", "layered ball")


@pytest.mark.parametrize("covered_below_z_mm", [-30.0, 0.0])
def test_the_fit_takes_the_outer_surface_not_the_dense_core(covered_below_z_mm):
    radius = 24.0
    core = 0.65 * radius  # 15.6 mm: below the adult head range, as the deformed head's inner edge that was fitted
    assert core < HEAD_RADIUS_RANGE_MM[0] < radius
    ball = _layered_ball(radius, core, covered_below_z_mm)
    start = CENTRE_LPS + np.array([1.5, -1.0, 1.0])
    head = refine_head(ball, smoothed_hu(ball), start, fibonacci_directions(500))
    assert head is not None
    assert head.radius_mm == pytest.approx(radius, abs=1.0)
    assert np.linalg.norm(head.centre_lps - CENTRE_LPS) < 0.5
