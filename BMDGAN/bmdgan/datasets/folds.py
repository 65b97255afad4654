"""Cross-validation folds: every image of a patient lands in the same fold.

Folds by ``patient`` (the paper's split) hold out virtual patients; in a virtual cohort those share their bones
with training patients made from the same CT. Folds by ``ct`` hold out whole source CTs, so every held-out bone is
one the model never saw: the honest test of generalisation to new anatomy.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import InputError
from .format import CaseRecord

FOLD_GROUPS = ("patient", "ct")


def source_ct_of(record: CaseRecord) -> str:
    """The real CT a virtual patient was made from (its provenance), or the patient itself for a real one."""
    try:
        return json.loads(record.provenance).get("ct") or record.patient_id
    except (json.JSONDecodeError, AttributeError):
        return record.patient_id


def group_of_records(group_by: str):
    """The function that names a record's fold group: its patient, or its source CT."""
    if group_by not in FOLD_GROUPS:
        raise InputError(None, f"unknown fold grouping {group_by!r}", f"use one of {', '.join(FOLD_GROUPS)}")
    return (lambda record: record.patient_id) if group_by == "patient" else source_ct_of


def check_fold_count(n_folds: int) -> None:
    """Cross-validation needs at least two folds: one held out, the rest to train on."""
    if n_folds < 2:
        raise InputError(
            None, f"{n_folds} folds leave nothing to train on or nothing to test", "use --fold-count 2 or more"
        )


def assign_patient_folds(
    records: list[CaseRecord], n_folds: int = 5, seed: int = 0, group_by: str = "patient"
) -> list[CaseRecord]:
    """Set ``fold`` of every record (0..n_folds-1) by its group (patient or source CT).

    Groups that already have a fold keep it, so extending a cohort never moves a case under a training run; new
    groups are dealt in a seeded shuffle, each to the fold with the fewest groups (the lowest index on a tie), so
    fold sizes differ by at most one group and a fresh cohort is dealt round-robin.
    """
    group_of = group_of_records(group_by)
    check_fold_count(n_folds)
    groups = sorted({group_of(record) for record in records})
    if len(groups) < n_folds:
        raise InputError(
            None,
            f"{len(groups)} {group_by}s cannot fill {n_folds} folds",
            "use fewer folds" + (" or fold by patient" if group_by == "ct" else ""),
        )
    fold_of: dict[str, int] = {}
    for record in records:
        if 0 <= record.fold < n_folds and fold_of.setdefault(group_of(record), record.fold) != record.fold:
            raise InputError(
                None,
                f"{group_by} {group_of(record)} is split over folds {fold_of[group_of(record)]} "
                f"and {record.fold}: its images would be trained on and tested",
                "rebuild the dataset's folds in a new folder",
            )
    sizes = [sum(1 for fold in fold_of.values() if fold == f) for f in range(n_folds)]
    new_groups = [group for group in groups if group not in fold_of]
    for index in np.random.default_rng(seed).permutation(len(new_groups)):
        fold = sizes.index(min(sizes))
        fold_of[new_groups[index]] = fold
        sizes[fold] += 1
    for record in records:
        record.fold = fold_of[group_of(record)]
    return records


def split(records: list[CaseRecord], test_fold: int) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """(training cases, held-out cases) for one fold."""
    return ([r for r in records if r.fold != test_fold], [r for r in records if r.fold == test_fold])
