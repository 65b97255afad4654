"""BMD from a (predicted) proximal-femur DRR: threshold, average, linear map (paper Sec. 3.2, Fig. 4).

The PF-DRR average is the mean of the pixels whose intensity is >= a threshold t (the bone region, without
the near-zero background). On the training fold, t is chosen to maximise the Pearson correlation between
that average and the ground-truth BMD, then BMD is fitted linearly to the average (slope, intercept).
The calibration is stored per target (DXA aBMD in g/cm2, QCT vBMD in mg/cm3) and applied to new DRRs.
DRR intensities must be on the same fixed scale at calibration and at prediction time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .errors import InputError

DEFAULT_NUM_CANDIDATES = 64


def _as_array(values) -> np.ndarray:
    """numpy float64 view of an array-like or a torch tensor (detached, on CPU)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def pf_drr_mean(drr, threshold: float) -> float | np.ndarray:
    """Mean of the pixels >= ``threshold`` over the last two axes (the image).

    drr: [H, W] -> float; [N, H, W] -> [N]; any leading axes are kept (e.g. [N, 1, H, W] -> [N, 1]).
    Accepts numpy arrays and torch tensors. Where no pixel reaches the threshold the result is NaN
    (there is no bone region to average; a 0 would silently map to the calibration's intercept).
    """
    arr = _as_array(drr)
    if arr.ndim < 2:
        raise ValueError(f"pf_drr_mean needs an image [.., H, W], got shape {arr.shape}")
    mask = arr >= threshold
    count = mask.sum(axis=(-2, -1))
    total = np.where(mask, arr, 0.0).sum(axis=(-2, -1))
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(mean) if arr.ndim == 2 else mean


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation coefficient; NaN when either input is constant or contains NaN."""
    x, y = _as_array(x).reshape(-1), _as_array(y).reshape(-1)
    if x.size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc**2).sum() * (yc**2).sum())
    return float((xc * yc).sum() / denom) if denom > 0 else float("nan")


@dataclass
class ThresholdTuning:
    """Result of :func:`tune_threshold`: the chosen threshold, its PCC, and the whole PCC curve (Fig. 4).
    pccs[i] is NaN where candidates[i] left an image without pixels or gave a constant average."""

    threshold: float
    pcc: float
    candidates: np.ndarray
    pccs: np.ndarray


def _per_image_means(drrs, threshold: float, n: int) -> np.ndarray:
    means = np.asarray(pf_drr_mean(drrs, threshold), dtype=np.float64).reshape(-1)
    if means.size != n:
        raise InputError(None, f"{means.size} DRRs for {n} BMD values", "give one DRR [H, W] per BMD value")
    return means


def tune_threshold(drrs, bmd: Sequence[float], candidates: Sequence[float] | None = None) -> ThresholdTuning:
    """Choose t maximising Pearson r(PF-DRR average(t), BMD) on a training fold.

    drrs: [N, H, W] (or [N, 1, H, W]); bmd: [N]. candidates: thresholds to try (default: 64 values evenly
    spaced from the smallest pixel value up to, not including, the largest).
    """
    drr_arr, y = _as_array(drrs), _as_array(bmd).reshape(-1)
    if y.size < 3:
        raise InputError(None, f"threshold tuning needs at least 3 cases, got {y.size}")
    if candidates is None:
        lo, hi = float(np.min(drr_arr)), float(np.max(drr_arr))
        candidates = np.linspace(lo, hi, DEFAULT_NUM_CANDIDATES + 1)[:-1]
    cands = _as_array(candidates).reshape(-1)
    pccs = np.array([pearson_r(_per_image_means(drr_arr, t, y.size), y) for t in cands])
    if not np.any(np.isfinite(pccs)):
        raise InputError(
            None,
            "no candidate threshold leaves a bone region in every DRR with a varying average",
            "lower the candidate thresholds or check the DRR intensity scale",
        )
    best = int(np.nanargmax(pccs))
    return ThresholdTuning(float(cands[best]), float(pccs[best]), cands, pccs)


def fit_linear(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares line y = slope * x + intercept -> (slope, intercept)."""
    x, y = _as_array(x).reshape(-1), _as_array(y).reshape(-1)
    if x.size != y.size or x.size < 2:
        raise InputError(None, f"linear fit needs two equal-length series of >= 2 values, got {x.size} and {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InputError(None, "linear fit got NaN or infinite values", "check that every DRR has a bone region")
    xc = x - x.mean()
    sxx = float((xc**2).sum())
    if sxx == 0:
        raise InputError(None, "linear fit: all x values are equal, the slope is undefined")
    slope = float((xc * (y - y.mean())).sum() / sxx)
    return slope, float(y.mean() - slope * x.mean())


@dataclass
class DrrBmdCalibration:
    """BMD = slope * PF-DRR average(threshold) + intercept, for one target.

    target: e.g. 'dxa_bmd' or 'qct_bmd'; unit: e.g. 'g/cm2' or 'mg/cm3'; pcc_train: Pearson r of the
    average with the ground truth on the training fold at this threshold.
    """

    threshold: float
    slope: float
    intercept: float
    target: str
    unit: str
    pcc_train: float

    def predict(self, drr) -> float | np.ndarray:
        """BMD in ``unit`` from DRR(s) [H, W] / [N, H, W]; NaN where no pixel reaches the threshold."""
        return self.slope * pf_drr_mean(drr, self.threshold) + self.intercept

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str | Path | None = None) -> DrrBmdCalibration:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise InputError(source, f"DRR-BMD calibration lacks {', '.join(missing)}")
        try:
            values = {n: (str(data[n]) if n in ("target", "unit") else float(data[n])) for n in names}
        except (TypeError, ValueError) as exc:
            raise InputError(source, f"DRR-BMD calibration has a non-numeric value ({exc})") from None
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> DrrBmdCalibration:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(source, f"not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(source, "a DRR-BMD calibration must be a JSON object")
        return cls.from_dict(data, source)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> DrrBmdCalibration:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "DRR-BMD calibration file not found")
        return cls.from_json(path.read_text(encoding="utf-8"), path)


def calibrate(
    drrs, bmd: Sequence[float], target: str, unit: str, candidates: Sequence[float] | None = None
) -> DrrBmdCalibration:
    """Tune the threshold, then fit BMD linearly to the PF-DRR averages of the training fold."""
    tuning = tune_threshold(drrs, bmd, candidates)
    y = _as_array(bmd).reshape(-1)
    slope, intercept = fit_linear(_per_image_means(_as_array(drrs), tuning.threshold, y.size), y)
    return DrrBmdCalibration(tuning.threshold, slope, intercept, target, unit, tuning.pcc)
