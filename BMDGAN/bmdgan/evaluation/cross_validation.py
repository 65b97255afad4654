"""Patient-level k-fold cross-validation (paper section 4.2.1): for each fold, train stages 1-2 (hierarchical),
stage 3 and the direct baseline on the other folds, evaluate on the fold, then pool every fold's predictions.

Resumable: training resumes from each run's checkpoints, and a fold is evaluated again only when its model
changed since its ``evaluation/`` was written (the model's SHA-256 is kept beside the predictions), so a killed
cross-validation finishes where it stopped. Under torchrun every process trains; the main one evaluates.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..datasets.folds import source_ct_of
from ..datasets.format import read_manifest
from ..errors import InputError
from ..training.run_folder import read_run_settings
from .evaluate import bone_id
from .evaluation_folder import estimate_columns, read_predictions
from .metrics import agreement


def _pooled_rows(out: Path, folds: list[int]) -> list[dict]:
    rows = []
    for fold in folds:
        rows += [{**row, "fold": fold} for row in read_predictions(out / f"fold{fold}" / "evaluation")]
    return rows


def held_out_rows(cv_folder: str | Path, folds: list[int] | None = None) -> list[tuple[str, dict]]:
    """(source CT, ``predictions.csv`` row) of every held-out image of ``folds`` (default: those the cross-validation's
    ``pooled_metrics.json`` pooled), each fold run's source CTs read from the dataset its ``run.json`` names: how the
    recipe errs on bones it never saw."""
    cv_folder = Path(cv_folder)
    if folds is None:
        pooled = cv_folder / "pooled_metrics.json"
        if not pooled.is_file():
            raise InputError(cv_folder, "holds no pooled_metrics.json", "give a bmdgan cross-validate --out folder")
        folds = json.loads(pooled.read_text())["folds"]
    sources = {}
    for fold in folds:
        settings = read_run_settings(cv_folder / f"fold{fold}")
        if settings is None:
            raise InputError(cv_folder / f"fold{fold}", "has no run.json", "give a bmdgan cross-validate --out folder")
        sources[fold] = {r.case_id: source_ct_of(r) for r in read_manifest(settings["dataset"])}
    return [(sources[row["fold"]][row["case_id"]], row) for row in _pooled_rows(cv_folder, folds)]


def pooled_metrics(rows: list[dict]) -> dict:
    """Agreement per method and target over the predictions of every fold together."""
    result: dict = {}
    for method, target, key in estimate_columns(rows[0]):
        pairs = [
            (float(r[key]), float(r[f"{target}_truth"]), bone_id(r["patient_id"], r.get("side", ""))) for r in rows
        ]
        pairs = [p for p in pairs if math.isfinite(p[0]) and math.isfinite(p[1])]
        if len(pairs) >= 3:
            estimate, truth, patients = zip(*pairs)
            result.setdefault(method, {})[target] = agreement(estimate, truth, list(patients)).to_dict()
    return result


def _pairs_by_source(rows: list[dict], key: str, target: str, source_of: dict[str, str]) -> dict[str, list]:
    """(estimate, truth) of every finite prediction in column ``key``, grouped by source CT (``source_of``: case id
    -> CT; a case it does not name is its own patient)."""
    pairs: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        estimate, truth = float(row[key]), float(row[f"{target}_truth"])
        if math.isfinite(estimate) and math.isfinite(truth):
            pairs.setdefault(source_of.get(row["case_id"], row["patient_id"]), []).append((estimate, truth))
    return pairs


def per_source_bias(rows: list[dict], source_of: dict[str, str]) -> dict:
    """Per method and target, each source CT's bias (mean estimate - truth), MAE and image count over the pooled
    predictions: with whole CTs held out, a CT-specific offset is what pooled PCC alone hides (issue 22).
    ``source_of``: case id -> source CT (:func:`bmdgan.datasets.folds.source_ct_of`)."""
    result: dict = {}
    for method, target, key in estimate_columns(rows[0]):
        result.setdefault(method, {})[target] = {
            ct: {
                "n": len(p),
                "bias": sum(e - t for e, t in p) / len(p),
                "mae": sum(abs(e - t) for e, t in p) / len(p),
            }
            for ct, p in sorted(_pairs_by_source(rows, key, target, source_of).items())
        }
    return result


def _pcc(x: list[float], y: list[float]) -> float | None:
    """Pearson correlation, None where either side is constant or has fewer than 3 values."""
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def spread_diagnosis(rows: list[dict], source_of: dict[str, str]) -> dict:
    """Per method and target, why a pooled PCC is low: ``within_ct_pcc_median`` (does the model rank the virtual
    patients of one bone?), ``pcc_without_ct_bias`` (pooled PCC after each CT's bias is removed: what the per-CT
    offsets cost) and ``estimate_sd_over_truth_sd`` (near 0: the model answers the training mean whatever the image,
    as an undertrained one does; 1: it spreads its answers as widely as the truth). Each CT's own PCC is in
    ``per_ct_pcc``."""
    result: dict = {}
    for method, target, key in estimate_columns(rows[0]):
        pairs = _pairs_by_source(rows, key, target, source_of)
        per_ct = {ct: _pcc(*map(list, zip(*p))) for ct, p in sorted(pairs.items())}
        unbiased, truths, estimates = [], [], []
        for p in pairs.values():
            bias = float(np.mean([e - t for e, t in p]))
            unbiased += [e - bias for e, _ in p]
            estimates += [e for e, _ in p]
            truths += [t for _, t in p]
        within = [r for r in per_ct.values() if r is not None]
        result.setdefault(method, {})[target] = {
            "within_ct_pcc_median": float(np.median(within)) if within else None,
            "pcc_without_ct_bias": _pcc(unbiased, truths),
            "estimate_sd_over_truth_sd": float(np.std(estimates) / np.std(truths)) if np.std(truths) > 0 else None,
            "per_ct_pcc": per_ct,
        }
    return result


def cross_validate(
    config,
    dataset: str | Path,
    out: str | Path,
    folds: list[int],
    targets: tuple[str, ...],
    device: str = "auto",
    progress: bool = True,
    pretrained: str | Path | None = None,
) -> dict:
    """Train and evaluate every fold of ``folds`` in ``out/fold<N>``, then pool them (:func:`pooled_summary`).
    ``pretrained``: a folder of fold runs (another cross-validation's ``--out``) whose ``fold<N>`` starts fold N."""
    from ..training.trainer import start_process

    out = Path(out)
    process = start_process(device)
    for fold in folds:
        start = None if pretrained is None else Path(pretrained) / f"fold{fold}"
        train_and_evaluate_fold(config, dataset, out / f"fold{fold}", fold, targets, device, process, progress, start)
    return pooled_summary(out, folds, dataset, process)


def train_and_evaluate_fold(
    config,
    dataset: str | Path,
    run: Path,
    fold: int,
    targets: tuple[str, ...],
    device,
    process,
    progress: bool,
    pretrained: Path | None = None,
) -> None:
    """Stages 1-2 (or stage 2 alone, started from the run ``pretrained``), stage 3 and the baseline of one fold into
    ``run``, then its held-out predictions in ``run/evaluation`` (again only when the model changed since they were
    written)."""
    from ..inference.model import DecompositionModel
    from ..training.regression import train_regression
    from ..training.run import train_run
    from .evaluate import evaluate, write_evaluation

    train_run(config, dataset, run, fold, device=device, progress=progress, pretrained=pretrained)
    for kind in ("decomposition", "baseline"):
        for target in targets:
            train_regression(config, dataset, run, target, kind, fold, device, progress=progress)
    fingerprint = model_fingerprint(run / "model")
    recorded = run / "evaluation" / MODEL_FINGERPRINT_FILE
    if process.is_main and not (recorded.exists() and recorded.read_text() == fingerprint):
        model = DecompositionModel.load(run / "model")
        write_evaluation(run / "evaluation", evaluate(model, dataset, fold, (), (), progress=progress))
        atomic_write_text(recorded, fingerprint)


def pooled_summary(out: Path, folds: list[int], dataset: str | Path, process) -> dict:
    """Pool the held-out predictions of ``out/fold<N>`` over ``folds``: metrics per method, each source CT's bias
    and the spread diagnosis (source CTs named by ``dataset``'s manifest); written to ``out/pooled_metrics.json``."""
    process.synchronise()  # the other processes wait for the main one's evaluations
    rows = _pooled_rows(out, folds)
    source_of = {record.case_id: source_ct_of(record) for record in read_manifest(dataset)}
    pooled = {
        "folds": folds,
        "images": len(rows),
        "methods": pooled_metrics(rows),
        "per_source_ct": per_source_bias(rows, source_of),
        "diagnosis": spread_diagnosis(rows, source_of),
    }
    if process.is_main:
        atomic_write_text(out / "pooled_metrics.json", json.dumps(pooled, indent=2))
    return pooled


MODEL_FINGERPRINT_FILE = "model.sha256"


def model_fingerprint(model_folder: Path) -> str:
    """SHA-256 over a model folder's description and weights: changes whenever any stage was retrained."""
    digest = hashlib.sha256()
    for path in sorted(model_folder.glob("*.safetensors")) + [model_folder / "model.json"]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
