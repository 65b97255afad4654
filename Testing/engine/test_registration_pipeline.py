"""End-to-end 2D-3D registration on a small hip phantom and on a real CT: convergence from an offset, landmark
start, and failure flags (wrong side, no femur in the CT, collimation) instead of a confident wrong pose."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from bmdgan.io import Volume, VolumeGeometry
from bmdgan.projection import ProjectionGeometry, camera_pose, default_ap_geometry
from bmdgan.projection.simulator import SimulationParameters, simulate_radiograph
from bmdgan.registration import (
    LevelSettings,
    RegistrationSettings,
    mean_projection_distance_mm,
    mean_target_error_mm,
    register,
    solve_landmark_pose,
)
from bmdgan.registration.landmark_pose import Landmarks

FAST = RegistrationSettings(
    levels=(
        LevelSettings(4.0, 15, 1.0, 32.0, False, 20.0, fix_depth=True),
        LevelSettings(2.0, 10, 0.3, 16.0, True, 8.0, depth_scan_mm=12.0),
    ),
    population=8,
)
"""Two coarse levels: enough to tell a match from a mismatch, a few seconds per registration."""
OFFSET = np.array([4.0, -3.0, 5.0, 8.0, -6.0, 12.0])
"""Start offset from the truth: degrees about camera x, y, z through the femur centroid, then mm."""


def hip_phantom(spacing_mm: float = 3.0, seed: int = 0) -> tuple[Volume, np.ndarray]:
    """A right-hip-like CT in HU (soft-tissue ellipsoid, femur with head, neck, trochanter and shaft, an
    acetabular rim and a piece of ilium; no left-right symmetry) and its femur mask, centred on the origin."""
    rng = np.random.default_rng(seed)
    shape = (44, 32, 46)
    origin = -(np.array(shape[::-1]) - 1) / 2 * spacing_mm
    k, j, i = np.indices(shape).astype(float)
    x, y, z = origin[0] + i * spacing_mm, origin[1] + j * spacing_mm, origin[2] + k * spacing_mm
    scale = spacing_mm / 3.0

    def ball(cx, cy, cz, radius):
        return (x - cx * scale) ** 2 + (y - cy * scale) ** 2 + (z - cz * scale) ** 2 <= (radius * scale) ** 2

    def rod(p, q, radius):
        p, q = np.asarray(p, float) * scale, np.asarray(q, float) * scale
        d = q - p
        t = np.clip(((x - p[0]) * d[0] + (y - p[1]) * d[1] + (z - p[2]) * d[2]) / (d @ d), 0.0, 1.0)
        distance2 = (x - p[0] - t * d[0]) ** 2 + (y - p[1] - t * d[1]) ** 2 + (z - p[2] - t * d[2]) ** 2
        return distance2 <= (radius * scale) ** 2

    hu = np.full(shape, -1000.0, np.float32)
    hu[(x / (64 * scale)) ** 2 + (y / (44 * scale)) ** 2 + (z / (64 * scale)) ** 2 <= 1] = -90.0
    hu[(x / (58 * scale)) ** 2 + (y / (38 * scale)) ** 2 + (z / (60 * scale)) ** 2 <= 1] = 40.0
    femur = (
        ball(-22, 0, 28, 20)
        | rod((-22, 0, 28), (12, 0, 8), 11)
        | rod((14, 0, 10), (20, 0, -62), 13)
        | ball(24, -2, 12, 11)
    )
    radius = np.sqrt((x + 22 * scale) ** 2 + y**2 + (z - 28 * scale) ** 2)
    pelvis = ((radius >= 23 * scale) & (radius <= 29 * scale) & (z > 24 * scale) & (x < -8 * scale)) | (
        (x > -62 * scale) & (x < -20 * scale) & (np.abs(y) < 8 * scale) & (z > 44 * scale) & (z < 62 * scale)
    )
    hu[pelvis] = 500.0
    hu[femur] = 450.0
    hu[femur & ~(rod((14, 0, 10), (20, 0, -62), 8) | ball(-22, 0, 28, 15))] = 1000.0  # cortex
    bone = femur | pelvis
    hu[bone] += rng.normal(0.0, 60.0, int(bone.sum())).astype(np.float32)
    return Volume(hu, VolumeGeometry((spacing_mm,) * 3, tuple(origin)), unit="HU", source="hip phantom"), femur


def _points(mask: np.ndarray, volume: Volume) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    return (np.c_[i, j, k, np.ones(len(i))] @ volume.geometry.ijk_to_lps().T)[:, :3]


@pytest.fixture(scope="module")
def hip():
    """Phantom, femur points (mm), true geometry (1 mm pitch) and its simulated radiograph (float pixels)."""
    torch.set_num_threads(1)  # on a busy shared CPU, 2 threads measured 4.5x slower than 1 here
    ct, femur = hip_phantom()
    geometry = default_ap_geometry(ct, pixel_spacing_mm=1.0)
    simulated = simulate_radiograph(ct, geometry, SimulationParameters(), rng=0)
    return ct, femur, _points(femur, ct), geometry, simulated


def _start(geometry: ProjectionGeometry, points: np.ndarray, offset: np.ndarray = OFFSET) -> ProjectionGeometry:
    return geometry.with_pose(camera_pose(offset, geometry.camera_from_lps, points.mean(axis=0)).numpy())


def test_converges_from_an_offset(hip):
    ct, _, points, truth, simulated = hip
    start = _start(truth, points)
    start_error = mean_target_error_mm(points, truth.camera_from_lps, start.camera_from_lps)
    result = register(simulated.pixels.astype(np.float32), start, ct)
    error = mean_target_error_mm(points, truth.camera_from_lps, result.geometry.camera_from_lps)
    projection_error = mean_projection_distance_mm(
        truth, points, truth.camera_from_lps, result.geometry.camera_from_lps
    )
    turn = Rotation.from_matrix(result.geometry.camera_from_lps[:3, :3] @ truth.camera_from_lps[:3, :3].T)
    assert start_error > 15.0
    # the picture is right to a fraction of a 1 mm pixel; the depth along the beam (one view) to a few mm
    assert projection_error < 0.5
    assert np.rad2deg(turn.magnitude()) < 1.0
    assert error < 3.0
    assert result.quality.flag == "good", result.quality.messages
    assert result.similarity > result.initial_similarity + 0.2
    assert [level.pitch_mm for level in result.levels] == [4.0, 2.0, 1.0]
    assert all(level.evaluations > 10 * level.generations for level in result.levels)
    record = json.loads(json.dumps(result.to_dict()))
    assert record["quality"]["flag"] == "good" and record["format"] == "bmdgan-registration"
    np.testing.assert_allclose(
        ProjectionGeometry.from_dict(record["geometry"]).camera_from_lps, result.geometry.camera_from_lps
    )


def test_landmark_start_and_landmark_check(hip):
    ct, _, points, truth, simulated = hip
    rng = np.random.default_rng(3)
    chosen = points[rng.choice(len(points), 6, replace=False)]
    pixels = truth.project_points(chosen) + rng.normal(0.0, 0.5, (6, 2))
    landmarks = Landmarks(tuple(f"p{n}" for n in range(6)), pixels, chosen)
    solved = solve_landmark_pose(truth, landmarks.pixels, landmarks.lps_mm)
    result = register(
        simulated.pixels.astype(np.float32),
        truth.with_pose(solved.camera_from_lps),
        ct,
        settings=FAST,
        start="landmarks",
        landmarks=landmarks,
    )
    assert result.quality.flag == "good"
    assert result.landmark_residual_mm < 2.0
    assert mean_projection_distance_mm(truth, points, truth.camera_from_lps, result.geometry.camera_from_lps) < 1.0
    # landmarks that belong to another pose are reported, even when the intensity match is fine
    wrong = Landmarks(landmarks.names, landmarks.pixels + np.array([30.0, 0.0]), landmarks.lps_mm)
    flagged = register(simulated.pixels.astype(np.float32), result.geometry, ct, settings=FAST, landmarks=wrong)
    assert flagged.quality.flag == "failed" and flagged.quality.cause == "landmarks", flagged.quality.reason
    assert any("landmarks are" in message for message in flagged.quality.messages)


def test_global_search_brings_a_far_start_within_reach(hip):
    """Without a usable start (the femur 45 mm and 15 degrees away in the image plane, 25 mm off in depth) the
    coarse-to-fine search alone ends in a wrong place (flagged failed); after the FFT global search it lands."""

    ct, _, points, truth, simulated = hip
    far = _start(truth, points, np.array([2.0, -2.0, 15.0, 45.0, -35.0, 25.0]))
    assert mean_target_error_mm(points, truth.camera_from_lps, far.camera_from_lps) > 50.0
    result = register(simulated.pixels.astype(np.float32), far, ct, settings=RegistrationSettings(global_search=True))
    assert mean_projection_distance_mm(truth, points, truth.camera_from_lps, result.geometry.camera_from_lps) < 0.5
    assert mean_target_error_mm(points, truth.camera_from_lps, result.geometry.camera_from_lps) < 4.0
    assert result.quality.flag == "good"


def test_gradient_refinement_never_lowers_the_similarity(hip):
    from dataclasses import replace

    ct, _, points, truth, simulated = hip
    messages = []
    result = register(
        simulated.pixels.astype(np.float32),
        _start(truth, points),
        ct,
        settings=replace(FAST, refine_steps=3),
        log=messages.append,
    )
    assert result.similarity >= result.levels[-1].similarity
    assert any("3 Adam steps" in message for message in messages)


def test_structure_only_drr_and_roi_mask(hip):
    """The femur alone as DRR (label mask in the projector input) with an ROI around the femur still
    registers; an ROI that leaves out the femur is flagged."""
    ct, femur, points, truth, simulated = hip
    projected = truth.project_points(points)
    roi = np.zeros(truth.shape, dtype=bool)
    col0, row0 = np.floor(projected.min(axis=0)).astype(int) - 15
    col1, row1 = np.ceil(projected.max(axis=0)).astype(int) + 15
    roi[max(row0, 0) : row1, max(col0, 0) : col1] = True
    pixels = simulated.pixels.astype(np.float32)
    result = register(pixels, _start(truth, points), ct, settings=FAST, structure_mask=femur, roi=roi)
    assert result.quality.flag == "good", result.quality.messages
    assert result.bone_volume_cm3 == pytest.approx(femur.sum() * 27.0 / 1000.0)
    assert mean_projection_distance_mm(truth, points, truth.camera_from_lps, result.geometry.camera_from_lps) < 2.0
    elsewhere = ~roi
    flagged = register(pixels, _start(truth, points), ct, settings=FAST, structure_mask=femur, roi=elsewhere)
    assert flagged.quality.flag == "failed"


def test_mirrored_radiograph_fails(hip):
    ct, _, points, truth, simulated = hip
    mirrored = simulated.pixels[:, ::-1].astype(np.float32)
    result = register(mirrored, _start(truth, points), ct, settings=FAST)
    assert result.quality.flag == "failed" and result.quality.cause == "side"
    assert result.quality.messages[0].startswith("likely cause: wrong side: the mirrored DRR matches")
    assert any("below 0.4" in message for message in result.quality.messages)
    correct = register(simulated.pixels.astype(np.float32), _start(truth, points), ct, settings=FAST)
    assert correct.quality.flag == "good" and correct.similarity > result.similarity + 0.25


def test_ct_without_bone_fails(hip):
    ct, _, points, truth, simulated = hip
    soft = ct.with_array(np.minimum(ct.array, 60.0))  # the same body without any bone
    result = register(simulated.pixels.astype(np.float32), _start(truth, points), soft, settings=FAST)
    assert result.quality.flag == "failed" and result.quality.cause == "no_bone"
    assert result.bone_volume_cm3 == 0.0
    assert "almost no bone" in result.quality.reason


def test_collimation_border_is_excluded_and_registration_still_converges(hip):
    ct, _, points, truth, simulated = hip
    pixels = simulated.pixels.astype(np.float32)
    top = float(pixels.max())
    collimated = pixels.copy()
    collimated[:, -45:] = top  # shutter on the lateral side
    collimated[-30:, :] = top  # and below the shaft
    result = register(collimated, _start(truth, points), ct)
    assert result.collimated_fraction > 0.3
    assert any("uniform border" in message for message in result.quality.messages)
    assert result.quality.flag == "good", result.quality.messages
    assert mean_projection_distance_mm(truth, points, truth.camera_from_lps, result.geometry.camera_from_lps) < 0.5


def test_collimation_hiding_the_femur_fails(hip):
    ct, _, points, truth, simulated = hip
    collimated = simulated.pixels.astype(np.float32).copy()
    shaft_column = int(truth.project_points(points).mean(axis=0)[0])
    collimated[:, shaft_column - 10 :] = float(collimated.max())  # the lateral half of the femur is shuttered
    result = register(collimated, _start(truth, points), ct, settings=FAST)
    assert result.quality.flag == "failed" and result.quality.cause == "field_of_view", result.quality.reason
    assert any("inside the exposed field" in message for message in result.quality.messages)


def test_real_ct_right_side_good_wrong_side_and_no_femur_failed(shared_data):
    """IBSI thigh CT STS_003: a simulated radiograph registers (good); its mirror image, and a crop of the CT
    that holds soft tissue but no femur, end with a failed flag and a clear message."""
    from bmdgan.io import read_ct

    torch.set_num_threads(1)  # on a busy shared CPU, 2 threads measured 4.5x slower than 1 here
    ct = read_ct(shared_data / "ct" / "ibsi_sts" / "STS_003.nii.gz")
    bone = ct.array > 200.0
    points = _points(bone, ct)
    truth = default_ap_geometry(ct, pixel_spacing_mm=1.0)
    pixels = simulate_radiograph(ct, truth, SimulationParameters(), rng=1).pixels.astype(np.float32)
    start = _start(truth, points)
    good = register(pixels, start, ct, settings=FAST)
    assert good.quality.flag == "good"
    assert mean_projection_distance_mm(truth, points, truth.camera_from_lps, good.geometry.camera_from_lps) < 2.0
    mirrored = register(pixels[:, ::-1].copy(), start, ct, settings=FAST)
    assert mirrored.quality.flag == "failed" and mirrored.quality.cause == "side", mirrored.quality.reason
    # the slices of the same CT below the bone: thigh soft tissue without the femur (1.9 cm3 above 200 HU)
    no_femur = Volume(np.ascontiguousarray(ct.array[:20]), ct.geometry, unit="HU")
    assert (no_femur.array > 200).sum() * no_femur.voxel_volume_mm3() < 5_000
    result = register(pixels, start, no_femur, settings=FAST)
    assert result.quality.flag == "failed"
    assert any("almost no bone" in message for message in result.quality.messages)


def _write_inputs(tmp_path, hip):
    """CT (NIfTI), radiograph (DICOM DX), a start geometry JSON (offset from the truth) and landmarks JSON."""
    from bmdgan.io import write_volume
    from bmdgan.projection.dicom_writer import write_dx_dicom

    ct, _, points, truth, simulated = hip
    ct_path = write_volume(ct, tmp_path / "hip.nii.gz")
    dicom_path = write_dx_dicom(tmp_path / "hip.dcm", simulated, patient_id="TEST-0001", seed=0)
    start_path = _start(truth, points).save(tmp_path / "start.geometry.json")
    chosen = points[np.linspace(0, len(points) - 1, 6).astype(int)]
    landmarks = Landmarks(tuple(f"p{n}" for n in range(6)), truth.project_points(chosen), chosen)
    landmarks_path = tmp_path / "landmarks.json"
    landmarks_path.write_text(json.dumps(landmarks.to_dict()))
    return ct_path, dicom_path, start_path, landmarks_path


def test_register_command_writes_pose_overlay_and_log(tmp_path, hip):
    from PIL import Image

    from bmdgan.cli.main import main

    _, _, points, truth, _ = hip
    ct_path, dicom_path, start_path, _ = _write_inputs(tmp_path, hip)
    out = tmp_path / "out"
    code = main(
        [
            "register",
            str(dicom_path),
            str(ct_path),
            "--out",
            str(out),
            "--geometry",
            str(start_path),
            "--threads",
            "1",
            "--name",
            "case",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "case.geometry.json",
        "case.log",
        "case.overlay.png",
        "case.registration.json",
    ]  # no temporary files left
    registered = ProjectionGeometry.load(out / "case.geometry.json")
    assert mean_projection_distance_mm(truth, points, truth.camera_from_lps, registered.camera_from_lps) < 0.5
    record = json.loads((out / "case.registration.json").read_text())
    assert record["quality"]["flag"] == "good" and record["start"] == "given"
    assert record["inputs"]["geometry"] == str(start_path)
    assert len(record["levels"]) == 3 and record["similarity"]["name"] == "gc"
    with Image.open(out / "case.overlay.png") as picture:
        assert picture.mode == "RGB" and picture.size[0] == truth.detector_columns
        pixels = np.asarray(picture)
    assert np.any(np.all(pixels == (40, 230, 40), axis=-1))  # DRR edges drawn
    assert np.any(np.all(pixels == (255, 40, 255), axis=-1))  # bone outline drawn
    log = (out / "case.log").read_text()
    assert "level 3" in log and "quality: good" in log


def test_register_command_landmarks_strict_failure_and_input_errors(tmp_path, hip, capsys):
    from bmdgan.cli.main import main
    from bmdgan.projection.image_io import write_png16

    ct, _, points, truth, simulated = hip
    ct_path, _, start_path, landmarks_path = _write_inputs(tmp_path, hip)
    mirrored_path = write_png16(tmp_path / "mirrored.png", simulated.processed[:, ::-1])
    code = main(
        [
            "register",
            str(mirrored_path),
            str(ct_path),
            "--out",
            str(tmp_path / "out"),
            "--landmarks",
            str(landmarks_path),
            "--pixel-mm",
            "1.0",
            "--sid-mm",
            "1000",
            "--strict",
            "--threads",
            "1",
        ]
    )
    assert code == 3
    record = json.loads((tmp_path / "out" / "mirrored.registration.json").read_text())
    assert record["quality"]["flag"] == "failed" and record["start"] == "landmarks"
    assert "registration FAILED" in capsys.readouterr().err
    # a geometry of another detector size, and a PNG without pixel spacing: clear input errors (exit 2)
    wrong = ProjectionGeometry.load(start_path)
    small = ProjectionGeometry(wrong.source_to_detector_mm, 50, 40, 1.0, 1.0, (25.0, 20.0), wrong.camera_from_lps)
    small_path = small.save(tmp_path / "small.geometry.json")
    assert (
        main(
            ["register", str(mirrored_path), str(ct_path), "--out", str(tmp_path / "x"), "--geometry", str(small_path)]
        )
        == 2
    )
    assert "detector" in capsys.readouterr().err
    assert main(["register", str(mirrored_path), str(ct_path), "--out", str(tmp_path / "x")]) == 2
    assert "pixel spacing" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
