"""``bmdgan build-dataset``: paired dataset from a table of real cases (radiograph, CT, registered pose...)."""

from __future__ import annotations

from bmdgan.cli.options import add_image_size, add_out, add_seed, positive_int

HELP = "build a paired dataset from a CSV of real cases; identifying data never leaves the source"


def add_arguments(parser) -> None:
    parser.add_argument(
        "table",
        help="CSV: radiograph, ct, side, geometry[, labels, landmarks, calibration, "
        "dxa_bmd_g_cm2, pose] (see bmdgan.datasets.builder)",
    )
    add_out(parser, "dataset folder (created, or finished when it exists)")
    parser.add_argument("--key", default=None, help="secret key of the pseudonyms (default: $BMDGAN_PSEUDONYM_KEY)")
    add_image_size(parser)
    parser.add_argument("--fold-count", type=positive_int, default=5, help="cross-validation folds (2 or more)")
    add_seed(parser, what="fold assignment")


def run(args) -> int:
    import os

    from bmdgan.datasets.builder import build_dataset
    from bmdgan.datasets.folds import assign_patient_folds, check_fold_count
    from bmdgan.datasets.format import (
        existing_header,
        read_manifest,
        refuse_changed_settings,
        rewrite_manifest,
        update_header,
    )
    from bmdgan.errors import InputError

    key = args.key or os.environ.get("BMDGAN_PSEUDONYM_KEY")
    if not key:
        raise InputError(None, "no pseudonym key", "give --key or set BMDGAN_PSEUDONYM_KEY (keep it secret)")
    check_fold_count(args.fold_count)
    fold_settings = {"folds": args.fold_count, "seed": args.seed}
    # Finishing or extending a dataset keeps its folds; other fold settings would move cases under a training run.
    refuse_changed_settings(args.out, existing_header(args.out).get("fold_settings"), fold_settings)
    report = build_dataset(args.table, args.out, key, args.image_size)
    update_header(args.out, {"fold_settings": fold_settings})
    records = read_manifest(args.out)
    if len({r.patient_id for r in records}) >= args.fold_count:
        rewrite_manifest(args.out, assign_patient_folds(records, args.fold_count, args.seed))
    for row, reason in report["skipped"].items():
        print(f"skipped {row}: {reason}")
    print(f"{len(report['built'])} cases built, {len(report['skipped'])} skipped -> {args.out}")
    return 0
