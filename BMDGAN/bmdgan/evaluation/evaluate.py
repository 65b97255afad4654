"""Evaluate a model on a dataset's held-out cases (paper sections 4.2-4.3).

For every case: the predicted PF-DRR against the ground-truth PF-DRR (PSNR, Dice of the PF region at the
model's threshold), and the BMD of every target by every method the model folder holds, side by side:
``decomposition`` (thresholded PF-DRR mean + linear fit), ``decomposition+regression`` (stage 3) and
``baseline`` (direct regression CNN). Then the agreement metrics per method, target and pose, and the
robustness of Fig. 8 for the decomposition: the same cases with the radiograph JPEG-compressed at several
qualities, or reduced to fewer bits. When the model carries prediction intervals (``bmdgan calibrate-confidence``),
each case gets the interval of the method ``estimate`` reports, and the metrics their coverage and median width.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datasets.folds import source_ct_of, split
from ..datasets.format import CaseRecord, load_image, read_manifest
from ..distribution_check import HipScores, decomposition_regression_gap
from ..errors import InputError
from ..inference.model import DecompositionModel
from ..progress import progress_bar
from ..training.data import resize_to
from .evaluation_folder import write_metrics, write_predictions
from .metrics import agreement
from .plots import plot_bland_altman, plot_correlation, plot_robustness

DEFAULT_JPEG_QUALITIES = (95, 75, 50, 25)
DEFAULT_BIT_DEPTHS = (12, 10, 8, 6)


@dataclass
class CasePrediction:
    record: CaseRecord
    methods: dict[str, dict[str, float]]  # method -> target -> BMD in the target's unit
    psnr_db: float
    dice: float
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    """target -> (lower, upper) of the reported method's interval (the target's unit)."""
    scores: HipScores | None = None
    """What the model's distribution checks measure on this image (:mod:`bmdgan.distribution_check`)."""


def reported_method(methods: list[str] | tuple[str, ...]) -> str:
    """The method ``bmdgan estimate`` reports: stage-3 regression when the model has it, else the decomposition."""
    return "decomposition+regression" if "decomposition+regression" in methods else "decomposition"


def available_methods(model: DecompositionModel) -> list[str]:
    kinds = {d["kind"] for d in model.description.get("regressors", {}).values()}
    return ["decomposition"] + [
        name
        for kind, name in (("decomposition", "decomposition+regression"), ("baseline", "baseline"))
        if kind in kinds
    ]


def psnr_db(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) with the ground truth's maximum as the peak."""
    mse = float(np.mean((prediction - truth) ** 2))
    peak = float(truth.max())
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse) if peak > 0 else -math.inf


def dice(prediction: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    """Dice coefficient of the regions at or above ``threshold`` (1 when both are empty)."""
    a, b = prediction >= threshold, truth >= threshold
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def jpeg_degraded(pixels: np.ndarray, quality: int) -> np.ndarray:
    """The radiograph windowed to 8 bits (0.5/99.5 percentiles), JPEG-compressed at ``quality`` and decoded."""
    from PIL import Image

    low, high = np.percentile(pixels, [0.5, 99.5])
    eight_bit = np.clip((pixels - low) / max(high - low, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(eight_bit).save(buffer, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32)


def bit_depth_reduced(pixels: np.ndarray, bits: int) -> np.ndarray:
    """The radiograph quantised to ``bits`` bits over its own range."""
    low, high = float(pixels.min()), float(pixels.max())
    levels = 2 ** int(bits) - 1
    return np.round((pixels - low) / max(high - low, 1e-6) * levels).astype(np.float32)


def predict_case(
    model: DecompositionModel,
    folder: Path,
    record: CaseRecord,
    pixels: np.ndarray | None = None,
    methods: tuple[str, ...] = ("decomposition",),
) -> CasePrediction:
    """Dataset images are already the model's input region (see datasets.normalise)."""
    image = load_image(folder, record, "radiograph") if pixels is None else pixels
    image = resize_to(image, model.image_shape)  # the same region in mm at another size: resizing keeps it
    decomposition = model.decompose(image)
    truth = resize_to(load_image(folder, record, "drr_pf"), decomposition.pf_drr_g_cm2.shape)
    threshold = model.distribution.threshold_g_cm2
    values = {"decomposition": model.bmd(decomposition)}
    if "decomposition+regression" in methods:
        values["decomposition+regression"] = model.regress(image)
    if "baseline" in methods:
        values["baseline"] = model.regress(image, kind="baseline")
    reported = reported_method(methods)
    disagreement = decomposition_regression_gap(values["decomposition"], values.get("decomposition+regression", {}))
    intervals = {
        target: model.interval(reported, target).interval(value)
        for target, value in values[reported].items()
        if model.interval(reported, target) is not None and math.isfinite(value)
    }
    return CasePrediction(
        record,
        values,
        psnr_db(decomposition.pf_drr_g_cm2, truth),
        dice(decomposition.pf_drr_g_cm2, truth, threshold),
        intervals,
        model.scores(decomposition, disagreement),
    )


def interval_coverage(predictions: list[CasePrediction], method: str) -> dict:
    """Per target: how often the truth lies inside the reported method's interval (pooled and per source CT), and
    the intervals' median width (the target's unit)."""
    result = {}
    for target in sorted({t for p in predictions for t in p.intervals}):
        cases = [p for p in predictions if target in p.intervals and math.isfinite(getattr(p.record, target))]
        inside = [p.intervals[target][0] <= getattr(p.record, target) <= p.intervals[target][1] for p in cases]
        per_ct: dict[str, list[bool]] = {}
        for case, hit in zip(cases, inside):
            per_ct.setdefault(source_ct_of(case.record), []).append(hit)
        result[target] = {
            "method": method,
            "images": len(cases),
            "coverage": float(np.mean(inside)) if cases else math.nan,
            "median_width": float(np.median([p.intervals[target][1] - p.intervals[target][0] for p in cases]))
            if cases
            else math.nan,
            "per_source_ct": {ct: float(np.mean(hits)) for ct, hits in sorted(per_ct.items())},
        }
    return result


def bone_id(patient_id: str, side: str) -> str:
    """One id per bone: the radiographs of one hip in several poses are repeats (RMS-CV), the two hips are not."""
    return f"{patient_id}/{side}"


def _target_metrics(predictions: list[CasePrediction], target: str, method: str = "decomposition") -> dict | None:
    pairs = [
        (
            p.methods[method].get(target, math.nan),
            getattr(p.record, target),
            bone_id(p.record.patient_id, p.record.side),
            p.record.pose,
        )
        for p in predictions
    ]
    pairs = [pair for pair in pairs if math.isfinite(pair[0]) and math.isfinite(pair[1])]
    if len(pairs) < 3:
        return None
    estimate, truth, bones, poses = (list(column) for column in zip(*pairs))
    result = {"all": agreement(estimate, truth, bones).to_dict(), "per_pose": {}}
    for pose in sorted(set(poses)):
        chosen = [i for i, p in enumerate(poses) if p == pose]
        if len(chosen) >= 3:
            result["per_pose"][pose] = agreement([estimate[i] for i in chosen], [truth[i] for i in chosen]).to_dict()
    return result


def evaluate(
    model: DecompositionModel,
    folder: str | Path,
    fold: int | None = None,
    jpeg_qualities=DEFAULT_JPEG_QUALITIES,
    bit_depths=DEFAULT_BIT_DEPTHS,
    progress: bool = True,
    poses: tuple[str, ...] | None = None,
) -> dict:
    """Metrics of the held-out ``fold`` (None: every case; ``poses``: only those poses) and the predictions."""

    folder = Path(folder)
    records = read_manifest(folder)
    records = [r for r in (records if fold is None else split(records, fold)[1]) if not poses or r.pose in poses]
    if len(records) < 3:
        raise InputError(folder, f"only {len(records)} cases to evaluate in fold {fold}", "choose another fold")
    methods = tuple(available_methods(model))
    predictions = [
        predict_case(model, folder, record, methods=methods)
        for record in progress_bar(records, desc="evaluating", disable=not progress)
    ]
    targets = sorted(model.calibrations)
    report = {
        "cases": len(records),
        "fold": fold,
        "source_cts": sorted({source_ct_of(r) for r in records}),
        "pf_drr": {
            "psnr_db_mean": float(np.mean([p.psnr_db for p in predictions])),
            "dice_mean": float(np.mean([p.dice for p in predictions])),
        },
        "methods": {
            m: {t: _target_metrics(predictions, t, m) for t in sorted(predictions[0].methods[m])} for m in methods
        },
        "robustness": {},
    }
    if any(p.intervals for p in predictions):
        report["intervals"] = interval_coverage(predictions, reported_method(methods))
    degradations = [("jpeg_quality", q, jpeg_degraded) for q in jpeg_qualities] + [
        ("bit_depth", b, bit_depth_reduced) for b in bit_depths
    ]
    for kind, level, degrade in progress_bar(degradations, desc="robustness", disable=not progress or not degradations):
        degraded = [
            predict_case(model, folder, r, degrade(load_image(folder, r, "radiograph"), level)) for r in records
        ]
        report["robustness"].setdefault(kind, {})[str(level)] = {
            t: (_target_metrics(degraded, t) or {}).get("all", {}).get("pcc") for t in targets
        }
    return {"report": report, "predictions": predictions}


def write_evaluation(out: str | Path, result: dict) -> Path:
    """metrics.json, predictions.csv, and for each target a Bland-Altman and a correlation plot."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics(out, result["report"])
    predictions = result["predictions"]
    columns = [(m, t) for m in predictions[0].methods for t in sorted(predictions[0].methods[m])]
    targets = sorted({t for _, t in columns})
    header = ["case_id", "patient_id", "side", "pose", "psnr_db", "dice"]
    bounded = sorted({t for p in predictions for t in p.intervals})
    header += [f"{t}_truth" for t in targets] + [f"{t}_{m}" for m, t in columns]
    header += [f"{t}_{bound}" for t in bounded for bound in ("lower", "upper")]
    rows = [
        [p.record.case_id, p.record.patient_id, p.record.side, p.record.pose, f"{p.psnr_db:.3f}", f"{p.dice:.4f}"]
        + [f"{getattr(p.record, t):.6g}" for t in targets]
        + [f"{p.methods[m][t]:.6g}" for m, t in columns]
        + [f"{v:.6g}" if t in p.intervals else "" for t in bounded for v in p.intervals.get(t, (0.0, 0.0))]
        for p in predictions
    ]
    write_predictions(out, header, rows)
    for method, target in columns:
        pairs = [
            (p.methods[method][target], getattr(p.record, target))
            for p in predictions
            if math.isfinite(p.methods[method][target]) and math.isfinite(getattr(p.record, target))
        ]
        if len(pairs) >= 3:
            estimate, truth = np.array(pairs).T
            name = f"{method.replace('+', '_')}_{target}"
            plot_bland_altman(out / f"bland_altman_{name}.png", estimate, truth, f"{target}, {method}")
            plot_correlation(out / f"correlation_{name}.png", estimate, truth, f"{target}, {method}")
    if result["report"]["robustness"]:
        plot_robustness(out / "robustness.png", result["report"]["robustness"])
    return out
