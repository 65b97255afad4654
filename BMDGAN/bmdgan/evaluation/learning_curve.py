"""Learning curve over source CTs (issue 22): whole-CT held-out accuracy against the number of distinct real CTs
(and their bones) the models were trained on, with and without the virtual anatomies made from them, so we know
whether more real CTs or more variation is what limits us.

For each held-out fold of a ``--fold-by ct`` cohort, the fold's training CTs are put in an order drawn from the
seed, and the first ``k`` of them train the models (nested subsets: each larger set holds the smaller ones). A
cohort with virtual bones (anatomies, transplants: :func:`bmdgan.datasets.folds.is_virtual_bone`) draws each point
twice: trained on the chosen CTs' real bones only (``real``), and on those with their virtual bones (``virtual``;
a transplant trains when both its CTs are chosen). Every run is trained for about the same number of optimisation
steps as the fold's full set of real bones under the configuration (its epochs scaled by the ratio of training
images), so points differ in the bones they saw, not in how long they trained. The held-out set is always the
whole fold's real bones (a held-out CT's virtual anatomies are not tested), so every point is pooled over the same
held-out images. The real ``all`` point of a cohort without virtual bones is plain cross-validation
(:func:`bmdgan.evaluation.cross_validation.cross_validate`'s layout in ``OUT/all``), made first, so a job stopped
early has the cross-validation already.

Layout: ``OUT/ct<k>/fold<N>/`` (a run), ``OUT/ct<k>/datasets/fold<N>/`` (its subset dataset, images linked),
``OUT/ct<k>/pooled_metrics.json`` for the real bones, the same under ``OUT/virtual/`` with the virtual ones;
``OUT/learning_curve.json`` and ``OUT/learning_curve_<target>.png`` at the end. Resumable like cross-validation: a
killed job picks up each run from its checkpoints.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..datasets.folds import is_virtual_bone, source_ct_of, source_cts_of, split
from ..datasets.format import CaseRecord, read_manifest, write_subset
from ..errors import InputError
from ..training.trainer import start_process
from .cross_validation import pooled_summary, train_and_evaluate_fold
from .plots import plot_learning_curve

ALL = "all"
REAL, VIRTUAL = "real", "virtual"
BONE_SETS = (REAL, VIRTUAL)
"""What a point trains on: the chosen CTs' real bones, or those with the virtual bones made from them."""


def training_ct_order(records: list[CaseRecord], fold: int, seed: int) -> list[str]:
    """The source CTs that train when ``fold`` is held out, in an order drawn from ``seed`` and ``fold``."""
    held_out = {source_ct_of(r) for r in records if r.fold == fold}
    others = {source_ct_of(r) for r in records if r.fold >= 0 and r.fold != fold}
    if held_out & others:
        raise InputError(None, f"fold {fold} shares source CTs with the other folds", "simulate with --fold-by ct")
    training = sorted(others)
    order = np.random.default_rng([seed, fold]).permutation(len(training))
    return [training[i] for i in order]


def subset_records(
    records: list[CaseRecord], fold: int, training_cts: list[str], bone_set: str = VIRTUAL
) -> list[CaseRecord]:
    """The held-out fold's real bones and the training cases made from ``training_cts`` only (a transplant: both
    its CTs), their virtual bones dropped for the ``real`` bone set."""
    keep = set(training_cts)
    training, held_out = split(records, fold)
    chosen = [r for r in training if r.fold >= 0 and set(source_cts_of(r)) <= keep]
    if bone_set == REAL:
        chosen = [r for r in chosen if not is_virtual_bone(r)]
    return [r for r in held_out if not is_virtual_bone(r)] + chosen


def bones_of(records: list[CaseRecord]) -> set[tuple[str, str]]:
    """Distinct real bones (source CT, side) among ``records``: a whole-pelvis CT gives two (its anatomies and the
    femurs placed into it count as its bones)."""
    return {(source_ct_of(r), r.side) for r in records}


def same_steps(config, factor: float):
    """``config`` for a training set ``factor`` times smaller: the warm-restart period times ``factor`` (rounded to
    whole epochs) and every stage as many periods long as before, so a stage of whole cycles still ends at the
    bottom of a cycle and the run gets about as many optimisation steps (as close as the period's rounding)."""
    period = max(1, round(config.restart_period_epochs * factor))
    scale = period / config.restart_period_epochs
    return replace(
        config,
        epochs={stage: max(1, round(epochs * scale)) for stage, epochs in config.epochs.items()},
        restart_period_epochs=period,
    )


def check_sizes(records: list[CaseRecord], sizes: list[int], folds: list[int], seed: int) -> None:
    """Stop before any training when a size is not between 1 and the fewest training CTs of the ``folds`` less
    one (the full set is the ``all`` point), or when no fold is given."""
    if not folds:
        raise InputError(None, "no held-out fold to draw the curve on", "give --folds, for example 0,1,2,3")
    fewest = min(len(training_ct_order(records, fold, seed)) for fold in folds)
    wrong = [size for size in sizes if not 1 <= size < fewest]
    if wrong:
        raise InputError(
            None,
            f"--sizes {wrong[0]} is not a subset size: the folds train on {fewest} CTs or more",
            f"give sizes from 1 to {fewest - 1}",
        )


def bone_sets_of(records: list[CaseRecord]) -> tuple[str, ...]:
    """The bone sets a cohort can draw: real alone, and with the virtual bones where it has any."""
    return BONE_SETS if any(is_virtual_bone(r) for r in records) else (REAL,)


def learning_curve(
    config,
    dataset: str | Path,
    out: str | Path,
    sizes: list[int],
    folds: list[int],
    targets: tuple[str, ...],
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    bone_sets: tuple[str, ...] | None = None,
) -> list[dict]:
    """Train and evaluate every fold at every size (training CTs) and at all of them, for each of ``bone_sets``
    (default: :func:`bone_sets_of` the cohort); one point per size and bone set, pooled over ``folds``: the pooled
    metrics, diagnosis and each CT's bias (:func:`pooled_summary`) with the mean number of training CTs, bones
    (real ones) and images, the ratio of the fold's real training images to theirs, and the epoch factor applied
    (that ratio rounded to whole restart periods)."""
    dataset, out = Path(dataset), Path(out)
    records = read_manifest(dataset)
    missing = [fold for fold in folds if fold not in {r.fold for r in records}]
    if missing:
        raise InputError(dataset, f"has no fold {missing[0]}", "pick folds the cohort was dealt into")
    available = bone_sets_of(records)
    bone_sets = bone_sets or available
    if unknown := [name for name in bone_sets if name not in BONE_SETS]:
        raise InputError(None, f"unknown bone set {unknown[0]!r}", f"use {' or '.join(BONE_SETS)}")
    if VIRTUAL in bone_sets and VIRTUAL not in available:
        raise InputError(dataset, "holds no virtual bones", "simulate it with --anatomies or --transplants")
    check_sizes(records, sizes, folds, seed)
    process = start_process(device)
    points = []
    for bone_set in bone_sets:
        for size in [ALL, *sorted(set(sizes))]:  # all first: it is the cross-validation
            point_out = (out if bone_set == REAL else out / VIRTUAL) / (ALL if size == ALL else f"ct{size}")
            points.append(
                _train_point(
                    config, dataset, records, point_out, size, bone_set, folds, targets, seed, device, process, progress
                )
                | {"bone_set": bone_set}
            )
    points.sort(key=lambda point: (point["bone_set"], point["training_cts"]))
    if process.is_main:
        atomic_write_text(out / "learning_curve.json", json.dumps(points, indent=2))
        for target in targets:
            plot_learning_curve(out / f"learning_curve_{target}.png", points, target)
    return points


def _train_point(
    config, dataset, records, point_out, size, bone_set, folds, targets, seed, device, process, progress
) -> dict:
    """One point of the curve: every fold trained on its first ``size`` CTs' ``bone_set``, pooled."""
    shares = []
    for fold in folds:
        order = training_ct_order(records, fold, seed)
        chosen = order if size == ALL else order[:size]
        fold_records = subset_records(records, fold, chosen, bone_set)
        training = split(fold_records, fold)[0]
        reference = split(subset_records(records, fold, order, REAL), fold)[0]  # the fold's real bones, all CTs
        image_ratio = len(reference) / len(training)
        if len(fold_records) == len(records):  # a cohort of real bones at all CTs: plain cross-validation
            fold_dataset, fold_config = dataset, config
        else:
            why = f"learning curve: fold {fold} held out, trained on the {bone_set} bones of {', '.join(chosen)}"
            fold_dataset = point_out / "datasets" / f"fold{fold}"
            if process.is_main:
                write_subset(dataset, fold_dataset, fold_records, why)
            process.synchronise()
            fold_config = same_steps(config, image_ratio)
        epoch_factor = fold_config.restart_period_epochs / config.restart_period_epochs  # as applied, rounded
        shares.append((len(chosen), len(bones_of(training)), len(training), image_ratio, epoch_factor))
        train_and_evaluate_fold(
            fold_config, fold_dataset, point_out / f"fold{fold}", fold, targets, device, process, progress
        )
    pooled = pooled_summary(point_out, folds, dataset, process)
    cts, bones, images, ratios, factors = (float(np.mean(column)) for column in zip(*shares))
    return {
        "size": size,
        "training_cts": cts,
        "training_bones": bones,
        "training_images": images,
        "image_ratio": ratios,
        "epoch_factor": factors,
        **pooled,
    }


def curve_table(points: list[dict], target: str) -> list[dict]:
    """One row per point for ``target``: bone set, size, training CTs and bones, and ``methods``: {method: (pooled
    PCC, MAE)} (NaN where absent)."""
    rows = []
    for point in points:
        methods = {}
        for method, values in point["methods"].items():
            metrics = values.get(target, {})
            methods[method] = (metrics.get("pcc", math.nan), metrics.get("mae", math.nan))
        rows.append(
            {
                "bone_set": point.get("bone_set", REAL),
                "size": point["size"],
                "training_cts": point["training_cts"],
                "training_bones": point["training_bones"],
                "methods": methods,
            }
        )
    return rows
