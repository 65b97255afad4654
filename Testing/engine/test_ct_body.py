"""The body mask on real CTs: couch, wires and markers out; skin, internal air and a cropped body in."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from bmdgan.ct import grid
from bmdgan.ct.body import AIR_HU, body_mask, clean_body
from bmdgan.io import read_ct

COUCH_TOP_ROW = 378
"""Both Pelvic-Ref CTs: the couch's top board starts at array row j ~ 378 (y = +235 mm); the patient lies above."""


@pytest.fixture(scope="module")
def pelvic(shared_data):
    cts = {}
    for name in ("Pelvic-Ref-002", "Pelvic-Ref-005"):
        ct = read_ct(shared_data / "ct" / "pelvic_reference" / f"{name}.nii.gz")
        started = time.perf_counter()
        mask = body_mask(ct)
        cts[name] = ct, mask, time.perf_counter() - started
    return cts


@pytest.mark.parametrize("name", ["Pelvic-Ref-002", "Pelvic-Ref-005"])
def test_couch_is_outside_and_the_body_is_whole(pelvic, name):
    ct, mask, seconds = pelvic[name]
    array = ct.array
    tissue = (array > -300) & (array <= 2000)
    assert tissue[:, COUCH_TOP_ROW:].sum() > 300_000  # the couch is in the field of view...
    assert not mask[:, COUCH_TOP_ROW:].any()  # ...and none of it is body
    above = np.zeros(mask.shape, bool)
    above[:, :370] = True
    assert (mask & tissue & above).sum() >= 0.995 * (tissue & above).sum()  # skin and all soft tissue (0.9995, 0.9968)
    assert 20.0 < mask.sum() * ct.voxel_volume_mm3() / 1e6 < 40.0  # litres: 34.0 and 24.5
    assert (mask & (array < -900)).sum() * ct.voxel_volume_mm3() / 1e3 > 80.0  # bowel gas is body (131, 106 cm3)
    assert seconds < 3.0  # 0.5-1.0 s measured on one core


def test_wires_of_pelvic_ref_005_are_outside(pelvic):
    """Every voxel above 2000 HU outside the body lies on the patient's right (the ECG-like wires, LPS -x);
    those inside are fiducials deep in the pelvis, none on the skin."""
    ct, mask, _ = pelvic["Pelvic-Ref-005"]
    metal = ct.array > 2000
    outside = np.argwhere(metal & ~mask)
    assert len(outside) > 2000  # 2661 wire voxels
    x_outside = grid.index_to_lps(ct.geometry, outside)[:, 0]
    body_x = grid.index_to_lps(ct.geometry, np.argwhere(mask[::4, ::4, ::4]) * 4)[:, 0]
    assert np.all(x_outside < np.median(body_x) - 100.0)  # right of the body's centre, by more than 100 mm
    inside = metal & mask
    box = grid.mask_box(inside, 15.0, ct.geometry)  # depth below the skin, measured in a box around them
    depth_mm = ndimage.distance_transform_edt(mask[box], sampling=grid.spacing_kji(ct.geometry))
    assert inside.sum() < 50 and np.all(depth_mm[inside[box]] > 10.0)  # 12 voxels of a fiducial 22 mm deep


def test_clean_body_sets_air_outside(pelvic):
    ct, mask, _ = pelvic["Pelvic-Ref-002"]
    clean = clean_body(ct, mask)
    assert np.all(clean.array[~mask] == AIR_HU)
    assert np.array_equal(clean.array[mask], ct.array[mask])
    assert clean.geometry == ct.geometry and clean.unit == "HU"


@pytest.mark.parametrize("case", ["STS_012", "STS_020", "STS_036"])
def test_cropped_thigh_is_body_up_to_the_border(shared_data, case):
    """The IBSI crops cut the soft tissue: the body touches the volume's border and stays body there."""
    ct = read_ct(shared_data / "ct" / "ibsi_sts" / f"{case}.nii.gz")
    mask = body_mask(ct)
    tissue = (ct.array > -300) & (ct.array <= 2000)
    border = np.zeros(mask.shape, bool)
    border[:, [0, -1], :] = True
    border[:, :, [0, -1]] = True
    assert (tissue & border).sum() > 1000
    assert (mask & tissue & border).sum() >= 0.98 * (tissue & border).sum()  # 0.990, 0.993, 0.984
    assert (mask & tissue).sum() >= 0.99 * tissue.sum()


def test_totalsegmentator_example_couch_out_air_in(shared_data):
    """3 mm voxels, stored LPS-flipped (couch at the array's first rows): geometry in mm, not voxels."""
    ct = read_ct(shared_data / "ct" / "totalsegmentator_example" / "example_ct.nii.gz")
    mask = body_mask(ct)
    tissue = (ct.array > -300) & (ct.array <= 2000)
    outside = tissue & ~mask
    assert outside.sum() * ct.voxel_volume_mm3() / 1e3 > 100.0  # the couch (182 cm3 of it above -300 HU) is not body
    y_couch = grid.index_to_lps(ct.geometry, np.argwhere(outside))[:, 1]
    y_body = grid.index_to_lps(ct.geometry, np.argwhere(mask))[:, 1]
    assert np.percentile(y_couch, 50) > np.percentile(
        y_body, 99
    )  # it lies posterior (+y) of the patient: -26 vs -32 mm
    assert (mask & (ct.array < -900)).sum() * ct.voxel_volume_mm3() / 1e3 > 50.0  # bowel gas is body
