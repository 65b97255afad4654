"""Both hips of a whole-pelvis CT, each on its own side; sides asked for that a CT does not hold; implants.

Real data: the two TCIA Pelvic-Reference CTs (512 x 512 x 137-163, both hips complete, header LPS as stored),
an IBSI thigh crop that holds only a right femur (STS_046, see ct_reference_measurements.json), and the
TotalSegmentator example (3 mm, screws in the patient's left femoral neck). Each pelvic CT is analysed once
(module fixture, both hips from one head search); the TotalSegmentator CT's search is shared by its tests
through the per-CT cache of :func:`bmdgan.ct.hips.hip_search` (same Volume object).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from bmdgan.ct import grid
from bmdgan.ct.hips import hip_search
from bmdgan.ct.landmarks import LANDMARK_NAMES
from bmdgan.ct.pipeline import (
    ImplantError,
    analyse_ct,
    analyse_hips,
    hip_sides,
    left_right_difference,
)
from bmdgan.io import read_ct

PELVIC = ("Pelvic-Ref-002", "Pelvic-Ref-005")
RIGHT_ONLY_CROP = "STS_046"  # an IBSI thigh crop: right femur only (ct_reference_measurements.json)


def _analyse_both(path):
    ct = read_ct(path)
    return hip_sides(ct), analyse_hips(ct, side="both")


@pytest.fixture(scope="module")
def pelvic(shared_data):
    """CT name -> (sides, [left, right] CTAnalysis); the two CTs in two worker processes (two CI cores)."""
    from concurrent.futures import ProcessPoolExecutor

    paths = [shared_data / "ct" / "pelvic_reference" / f"{name}.nii.gz" for name in PELVIC]
    with ProcessPoolExecutor(max_workers=2) as pool:
        return dict(zip(PELVIC, pool.map(_analyse_both, paths)))


@pytest.fixture(scope="module")
def example(shared_data):
    return read_ct(shared_data / "ct" / "totalsegmentator_example" / "example_ct.nii.gz")


@pytest.mark.slow
@pytest.mark.parametrize("name", PELVIC)
def test_two_heads_each_on_its_own_side(pelvic, name):
    sides, analyses = pelvic[name]
    assert sides == ["left", "right"]
    assert [a.side for a in analyses] == ["left", "right"]
    left, right = (a.landmarks.points["femoral_head_centre"] for a in analyses)
    assert left[0] - right[0] > 100.0  # LPS: the patient's left is +x
    for analysis in analyses:
        frame = analysis.landmarks.frame
        # the side from the hip search agrees with the landmarks' reading and with the bone's handedness
        assert frame.side == analysis.side and frame.side_from_handedness == analysis.side
        assert analysis.segmentation.shaft is not None and analysis.region.complete
        assert set(analysis.landmarks.points) == set(LANDMARK_NAMES)
        # each femur label holds its own head, not the other one
        femur = analysis.segmentation.femur
        other = right if analysis.side == "left" else left
        k, j, i = np.round(grid.lps_to_index(analysis.ct.geometry, other[None])[0]).astype(int)
        assert not femur[k, j, i]
        head = analysis.landmarks.points["femoral_head_centre"]
        neck = analysis.landmarks.points["neck_centre"]
        assert (neck - head) @ analysis.landmarks.frame.proximal < 0  # the neck below the head...
        assert abs(neck[0]) > abs(head[0])  # ...and lateral of it, away from the midline (x = 0 near it here)


def _kabsch(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation (mm) that best map ``source`` points onto ``target`` (least squares)."""
    cs, ct = source.mean(axis=0), target.mean(axis=0)
    u, _, vt = np.linalg.svd((source - cs).T @ (target - ct))
    rotation = vt.T @ np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))]) @ u.T
    return rotation, ct - rotation @ cs


def _femur_surface_lps(analysis, reach_mm: float = 70.0) -> np.ndarray:
    """Surface voxels (LPS mm) of a hip's femur label within ``reach_mm`` of its head centre."""
    from scipy import ndimage

    femur = analysis.segmentation.femur
    points = grid.index_to_lps(analysis.ct.geometry, np.argwhere(femur & ~ndimage.binary_erosion(femur)))
    return points[np.linalg.norm(points - analysis.landmarks.points["femoral_head_centre"], axis=1) < reach_mm]


def _mirror_onto(source, target) -> tuple[np.ndarray, np.ndarray, float]:
    """Rigid map (rotation, translation; LPS mm) of the ``source`` hip, mirrored in x, onto the ``target``
    hip: started from their landmarks, refined by ICP on the femur surfaces near the heads (90 % nearest
    pairs). Returns it with the RMS surface distance (mm) after the fit."""
    from scipy.spatial import cKDTree

    mirror = np.diag([-1.0, 1.0, 1.0])
    names = sorted(source.landmarks.points)
    rotation, shift = _kabsch(
        np.array([mirror @ source.landmarks.points[n] for n in names]),
        np.array([target.landmarks.points[n] for n in names]),
    )
    moving = _femur_surface_lps(source) @ mirror.T
    fixed = _femur_surface_lps(target)
    tree = cKDTree(fixed)
    for _ in range(30):
        distance, nearest = tree.query(moving @ rotation.T + shift)
        pairs = distance <= np.percentile(distance, 90)
        rotation, shift = _kabsch(moving[pairs], fixed[nearest[pairs]])
    distance, _ = tree.query(moving @ rotation.T + shift)
    return rotation @ mirror, shift, float(np.sqrt(np.mean(distance**2)))


@pytest.mark.slow
@pytest.mark.parametrize("name", PELVIC)
def test_the_left_region_mirrored_onto_the_right_femur_measures_the_same(pelvic, name):
    """Is a left-right aBMD difference the bone's, or where the method put the landmarks? The left hip's
    eight landmarks, mirrored and fitted onto the right femur (ICP on the femur surfaces near the heads, RMS
    1.6 mm), cut the right femur's PF region and set its projection frame. The right femur then measures
    0.9253 against its own 0.9182 g/cm2 on 002 (+0.8 %) and 0.7214 against 0.7345 on 005 (-1.8 %: the
    left's anterior head-neck junction point lands 8 mm from the right's, the only landmark more than 5 mm
    off), while the left femur measures 0.6785 on 005. In the same region the right femur of 005 is still
    6 % denser than the left: of its 7.9 % left-right difference, about 2 points are landmark placement and
    6 are the bone."""
    from bmdgan.ct.measurement import measure_pf
    from bmdgan.ct.pf_region import pf_region

    left, right = pelvic[name][1]
    assert (left.side, right.side) == ("left", "right")
    rotation, shift, rms_mm = _mirror_onto(left, right)
    assert rms_mm < 2.5
    points = {key: rotation @ p + shift for key, p in left.landmarks.points.items()}
    mapped = dataclasses.replace(right.landmarks, points=points)
    region = pf_region(right.segmentation.femur, right.ct.geometry, mapped)
    moved = measure_pf(right.ct, right.segmentation.femur, region, mapped, right.calibration, right.segmentation.metal)
    own = right.measurement.ct_abmd_g_cm2
    assert moved.ct_abmd_g_cm2 == pytest.approx(own, rel=0.025)
    if name == "Pelvic-Ref-005":
        assert (moved.ct_abmd_g_cm2 - left.measurement.ct_abmd_g_cm2) / own > 0.05


@pytest.mark.slow
@pytest.mark.parametrize("name", PELVIC)
def test_left_and_right_agree(pelvic, name):
    """vBMD within 8 % on both CTs (3.4 % and 4.4 %); aBMD within 8 % on 002 (0.9 %), within 10 % on 005 (7.9 %).

    Pelvic-Ref-005's right femur is denser; the method places both regions alike
    (:func:`test_the_left_region_mirrored_onto_the_right_femur_measures_the_same`): its right cortex is
    brighter (99.5th percentile of the smoothed CT 40-70 mm around each head: 806 vs 773 HU) while the soft
    tissue around both hips is the same (muscle 45 vs 45 HU, fat -84 vs -85 HU), so it is not the scanner, and
    the calibration is one line for the whole CT; in one and the same region the right femur is still 6 %
    denser (the landmarks' placement makes the other 2 points), and along each neck axis 10-40 mm from the head
    centre the left neck is less dense at every distance (asserted below). 7.9 % lies too close to 8 % for a test that
    a re-segmentation would not break, so 005 keeps 10 %. (Before the femur's rim was kept above muscle it
    was 9.0 %; the lesser trochanter's first maximum, used before its bulge was smoothed along the shaft,
    gave 10.3 %.)"""
    _, analyses = pelvic[name]
    difference = left_right_difference(analyses)
    assert abs(difference["qct_vbmd_left_minus_right_percent"]) < 8.0
    assert abs(difference["ct_abmd_left_minus_right_percent"]) < (8.0 if name == "Pelvic-Ref-002" else 10.0)
    left, right = analyses
    assert left.measurement.pf_projected_area_cm2 == pytest.approx(right.measurement.pf_projected_area_cm2, rel=0.1)
    a, b = left.measurement.ct_abmd_g_cm2, right.measurement.ct_abmd_g_cm2
    assert difference["ct_abmd_left_minus_right_g_cm2"] == pytest.approx(a - b, abs=1e-5)
    assert difference["ct_abmd_left_minus_right_percent"] == pytest.approx(200 * (a - b) / (a + b), abs=0.01)
    for analysis in analyses:
        m = analysis.measurement
        assert 0.5 < m.ct_abmd_g_cm2 < 1.2 and 150 < m.qct_vbmd_mg_cm3 < 400 and 90 < m.pf_volume_cm3 < 200
    if name == "Pelvic-Ref-005":  # the 9 % is the CT's: each neck is less dense on the left where matched
        left_neck, right_neck = (_neck_profile_mg_cm3(analysis) for analysis in analyses)
        assert (left_neck < right_neck).all() and (left_neck / right_neck).mean() < 0.93


def _neck_profile_mg_cm3(analysis) -> np.ndarray:
    """Mean calibrated density of the femur label in 8 mm spheres 10, 20, 30 and 40 mm from the head centre along
    the hip's own neck axis (independent of the PF region's cuts)."""
    ct, points = analysis.ct, analysis.landmarks.points
    head = points["femoral_head_centre"]
    axis = (points["neck_centre"] - head) / np.linalg.norm(points["neck_centre"] - head)
    k, j, i = np.nonzero(analysis.segmentation.femur)
    lps = (ct.geometry.ijk_to_lps() @ np.stack([i, j, k, np.ones_like(i)]).astype(float))[:3].T
    density = analysis.calibration.density(ct.array[k, j, i])
    return np.array([density[np.linalg.norm(lps - (head + d * axis), axis=1) < 8.0].mean() for d in (10, 20, 30, 40)])


def test_a_side_the_crop_does_not_hold_is_refused_by_name(shared_data, tmp_path):
    path = shared_data / "ct" / "ibsi_sts" / f"{RIGHT_ONLY_CROP}.nii.gz"
    assert hip_sides(read_ct(path)) == ["right"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmdgan",
            "measure-ct",
            str(path),
            "-o",
            str(tmp_path / "out"),
            "--side",
            "left",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "no left hip" in lines[0] and "sides present: right" in lines[0]
    assert not (tmp_path / "out" / "measurement.json").exists()


def test_auto_takes_the_implant_free_hip(example):
    search = hip_search(example)
    assert [hip.side for hip in search.hips] == ["right", "left"]  # implant-free first, though the left is seen better
    assert search.hips[1].metal_near_cm3 > 5.0 and search.hips[0].metal_near_cm3 == 0.0
    auto = analyse_ct(example, side="auto")
    assert auto.side == "right" and auto.measurement.metal_volume_cm3 == 0.0
    right = analyse_ct(example, side="right")  # the same hip, from the same search
    assert right.measurement.ct_abmd_g_cm2 == auto.measurement.ct_abmd_g_cm2


def test_a_hip_with_screws_in_its_pf_region_is_refused(example):
    with pytest.raises(ImplantError) as refusal:
        analyse_ct(example, side="left")
    assert refusal.value.side == "left" and refusal.value.metal_cm3 > 5.0
    assert "left hip has metal" in str(refusal.value) and "cm3" in str(refusal.value)
    refused: dict[str, str] = {}
    analyses = analyse_hips(example, side="both", refused=refused)
    assert [a.side for a in analyses] == ["right"] and set(refused) == {"left"}
    with pytest.raises(ImplantError):
        analyse_hips(example, side="both")  # without a place to report it, a refused hip is an error


def test_metal_outside_the_pf_region_is_measured_with_a_note(example):
    """A metal pin put in the right femoral head (3 x 3 x 1 voxels, 0.24 cm3, 3000 HU), half a radius beyond
    its centre away from the neck: the head-neck cut leaves it outside the PF region, so the hip is measured,
    with a note. The pin also changes the head fit a little on this 3 mm scan (aBMD 0.403 vs 0.430 g/cm2)."""
    right = analyse_ct(example, side="right")
    landmarks = right.landmarks
    pin = (
        landmarks.points["femoral_head_centre"] - 0.5 * landmarks.head_radius_mm * right.region.head_plane.normal
    )  # the normal points to the neck
    array = example.array.copy()
    k, j, i = np.round(grid.lps_to_index(example.geometry, pin[None])[0]).astype(int)
    assert right.segmentation.femur[k, j, i] and not right.region.mask[k, j, i]
    array[k, j - 1 : j + 2, i - 1 : i + 2] = 3000.0  # 3 mm voxels
    with_pin = analyse_ct(example.with_array(array), side="right")
    assert with_pin.measurement.metal_volume_cm3 == 0.0
    assert any("metal in the right femur outside its PF region" in note for note in with_pin.notes)
    assert with_pin.measurement.ct_abmd_g_cm2 == pytest.approx(right.measurement.ct_abmd_g_cm2, rel=0.1)


def test_measure_ct_writes_one_folder_per_hip_and_the_refusal(shared_data, tmp_path):
    path = shared_data / "ct" / "totalsegmentator_example" / "example_ct.nii.gz"
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "bmdgan", "measure-ct", str(path), "-o", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "measurement.json").read_text())
    assert summary["sides"] == ["right"] and "left" in summary["refused"]
    assert summary["left_right_difference"] is None  # one hip measured: no difference
    assert (out / "right" / "measurement.json").exists() and not (out / "left").exists()
    printed = json.loads(result.stdout)
    assert printed["hips"]["right"]["ct_abmd_g_cm2"] == summary["hips"]["right"]["ct_abmd_g_cm2"]


def test_segment_both_writes_one_label_map_per_hip(shared_data, tmp_path):
    path = shared_data / "ct" / "totalsegmentator_example" / "example_ct.nii.gz"
    result = subprocess.run(
        [sys.executable, "-m", "bmdgan", "segment", str(path), "-o", str(tmp_path / "labels.nii.gz"), "--side", "both"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    from bmdgan.ct import labels as L
    from bmdgan.io import read_label_volume

    femurs = {
        side: L.femur_mask(read_label_volume(tmp_path / f"labels-{side}.nii.gz").array) for side in ("left", "right")
    }
    assert not (tmp_path / "labels.nii.gz").exists()
    assert femurs["left"].sum() > 1000 and femurs["right"].sum() > 1000 and not (femurs["left"] & femurs["right"]).any()
    ct = read_ct(path)
    x = {side: grid.voxel_points_lps(mask, ct.geometry)[:, 0].mean() for side, mask in femurs.items()}
    assert x["left"] > x["right"] + 100.0  # each file holds its own side's femur
    assert "labels-left.nii.gz: left hip" in result.stdout and "labels-right.nii.gz: right hip" in result.stdout


def test_per_hip_file_names_keep_their_suffix():
    from bmdgan.cli.ct_options import side_path

    assert side_path("out/labels.nii.gz", "left").as_posix() == "out/labels-left.nii.gz"
    assert side_path("lm.mrk.json", "right").name == "lm-right.mrk.json"
    assert side_path("lm.fcsv", "left").name == "lm-left.fcsv"
    assert side_path("bones.seg.nrrd", "right").name == "bones-right.seg.nrrd"
