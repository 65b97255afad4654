"""``bmdgan calibrate-confidence``: a model's prediction intervals and out-of-distribution limits from held-out
cohorts, written into its model.json (:mod:`bmdgan.evaluation.confidence`)."""

from __future__ import annotations

from bmdgan.cli.options import add_out

HELP = "calibrate a model's prediction intervals and out-of-distribution limits on held-out cohorts (model.json)"


def add_arguments(parser) -> None:
    parser.add_argument("model", help="model folder to calibrate (bmdgan train's RUN/model, or a shipped model)")
    add_out(parser, "the calibrated model: the model folder itself (its model.json is replaced) or a new folder")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier calibrate-confidence result (never anything else)"
    )
    parser.add_argument(
        "--held-out-cts",
        nargs="*",
        default=[],
        metavar="DATASET",
        help="cohorts (simulate-cohort) of source CTs the model never saw: the intervals (at least 3 CTs; grouped by "
        "CT, checked leaving each CT out) unless --cross-validation is given, and the limits",
    )
    parser.add_argument(
        "--cross-validation",
        default=None,
        metavar="FOLDER",
        help="a whole-CT cross-validation of the model's recipe (bmdgan cross-validate --out, or learning-curve's "
        "OUT/all) to fit the intervals on, for a model trained on every CT",
    )
    parser.add_argument(
        "--other-site",
        nargs="*",
        default=[],
        metavar="DATASET",
        help="cohorts of the same unseen CTs at another site (--acquisition site:N): the intervals' coverage there, "
        "each CT against the interval fitted without it",
    )
    parser.add_argument(
        "--new-patients",
        nargs="*",
        default=[],
        metavar="DATASET",
        help="cohorts of new virtual patients of the model's training CTs: the limits only",
    )


def run(args) -> int:
    from bmdgan.evaluation.confidence import calibrate_confidence

    summary = calibrate_confidence(
        args.model,
        args.out,
        args.held_out_cts,
        args.new_patients,
        args.other_site,
        overwrite=args.overwrite,
        cross_validation=args.cross_validation,
    )
    print(
        f"intervals from {summary['intervals_from']}: {summary['held_out_images']} images of "
        f"{len(summary['held_out_cts'])} CTs ({', '.join(summary['held_out_cts'])}); limits also on "
        f"{summary['new_patient_images']} new patients' images"
    )
    print("90 % intervals, each CT left out in turn (coverage, median width):")
    for method, targets in summary["interval_check_leaving_each_ct_out"].items():
        for target, check in targets.items():
            per_ct = ", ".join(f"{ct} {c['coverage']:.0%} (bias {c['bias']:+.3g})" for ct, c in check["per_ct"].items())
            print(f"  {method:<26}{target:<17} {check['coverage']:.1%}, width {check['width']:.3g}: {per_ct}")
    for method, targets in summary["interval_check_other_site_leaving_each_ct_out"].items():
        for target, check in targets.items():
            print(f"  other site: {method:<14}{target:<17} {check['coverage']:.1%}, width {check['width']:.3g}")
    alarms = summary["false_alarms"]
    print(
        f"out-of-distribution limits: {alarms['flagged_in_sample']:.1%} of the {alarms['images']} held-out images "
        f"flagged ({alarms['flagged_leaving_each_ct_out']:.1%} with each CT's limits fitted on the others)"
    )
    print(f"  -> {args.out}")
    return 0
