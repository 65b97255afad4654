"""``bmdgan train``: train the decomposition networks (stage 1, stage 2 or both) on a dataset folder."""

from __future__ import annotations

from bmdgan.cli.options import add_device, add_out, comma_list, positive_int

HELP = "train the decomposition networks (hierarchical learning) on a dataset; torchrun-compatible"


def add_arguments(parser) -> None:
    parser.add_argument("dataset", help="dataset folder (dataset.json + manifest.csv)")
    add_out(parser, "run folder (created, or resumed when it exists)")
    parser.add_argument("--config", default="cpu", help="configuration name (paper, cpu, smoke) or YAML path")
    parser.add_argument("--fold", type=int, default=None, help="held-out fold (trains on the others); default: all")
    parser.add_argument(
        "--stages",
        choices=("both", "stage1", "stage2", "stage3", "baseline"),
        default="both",
        help="both: stage 1 then 2 (decomposition); stage3: regression from the stage-2 encoder; "
        "baseline: direct regression CNN",
    )
    parser.add_argument(
        "--targets",
        type=comma_list(example="ct_abmd_g_cm2"),
        default="ct_abmd_g_cm2,qct_vbmd_mg_cm3",
        help="BMD columns for stage3/baseline (one model each), comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--no-hierarchical", action="store_true", help="train stage 2 from scratch (the paper's no-HL ablation)"
    )
    parser.add_argument(
        "--pretrained",
        default=None,
        metavar="RUN",
        help="start stage 2 from RUN's last stage-2 weights (pretraining on more images) instead of stage 1's, "
        "which is then not trained; refused where RUN saw a CT that --fold holds out",
    )
    add_device(parser)
    parser.add_argument(
        "--stop-after-epochs",
        type=positive_int,
        default=None,
        help="stop after this many epochs in this call (resume later by running again)",
    )
    parser.add_argument("--epochs", type=positive_int, default=None, help="override the epochs of every stage")
    parser.add_argument(
        "--poses",
        type=comma_list(example="standing,supine"),
        default=None,
        help="train on these poses only, comma-separated: e.g. standing,supine for the paper's unseen-pose experiment",
    )
    parser.add_argument("--batch-size", type=positive_int, default=None, help="override the per-process batch size")


def run(args) -> int:
    from dataclasses import replace

    from bmdgan.training.config import load_config
    from bmdgan.training.run import train_run

    config = load_config(args.config)
    poses = args.poses or None
    if args.epochs is not None:
        config = replace(config, epochs={stage: args.epochs for stage in config.epochs})
    if args.batch_size is not None:
        config = replace(config, batch_size=args.batch_size)
    if args.stages in ("stage3", "baseline"):
        from bmdgan.training.regression import train_regression

        kind = "decomposition" if args.stages == "stage3" else "baseline"
        for target in args.targets:
            history = train_regression(
                config,
                args.dataset,
                args.out,
                target,
                kind,
                args.fold,
                args.device,
                args.stop_after_epochs,
                poses=poses,
            )
            if history:
                print(
                    f"{kind} regression of {target}: {len(history)} steps, last weighted L1 {history[-1]['loss']:.4g}"
                )
        return 0
    stages = ("stage1", "stage2") if args.stages == "both" else (args.stages,)
    histories = train_run(
        config,
        args.dataset,
        args.out,
        args.fold,
        stages,
        not args.no_hierarchical,
        args.device,
        args.stop_after_epochs,
        poses=poses,
        pretrained=args.pretrained,
    )
    for stage, history in histories.items():
        if history:
            print(
                f"{stage}: {len(history)} steps, last generator loss {history[-1]['g_total']:.4f}, "
                f"L1 {history[-1]['g_l1']:.4f}"
            )
    return 0
