"""Calibrate a model's confidence on held-out images (issue 23): its prediction intervals and its
out-of-distribution limits, written into the model's ``model.json`` (in place, or in a calibrated copy).

Two kinds of held-out datasets (cohorts from ``bmdgan simulate-cohort``):

* ``held_out_cts``: virtual patients of source CTs the model never saw. They set the prediction intervals of every
  method and target (:func:`bmdgan.inference.uncertainty.fit_predictive`, grouped by source CT), whose coverage for
  a new bone is checked by leaving each CT out in turn, and they join the limits below.
* ``cross_validation`` instead sets the intervals, for a model trained on every CT (none left to hold out): the
  held-out predictions of a whole-CT cross-validation of the model's recipe (``bmdgan cross-validate``), each CT
  predicted by a model that never saw it. A model trained on more CTs errs no more on a new one, so the interval
  is, if anything, wide. The ``held_out_cts`` then given (if any) join the limits only.
* ``other_site``: the same CTs' virtual patients imaged at another site: each CT's images against the interval
  fitted without that CT, as for the first kind (the interval's coverage off the calibration site). Only with the
  first kind: the model must never have seen those CTs.
* ``new_patients``: new virtual patients of the training CTs (familiar bones, new densities, poses and fat). With
  the first kind they set the out-of-distribution limits (:func:`bmdgan.distribution_check.held_out_limits`); the
  share of them that the new limits flag is the false-alarm rate, also measured leaving each source CT out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..datasets.folds import source_ct_of
from ..datasets.format import read_manifest
from ..distribution_check import check, held_out_limits
from ..errors import InputError
from ..inference.model import DecompositionModel
from ..inference.uncertainty import fit_predictive, leave_one_ct_out
from ..models.model_folder import model_files, read_model_description
from ..outputs import check_destination, result_folder
from ..progress import progress_bar
from .cross_validation import held_out_rows
from .evaluate import CasePrediction, available_methods, predict_case
from .evaluation_folder import estimate_columns

UNITS = {"ct_abmd_g_cm2": "g/cm2", "dxa_bmd_g_cm2": "g/cm2", "qct_vbmd_mg_cm3": "mg/cm3"}


def dataset_predictions(model: DecompositionModel, folders: list[str | Path], progress: bool = True):
    """Every case of every dataset folder, predicted by every method of ``model``: [(source CT, CasePrediction)]."""
    methods = tuple(available_methods(model))
    cases = [(Path(folder), record) for folder in folders for record in read_manifest(folder)]
    return [
        (source_ct_of(record), predict_case(model, folder, record, methods=methods))
        for folder, record in progress_bar(cases, desc="predicting", disable=not progress)
    ]


Columns = dict[tuple[str, str], tuple[list[float], list[float], list[str]]]
"""(method, target) -> (estimates, truths, source CTs) of a set of held-out images."""


def prediction_columns(predictions: list[tuple[str, CasePrediction]]) -> Columns:
    """The columns of the model's own predictions (:func:`dataset_predictions`)."""
    first = predictions[0][1].methods
    return {
        (method, target): (
            [p.methods[method][target] for _, p in predictions],
            [getattr(p.record, target) for _, p in predictions],
            [ct for ct, _ in predictions],
        )
        for method in first
        for target in sorted(first[method])
    }


def cross_validation_columns(cv_folder: str | Path) -> Columns:
    """The columns of a cross-validation's held-out predictions
    (:func:`bmdgan.evaluation.cross_validation.held_out_rows`)."""
    rows = held_out_rows(cv_folder)
    return {
        (method, target): (
            [float(row[key]) for _, row in rows],
            [float(row[f"{target}_truth"]) for _, row in rows],
            [ct for ct, _ in rows],
        )
        for method, target, key in estimate_columns(rows[0][1])
    }


def fit_intervals(columns: Columns, other_site: Columns | None = None) -> tuple[list[dict], dict, dict]:
    """(prediction-interval entries for ``model.json``, leave-one-CT-out coverage per method and target, the same
    on ``other_site``'s images of those CTs)."""
    entries, checks, site_checks = [], {}, {}
    for (method, target), (estimates, truths, cts) in columns.items():
        if not np.isfinite(truths).any():
            continue
        unit = UNITS.get(target, "")
        entries.append(fit_predictive(estimates, truths, cts, target, method, unit).to_dict())
        checks.setdefault(method, {})[target] = leave_one_ct_out(estimates, truths, cts, target, method, unit)
        if other_site:
            site_checks.setdefault(method, {})[target] = leave_one_ct_out(
                estimates, truths, cts, target, method, unit, other=other_site[(method, target)]
            )
    return entries, checks, site_checks


def false_alarms(model: DecompositionModel, predictions: list[tuple[str, CasePrediction]], named: str) -> dict:
    """The limits fitted on all these images, and the share of them flagged: in-sample, and per source CT with the
    limits fitted on the other CTs' images (what a new familiar CT would see)."""
    scored = [(ct, p.scores) for ct, p in predictions]
    limits = held_out_limits(model.distribution, [s for _, s in scored], named)
    per_ct = {}
    for ct in sorted({ct for ct, _ in scored}):
        others = held_out_limits(model.distribution, [s for c, s in scored if c != ct], named)
        own = [s for c, s in scored if c == ct]
        per_ct[ct] = float(np.mean([bool(check(others, s)) for s in own]))
    flagged = [bool(check(limits, s)) for _, s in scored]
    leave_out = [per_ct[ct] for ct, _ in scored]
    return {
        "limits": limits,
        "images": len(scored),
        "flagged_in_sample": float(np.mean(flagged)),
        "flagged_leaving_each_ct_out": float(np.mean(leave_out)),
        "flagged_per_ct_left_out": per_ct,
    }


def calibrate_confidence(
    model_folder: str | Path,
    out: str | Path,
    held_out_cts: list[str | Path],
    new_patients: list[str | Path] = (),
    other_site: list[str | Path] = (),
    progress: bool = True,
    overwrite: bool = False,
    cross_validation: str | Path | None = None,
) -> dict:
    """Fit the intervals and limits (module docstring) and write the calibrated model to ``out``: the model folder
    itself (its ``model.json`` replaced atomically, weights untouched), or a new folder holding a copy of the model
    (:func:`bmdgan.outputs.result_folder`; ``overwrite`` replaces an earlier calibrate-confidence result). Returns
    the calibration summary that is stored in ``model.json``."""
    model_folder, out = Path(model_folder), Path(out)
    if cross_validation is not None and other_site:
        raise InputError(
            None,
            "--other-site checks intervals on images of CTs the model never saw, and a model calibrated from a "
            "cross-validation saw every CT it has images of",
            "leave out --other-site, or calibrate from --held-out-cts instead of --cross-validation",
        )
    in_place = out.resolve() == model_folder.resolve()
    if not in_place:
        check_destination(out, "calibrate-confidence", overwrite)
    model = DecompositionModel.load(model_folder)
    unseen = dataset_predictions(model, list(held_out_cts), progress) if held_out_cts else []
    columns = prediction_columns(unseen) if cross_validation is None else cross_validation_columns(cross_validation)
    interval_cts = sorted(set(next(iter(columns.values()))[2])) if columns else []
    if len(interval_cts) < 3:
        raise InputError(
            None,
            f"the intervals' held-out images hold {len(interval_cts)} source CT(s)",
            "give virtual patients of at least 3 CTs the model never saw, or a whole-CT cross-validation of its "
            "recipe (an interval needs 2 CTs, its check 3)",
        )
    familiar = dataset_predictions(model, list(new_patients), progress) if new_patients else []
    if not unseen + familiar:
        raise InputError(
            None, "no images to fit the out-of-distribution limits on", "give held-out CT cohorts or new patients"
        )
    site = dataset_predictions(model, list(other_site), progress) if other_site else []
    entries, coverage, site_coverage = fit_intervals(columns, prediction_columns(site) if site else None)
    named = " and ".join(
        part
        for part in (
            unseen and f"{len(unseen)} images of {len({ct for ct, _ in unseen})} CTs the model never saw",
            familiar and f"{len(familiar)} new virtual patients' images of its training CTs",
        )
        if part
    )
    alarms = false_alarms(model, unseen + familiar, named)
    summary = {
        "held_out_cts": interval_cts,
        "held_out_images": len(next(iter(columns.values()))[0]),
        "intervals_from": "the model's predictions of held-out CTs"
        if cross_validation is None
        else f"the held-out predictions of a whole-CT cross-validation of the model's recipe ({cross_validation})",
        "limit_cts_never_seen": sorted({ct for ct, _ in unseen}),
        "new_patient_images": len(familiar),
        "interval_check_leaving_each_ct_out": coverage,
        "interval_check_other_site_leaving_each_ct_out": site_coverage,
        "false_alarms": {key: value for key, value in alarms.items() if key != "limits"},
        "datasets": {
            "held_out_cts": [str(f) for f in held_out_cts],
            "new_patients": [str(f) for f in new_patients],
            "other_site": [str(f) for f in other_site],
            "cross_validation": None if cross_validation is None else str(cross_validation),
        },
    }
    description = read_model_description(model_folder)
    description["prediction_intervals"] = entries
    description["training_distribution"] = alarms["limits"].to_dict()
    description["confidence_calibration"] = summary
    text = json.dumps(description, indent=2)
    if in_place:
        atomic_write_text(model_folder / "model.json", text)
        return summary
    with result_folder(out, "calibrate-confidence", overwrite) as staging:
        for path in model_files(model_folder)[1:] + [p for p in [model_folder / "MODEL_CARD.md"] if p.is_file()]:
            shutil.copyfile(path, staging / path.name)
        (staging / "model.json").write_text(text)
    return summary
