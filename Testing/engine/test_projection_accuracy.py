"""DRR accuracy against analytic line integrals, units, masks, chunking, batching and clipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmdgan.errors import InputError
from bmdgan.io import Volume, VolumeGeometry
from bmdgan.projection import (
    ProjectionGeometry,
    Projector,
    camera_pose,
    default_ap_geometry,
    line_integral_unit,
    masks_from_labels,
    project_volume,
    volume_centre_lps,
)
from bmdgan.projection.phantoms import cylinder_chords_mm, cylinder_phantom, sphere_chords_mm, sphere_phantom
from bmdgan.projection.reference import reference_project

DENSITY = 1000.0  # mg/cm3
MG_CM3_MM_TO_G_CM2 = 1e-4  # 1 mg/cm3 * 1 mm = 0.1 mg/cm2 = 1e-4 g/cm2


@pytest.fixture(scope="module")
def sphere():
    return sphere_phantom((80, 80, 80), (1.0, 1.0, 1.0), radius_mm=30.0, value=DENSITY)


@pytest.fixture(scope="module")
def cylinder():
    return cylinder_phantom((70, 80, 110), (1.0, 0.8, 1.2), radius_mm=25.0, length_mm=100.0, value=DENSITY)


def _errors(image: np.ndarray, analytic: np.ndarray, centre_px) -> tuple[float, float]:
    """Relative error at the pixel nearest the object's centre and of the mean over the object's footprint."""
    column, row = (int(round(v)) for v in centre_px)
    centre_error = abs(image[row, column] / analytic[row, column] - 1.0)
    footprint = analytic > 0
    mean_error = abs(image[footprint].mean() / analytic[footprint].mean() - 1.0)
    return centre_error, mean_error


POSES = {"ap": [0, 0, 0, 0, 0, 0], "oblique": [35, -20, 10, 5, -4, 30]}


@pytest.mark.parametrize("parallel", [False, True], ids=["cone", "parallel"])
@pytest.mark.parametrize("pose", list(POSES))
def test_uniform_sphere_matches_analytic_areal_density(sphere, parallel, pose):
    volume, centre = sphere
    base = default_ap_geometry(volume, pixel_spacing_mm=0.5, parallel=parallel)
    geometry = base.with_pose(
        camera_pose(torch.tensor(POSES[pose], dtype=torch.float64), base.camera_from_lps, centre).numpy()
    )
    drr = project_volume(volume, geometry)
    assert drr.unit == "g/cm2" and drr.quantity == "areal density"
    analytic = sphere_chords_mm(geometry, centre, 30.0) * DENSITY * MG_CM3_MM_TO_G_CM2
    assert analytic.max() == pytest.approx(6.0, rel=1e-3)  # 60 mm of 1 g/cm3 = 6 g/cm2
    centre_error, mean_error = _errors(drr.image[0], analytic, geometry.project_points(centre))
    assert centre_error < 0.005 and mean_error < 0.01, (centre_error, mean_error)


@pytest.mark.parametrize("parallel", [False, True], ids=["cone", "parallel"])
def test_uniform_cylinder_matches_analytic_areal_density(cylinder, parallel):
    volume, centre, axis = cylinder
    geometry = default_ap_geometry(volume, pixel_spacing_mm=0.5, parallel=parallel)
    image = project_volume(volume, geometry).image[0]
    analytic = cylinder_chords_mm(geometry, centre, axis, 25.0, 100.0) * DENSITY * MG_CM3_MM_TO_G_CM2
    assert analytic.max() == pytest.approx(5.0, rel=2e-3)
    centre_error, mean_error = _errors(image, analytic, geometry.project_points(centre))
    assert centre_error < 0.005 and mean_error < 0.01, (centre_error, mean_error)


def test_units_of_the_line_integral(sphere):
    volume, centre = sphere
    geometry = default_ap_geometry(volume, pixel_spacing_mm=1.0, parallel=True)
    column, row = (int(round(v)) for v in geometry.project_points(centre))
    grams = project_volume(volume.with_array(volume.array / 1000.0, unit="g/cm3"), geometry)
    assert grams.unit == "g/cm2" and grams.image[0, row, column] == pytest.approx(6.0, rel=5e-3)
    mu = project_volume(volume.with_array(volume.array * (0.02 / DENSITY), unit="1/mm"), geometry)
    assert mu.unit == "1" and mu.image[0, row, column] == pytest.approx(60.0 * 0.02, rel=5e-3)
    assert line_integral_unit("mg/cm3").scale == 1e-4 and line_integral_unit("1/cm").scale == 0.1
    for refused in ("HU", "label"):
        with pytest.raises(InputError):
            line_integral_unit(refused)


def test_masked_channels_of_a_partition_sum_to_the_unmasked_image(sphere):
    volume, centre = sphere
    k, j, i = np.indices(volume.array.shape)
    labels = np.where(i < 40, 1, np.where(k < 45, 2, 3)).astype(np.int16)
    labels[volume.array == 0] = 0
    # i < 40 is the patient's right (LPS x grows to the left); k >= 45 is superior
    names, masks = masks_from_labels(labels, {"right": [1], "left_inferior": [2], "left_superior": [3], "air": [0]})
    geometry = default_ap_geometry(volume, pixel_spacing_mm=0.75)
    projector = Projector(
        volume.array,
        volume.geometry.ijk_to_lps(),
        unit="mg/cm3",
        masks=masks,
        channel_names=names,
        include_unmasked=True,
    )
    image = projector.project(geometry)
    assert projector.channel_names == ["all", "right", "left_inferior", "left_superior", "air"]
    np.testing.assert_allclose(image[1:].sum(axis=0), image[0], rtol=1e-5, atol=1e-6)
    assert all(image[c].max() > 1.0 for c in (1, 2, 3)) and image[4].max() < 1e-6
    centre_column, centre_row = geometry.project_points(centre)
    rows, columns = np.indices(image.shape[1:])

    def centroid(channel):
        total = image[channel].sum()
        return (image[channel] * columns).sum() / total, (image[channel] * rows).sum() / total

    assert centroid(1)[0] < centre_column < centroid(2)[0]  # patient right on the image's left
    assert centroid(3)[1] < centre_row < centroid(2)[1]  # superior at the top


def test_joseph_projector_agrees_with_trilinear_ray_marching():
    rng = np.random.default_rng(4)
    from scipy.ndimage import gaussian_filter

    values = gaussian_filter(rng.random((40, 48, 56)).astype(np.float32), 2.0) * 1000.0
    k, j, i = np.indices(values.shape)
    envelope = ((k - 19.5) / 18) ** 2 + ((j - 23.5) / 22) ** 2 + ((i - 27.5) / 26) ** 2 < 1.0  # zero at the box
    values = gaussian_filter(values * envelope, 1.0)
    volume = Volume(values, VolumeGeometry((1.1, 0.9, 1.3), (-20.0, 10.0, 50.0)), unit="mg/cm3")
    base = default_ap_geometry(volume, pixel_spacing_mm=0.8)
    centre = volume_centre_lps(volume.shape_ijk, volume.geometry.ijk_to_lps())
    geometry = base.with_pose(
        camera_pose(
            torch.tensor([25.0, -30.0, 15.0, 0, 0, 0], dtype=torch.float64), base.camera_from_lps, centre
        ).numpy()
    )
    ours = project_volume(volume, geometry).image[0]
    reference = reference_project(volume.array, volume.geometry.ijk_to_lps(), geometry, step_mm=0.2)[0]
    inside = reference > 0.05 * reference.max()
    relative = np.abs(ours[inside] - reference[inside]).mean() / reference[inside].mean()
    assert relative < 0.003, relative


def test_chunking_and_batching_do_not_change_the_image(sphere):
    volume, centre = sphere
    base = default_ap_geometry(volume, pixel_spacing_mm=1.0)
    poses = torch.stack(
        [
            camera_pose(torch.tensor(p, dtype=torch.float64), base.camera_from_lps, centre)
            for p in ([0, 0, 0, 0, 0, 0], [10, 50, -5, 3, 0, 10], [70, 0, 0, 0, 0, 0])
        ]
    )
    default = Projector.from_volume(volume)
    tiny = Projector.from_volume(volume, chunk_bytes=128 * 1024)  # 2 ray blocks, 1 plane per chunk
    assert (
        tiny._chunking(1, base.detector_rows * base.detector_columns, False)[0]
        < base.detector_rows * base.detector_columns
    )
    with torch.no_grad():
        batched = default.render(poses, base)
        assert batched.shape == (3, 1) + base.shape
        for index in range(3):
            single = default.render(poses[index], base)
            torch.testing.assert_close(batched[index], single, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(tiny.render(poses[1], base), batched[1], rtol=1e-5, atol=1e-6)


def test_rays_are_clipped_to_the_source_detector_segment():
    """A source inside a uniform cube sees only the part in front of it (perspective rays start at the source)."""
    volume = Volume(
        np.full((50, 50, 50), DENSITY, np.float32),
        VolumeGeometry((2.0, 2.0, 2.0), (-49.0, -49.0, -49.0)),
        unit="mg/cm3",
    )
    pose = np.eye(4)
    pose[:3, :3] = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # AP rotation, source at the LPS origin
    geometry = ProjectionGeometry(400.0, 41, 41, 8.0, 8.0, (20.0, 20.0), pose)
    image = project_volume(volume, geometry).image[0]
    x, y = geometry.pixel_camera_mm()
    directions = np.stack(np.broadcast_arrays(x[None, :], y[:, None], 400.0), axis=-1)
    unit = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    exit_mm = 50.0 / np.abs(unit).max(axis=-1)  # from the centre to the cube's surface
    analytic = exit_mm * DENSITY * MG_CM3_MM_TO_G_CM2
    assert abs(image[20, 20] / analytic[20, 20] - 1) < 0.005
    assert np.median(np.abs(image / analytic - 1)) < 0.01
