"""``bmdgan build-dataset``: paired dataset from a table of real cases (radiograph, CT, registered pose...)."""

from __future__ import annotations

HELP = "build a paired dataset from a CSV of real cases; identifying data never leaves the source"


def add_arguments(parser) -> None:
    parser.add_argument("table", help="CSV: radiograph, ct, side, geometry[, labels, landmarks, calibration, "
                                      "dxa_bmd_g_cm2, pose, single_hip] (see bmdgan.datasets.builder)")
    parser.add_argument("--out", required=True, help="dataset folder (created, or finished when it exists)")
    parser.add_argument("--key", default=None, help="secret key of the pseudonyms (default: $BMDGAN_PSEUDONYM_KEY)")
    parser.add_argument("--image-size", default="512x256", help="rows x columns")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    import os

    from bmdgan.datasets.builder import build_dataset
    from bmdgan.datasets.folds import assign_patient_folds, check_fold_count
    from bmdgan.datasets.format import (existing_header, read_manifest, refuse_changed_settings, rewrite_manifest,
                                        update_header)
    from bmdgan.errors import InputError

    key = args.key or os.environ.get("BMDGAN_PSEUDONYM_KEY")
    if not key:
        raise InputError(None, "no pseudonym key", "give --key or set BMDGAN_PSEUDONYM_KEY (keep it secret)")
    rows, columns = (int(v) for v in args.image_size.lower().split("x"))
    check_fold_count(args.folds)
    fold_settings = {"folds": args.folds, "seed": args.seed}
    # Finishing or extending a dataset keeps its folds; other fold settings would move cases under a training run.
    refuse_changed_settings(args.out, existing_header(args.out).get("fold_settings"), fold_settings)
    report = build_dataset(args.table, args.out, key, (rows, columns))
    update_header(args.out, {"fold_settings": fold_settings})
    records = read_manifest(args.out)
    if len({r.patient_id for r in records}) >= args.folds:
        rewrite_manifest(args.out, assign_patient_folds(records, args.folds, args.seed))
    for row, reason in report["skipped"].items():
        print(f"skipped {row}: {reason}")
    print(f"{len(report['built'])} cases built, {len(report['skipped'])} skipped -> {args.out}")
    return 0
