"""``bmdgan package-model``: copy a trained model for shipping and write its model card."""

from __future__ import annotations

from bmdgan.cli.options import add_out, comma_list, titled_folder

HELP = "copy a trained model (safetensors + model.json) to a folder and write MODEL_CARD.md from the run's facts"


def add_arguments(parser) -> None:
    parser.add_argument("run_folder", metavar="RUN", help="training run folder (its 'model' folder is packaged)")
    add_out(parser, "destination, e.g. Resources/Models/default")
    parser.add_argument(
        "--cross-validation",
        action="append",
        default=[],
        type=titled_folder,
        metavar="TITLE=FOLDER",
        help="a whole-CT cross-validation of the model's recipe (bmdgan cross-validate --out, or learning-curve's "
        "OUT/all) to report first, repeatable",
    )
    parser.add_argument(
        "--learning-curve",
        default=None,
        metavar="FOLDER",
        help="a bmdgan learning-curve --out folder to report after the cross-validation",
    )
    parser.add_argument(
        "--evaluation",
        action="append",
        default=[],
        type=titled_folder,
        metavar="TITLE=FOLDER",
        help="an evaluation folder (bmdgan evaluate --out) to report, repeatable",
    )
    parser.add_argument("--training-command", required=True, help="the command that trained it (for the card)")
    parser.add_argument("--training-minutes", type=float, default=None, help="its training time (minutes)")
    parser.add_argument(
        "--cts",
        type=comma_list(example="STS_001,STS_002"),
        required=True,
        help="CT ids of the training cohort, comma-separated",
    )
    parser.add_argument(
        "--held-out-cts",
        type=comma_list(example="STS_012"),
        required=True,
        help="CT ids never used in training, comma-separated",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier package-model result in the destination (never anything else)",
    )


def run(args) -> int:
    from pathlib import Path

    from bmdgan.evaluation.model_card import package_model

    out = package_model(
        Path(args.run_folder) / "model",
        args.run_folder,
        args.out,
        dict(args.evaluation),
        args.training_command,
        args.training_minutes,
        list(args.cts),
        list(args.held_out_cts),
        args.overwrite,
        dict(args.cross_validation),
        None if args.learning_curve is None else Path(args.learning_curve),
    )
    print(f"packaged -> {out} (MODEL_CARD.md)")
    return 0
