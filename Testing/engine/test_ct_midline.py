"""The body's midline tells a femoral head from the round bones on it (vertebral bodies, the symphysis).

Analytic: the synthetic pelvis CT of :func:`bmdgan.projection.phantoms.synthetic_body_ct` is an elliptic body centred
on the LPS origin with femoral heads at x = +-0.45 of its half width.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bmdgan.ct.hips import MIN_HEAD_MIDLINE_OFFSET_MM, _off_midline
from bmdgan.ct.midline import lateral_of, midline_offset_lps
from bmdgan.projection.phantoms import synthetic_body_ct


@pytest.fixture(scope="module")
def body():
    ct, _ = synthetic_body_ct((10, 100, 120), (4.0, 4.0, 4.0))
    half_width = (120 - 1) * 4.0 / 2.0
    return ct, 0.45 * half_width  # the heads' distance from the midline (mm)


def test_offset_from_the_midline_is_measured_in_the_axial_slice(body):
    ct, head_x = body
    for side in (1.0, -1.0):
        offset = midline_offset_lps(ct, np.array([side * head_x, 10.0, 5.0]))
        assert offset[0] == pytest.approx(side * head_x, abs=1.0)  # the body is symmetric about x = 0
        assert offset[1] == pytest.approx(10.0, abs=1.0) and offset[2] == 0.0
        assert lateral_of(midline_offset_lps(ct, np.array([side * head_x, 0.0, 5.0])))[0] == pytest.approx(
            side, abs=0.01
        )
    assert midline_offset_lps(ct, np.array([0.0, 0.0, 1000.0])) is None  # beyond the scan: unknown
    assert not lateral_of(None).any()


def test_a_round_bone_on_the_midline_is_no_hip(body):
    ct, head_x = body
    assert head_x > MIN_HEAD_MIDLINE_OFFSET_MM

    def head_at(*centre_lps):
        return SimpleNamespace(midline_offset_lps=midline_offset_lps(ct, np.array(centre_lps)))

    assert _off_midline(head_at(head_x, 0.0, 5.0))
    assert not _off_midline(head_at(0.0, 30.0, 5.0))  # a vertebral body
    assert not _off_midline(head_at(0.0, 0.0, 1000.0))  # beyond the scan: unknown
