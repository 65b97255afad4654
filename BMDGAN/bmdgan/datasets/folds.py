"""Cross-validation folds: every image of a patient lands in the same fold.

Folds by ``patient`` (the paper's split) hold out virtual patients; in a virtual cohort those share their bones
with training patients made from the same CT. Folds by ``ct`` hold out whole source CTs, so every held-out bone is
one the model never saw: the honest test of generalisation to new anatomy.
"""

from __future__ import annotations

import json

import numpy as np

from .format import CaseRecord

FOLD_GROUPS = ("patient", "ct")


def source_ct_of(record: CaseRecord) -> str:
    """The real CT a virtual patient was made from (its provenance), or the patient itself for a real one."""
    try:
        return json.loads(record.provenance).get("ct") or record.patient_id
    except (json.JSONDecodeError, AttributeError):
        return record.patient_id


def assign_patient_folds(records: list[CaseRecord], n_folds: int = 5, seed: int = 0,
                         group_by: str = "patient") -> list[CaseRecord]:
    """Set ``fold`` of every record (0..n_folds-1) from a seeded shuffle of its groups (patients or source CTs).

    Groups are dealt round-robin after shuffling, so fold sizes differ by at most one group.
    """
    from ..errors import InputError

    if group_by not in FOLD_GROUPS:
        raise InputError(None, f"unknown fold grouping {group_by!r}", f"use one of {', '.join(FOLD_GROUPS)}")
    group_of = (lambda r: r.patient_id) if group_by == "patient" else source_ct_of
    groups = sorted({group_of(record) for record in records})
    if len(groups) < n_folds:
        raise InputError(None, f"{len(groups)} {group_by}s cannot fill {n_folds} folds",
                         "use fewer folds" + (" or fold by patient" if group_by == "ct" else ""))
    order = np.random.default_rng(seed).permutation(len(groups))
    fold_of = {groups[index]: position % n_folds for position, index in enumerate(order)}
    for record in records:
        record.fold = fold_of[group_of(record)]
    return records


def split(records: list[CaseRecord], test_fold: int) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """(training cases, held-out cases) for one fold."""
    return ([r for r in records if r.fold != test_fold], [r for r in records if r.fold == test_fold])
