"""``bmdgan evaluate``: a model on a dataset's held-out fold: metrics (JSON, CSV) and plots."""

from __future__ import annotations

HELP = "evaluate a model on a dataset fold: PCC, ICC, MAE, SEE, RMS-CV, Bland-Altman, PSNR/Dice, robustness"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--dataset", required=True, help="dataset folder with ground truth")
    parser.add_argument("--fold", type=int, default=None, help="held-out fold to evaluate (default: all cases)")
    parser.add_argument("--out", required=True, help="output folder for metrics.json, predictions.csv and plots")
    parser.add_argument("--jpeg-qualities", default="95,75,50,25", help="comma-separated; empty to skip")
    parser.add_argument("--bit-depths", default="12,10,8,6", help="comma-separated; empty to skip")
    parser.add_argument("--poses", default=None, help="evaluate these poses only (comma-separated)")
    parser.add_argument("--device", default="cpu")


def _levels(text: str) -> tuple[int, ...]:
    return tuple(int(value) for value in text.split(",") if value.strip())


def run(args) -> int:
    from bmdgan.evaluation.evaluate import evaluate, write_evaluation
    from bmdgan.inference import DecompositionModel

    model = DecompositionModel.load(args.model, args.device)
    poses = tuple(p.strip() for p in args.poses.split(",") if p.strip()) if args.poses else None
    result = evaluate(model, args.dataset, args.fold, _levels(args.jpeg_qualities), _levels(args.bit_depths),
                      poses=poses)
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
