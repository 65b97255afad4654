"""Evaluation metrics and T-scores against values computed by hand."""

from __future__ import annotations

import math

import pytest

from bmdgan.errors import InputError
from bmdgan.evaluation.metrics import agreement, bland_altman, icc_2_1, mae, pearson, rms_cv_percent, see
from bmdgan.inference.tscore import load_reference, t_score, who_category


def test_icc_2_1_by_hand():
    # Rows (1,1), (2,3), (3,5): MS_rows 4.5, MS_columns 1.5, MS_error 0.5 ->
    # ICC(2,1) = (4.5 - 0.5) / (4.5 + 0.5 + 2 (1.5 - 0.5) / 3) = 12/17.
    assert icc_2_1([1, 2, 3], [1, 3, 5]) == pytest.approx(12 / 17)
    assert icc_2_1([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    # A constant offset lowers absolute agreement but not correlation.
    assert icc_2_1([2, 3, 4, 5], [1, 2, 3, 4]) < 1.0 and pearson([2, 3, 4, 5], [1, 2, 3, 4]) == pytest.approx(1.0)


def test_pcc_mae_see_bland_altman_by_hand():
    estimate, truth = [1, 2, 3, 4], [1, 3, 2, 4]
    assert pearson(estimate, truth) == pytest.approx(0.8)  # s_xy 4, s_xx = s_yy = 5
    assert mae(estimate, truth) == pytest.approx(0.5)
    # truth = 0.8 estimate + 0.5; residuals -0.3, 0.9, -0.9, 0.3 -> sqrt(1.8 / 2)
    assert see(estimate, truth) == pytest.approx(math.sqrt(0.9))
    limits = bland_altman(estimate, truth)  # differences 0, -1, 1, 0
    assert limits.mean_difference == pytest.approx(0.0)
    assert limits.upper_limit == pytest.approx(1.96 * math.sqrt(2 / 3))
    assert limits.lower_limit == pytest.approx(-1.96 * math.sqrt(2 / 3))


def test_rms_cv_by_hand():
    # Patient a: 1.0, 1.1 -> CV 0.0707107/1.05; patient b: 2.0, 2.0, 2.3 -> CV sqrt(0.03)/2.1; c has one value.
    cv_a, cv_b = math.sqrt(0.005) / 1.05, math.sqrt(0.03) / 2.1
    expected = 100 * math.sqrt((cv_a**2 + cv_b**2) / 2)
    assert rms_cv_percent([1.0, 1.1, 2.0, 2.0, 2.3, 5.0], ["a", "a", "b", "b", "b", "c"]) == pytest.approx(expected)
    with pytest.raises(InputError, match="no patient has repeated"):
        rms_cv_percent([1.0, 2.0], ["a", "b"])


def test_agreement_bundle_and_bad_input():
    result = agreement([1, 2, 3, 4], [1, 3, 2, 4], ["p", "p", "q", "q"])
    assert result.n == 4 and result.pcc == pytest.approx(0.8) and result.rms_cv_percent is not None
    assert agreement([1, 2, 3, 4], [1, 3, 2, 4]).rms_cv_percent is None
    with pytest.raises(InputError, match="NaN"):
        pearson([1, 2, float("nan")], [1, 2, 3])
    with pytest.raises(InputError, match="at least 3"):
        mae([1, 2], [1, 2])


def test_t_score_and_who_category():
    reference = load_reference()  # NHANES III total hip, women 20-29: 0.942 +/- 0.122 g/cm2
    assert reference.site == "total hip"
    assert t_score(0.942, reference) == pytest.approx(0.0)
    assert t_score(0.759, reference) == pytest.approx(-1.5)  # the paper's cohort mean DXA-BMD
    assert who_category(t_score(0.759, reference)) == "osteopenia"
    assert who_category(-1.0) == "normal" and who_category(-1.0001) == "osteopenia"
    assert who_category(-2.5) == "osteoporosis" and who_category(-2.4999) == "osteopenia"
    assert t_score(0.942 - 2.5 * 0.122, reference) == pytest.approx(-2.5)
    neck = load_reference("nhanes3_femoral_neck_female")
    assert t_score(0.858 - 0.120, neck) == pytest.approx(-1.0)
    with pytest.raises(InputError, match="no T-score reference"):
        load_reference("unknown")


def test_rms_cv_repeats_are_poses_of_one_hip_not_the_two_hips_of_a_patient():
    """A patient's left and right femurs differ in BMD: each hip estimated identically in every pose has RMS-CV 0,
    however different the two hips are."""
    from bmdgan.datasets.format import CaseRecord
    from bmdgan.evaluation.evaluate import CasePrediction, _target_metrics

    estimates = {"left": 0.70, "right": 0.95}  # g/cm2, the same in both poses
    predictions = [
        CasePrediction(
            CaseRecord(f"{patient}-{side}-{pose}", patient, side, pose, ct_abmd_g_cm2=estimates[side] + offset),
            {"decomposition": {"ct_abmd_g_cm2": estimates[side] + offset}},
            30.0,
            0.9,
        )
        for patient, offset in (("p1", 0.0), ("p2", 0.1))
        for side in ("left", "right")
        for pose in ("standing", "supine")
    ]
    metrics = _target_metrics(predictions, "ct_abmd_g_cm2")["all"]
    assert metrics["rms_cv_percent"] == pytest.approx(0.0)
    assert metrics["pcc"] == pytest.approx(1.0)


def test_a_check_measured_after_packaging_goes_into_the_model_card_once(tmp_path):
    """update_card_section appends a marked section, and a second run replaces it (never a duplicate)."""
    from bmdgan.evaluation.model_card import update_card_section

    (tmp_path / "MODEL_CARD.md").write_text("# Model card\n\nbody\n")
    update_card_section(tmp_path, "check", "A check", ["| a | 1 |"])
    update_card_section(tmp_path, "check", "A check", ["| a | 2 |"])
    text = (tmp_path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert text.startswith("# Model card\n\nbody\n") and text.count("## A check") == 1
    assert "| a | 2 |" in text and "| a | 1 |" not in text
