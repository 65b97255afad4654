"""vBMD and CT-aBMD against analytic cases: a uniform cylinder, its units, scaling and rotation."""

from __future__ import annotations

import numpy as np
import pytest

from bmdgan.ct.calibration import Calibration
from bmdgan.ct.landmarks import FemurFrame, Landmarks
from bmdgan.ct.measurement import MG_CM3_MM_TO_G_CM2, measure_pf, neutral_frame
from bmdgan.ct.pf_region import HEAD_CUT_REACH, PFRegion, Plane, fit_plane, scan_cut_shares
from bmdgan.io import Volume, VolumeGeometry

IDENTITY = Calibration(
    slope=1.0, intercept=0.0, r2=1.0, method="test", reference_names=[], reference_hu=[], reference_density_mg_cm3=[]
)


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def cylinder_case(direction_matrix=None, density=300.0, radius_mm=15.0, length_mm=60.0, spacing=0.6):
    """A uniform bone cylinder along the neck direction (+x), cut to ``length_mm`` by the two PF planes.

    The shaft axis is +z, the neck axis +x: the neutral frame projects along y, and the region's
    projection is a 2r x L rectangle of mean thickness pi r / 2. The "femur" label is the cylinder drawn
    at its half-density surface and 10 mm longer than the cut at each end.
    """
    n = 130
    direction_matrix = np.eye(3) if direction_matrix is None else direction_matrix
    geometry = VolumeGeometry((spacing,) * 3, (0.0, 0.0, 0.0), direction_matrix)
    k, j, i = np.indices((n, n, n), dtype=float)
    points = (np.stack([i, j, k], axis=-1) * spacing) @ geometry.direction.T
    centre = geometry.direction @ np.full(3, (n - 1) / 2 * spacing)
    x, y, z = np.moveaxis(points - centre, -1, 0)
    fraction = np.zeros((n, n, n), np.float32)  # partial-volume cylinder, 2 x 2 x 2 supersampled
    offsets = (np.arange(2) - 0.5) * spacing / 2
    for dx in offsets:
        for dy in offsets:
            for dz in offsets:
                inside = (np.abs(x + dx) <= length_mm / 2 + 10) & ((y + dy) ** 2 + (z + dz) ** 2 <= radius_mm**2)
                fraction += inside / 8.0
    ct = Volume((fraction * density).astype(np.float32), geometry, unit="HU")
    femur = fraction >= 0.5
    head_radius = 22.0
    head_centre = centre + [-length_mm / 2 - head_radius, 0, 0]
    points_lps = {
        "femoral_head_centre": head_centre,
        "neck_centre": centre + [-length_mm / 4, 0, 0],
        "shaft_2cm": centre + [0, 0, -20.0],
        "shaft_5cm": centre + [0, 0, -50.0],
    }
    frame = FemurFrame(np.array([0, 0, 1.0]), np.array([-1.0, 0, 0]), None, "right", None)
    landmarks = Landmarks(points_lps, head_radius, frame)
    region = PFRegion(
        np.zeros(0, bool),
        Plane(centre + [-length_mm / 2, 0, 0], np.array([1.0, 0, 0])),
        Plane(centre + [length_mm / 2, 0, 0], np.array([-1.0, 0, 0])),
        True,
        head_centre_lps=head_centre,
        head_cut_reach_mm=HEAD_CUT_REACH * head_radius,
    )
    region.mask = femur & region.inside_cuts(points)
    return ct, femur, region, landmarks


def test_uniform_cylinder_matches_analytic_values():
    density, radius, length = 300.0, 15.0, 60.0
    ct, femur, region, landmarks = cylinder_case(density=density, radius_mm=radius, length_mm=length)
    result = measure_pf(ct, femur, region, landmarks, IDENTITY)
    volume_cm3 = np.pi * radius**2 * length / 1000.0
    assert result.pf_volume_cm3 == pytest.approx(volume_cm3, rel=0.02)  # voxelised cut planes
    assert result.qct_vbmd_mg_cm3 == pytest.approx(density, rel=0.015)  # mass / (voxelised) volume
    # aBMD: density x mean thickness pi r / 2 (mm) x 1e-4 -> g/cm2; area 2 r x L
    expected_abmd = density * np.pi * radius / 2 * MG_CM3_MM_TO_G_CM2
    assert expected_abmd == pytest.approx(0.70686, rel=1e-4)
    assert result.ct_abmd_g_cm2 == pytest.approx(expected_abmd, rel=0.01)
    assert result.pf_projected_area_cm2 == pytest.approx(2 * radius * length / 100.0, rel=0.02)
    assert result.bone_mineral_content_g == pytest.approx(density * volume_cm3 / 1000.0, rel=0.01)


def test_units_constant():
    # 1 mg/cm3 over 10 mm (1 cm) is 1 mg/cm2 = 1e-3 g/cm2
    assert pytest.approx(1e-3) == 1.0 * 10.0 * MG_CM3_MM_TO_G_CM2


def test_rotated_grid_gives_the_same_numbers():
    reference = measure_pf(*cylinder_case(), IDENTITY)
    matrix = rotation([1, 2, 3], 15.0)
    rotated = measure_pf(*cylinder_case(direction_matrix=matrix), IDENTITY)
    # same object and landmarks (LPS), other voxel grid: only the label's voxel staircase differs, which
    # moves the projected outline by a fraction of a voxel (about 1 % of the area here)
    assert rotated.ct_abmd_g_cm2 == pytest.approx(reference.ct_abmd_g_cm2, rel=0.02)
    assert rotated.qct_vbmd_mg_cm3 == pytest.approx(reference.qct_vbmd_mg_cm3, rel=0.01)


def test_scaling_the_calibration_scales_the_numbers():
    ct, femur, region, landmarks = cylinder_case()
    base = measure_pf(ct, femur, region, landmarks, IDENTITY)
    doubled = Calibration(
        slope=2.5,
        intercept=0.0,
        r2=1.0,
        method="test",
        reference_names=[],
        reference_hu=[],
        reference_density_mg_cm3=[],
    )
    scaled = measure_pf(ct, femur, region, landmarks, doubled)
    assert scaled.qct_vbmd_mg_cm3 == pytest.approx(2.5 * base.qct_vbmd_mg_cm3, rel=1e-4)
    assert scaled.ct_abmd_g_cm2 == pytest.approx(2.5 * base.ct_abmd_g_cm2, rel=1e-4)


def test_metal_is_excluded_from_density():
    ct, femur, region, landmarks = cylinder_case(density=300.0)
    metal = np.zeros_like(femur)
    centre = np.array(femur.shape) // 2
    metal[centre[0] - 4 : centre[0] + 4, centre[1] - 4 : centre[1] + 4, :] = True
    with_metal = ct.with_array(np.where(metal, 3000.0, ct.array).astype(np.float32))
    clean = measure_pf(ct, femur, region, landmarks, IDENTITY)
    excluded = measure_pf(with_metal, femur, region, landmarks, IDENTITY, metal=metal)
    assert excluded.metal_volume_cm3 > 0
    assert excluded.qct_vbmd_mg_cm3 == pytest.approx(clean.qct_vbmd_mg_cm3, rel=0.02)
    assert excluded.ct_abmd_g_cm2 == pytest.approx(clean.ct_abmd_g_cm2, rel=0.02)
    ignored = measure_pf(with_metal, femur, region, landmarks, IDENTITY)
    assert ignored.qct_vbmd_mg_cm3 > 1.2 * clean.qct_vbmd_mg_cm3  # what excluding prevents


def test_neutral_frame_is_orthonormal_and_follows_the_axes():
    landmarks = cylinder_case()[3]
    frame = neutral_frame(landmarks)
    matrix = frame.matrix()
    assert np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-9)
    assert np.allclose(frame.up, [0, 0, 1]) and np.allclose(np.abs(frame.lateral), [1, 0, 0])


def test_plane_fit():
    points = np.array([[0, 0, 1.0], [1, 0, 1.0], [0, 1, 1.0], [1, 1, 1.0]])
    centroid, normal = fit_plane(points)
    assert np.allclose(centroid, [0.5, 0.5, 1.0]) and np.allclose(np.abs(normal), [0, 0, 1])


def test_scan_cut_shares_measure_how_much_of_a_region_the_scan_cuts_off():
    """A sphere of radius 10 voxels: inside the grid nothing is cut; with its centre on the last i face the face holds
    its whole equatorial section (share 1); with the centre 6 voxels inside, the face cuts a circle of radius 8
    (share 64 %, to the voxelisation)."""
    k, j, i = np.mgrid[0:30, 0:30, 0:30]

    def sphere(centre_i):
        return (k - 15) ** 2 + (j - 15) ** 2 + (i - centre_i) ** 2 <= 100

    assert scan_cut_shares(sphere(15)) == {}
    assert scan_cut_shares(sphere(29)) == {"i last": pytest.approx(1.0)}
    cut = scan_cut_shares(sphere(23))
    assert set(cut) == {"i last"} and cut["i last"] == pytest.approx(64 / 100, abs=0.06)
