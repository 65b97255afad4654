"""``bmdgan evaluate``: a model on a dataset's held-out fold: metrics (JSON, CSV) and plots."""

from __future__ import annotations

import argparse

from bmdgan.cli.options import add_device, add_out, comma_list

HELP = "evaluate a model on a dataset fold: PCC, ICC, MAE, SEE, RMS-CV, Bland-Altman, PSNR/Dice, robustness"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--dataset", required=True, help="dataset folder with ground truth")
    parser.add_argument(
        "--fold",
        type=fold_or_all,
        default=None,
        help="held-out fold to evaluate, or 'all' for every case (default: on the model's own training "
        "dataset the fold it was trained without, on any other dataset every case)",
    )
    add_out(parser, "output folder for metrics.json, predictions.csv and plots")
    parser.add_argument(
        "--jpeg-qualities",
        type=comma_list(int, example="95,75"),
        default="95,75,50,25",
        help="JPEG qualities of the robustness test, comma-separated; '' to skip (default %(default)s)",
    )
    parser.add_argument(
        "--bit-depths",
        type=comma_list(int, example="12,8"),
        default="12,10,8,6",
        help="bit depths of the robustness test, comma-separated; '' to skip (default %(default)s)",
    )
    parser.add_argument(
        "--poses",
        type=comma_list(example="standing,supine"),
        default=None,
        help="evaluate these poses only, comma-separated",
    )
    add_device(parser)


def fold_or_all(text: str) -> int | str:
    """argparse type of ``--fold``: a fold number or ``all``."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a fold number nor 'all'") from None


def held_out_fold(requested: int | str | None, dataset: str, provenance: dict) -> int | None:
    """The fold to evaluate: as requested, else the one the model never saw when ``dataset`` is the one it was
    trained on (all cases of that dataset would score training images), else every case (None)."""
    import sys
    from pathlib import Path

    trained_on, trained_without = provenance.get("dataset"), provenance.get("fold")
    own_dataset = trained_on is not None and Path(trained_on).resolve() == Path(dataset).resolve()
    if requested == "all":
        fold = None
    elif requested is not None:
        fold = int(requested)
    elif own_dataset and trained_without is not None:
        print(f"evaluating fold {trained_without}, the fold this model was trained without (--fold all for every case)")
        return trained_without
    else:
        return None
    if own_dataset and fold != trained_without:
        print(
            f"warning: this model was trained on {dataset} without fold {trained_without} only: the cases "
            "evaluated include training cases",
            file=sys.stderr,
        )
    return fold


def run(args) -> int:
    from bmdgan.evaluation.evaluate import evaluate, write_evaluation
    from bmdgan.inference.model import DecompositionModel

    model = DecompositionModel.load(args.model, args.device)
    fold = held_out_fold(args.fold, args.dataset, model.description.get("provenance", {}))
    result = evaluate(model, args.dataset, fold, args.jpeg_qualities, args.bit_depths, poses=args.poses or None)
    folder = write_evaluation(args.out, result)
    report = result["report"]
    print(
        f"{report['cases']} cases (fold {report['fold']}): PF-DRR PSNR {report['pf_drr']['psnr_db_mean']:.1f} dB, "
        f"Dice {report['pf_drr']['dice_mean']:.3f}"
    )
    print(f"  {'method':<26}{'target':<17}{'PCC':>7}{'ICC':>7}{'MAE':>9}{'SEE':>9}{'RMS-CV %':>10}")
    for method, targets in report["methods"].items():
        for target, metrics in targets.items():
            if metrics:
                m = metrics["all"]
                cv = f"{m['rms_cv_percent']:.1f}" if m["rms_cv_percent"] is not None else "-"
                print(
                    f"  {method:<26}{target:<17}{m['pcc']:>7.3f}{m['icc']:>7.3f}{m['mae']:>9.4g}{m['see']:>9.4g}"
                    f"{cv:>10}"
                )
    print(f"-> {folder}")
    return 0
