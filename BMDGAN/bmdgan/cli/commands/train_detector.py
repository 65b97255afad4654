"""``bmdgan train-detector``: train the hip detector on landmark views (the first stage, and with ``--refine`` the
head refinement); with ``--cross-validate`` first measure it on CTs it never saw (whole-CT folds). A folder that
already holds a finished stage keeps it, so a killed run, or a detector given a refinement later, trains only what
is missing. ``--hold-out`` keeps CTs out of every training (the demo's sample CT), as ``train_default.sh`` keeps
them out of the model's. ``--members N`` trains N first stages with seeds SEED..SEED+N-1 (each in
``members/seed_S``, resumable on its own) and joins them into one ensemble detector; its cross-validation also
reports each member alone, so the ensemble is measured against the trainings it is made of. The cross-validation
keeps every reading however unsure and reports what each confidence threshold trades (hips within 5 mm against
detections on no-hip images); ``--found-confidence`` gives the trained detectors (folds and final) the threshold
chosen from it, also to a finished detector, whose weights are then kept. ``--measured-views`` measures the fold
detectors on another folder's views of the same CTs, so that a recipe trained on views rendered otherwise meets the
same held-out images as the one it is compared with; ``--cross-validation-only`` stops there."""

from __future__ import annotations

from bmdgan.cli.options import add_out, add_seed, comma_list, loss_weight, positive_int, probability

HELP = "train the hip detector on simulate-landmarks views (whole-CT cross-validation with --cross-validate)"


def add_arguments(parser) -> None:
    parser.add_argument("views", help="landmark-view folder made by 'bmdgan simulate-landmarks'")
    add_out(parser, "detector folder (hip_detector.json + .safetensors); cross-validation in OUT/cross_validation")
    parser.add_argument(
        "--epochs", type=positive_int, default=28, help="training epochs (default 28, as the bundled detector)"
    )
    parser.add_argument(
        "--refine",
        action="store_true",
        help="also train the second stage that finds the head again at 1 mm (bmdgan.detection.refinement); off by "
        "default: on CTs never seen it helped thigh CTs but hurt the whole-pelvis ones (docs/hip-detection.md)",
    )
    parser.add_argument(
        "--refiner-epochs", type=positive_int, default=None, help="training epochs of the second stage (default 15)"
    )
    parser.add_argument(
        "--head-disks",
        type=loss_weight,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="WEIGHT",
        help="also learn each femoral head's disc (its projected outline filled, from the views' head radii), its "
        "loss weighted by WEIGHT (default 1), and read the head centre as the disc's centroid "
        "(bmdgan.detection.layout.HEAD_DISKS)",
    )
    parser.add_argument(
        "--cross-validate",
        action="store_true",
        help="first train one detector per whole-CT fold and measure it on the held-out CTs' views",
    )
    parser.add_argument(
        "--measured-views",
        default=None,
        help="with --cross-validate, measure on the held-out CTs' views in this landmark-view folder (of the same CTs) "
        "instead of those of VIEWS: two training recipes (e.g. views rendered with other --ap-positioning-deg) then "
        "meet the same held-out images",
    )
    parser.add_argument(
        "--cross-validation-only",
        action="store_true",
        help="with --cross-validate, stop after it (no detector trained on every CT): a recipe measured, not shipped",
    )
    parser.add_argument("--fold-count", type=positive_int, default=4, help="whole-CT folds (default 4)")
    parser.add_argument(
        "--folds",
        type=comma_list(int, example="0,1"),
        default="",
        help="with --cross-validate, train and measure only these folds, comma-separated (default: all; e.g. 0,1, "
        "the folds holding the whole-pelvis CTs, on a CPU)",
    )
    parser.add_argument(
        "--hold-out",
        type=comma_list(),
        default="",
        help="CT ids whose views train no detector, comma-separated (e.g. STS_012, the bundled sample's CT); with "
        "--cross-validate they are still read as held-out CTs in their folds",
    )
    parser.add_argument(
        "--members",
        type=positive_int,
        default=1,
        help="first stages trained with seeds SEED, SEED+1, ... and read as one ensemble (mean logits; default 1)",
    )
    parser.add_argument(
        "--found-confidence",
        type=probability,
        default=None,
        help="confidence (0-1) below which the detectors trained here report no hip on a side, chosen from a "
        "cross-validation's threshold sweep (default: a finished detector keeps its own; a new one has 0.5)",
    )
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU threads (default 2)")
    add_seed(parser, what="network initialisation and training draws (members: the first member's)")


def run(args) -> int:
    import json
    from pathlib import Path

    import torch

    from bmdgan.atomic import atomic_write_text
    from bmdgan.detection.detector import FOUND_CONFIDENCE, HipDetector
    from bmdgan.detection.landmark_folder import read_views
    from bmdgan.detection.training import (
        ct_folds,
        evaluate_detector,
        offsets_by_ct,
        plot_head_errors,
        summarise,
        threshold_sweep,
        views_without,
    )
    from bmdgan.errors import InputError

    torch.set_num_threads(args.threads)
    views = read_views(args.views)
    if not views:
        raise InputError(args.views, "holds no landmark views", "run 'bmdgan simulate-landmarks' first")
    unknown = sorted(set(args.hold_out) - {v.ct for v in views})
    if unknown:
        raise InputError(args.views, f"holds no views of {unknown[0]} (--hold-out)", "give CT ids of its views")
    trainable = views_without(views, set(args.hold_out))
    out = Path(args.out)
    if set(args.folds) - set(range(args.fold_count)):
        raise InputError(None, f"--folds {list(args.folds)} is not among folds 0-{args.fold_count - 1}", "give fewer")
    if (args.measured_views or args.cross_validation_only) and not args.cross_validate:
        raise InputError(None, "--measured-views and --cross-validation-only belong to --cross-validate", "add it")
    measured_folder = args.measured_views or args.views
    measured_views = read_views(measured_folder) if args.measured_views else views
    if {v.ct for v in measured_views} != {v.ct for v in views}:  # the same CTs: the same folds
        raise InputError(
            measured_folder, "holds views of other CTs than VIEWS (--measured-views)", "give views of the same CTs"
        )
    if args.cross_validate:
        folds = ct_folds(views, args.fold_count)
        measured = sorted(args.folds or range(args.fold_count))
        rows, member_rows, thresholds = [], [], set()
        for fold in measured:
            fold_folder = out / "cross_validation" / f"fold_{fold}"
            held_out = [v for v in measured_views if folds[v.ct] == fold and v.anatomy is None]  # real bones only
            print(f"fold {fold}: training without {sorted({v.ct for v in held_out})}")
            held_out_cts = {ct for ct, ct_fold in folds.items() if ct_fold == fold}
            _train_missing(args, views_without(trainable, held_out_cts), fold_folder)
            fold_detector = HipDetector.load(fold_folder)
            thresholds.add(fold_detector.found_confidence)
            fold_rows = evaluate_detector(fold_detector, measured_folder, held_out)
            rows += [{**row, "fold": fold} for row in fold_rows]
            for index, member in enumerate(_member_folders(args, fold_folder) if args.members > 1 else []):
                alone = evaluate_detector(HipDetector.load(member), measured_folder, held_out)
                member_rows += [{**row, "fold": fold, "member": index} for row in alone]
        threshold = thresholds.pop() if len(thresholds) == 1 else FOUND_CONFIDENCE  # the fold detectors' own
        summary = {
            "folds": {ct: fold for ct, fold in folds.items()},
            "measured_folds": measured,
            **summarise(rows, min_confidence=threshold),
            "threshold_sweep": threshold_sweep(rows, SWEPT_CONFIDENCES),
            "offsets_by_ct": offsets_by_ct(rows, min_confidence=threshold),
        }
        if member_rows:
            summary["members"] = [
                {
                    "seed": args.seed + index,
                    **summarise([row for row in member_rows if row["member"] == index], min_confidence=threshold),
                }
                for index in range(args.members)
            ]
            atomic_write_text(
                out / "cross_validation" / "member_detections.json", json.dumps(member_rows, indent=1) + "\n"
            )
        atomic_write_text(out / "cross_validation" / "detections.json", json.dumps(rows, indent=1) + "\n")
        atomic_write_text(out / "cross_validation" / "summary.json", json.dumps(summary, indent=2) + "\n")
        plot_head_errors(rows, out / "cross_validation" / "head_errors.png", min_confidence=threshold)
        for view, figures in summary.items():
            if isinstance(figures, dict) and "hips" in figures:
                print(
                    f"{view}: {figures['within_tolerance']}/{figures['hips']} head centres within "
                    f"{summary['tolerance_mm']:.0f} mm ({100 * figures['share_within_tolerance']:.1f} %), median "
                    f"{figures['median_head_error_mm']} mm (first stage alone: "
                    f"{100 * figures['first_stage_share_within_tolerance']:.1f} %)"
                )
        print(
            f"at confidence {threshold:g}: false hips {summary['false_hips']}; no-hip images with a detection "
            f"{summary['no_hip_images_with_a_detection']}/{summary['no_hip_images']}"
        )
        offsets = summary["offsets_by_ct"]
        if offsets["groups"]:
            print(
                f"per held-out CT, view and side: mean head offset {offsets['median_offset_length_mm']:.1f} mm, "
                f"spread about it {offsets['median_spread_mm']:.1f} mm (medians); without each one's mean offset "
                f"{offsets['within_tolerance_without_group_offsets']}/{offsets['found']} found hips would lie within "
                f"{summary['tolerance_mm']:.0f} mm ({offsets['within_tolerance']} now)"
            )
        for point in summary["threshold_sweep"]:
            print(
                f"confidence {point['min_confidence']:g}: {point['within_tolerance']}/{point['hips']} within "
                f"{summary['tolerance_mm']:.0f} mm, {point['found']} found, false hips {point['false_hips']}, no-hip "
                f"images with a detection {point['no_hip_images_with_a_detection']}"
            )
        for member in summary.get("members", []):
            print(
                f"member seed {member['seed']} alone: "
                + ", ".join(
                    f"{view} {figures['within_tolerance']}/{figures['hips']}"
                    for view, figures in member.items()
                    if isinstance(figures, dict) and "hips" in figures
                )
                + f" within {summary['tolerance_mm']:.0f} mm"
            )
        if args.cross_validation_only:
            return 0
    _train_missing(args, trainable, out)
    print(f"detector trained on {len(trainable)} views of {len({v.ct for v in trainable})} CTs -> {out}")
    return 0


SWEPT_CONFIDENCES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)
"""Confidence thresholds the cross-validation reports."""


def _member_folders(args, folder):
    """Where each member of an ensemble detector in ``folder`` is trained (one finished detector each)."""
    return [folder / "members" / f"seed_{args.seed + index}" for index in range(args.members)]


def _train_missing(args, views, folder) -> None:
    """Train the first stage (or each missing member, then join them) unless ``folder`` holds a finished one, then
    (``--refine``) the second stage unless it has one. A folder holding a detector of another member count is
    refused rather than silently kept."""
    import json

    from bmdgan.detection.detector import DESCRIPTION, finished_detector, set_found_confidence, write_ensemble
    from bmdgan.detection.training import REFINER_EPOCHS, train_detector, train_refiner

    description = folder / DESCRIPTION
    if not finished_detector(folder, args.members):  # a finished one is kept: a killed run trains what is missing
        if args.members == 1:
            train_detector(args.views, views, folder, args.epochs, seed=args.seed, head_disks=args.head_disks)
        else:
            member_folders = _member_folders(args, folder)
            for index, member in enumerate(member_folders):
                if not finished_detector(member, 1):
                    train_detector(
                        args.views, views, member, args.epochs, seed=args.seed + index, head_disks=args.head_disks
                    )
            write_ensemble(folder, member_folders)
    if args.refine and "refiner" not in json.loads(description.read_text(encoding="utf-8")):
        train_refiner(args.views, views, folder, args.refiner_epochs or REFINER_EPOCHS, seed=args.seed)
    if args.found_confidence is not None:
        set_found_confidence(folder, args.found_confidence)
