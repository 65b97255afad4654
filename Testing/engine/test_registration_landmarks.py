"""Pose from 2D-3D landmark correspondences: exact without noise, robust to small noise, clear errors, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from bmdgan.errors import InputError
from bmdgan.projection import ProjectionGeometry, camera_pose
from bmdgan.projection.geometry import ap_pose
from bmdgan.registration.landmark_pose import Landmarks, solve_landmark_pose
from bmdgan.registration.metrics import mean_target_error_mm

HIP_POINTS_MM = np.array(
    [
        [60.0, 10.0, 40.0],
        [45.0, 5.0, 25.0],
        [85.0, 15.0, 10.0],
        [55.0, 20.0, -5.0],
        [-60.0, 12.0, 38.0],
        [0.0, -30.0, 60.0],
        [30.0, 40.0, 70.0],
        [70.0, -10.0, -40.0],
        [-20.0, 25.0, 5.0],
        [10.0, 0.0, -60.0],
    ]
)
"""Ten landmark-like points (mm, LPS) spread like hip landmarks (heads, trochanters, pelvis, shaft)."""


def _geometry(parallel: bool = False) -> ProjectionGeometry:
    return ProjectionGeometry(1000.0, 700, 600, 0.3, 0.3, (355.0, 290.0), ap_pose(np.zeros(3), 800.0), parallel)


def _random_pose(rng, geometry) -> np.ndarray:
    return camera_pose(
        np.concatenate([rng.uniform(-20, 20, 3), rng.uniform(-30, 30, 3)]), geometry.camera_from_lps, np.zeros(3)
    ).numpy()


@pytest.mark.parametrize("count", [4, 5, 6, 10])
def test_exact_on_noise_free_correspondences(count):
    rng = np.random.default_rng(count)
    geometry = _geometry()
    for _ in range(3):
        truth = _random_pose(rng, geometry)
        points = HIP_POINTS_MM[:count]
        pixels = geometry.with_pose(truth).project_points(points)
        solved = solve_landmark_pose(geometry, pixels, points)
        np.testing.assert_allclose(solved.camera_from_lps, truth, atol=1e-6)
        assert solved.rms_px < 1e-6
        assert mean_target_error_mm(points, truth, solved.camera_from_lps) < 1e-6


def test_exact_in_the_parallel_projection_mode():
    rng = np.random.default_rng(7)
    geometry = _geometry(parallel=True)
    truth = _random_pose(rng, geometry)
    pixels = geometry.with_pose(truth).project_points(HIP_POINTS_MM)
    solved = solve_landmark_pose(geometry, pixels, HIP_POINTS_MM)
    # parallel rays cannot see depth: the rotation and in-plane position are exact, the depth is arbitrary
    np.testing.assert_allclose(solved.camera_from_lps[:3, :3], truth[:3, :3], atol=1e-6)
    np.testing.assert_allclose(solved.camera_from_lps[:2, 3], truth[:2, 3], atol=1e-6)
    assert solved.rms_px < 1e-6


def test_robust_to_small_click_noise():
    """1 px (0.3 mm) clicking noise on 10 landmarks: the residual matches the noise, the rotation is within a
    few degrees and the landmarks' in-plane (projected) positions within about a pixel; depth is the weak
    direction of one view (several mm)."""
    rng = np.random.default_rng(11)
    geometry = _geometry()
    rotation_errors, projection_errors, depth_errors = [], [], []
    for _ in range(10):
        truth = _random_pose(rng, geometry)
        pixels = geometry.with_pose(truth).project_points(HIP_POINTS_MM)
        noisy = pixels + rng.normal(0.0, 1.0, pixels.shape)
        solved = solve_landmark_pose(geometry, noisy, HIP_POINTS_MM)
        assert 0.4 < solved.rms_px < 1.6
        turn = Rotation.from_matrix(solved.camera_from_lps[:3, :3] @ truth[:3, :3].T)
        rotation_errors.append(np.rad2deg(turn.magnitude()))
        reprojected = geometry.with_pose(solved.camera_from_lps).project_points(HIP_POINTS_MM)
        projection_errors.append(np.linalg.norm(reprojected - pixels, axis=1).mean())
        depth_errors.append(
            abs(
                geometry.with_pose(solved.camera_from_lps).to_camera(HIP_POINTS_MM)[:, 2].mean()
                - geometry.with_pose(truth).to_camera(HIP_POINTS_MM)[:, 2].mean()
            )
        )
    assert np.median(rotation_errors) < 2.0 and max(rotation_errors) < 5.0
    assert np.median(projection_errors) < 1.0
    assert np.median(depth_errors) < 15.0


def test_bad_correspondences_are_input_errors():
    geometry = _geometry()
    pixels = geometry.project_points(HIP_POINTS_MM)
    with pytest.raises(InputError, match="too few"):
        solve_landmark_pose(geometry, pixels[:3], HIP_POINTS_MM[:3])
    with pytest.raises(InputError, match="radiograph points but"):
        solve_landmark_pose(geometry, pixels[:5], HIP_POINTS_MM[:6])
    line = np.array([[0.0, 0.0, z] for z in (0.0, 10.0, 20.0, 30.0, 40.0)])
    with pytest.raises(InputError, match="one line"):
        solve_landmark_pose(geometry, geometry.project_points(line), line)


def test_landmark_json_round_trip_and_errors(tmp_path):
    geometry = _geometry()
    landmarks = Landmarks(
        tuple(f"p{n}" for n in range(6)), geometry.project_points(HIP_POINTS_MM[:6]), HIP_POINTS_MM[:6]
    )
    path = tmp_path / "landmarks.json"
    path.write_text(json.dumps(landmarks.to_dict()))
    loaded = Landmarks.load(path)
    assert loaded.names == landmarks.names
    np.testing.assert_allclose(loaded.pixels, landmarks.pixels)
    np.testing.assert_allclose(loaded.lps_mm, landmarks.lps_mm)
    bad = landmarks.to_dict()
    del bad["landmarks"][2]["lps_mm"]
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError, match="lps_mm"):
        Landmarks.load(path)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not a landmark file"):
        Landmarks.load(path)
    with pytest.raises(InputError, match="does not exist"):
        Landmarks.load(tmp_path / "missing.json")
