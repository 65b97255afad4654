"""Density calibration: synthetic phantom scans with known HU = a * density + b (plus noise), refusals,
phantomless tissues, the record's JSON, and the calibrate command."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bmdgan.ct import calibration as C
from bmdgan.ct.markups import write_mrk_json
from bmdgan.ct.phantomless import EQUIVALENT_DENSITY_MG_CM3, phantomless_calibration
from bmdgan.ct.rods import detect_rods, measure_rods_at_points, measure_rods_in_labels
from bmdgan.errors import BMDGANError, InputError
from bmdgan.io import Volume, VolumeGeometry, write_volume

HU_PER_MG_CM3 = 1.31  # a: synthetic scanner sensitivity
HU_OFFSET = -28.0  # b: synthetic scanner offset
NOISE_HU = 15.0
B_MAS200 = [0.0, 50.0, 100.0, 150.0, 200.0]


def body_scan(shape=(40, 180, 240), spacing=(1.0, 1.0, 2.0), seed=0, tissue_offset_hu=0.0) -> tuple[Volume, dict]:
    """A synthetic patient: air, a fat layer (-100 HU), muscle (+50 HU) and a bone rod (700 HU), with noise.

    Returns the volume and the array masks of its parts (index order [k, j, i]; spacing i, j, k in mm).
    """
    rng = np.random.default_rng(seed)
    k, j, i = shape
    jj, ii = np.mgrid[0:j, 0:i]
    body = ((ii - 120) / 100.0) ** 2 + ((jj - 70) / 55.0) ** 2 <= 1.0
    muscle = ((ii - 120) / 85.0) ** 2 + ((jj - 70) / 42.0) ** 2 <= 1.0
    bone = (ii - 120) ** 2 + (jj - 70) ** 2 <= 12**2
    image = np.full((j, i), -1000.0)
    image[body] = -100.0 + tissue_offset_hu
    image[muscle] = 50.0 + tissue_offset_hu
    image[bone] = 700.0
    array = np.repeat(image[None], k, axis=0) + rng.normal(0, NOISE_HU, (k, j, i))
    geometry = VolumeGeometry(spacing, (-120.0, -70.0, -40.0))
    return Volume(array.astype(np.float32), geometry, source="synthetic"), {"body": body}


def add_rods(volume: Volume, densities, hu_of_density, radius_px=8, seed=1) -> tuple[Volume, list, np.ndarray]:
    """Rods (parallel to k) in a row below the body, in air; returns volume, rod centres (LPS mm), label map."""
    rng = np.random.default_rng(seed)
    array = volume.array.copy()
    k, j, i = array.shape
    jj, ii = np.mgrid[0:j, 0:i]
    labels = np.zeros(array.shape, np.uint8)
    centres = []
    for n, density in enumerate(densities):
        ci, cj = 40 + n * 40, 150
        disk = (ii - ci) ** 2 + (jj - cj) ** 2 <= radius_px**2
        array[:, disk] = hu_of_density(density) + rng.normal(0, NOISE_HU, (k, int(disk.sum())))
        labels[:, disk] = n + 1
        centres.append(volume.geometry.ijk_to_lps()[:3, :3] @ [ci, cj, (k - 1) / 2] + volume.geometry.origin_mm)
    return volume.with_array(array.astype(np.float32)), centres, labels


def linear(density):
    return HU_PER_MG_CM3 * density + HU_OFFSET


@pytest.fixture(scope="module")
def phantom_scan():
    body, _ = body_scan()
    return add_rods(body, B_MAS200, linear)


def _assert_recovers(calibration: C.Calibration):
    true_slope, true_intercept = 1.0 / HU_PER_MG_CM3, -HU_OFFSET / HU_PER_MG_CM3
    assert calibration.slope == pytest.approx(true_slope, rel=0.01)
    assert calibration.intercept == pytest.approx(true_intercept, rel=0.01)
    assert calibration.r2 > 0.999


def test_automatic_rods_recover_slope_and_intercept(phantom_scan):
    volume, centres, _ = phantom_scan
    rods = detect_rods(volume, 5)
    found = np.array(sorted(rod.centre_lps[0] for rod in rods))
    assert np.allclose(found, sorted(c[0] for c in centres), atol=1.5)  # the rods, not the bone or the body
    calibration = C.fit_preset([rod.mean_hu for rod in rods], "B-MAS200")
    _assert_recovers(calibration)
    assert calibration.phantom == "B-MAS200" and calibration.material == "hydroxyapatite"
    density = calibration.density(np.array([linear(123.0)]))[0]
    assert density == pytest.approx(123.0, abs=1.0)


def test_rods_given_as_points_and_as_labels(phantom_scan):
    volume, centres, labels = phantom_scan
    # points in shuffled order: the preset fit matches rods to densities by CT number
    shuffled = [centres[n] for n in (3, 0, 4, 1, 2)]
    from_points = measure_rods_at_points(volume, np.array(shuffled), radius_mm=6.0, length_mm=80.0)
    _assert_recovers(C.fit_preset([rod.mean_hu for rod in from_points], "B-MAS200"))
    from_labels = measure_rods_in_labels(volume, labels)
    _assert_recovers(C.fit_phantom([rod.mean_hu for rod in from_labels], B_MAS200))


def test_refuses_a_scan_without_rods():
    body, _ = body_scan(seed=3)
    with pytest.raises(C.CalibrationError, match="found 0 of the 5 phantom rods"):
        detect_rods(body, 5)


def test_refuses_rods_that_cannot_all_be_seen():
    # the 0 mg/cm3 rod is as dark as air around it would need... here it equals the muscle, in air it
    # is visible; make it invisible by giving it air's CT number
    body, _ = body_scan(seed=4)
    hidden, _, _ = add_rods(body, B_MAS200, lambda d: -1000.0 if d == 0 else linear(d))
    with pytest.raises(C.CalibrationError, match="found 4 of the 5"):
        detect_rods(hidden, 5)


def test_refuses_mismatched_counts(phantom_scan):
    volume, centres, _ = phantom_scan
    rods = measure_rods_at_points(volume, np.array(centres[:4]))
    with pytest.raises(C.CalibrationError, match="4 rods were measured but 5 densities"):
        C.fit_phantom([rod.mean_hu for rod in rods], B_MAS200)
    with pytest.raises(C.CalibrationError, match="the B-MAS200 phantom has 5"):
        C.fit_preset([rod.mean_hu for rod in rods], "B-MAS200")


def test_refuses_a_nonlinear_fit():
    saturating = [300.0 * (1.0 - np.exp(-d / 40.0)) for d in B_MAS200]
    with pytest.raises(C.CalibrationError, match="do not fit a line"):
        C.fit_phantom(saturating, B_MAS200)
    # the same numbers pass only if the user lowers the bar explicitly
    assert C.fit_phantom(saturating, B_MAS200, min_r2=0.5).r2 < 0.99


def test_refuses_falling_or_flat_rods():
    with pytest.raises(C.CalibrationError, match="does not increase"):
        C.fit_phantom([300.0, 200.0, 100.0], [0.0, 100.0, 200.0])
    with pytest.raises(C.CalibrationError, match="at least two rods"):
        C.fit_phantom([100.0, 100.0], [50.0, 50.0])


def test_water_corrected_fit_of_k2hpo4_rods():
    preset = C.preset("Mindways-Model3-CT")
    sigma_ref, beta_ref = 1.45, -1003.0  # HU per mg/cm3 K2HPO4 and offset, water content taken out
    hu = [w + sigma_ref * k + beta_ref for k, w in zip(preset["rods_mg_cm3"], preset["water_mg_cm3"])]
    calibration = C.fit_preset(hu, "Mindways-Model3-CT")
    sigma_ct, beta_ct = sigma_ref - 0.2174, beta_ref + 999.6
    assert calibration.slope == pytest.approx(1.0 / sigma_ct, rel=1e-6)
    assert calibration.intercept == pytest.approx(-beta_ct / sigma_ct, rel=1e-6)
    assert calibration.material == "K2HPO4"


def test_presets_are_data():
    presets = C.phantom_presets()
    assert presets["B-MAS200"]["rods_mg_cm3"] == B_MAS200
    assert presets["QRM-BDC/6"]["rods_mg_cm3"] == [0.0, 100.0, 200.0, 400.0, 600.0, 800.0]
    with pytest.raises(InputError, match="unknown phantom"):
        C.preset("no-such-phantom")


def test_phantomless_calibration_from_tissues():
    body, _ = body_scan(seed=5)
    calibration = phantomless_calibration(body)
    assert calibration.method.startswith("phantomless")
    assert set(calibration.reference_names) == {"air", "adipose", "muscle"}
    # tissues at their nominal CT numbers give the nominal line: 0.8 mg/cm3 per HU through 0
    assert calibration.slope == pytest.approx(0.8, rel=0.01)
    assert calibration.intercept == pytest.approx(0.0, abs=1.0)
    assert calibration.density(np.array([50.0]))[0] == pytest.approx(EQUIVALENT_DENSITY_MG_CM3["muscle"], abs=1.0)
    # a scanner reading soft tissue 20 HU high is corrected: muscle still maps near its equivalent density
    shifted = phantomless_calibration(body_scan(seed=6, tissue_offset_hu=20.0)[0])
    assert shifted.density(np.array([70.0]))[0] == pytest.approx(EQUIVALENT_DENSITY_MG_CM3["muscle"], abs=2.0)


def test_phantomless_refuses_without_reference_tissues():
    rng = np.random.default_rng(7)
    array = np.full((20, 60, 60), -1000.0, np.float32) + rng.normal(0, 5, (20, 60, 60)).astype(np.float32)
    array[:, 20:40, 20:40] = 900.0  # bone only, no fat or muscle
    with pytest.raises(C.CalibrationError, match="not enough reference tissues"):
        phantomless_calibration(Volume(array, VolumeGeometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))))


def test_record_round_trip(tmp_path, phantom_scan):
    volume, _, _ = phantom_scan
    calibration = C.fit_preset([rod.mean_hu for rod in detect_rods(volume, 5)], "B-MAS200")
    path = calibration.save(tmp_path / "calibration.json")
    record = json.loads(path.read_text())
    assert record["units"] == "mg/cm3" and record["formula"] == "density_mg_cm3 = slope * HU + intercept"
    loaded = C.Calibration.load(path)
    assert loaded == calibration
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        C.Calibration.load(tmp_path / "broken.json")
    assert issubclass(C.CalibrationError, BMDGANError)


def test_calibrate_command(tmp_path, phantom_scan):
    volume, centres, _ = phantom_scan
    ct_path = write_volume(volume, tmp_path / "phantom.nii.gz")
    write_mrk_json({f"rod {n}": c for n, c in enumerate(centres)}, tmp_path / "rods.mrk.json")

    def calibrate(*extra):
        return subprocess.run(
            [sys.executable, "-m", "bmdgan", "calibrate", str(ct_path), *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )

    automatic = calibrate("--phantom", "B-MAS200", "-o", str(tmp_path / "auto.json"))
    assert automatic.returncode == 0, automatic.stderr
    _assert_recovers(C.Calibration.load(tmp_path / "auto.json"))
    given = calibrate(
        "--densities",
        ",".join(map(str, B_MAS200)),
        "--rod-points",
        str(tmp_path / "rods.mrk.json"),
        "--rod-radius",
        "6",
        "--rod-length",
        "80",
        "-o",
        str(tmp_path / "points.json"),
    )
    assert given.returncode == 0, given.stderr
    _assert_recovers(C.Calibration.load(tmp_path / "points.json"))
    wrong = calibrate(
        "--densities", "0,100,200", "--rod-points", str(tmp_path / "rods.mrk.json"), "-o", str(tmp_path / "wrong.json")
    )
    assert wrong.returncode == 2 and "5 rods were measured but 3 densities" in wrong.stderr
    assert not (tmp_path / "wrong.json").exists()


def test_phantomless_calibration_ignores_the_couch(shared_data):
    """Pelvic-Ref-002 as it is and with the rows below the patient (the couch) cropped away: same line."""
    from bmdgan.ct import grid
    from bmdgan.io import read_ct

    ct = read_ct(shared_data / "ct" / "pelvic_reference" / "Pelvic-Ref-002.nii.gz")
    k, _, i = ct.array.shape
    without_couch = grid.crop(ct, (slice(0, k), slice(0, 372), slice(0, i)))
    assert (without_couch.array > -300).sum() < (ct.array > -300).sum() - 300_000  # the couch is gone
    full, cropped = phantomless_calibration(ct), phantomless_calibration(without_couch)
    assert full.reference_names == ["air", "adipose", "muscle"]
    assert full.reference_hu == pytest.approx([-997.0, -107.0, 37.0], abs=2.0)
    assert cropped.slope == pytest.approx(full.slope, rel=0.002)  # 0.8112 mg/cm3 per HU both
    assert cropped.intercept == pytest.approx(full.intercept, abs=0.5)  # 8.51 mg/cm3 both


def test_phantomless_calibration_ignores_bright_objects_outside_the_body():
    """A wire (3071 HU) and a dense couch-like slab (600 HU) beside the synthetic body change nothing."""
    body, _ = body_scan(seed=8)
    plain = phantomless_calibration(body)
    array = body.array.copy()
    array[:, 160:164, 20:220] = 600.0  # slab 4 x 200 mm, 35 mm below the body
    array[:, 140:142, 225:227] = 3071.0  # a wire running along the scan
    cluttered = phantomless_calibration(body.with_array(array))
    assert cluttered.reference_hu == pytest.approx(plain.reference_hu, abs=1.0)
    assert cluttered.slope == pytest.approx(plain.slope, rel=1e-3)
    assert cluttered.intercept == pytest.approx(plain.intercept, abs=0.5)
