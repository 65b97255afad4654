"""``bmdgan evaluate``: a model on a dataset's held-out fold: metrics (JSON, CSV) and plots."""

from __future__ import annotations

HELP = "evaluate a model on a dataset fold: PCC, ICC, MAE, SEE, RMS-CV, Bland-Altman, PSNR/Dice, robustness"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--dataset", required=True, help="dataset folder with ground truth")
    parser.add_argument("--fold", default=None,
                        help="held-out fold to evaluate, or 'all' for every case (default: on the model's own training "
                             "dataset the fold it was trained without, on any other dataset every case)")
    parser.add_argument("--out", required=True, help="output folder for metrics.json, predictions.csv and plots")
    parser.add_argument("--jpeg-qualities", default="95,75,50,25", help="comma-separated; empty to skip")
    parser.add_argument("--bit-depths", default="12,10,8,6", help="comma-separated; empty to skip")
    parser.add_argument("--poses", default=None, help="evaluate these poses only (comma-separated)")
    parser.add_argument("--device", default="cpu")


def _levels(text: str) -> tuple[int, ...]:
    return tuple(int(value) for value in text.split(",") if value.strip())


def held_out_fold(requested: str | None, dataset: str, provenance: dict) -> int | None:
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
        print(f"warning: this model was trained on {dataset} without fold {trained_without} only: the cases "
              "evaluated include training cases", file=sys.stderr)
    return fold


def run(args) -> int:
    from bmdgan.evaluation.evaluate import evaluate, write_evaluation
    from bmdgan.inference import DecompositionModel

    model = DecompositionModel.load(args.model, args.device)
    poses = tuple(p.strip() for p in args.poses.split(",") if p.strip()) if args.poses else None
    fold = held_out_fold(args.fold, args.dataset, model.description.get("provenance", {}))
    result = evaluate(model, args.dataset, fold, _levels(args.jpeg_qualities), _levels(args.bit_depths), poses=poses)
    folder = write_evaluation(args.out, result)
    report = result["report"]
    print(f"{report['cases']} cases (fold {report['fold']}): PF-DRR PSNR {report['pf_drr']['psnr_db_mean']:.1f} dB, "
          f"Dice {report['pf_drr']['dice_mean']:.3f}")
    print(f"  {'method':<26}{'target':<17}{'PCC':>7}{'ICC':>7}{'MAE':>9}{'SEE':>9}{'RMS-CV %':>10}")
    for method, targets in report["methods"].items():
        for target, metrics in targets.items():
            if metrics:
                m = metrics["all"]
                cv = f"{m['rms_cv_percent']:.1f}" if m["rms_cv_percent"] is not None else "-"
                print(f"  {method:<26}{target:<17}{m['pcc']:>7.3f}{m['icc']:>7.3f}{m['mae']:>9.4g}{m['see']:>9.4g}"
                      f"{cv:>10}")
    print(f"-> {folder}")
    return 0
