"""Agreement between estimated and ground-truth BMD (paper section 4.2.1).

* PCC: Pearson correlation coefficient.
* ICC: ICC(2,1) of Shrout & Fleiss (1979): two-way random effects, absolute agreement, single measurement,
  with the estimate and the ground truth as the two "raters".
* MAE: mean absolute error, in the unit of the BMD.
* SEE: standard error of the estimate, sqrt(sum(residual^2) / (n - 2)) of the least-squares line of the
  ground truth on the estimate, in the unit of the BMD.
* RMS-CV: root-mean-square coefficient of variation (%) of repeated estimates of one patient (e.g. the
  same hip in several poses), the precision measure of densitometry (Glüer et al. 1995).
* Bland-Altman: mean difference (estimate - truth) and the 95% limits of agreement (mean +/- 1.96 SD).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError


def _pair(estimate, truth) -> tuple[np.ndarray, np.ndarray]:
    estimate, truth = np.asarray(estimate, dtype=float).ravel(), np.asarray(truth, dtype=float).ravel()
    if estimate.shape != truth.shape or estimate.size < 3:
        raise InputError(
            None, f"need at least 3 paired values, got {estimate.size} and {truth.size}", "evaluate on more cases"
        )
    if not (np.all(np.isfinite(estimate)) and np.all(np.isfinite(truth))):
        raise InputError(None, "estimates or ground truth contain NaN", "drop cases without a value first")
    return estimate, truth


def pearson(estimate, truth) -> float:
    estimate, truth = _pair(estimate, truth)
    return float(np.corrcoef(estimate, truth)[0, 1])


def icc_2_1(estimate, truth) -> float:
    """ICC(2,1) from the two-way ANOVA mean squares of the n x 2 table [estimate, truth]."""
    table = np.stack(_pair(estimate, truth), axis=1)
    n, k = table.shape
    grand = table.mean()
    ms_rows = k * ((table.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_columns = n * ((table.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    residual = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + grand
    ms_error = (residual**2).sum() / ((n - 1) * (k - 1))
    return float((ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error + k * (ms_columns - ms_error) / n))


def mae(estimate, truth) -> float:
    estimate, truth = _pair(estimate, truth)
    return float(np.mean(np.abs(estimate - truth)))


def see(estimate, truth) -> float:
    estimate, truth = _pair(estimate, truth)
    slope, intercept = np.polyfit(estimate, truth, 1)
    residual = truth - (slope * estimate + intercept)
    return float(np.sqrt((residual**2).sum() / (estimate.size - 2)))


def rms_cv_percent(estimates, patient_ids) -> float:
    """RMS of per-patient CV (SD with n-1 / mean) over patients with at least two estimates, in %."""
    groups: dict[str, list[float]] = defaultdict(list)
    for value, patient in zip(np.asarray(estimates, dtype=float), patient_ids):
        groups[patient].append(value)
    cvs = [np.std(values, ddof=1) / np.mean(values) for values in groups.values() if len(values) >= 2]
    if not cvs:
        raise InputError(None, "no patient has repeated estimates", "RMS-CV needs several images per patient")
    return float(100.0 * np.sqrt(np.mean(np.square(cvs))))


@dataclass(frozen=True)
class BlandAltman:
    mean_difference: float
    lower_limit: float
    upper_limit: float


def bland_altman(estimate, truth) -> BlandAltman:
    estimate, truth = _pair(estimate, truth)
    difference = estimate - truth
    bias, spread = float(difference.mean()), float(difference.std(ddof=1))
    return BlandAltman(bias, bias - 1.96 * spread, bias + 1.96 * spread)


@dataclass(frozen=True)
class Agreement:
    n: int
    pcc: float
    icc: float
    mae: float
    see: float
    bland_altman: BlandAltman
    rms_cv_percent: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def agreement(estimate, truth, bone_ids=None) -> Agreement:
    """All metrics at once; RMS-CV when bone ids with repeats are given (one id per bone, i.e. patient and
    side: a patient's two hips are two bones, not repeats of one)."""
    estimate, truth = _pair(estimate, truth)
    repeated = bone_ids is not None and len(set(bone_ids)) < len(list(bone_ids))
    return Agreement(
        int(estimate.size),
        pearson(estimate, truth),
        icc_2_1(estimate, truth),
        mae(estimate, truth),
        see(estimate, truth),
        bland_altman(estimate, truth),
        rms_cv_percent(estimate, bone_ids) if repeated else None,
    )
