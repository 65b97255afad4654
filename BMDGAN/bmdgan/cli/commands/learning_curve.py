"""``bmdgan learning-curve``: whole-CT held-out accuracy against the number of real CTs trained on."""

from __future__ import annotations

from bmdgan.cli.options import add_device, add_fold_training, add_out, add_seed, comma_list

HELP = "held-out accuracy against the real CTs trained on (nested subsets, same steps), with a picture; resumable"


def add_arguments(parser) -> None:
    parser.add_argument("dataset", help="cohort dealt into folds by source CT (simulate-cohort --fold-by ct)")
    add_out(parser, "folder of the runs, learning_curve.json and learning_curve_<target>.png")
    parser.add_argument(
        "--sizes",
        type=comma_list(int, example="3,6"),
        default="3,6",
        help="numbers of training CTs below all of them, comma-separated (default 3,6); all CTs is always a point",
    )
    parser.add_argument(
        "--bone-sets",
        type=comma_list(str, choices=("real", "virtual"), example="real,virtual"),
        default=None,
        help="what each point trains on: 'real' (the chosen CTs' real bones) and/or 'virtual' (with the virtual "
        "anatomies and transplants made from them), comma-separated (default: both where the cohort has virtual "
        "bones, else real)",
    )
    add_fold_training(parser, "0,1,2,3")
    add_seed(parser, what="order the training CTs are taken in")
    add_device(parser)


def run(args) -> int:
    from bmdgan.evaluation.learning_curve import curve_table, learning_curve
    from bmdgan.training.config import load_config

    points = learning_curve(
        load_config(args.config),
        args.dataset,
        args.out,
        list(args.sizes),
        list(args.folds),
        args.targets,
        args.seed,
        args.device,
        bone_sets=tuple(args.bone_sets) if args.bone_sets else None,
    )
    for target in args.targets:
        print(f"{target}, pooled over folds {list(args.folds)} ({points[-1]['images']} held-out images):")
        for row in curve_table(points, target):
            methods = "  ".join(
                f"{method} PCC {pcc:.3f} MAE {mae:.4g}" for method, (pcc, mae) in row["methods"].items()
            )
            print(f"  {row['bone_set']:>7} {row['size']!s:>4} CTs ({row['training_bones']:.1f} bones): {methods}")
    print(f"picture: {args.out}/learning_curve_<target>.png")
    return 0
