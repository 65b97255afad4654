"""Cross-validation folds: every image of a patient lands in the same fold.

Folds by ``patient`` (the paper's split) hold out virtual patients; in a virtual cohort those share their bones
with training patients made from the same CT. Folds by ``ct`` hold out whole source CTs, so every held-out bone is
one the model never saw: the honest test of generalisation to new anatomy.

A femur placed into another CT's body (:mod:`bmdgan.cohort.transplant`) has two source CTs: its record sits in the
body's fold and names the femur's CT as ``donor_ct`` in its provenance. With folds by CT it trains a fold only when
neither CT is held out, and is tested only in a fold that holds out both (:func:`split`).
"""

from __future__ import annotations

import json
import re

import numpy as np

from ..errors import InputError
from .format import CaseRecord

FOLD_GROUPS = ("patient", "ct")


def _provenance(record: CaseRecord) -> dict:
    """A record's provenance (the cohort's JSON object); empty where it holds none (real patients)."""
    try:
        provenance = json.loads(record.provenance)
    except json.JSONDecodeError:
        return {}
    return provenance if isinstance(provenance, dict) else {}


def source_ct_of(record: CaseRecord) -> str:
    """The real CT a virtual patient was made from (its provenance), or the patient itself for a real one."""
    return _provenance(record).get("ct") or record.patient_id


def source_cts_of(record: CaseRecord) -> tuple[str, ...]:
    """Every real CT a record's images were made from: its source CT, then the CT its femur came from, if another."""
    donor = _provenance(record).get("donor_ct")
    return (source_ct_of(record), donor) if donor else (source_ct_of(record),)


def is_virtual_bone(record: CaseRecord) -> bool:
    """Whether a virtual patient's bone was made from real ones rather than scanned: a femur placed into another
    CT's body (a second source CT), or a virtual anatomy. A cohort names its virtual patients after the bone they
    were drawn on (``<entry>-vNNN``, :mod:`bmdgan.cohort.virtual_patient`): a real bone's entry is its source CT,
    an anatomy's is the CT's id with its own suffix (``STS_020-a00``). Cases without a source CT (real patients)
    are real bones."""
    provenance = _provenance(record)
    if not provenance.get("ct"):
        return False
    return bool(provenance.get("donor_ct")) or re.sub(r"-v\d+$", "", record.patient_id) != provenance["ct"]


def ct_folds(records: list[CaseRecord]) -> dict[str, int]:
    """{source CT: fold} of the CTs whose own cases (one source) all lie in one fold: every CT when folds are by CT,
    none that a patient split spread over folds."""
    folds: dict[str, set[int]] = {}
    for record in records:
        if len(source_cts_of(record)) == 1:
            folds.setdefault(source_ct_of(record), set()).add(record.fold)
    return {ct: next(iter(found)) for ct, found in folds.items() if len(found) == 1}


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
    """(training cases, held-out cases) for one fold. A case made from two CTs (a transplant) counts in the folds of
    both (:func:`ct_folds`): it trains only when neither is held out and is held out only when both are, so no bone
    of a held-out CT is trained on and no held-out case holds a trained bone."""
    fold_of_ct = ct_folds(records)

    def folds_of(record: CaseRecord) -> set[int]:
        return {record.fold} | {fold_of_ct[ct] for ct in source_cts_of(record)[1:] if ct in fold_of_ct}

    training = [r for r in records if test_fold not in folds_of(r)]
    held_out = [r for r in records if folds_of(r) == {test_fold}]
    return training, held_out
