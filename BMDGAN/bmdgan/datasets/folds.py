"""Patient-level cross-validation folds: every image of a patient lands in the same fold."""

from __future__ import annotations

import numpy as np

from .format import CaseRecord


def assign_patient_folds(records: list[CaseRecord], n_folds: int = 5, seed: int = 0) -> list[CaseRecord]:
    """Set ``fold`` of every record (0..n_folds-1) from a seeded shuffle of the patient ids.

    Patients are dealt round-robin after shuffling, so fold sizes differ by at most one patient.
    """
    patients = sorted({record.patient_id for record in records})
    if len(patients) < n_folds:
        from ..errors import InputError

        raise InputError(None, f"{len(patients)} patients cannot fill {n_folds} folds", "use fewer folds")
    order = np.random.default_rng(seed).permutation(len(patients))
    fold_of = {patients[index]: position % n_folds for position, index in enumerate(order)}
    for record in records:
        record.fold = fold_of[record.patient_id]
    return records


def split(records: list[CaseRecord], test_fold: int) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """(training cases, held-out cases) for one fold."""
    return ([r for r in records if r.fold != test_fold], [r for r in records if r.fold == test_fold])
