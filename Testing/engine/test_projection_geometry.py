"""Projection geometry: JSON, pinhole equations, marker positions, AP orientation, pose parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bmdgan.errors import InputError
from bmdgan.io import Volume, VolumeGeometry, read_ct, read_label_volume
from bmdgan.projection import (
    ProjectionGeometry,
    Projector,
    camera_pose,
    camera_pose_parameters,
    default_ap_geometry,
    matrix_to_pose,
    pose_to_matrix,
    volume_centre_lps,
    volume_corners_lps,
)
from bmdgan.projection.phantoms import gaussian_blob


def _geometry(parallel=False) -> ProjectionGeometry:
    pose = np.eye(4)
    pose[:3, :3] = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    pose[:3, 3] = [3.0, -2.0, 800.0]
    return ProjectionGeometry(1100.0, 120, 90, 0.6, 0.7, (61.3, 42.8), pose, parallel)


def test_geometry_json_round_trip(tmp_path):
    for parallel in (False, True):
        geometry = _geometry(parallel)
        path = geometry.save(tmp_path / f"g{parallel}.json")
        data = json.loads(path.read_text())
        assert data["format"] == "bmdgan-projection-geometry" and data["version"] == 1
        assert data["source_to_detector_mm"] == 1100.0 and data["principal_point_px"] == {"column": 61.3, "row": 42.8}
        assert data["projection"] == ("parallel" if parallel else "perspective")
        loaded = ProjectionGeometry.load(path)
        assert loaded.shape == (90, 120) and loaded.parallel == parallel
        assert loaded.column_spacing_mm == 0.6 and loaded.row_spacing_mm == 0.7
        np.testing.assert_allclose(loaded.camera_from_lps, geometry.camera_from_lps)


def test_geometry_json_errors_name_the_file(tmp_path):
    data = _geometry().to_dict()
    bad_version = tmp_path / "v.json"
    bad_version.write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(InputError, match="version 99"):
        ProjectionGeometry.load(bad_version)
    not_rigid = tmp_path / "r.json"
    not_rigid.write_text(json.dumps({**data, "camera_from_lps_mm": np.diag([2.0, 2.0, 2.0, 1.0]).tolist()}))
    with pytest.raises(InputError, match="rotation") as error:
        ProjectionGeometry.load(not_rigid)
    assert error.value.path == str(not_rigid)
    missing = tmp_path / "m.json"
    missing.write_text(json.dumps({k: v for k, v in data.items() if k != "detector_rows"}))
    with pytest.raises(InputError, match="detector_rows"):
        ProjectionGeometry.load(missing)
    with pytest.raises(InputError, match="positive"):
        ProjectionGeometry(-1.0, 10, 10, 1.0, 1.0, (4.5, 4.5), np.eye(4))


def test_project_points_follows_the_pinhole_equations():
    geometry = _geometry()
    points = np.array([[0.0, 0.0, 0.0], [40.0, -25.0, 60.0], [-70.0, 30.0, -10.0]])
    camera = points @ geometry.camera_from_lps[:3, :3].T + geometry.camera_from_lps[:3, 3]
    expected_col = 61.3 + 1100.0 * camera[:, 0] / (camera[:, 2] * 0.6)
    expected_row = 42.8 + 1100.0 * camera[:, 1] / (camera[:, 2] * 0.7)
    np.testing.assert_allclose(geometry.project_points(points), np.stack([expected_col, expected_row], -1))
    homogeneous = camera @ geometry.intrinsic_matrix().T
    np.testing.assert_allclose(homogeneous[:, :2] / homogeneous[:, 2:], geometry.project_points(points))
    parallel = _geometry(parallel=True)
    np.testing.assert_allclose(parallel.project_points(points)[:, 0], 61.3 + camera[:, 0] / 0.6)


def _marker_volume(centre_lps):
    spacing = (1.0, 1.25, 1.5)
    return gaussian_blob((48, 56, 64), spacing, centre_lps, sigma_mm=1.6)


@pytest.mark.parametrize("parallel", [False, True])
def test_marker_projects_to_the_predicted_pixel_for_several_poses(parallel):
    marker = np.array([38.3, 31.1, 29.6])
    volume = _marker_volume(marker)
    base = default_ap_geometry(volume, pixel_spacing_mm=0.4, columns=200, rows=180, parallel=parallel)
    centre = volume_centre_lps(volume.shape_ijk, volume.geometry.ijk_to_lps())
    projector = Projector.from_volume(volume)
    poses = [
        [0, 0, 0, 0, 0, 0],
        [12, -8, 5, 4, -3, 20],
        [-20, 15, -10, -6, 5, -40],
        [5, 25, 30, 2, 2, 0],
        [60, 40, 0, 0, 0, 0],
    ]  # the last one marches along another voxel axis
    for params in poses:
        pose = camera_pose(torch.tensor(params, dtype=torch.float64), base.camera_from_lps, centre).numpy()
        geometry = base.with_pose(pose)
        image = projector.project(geometry)[0]
        rows, cols = np.indices(image.shape)
        centroid = np.array([(image * cols).sum(), (image * rows).sum()]) / image.sum()
        predicted = geometry.project_points(marker)
        assert np.linalg.norm(centroid - predicted) < 0.5, (params, centroid, predicted)


def test_ap_view_puts_patient_left_on_image_right_and_head_up():
    spacing = (1.0, 1.0, 1.0)
    shape = (60, 60, 60)
    left_marker, superior_marker = np.array([45.0, 30.0, 30.0]), np.array([30.0, 30.0, 48.0])
    for marker, check in ((left_marker, "left"), (superior_marker, "superior")):
        volume = gaussian_blob(shape, spacing, marker, sigma_mm=1.5)
        geometry = default_ap_geometry(volume, pixel_spacing_mm=0.5)
        image = Projector.from_volume(volume).project(geometry)[0]
        row, col = np.unravel_index(np.argmax(image), image.shape)
        centre_col, centre_row = geometry.principal_point_px
        if check == "left":
            assert col > centre_col + 20 and abs(row - centre_row) < 2
        else:
            assert row < centre_row - 20 and abs(col - centre_col) < 2


def test_screws_in_the_patient_left_femoral_neck_appear_on_the_image_right(shared_data):
    folder = shared_data / "ct" / "totalsegmentator_example"
    ct = read_ct(folder / "example_ct.nii.gz")
    femur_left = read_label_volume(folder / "masks_totalsegmentator_v1" / "femur_left.nii.gz", like=ct).array > 0
    metal = ct.with_array((ct.array > 2500).astype(np.float32), unit="mg/cm3")
    geometry = default_ap_geometry(ct, pixel_spacing_mm=1.0)
    projector = Projector.from_volume(metal, masks={"femur_left": femur_left}, include_unmasked=True)
    image = projector.project(geometry)
    metal_columns = np.nonzero(image[0].sum(axis=0))[0]
    femur_columns = np.nonzero(
        Projector.from_volume(ct.with_array(femur_left.astype(np.float32), unit="mg/cm3"))
        .project(geometry)[0]
        .sum(axis=0)
    )[0]
    centre = geometry.principal_point_px[0]
    assert metal_columns.size > 0 and metal_columns.min() > centre  # all the metal on the image's right half
    assert femur_columns.mean() > centre  # and so is the left femur label
    assert image[1].sum() > 0.3 * image[0].sum()  # much of the metal lies inside the left femur


def test_default_ap_geometry_covers_the_ct_and_is_centred():
    volume = Volume(np.zeros((30, 40, 50), np.float32), VolumeGeometry((0.8, 0.9, 2.0), (-10.0, 5.0, 100.0)))
    geometry = default_ap_geometry(volume, pixel_spacing_mm=0.5)
    corners = geometry.project_points(volume_corners_lps(volume.shape_ijk, volume.geometry.ijk_to_lps()))
    assert corners[:, 0].min() >= 0 and corners[:, 0].max() <= geometry.detector_columns - 1
    assert corners[:, 1].min() >= 0 and corners[:, 1].max() <= geometry.detector_rows - 1
    centre = volume_centre_lps(volume.shape_ijk, volume.geometry.ijk_to_lps())
    np.testing.assert_allclose(geometry.project_points(centre), geometry.principal_point_px, atol=1e-9)
    assert geometry.to_camera(centre)[2] == pytest.approx(800.0)
    assert geometry.magnification_at(centre) == pytest.approx(1.25)
    capped = default_ap_geometry(volume, pixel_spacing_mm=0.1, max_side_px=64)
    assert max(capped.shape) <= 64


def test_pose_parameters_round_trip_and_documented_convention():
    params = torch.tensor(
        [[10.0, -20.0, 30.0, 5.0, -6.0, 7.0], [-3.0, 4.0, 0.5, 0.0, 100.0, -2.0]], dtype=torch.float64
    )
    centre = torch.tensor([12.0, -40.0, 300.0], dtype=torch.float64)
    matrix = pose_to_matrix(params, centre)
    torch.testing.assert_close(matrix_to_pose(matrix, centre), params)

    # R = Rz @ Ry @ Rx with angles in degrees
    def axis_rotation(axis, degrees):
        c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        return {
            "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
        }[axis]

    expected = axis_rotation("z", 30.0) @ axis_rotation("y", -20.0) @ axis_rotation("x", 10.0)
    np.testing.assert_allclose(matrix[0, :3, :3].numpy(), expected, atol=1e-12)
    # the centre moves by exactly the translation
    moved = matrix[0, :3, :3] @ centre + matrix[0, :3, 3]
    torch.testing.assert_close(moved, centre + params[0, 3:])
    assert isinstance(pose_to_matrix(np.zeros(6)), torch.Tensor)


def test_camera_pose_is_about_the_centre_in_camera_axes():
    volume = Volume(np.zeros((10, 10, 10), np.float32), VolumeGeometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    base = default_ap_geometry(volume).camera_from_lps
    centre = np.array([4.5, 4.5, 4.5])
    torch.testing.assert_close(camera_pose(torch.zeros(6, dtype=torch.float64), base, centre), torch.as_tensor(base))
    # an in-plane rotation (about the beam, camera z) keeps the centre's pixel and depth
    pose = camera_pose(torch.tensor([0, 0, 25.0, 0, 0, 0], dtype=torch.float64), base, centre).numpy()
    np.testing.assert_allclose(pose[:3, :3] @ centre + pose[:3, 3], base[:3, :3] @ centre + base[:3, 3], atol=1e-9)
    # tz moves the CT away from the source along the beam by exactly tz mm
    pose = camera_pose(torch.tensor([0, 0, 0, 0, 0, 50.0], dtype=torch.float64), base, centre).numpy()
    assert (pose[:3, :3] @ centre + pose[:3, 3])[2] == pytest.approx(800.0 + 50.0)
    params = torch.tensor([3.0, -4.0, 5.0, 6.0, -7.0, 8.0], dtype=torch.float64)
    torch.testing.assert_close(camera_pose_parameters(camera_pose(params, base, centre), base, centre), params)
