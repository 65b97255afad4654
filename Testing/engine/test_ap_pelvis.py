"""AP pelvis radiographs of the whole-pelvis CTs (Pelvic-Ref-002/005): nothing outside the body reaches the
image, and no step where the scanned volume ends (the detector is collimated to the scanned range)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bmdgan.io import Volume, VolumeGeometry, read_ct
from bmdgan.projection.ap_pelvis import (ap_pelvis_centre, ap_pelvis_geometry, clean_outside_body,
                                         project_ap_pelvis)
from bmdgan.projection.simulator import material_projections


def stand_in_body_mask(ct) -> np.ndarray:
    """Test-only stand-in for ``bmdgan.ct.body.body_mask`` (another branch): the largest connected component
    of HU > -400, holes filled slice by slice. bool [k, j, i]."""
    labels, count = ndimage.label(ct.array > -400)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(sizes.argmax())
    return np.stack([ndimage.binary_fill_holes(plane) for plane in body])


@pytest.fixture(scope="module")
def pelvis_005(shared_data):
    """Pelvic-Ref-005 (HU), its body mask, and the AP centre (body midline, mid-depth, mid-scan)."""
    ct = read_ct(shared_data / "ct" / "pelvic_reference" / "Pelvic-Ref-005.nii.gz")
    body = stand_in_body_mask(ct)
    return ct, body, ap_pelvis_centre(body, ct.geometry.ijk_to_lps())


def _slab(ct, body, first: int, stop: int):
    """Slices [first, stop) of a CT and its body mask: a scan that ends earlier at both ends."""
    g = ct.geometry
    origin = np.asarray(g.origin_mm) + g.direction @ np.array([0.0, 0.0, first * g.spacing_mm[2]])
    return (Volume(ct.array[first:stop].copy(), VolumeGeometry(g.spacing_mm, tuple(origin), g.direction), "HU",
                   "slab"), body[first:stop])


def test_no_step_where_the_scanned_volume_ends(pelvis_005, one_torch_thread):
    """The same CT scanned 75 mm shorter at each end (25 slices of 3 mm): the collimated AP pelvis image keeps
    only rows whose rays stay in the scan through the body, so it equals the full scan's image on every kept row
    (the rows where the short scan ends included); without collimation those rows lose up to all the tissue."""
    ct, body, centre = pelvis_005
    short, short_body = _slab(ct, body, 25, ct.array.shape[0] - 25)
    cleaned_full = clean_outside_body(ct, body)
    errors = {}
    for collimate in (False, True):
        areal, geometry, collimation = project_ap_pelvis(short, short_body, centre, pixel_spacing_mm=1.0,
                                                         collimate=collimate)
        truth = material_projections(cleaned_full, geometry).sum(axis=0)
        image = areal.sum(axis=0)
        inside = truth > 1.0                                   # g/cm2: body pixels
        relative = np.abs(image - truth) / np.maximum(truth, 1.0)
        errors[collimate] = relative[inside].max()
        if collimate:
            assert collimation.collimated and collimation.columns == collimation.full_columns == 430
            assert set(collimation.limited_by) == {"inferior end of the scan", "superior end of the scan"}
            assert 250 < collimation.rows < 330                 # of 350 rows at 1 mm
            # No step at the rows where the scan ends: the first and last kept rows continue their neighbours.
            profile = np.array([row[mask].mean() for row, mask in zip(image, inside)])
            jumps = np.abs(np.diff(profile))
            assert max(jumps[:3].max(), jumps[-3:].max()) <= np.percentile(jumps, 99)
    print(f"largest relative error against the full scan: {errors}")
    assert errors[False] > 0.5                                  # without collimation: the body is cut off
    assert errors[True] < 0.005                                 # collimated: measured 0.0011


def test_full_detector_on_the_whole_scan_is_collimated_at_both_ends(pelvis_005, one_torch_thread):
    """A 650 mm tall detector sees past both ends of the scan; the uncollimated image falls to zero there."""
    ct, body, centre = pelvis_005
    full_geometry, _ = ap_pelvis_geometry(body, ct.geometry.ijk_to_lps(), centre, pixel_spacing_mm=1.0,
                                          detector_mm=(650.0, 430.0), collimate=False)
    geometry, collimation = ap_pelvis_geometry(body, ct.geometry.ijk_to_lps(), centre, pixel_spacing_mm=1.0,
                                               detector_mm=(650.0, 430.0))
    assert (collimation.full_rows, collimation.first_row, collimation.rows) == (650, 103, 452)
    uncollimated = material_projections(clean_outside_body(ct, body), full_geometry).sum(axis=0)
    middle = uncollimated[:, 165:265].mean(axis=1)
    assert middle[:20].max() < 0.5 and middle[-20:].max() < 0.5          # beyond the scan: nothing
    kept = middle[collimation.first_row:collimation.first_row + collimation.rows]
    assert kept.min() > 8.0                                              # g/cm2: body on every kept row
    np.testing.assert_allclose(geometry.project_points(centre[None])[0],
                               full_geometry.project_points(centre[None])[0] - [0, 103], atol=1e-6)


def test_couch_and_wires_outside_the_body_contribute_nothing(pelvis_005, one_torch_thread):
    """Pelvic-Ref-005 has a couch under the patient and ECG-like wires (up to 3071 HU) on the patient's right,
    outside the body. The AP pelvis projection equals that of the same CT with those voxels set to air."""
    ct, body, centre = pelvis_005
    outside = ~body & (ct.array > -400)
    x_lps = ct.geometry.ijk_to_lps()[0, 0] * np.nonzero(outside)[2] + ct.geometry.ijk_to_lps()[0, 3]
    assert ct.array[outside].max() >= 3000 and outside.sum() > 100_000
    assert np.median(x_lps[ct.array[outside] > 1500]) < 0                # the wires lie on the patient's right
    by_hand = ct.with_array(np.where(outside, np.float32(-1000.0), ct.array))
    areal, geometry, _ = project_ap_pelvis(ct, body, centre, pixel_spacing_mm=1.0)
    areal_by_hand, geometry_by_hand, _ = project_ap_pelvis(by_hand, body, centre, pixel_spacing_mm=1.0)
    assert geometry.shape == geometry_by_hand.shape
    np.testing.assert_array_equal(areal, areal_by_hand)
    # Without the body mask the couch and the wires would be in the image.
    unclean = material_projections(ct, geometry)
    assert np.abs(unclean - areal).max() > 1.0                           # g/cm2
