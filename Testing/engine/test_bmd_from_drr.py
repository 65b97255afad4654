"""BMD from PF-DRR (paper Sec. 3.2, Fig. 4): thresholded mean, threshold tuning, linear fit, calibration file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bmdgan.bmd_from_drr import DrrBmdCalibration, calibrate, fit_linear, pearson_r, pf_drr_mean, tune_threshold
from bmdgan.errors import InputError

SLOPE, INTERCEPT = 1.2, -0.1  # planted: BMD [g/cm2] = 1.2 * (bone mean) - 0.1
BONE_MIN, BONE_MAX = 0.58, 1.02  # bone pixels lie in [0.58, 1.02]; background pixels in [0, 0.3)


def _synthetic_drrs(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """DRRs [n, 32, 32]: random background in [0, 0.3), a bone region of random size whose pixels are
    m_i +/- 0.02 in equal numbers (mean exactly m_i, all >= 0.5); BMD_i = SLOPE * m_i + INTERCEPT."""
    rng = np.random.default_rng(seed)
    drrs = rng.uniform(0.0, 0.3, size=(n, 32, 32))
    means = rng.uniform(0.6, 1.0, size=n)
    for i, m in enumerate(means):
        rows = 2 * rng.integers(3, 10)  # even number of rows -> as many +0.02 as -0.02 pixels
        top, left, cols = rng.integers(0, 32 - rows), rng.integers(0, 20), rng.integers(4, 12)
        pattern = np.where(np.arange(rows)[:, None] % 2 == 0, 0.02, -0.02) * np.ones((1, cols))
        drrs[i, top : top + rows, left : left + cols] = m + pattern
    return drrs, SLOPE * means + INTERCEPT


def test_pf_drr_mean_known_values_and_shapes():
    image = np.array([[0.1, 0.5], [0.7, 0.9]])
    assert pf_drr_mean(image, 0.5) == pytest.approx(0.7)  # (0.5 + 0.7 + 0.9) / 3, threshold inclusive
    batch = np.stack([image, image * 2])
    np.testing.assert_allclose(pf_drr_mean(batch, 0.5), [0.7, (1.0 + 1.4 + 1.8) / 3])
    assert pf_drr_mean(batch[:, None], 0.5).shape == (2, 1)
    np.testing.assert_allclose(pf_drr_mean(torch.from_numpy(batch).float(), 0.5), [0.7, 1.4], rtol=1e-6)


def test_pf_drr_mean_without_bone_pixels_is_nan():
    assert math.isnan(pf_drr_mean(np.zeros((4, 4)), 0.1))
    result = pf_drr_mean(np.stack([np.zeros((4, 4)), np.ones((4, 4))]), 0.5)
    assert math.isnan(result[0]) and result[1] == 1.0


def test_threshold_tuning_and_fit_recover_the_planted_relation():
    drrs, bmd = _synthetic_drrs()
    tuning = tune_threshold(drrs, bmd, candidates=np.arange(0.05, 1.1, 0.05))
    # below 0.3 a random share of background enters the mean and spoils the correlation;
    # above 0.58 some bone pixels drop out and the mean is no longer m_i
    assert 0.3 <= tuning.threshold <= BONE_MIN
    assert tuning.pcc == pytest.approx(1.0, abs=1e-9)
    low = tuning.pccs[tuning.candidates < 0.25]
    assert np.all(low < 0.99)
    above = tuning.pccs[tuning.candidates > BONE_MAX]
    assert above.size and np.isnan(above).all()  # no pixel of the densest bone passes: no mean, no PCC
    slope, intercept = fit_linear(pf_drr_mean(drrs, tuning.threshold), bmd)
    assert slope == pytest.approx(SLOPE, abs=1e-9) and intercept == pytest.approx(INTERCEPT, abs=1e-9)


def test_calibrate_predicts_new_drrs_and_round_trips_json(tmp_path):
    train, bmd = _synthetic_drrs(seed=1)
    calibration = calibrate(train, bmd, target="dxa_bmd", unit="g/cm2", candidates=np.linspace(0.05, 0.6, 12))
    test, test_bmd = _synthetic_drrs(n=5, seed=2)
    np.testing.assert_allclose(calibration.predict(test), test_bmd, atol=1e-9)
    assert calibration.predict(test[0]) == pytest.approx(test_bmd[0])
    path = tmp_path / "dxa_calibration.json"
    calibration.save(path)
    data = json.loads(path.read_text())
    assert data["target"] == "dxa_bmd" and data["unit"] == "g/cm2" and data["pcc_train"] == pytest.approx(1.0)
    assert DrrBmdCalibration.load(path) == calibration


def test_calibration_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        DrrBmdCalibration.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"threshold": 0.3, "slope": 1.0}')
    with pytest.raises(InputError, match="lacks intercept"):
        DrrBmdCalibration.load(bad)
    bad.write_text("not json")
    with pytest.raises(InputError, match="JSON"):
        DrrBmdCalibration.load(bad)


def test_fit_linear_and_pearson_edge_cases():
    assert fit_linear([0, 1, 2], [1, 3, 5]) == pytest.approx((2.0, 1.0))
    with pytest.raises(InputError, match="slope is undefined"):
        fit_linear([1, 1, 1], [1, 2, 3])
    with pytest.raises(InputError, match="NaN"):
        fit_linear([1, np.nan, 2], [1, 2, 3])
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3]))
    assert pearson_r([1, 2, 3], [2, 4, 7]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1])


def test_tuning_without_any_usable_threshold_is_an_input_error():
    drrs, bmd = _synthetic_drrs(n=6)
    with pytest.raises(InputError, match="no candidate threshold"):
        tune_threshold(drrs, bmd, candidates=[5.0, 6.0])
    with pytest.raises(InputError, match="DRRs for"):
        tune_threshold(drrs, bmd[:4], candidates=[0.4])
