"""``bmdgan cross-validate``: k-fold cross-validation of decomposition, decomposition+regression and baseline."""

from __future__ import annotations

from bmdgan.cli.options import add_device, add_fold_training, add_out

HELP = "patient-level k-fold cross-validation (stages 1-3 and the baseline per fold), pooled metrics, resumable"


def add_arguments(parser) -> None:
    parser.add_argument("dataset", help="dataset folder with folds in its manifest")
    add_out(parser, "folder of the fold runs and pooled_metrics.json")
    add_fold_training(parser, "0,1,2,3,4")
    parser.add_argument(
        "--pretrained",
        default=None,
        metavar="FOLDER",
        help="start fold N's stage 2 from FOLDER/foldN's last stage-2 weights instead of stage 1's (another "
        "cross-validation's --out, e.g. one trained on more images); refused where that run saw a CT fold N holds out",
    )
    add_device(parser)


def run(args) -> int:
    from bmdgan.evaluation.cross_validation import cross_validate
    from bmdgan.training.config import load_config

    folds = list(args.folds)
    pooled = cross_validate(
        load_config(args.config), args.dataset, args.out, folds, args.targets, args.device, pretrained=args.pretrained
    )
    print(f"pooled over folds {folds} ({pooled['images']} images):")
    for method, values in pooled["methods"].items():
        for target, m in values.items():
            cv = f", RMS-CV {m['rms_cv_percent']:.1f}%" if m["rms_cv_percent"] is not None else ""
            print(
                f"  {method:<26}{target:<17} PCC {m['pcc']:.3f}  ICC {m['icc']:.3f}  MAE {m['mae']:.4g}  "
                f"SEE {m['see']:.4g}{cv}"
            )
    print("bias per source CT (mean estimate - truth; n images):")
    for method, values in pooled["per_source_ct"].items():
        for target, per_ct in values.items():
            biases = ", ".join(f"{ct} {b['bias']:+.3g} (n {b['n']})" for ct, b in per_ct.items())
            print(f"  {method:<26}{target:<17} {biases}")
    print("within one CT / without the per-CT bias / spread of the estimates (SD estimate / SD truth):")
    for method, values in pooled["diagnosis"].items():
        for target, d in values.items():
            shown = [d[k] for k in ("within_ct_pcc_median", "pcc_without_ct_bias", "estimate_sd_over_truth_sd")]
            text = ["n/a" if v is None else f"{v:.2f}" for v in shown]
            print(f"  {method:<26}{target:<17} median PCC {text[0]}  PCC {text[1]}  SD ratio {text[2]}")
    return 0
