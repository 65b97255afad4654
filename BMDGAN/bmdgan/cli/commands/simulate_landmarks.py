"""``bmdgan simulate-landmarks``: radiographs with exact hip landmarks, for training the hip detector."""

from __future__ import annotations

import argparse
import math

from bmdgan.cli.ct_options import add_segmentation
from bmdgan.cli.options import add_out, add_seed, comma_list, non_negative_int

HELP = "simulate radiographs with exact hip landmarks (AP pelvis, hip, thigh views) to train the hip detector"


def add_arguments(parser) -> None:
    parser.add_argument("cts", nargs="+", help="CT files, or folders of .nii.gz/.nrrd/.mha CTs")
    add_out(parser, "landmark-view folder (created, or finished when it exists)")
    parser.add_argument(
        "--exclude", type=comma_list(example="STS_012"), default="", help="CT ids to leave out, comma-separated"
    )
    parser.add_argument(
        "--per-hip", type=non_negative_int, default=16, help="hip views and as many thigh views per hip (default 16)"
    )
    parser.add_argument(
        "--ap-per-ct",
        type=non_negative_int,
        default=40,
        help="AP pelvis views per CT with both hips measurable (default 40)",
    )
    parser.add_argument(
        "--ct-views",
        type=non_negative_int,
        default=0,
        help="views of each CT as scanned (its HU, no virtual patient) at a 0.5-0.7 mm pitch, as the registration "
        "module pairs a CT with its patient's radiograph (default 0)",
    )
    parser.add_argument(
        "--ap-positioning-deg",
        type=positioning_ranges,
        default=None,
        metavar="LONG,LEFT_RIGHT,BEAM",
        help="half-ranges (degrees) of the patient's rotation on the table in the AP pelvis views: about the long "
        "axis, the left-right axis (pelvic tilt) and the beam (default: the cohorts' clinical ranges, "
        "bmdgan.cohort.pelvis_case.POSITIONING_DEG); wider ranges show each pelvis at more tilts",
    )
    parser.add_argument(
        "--screw-views",
        type=non_negative_int,
        default=0,
        help="views of each implant-free hip with three virtual screws across its neck (hip and thigh in turn), and as "
        "many AP pelvis views of a CT with two such hips, screws in each side in turn: users bring hips with screws "
        "(default 0)",
    )
    parser.add_argument(
        "--anatomies",
        type=non_negative_int,
        default=0,
        help="also make N virtual anatomies of every CT (as simulate-cohort --anatomies, same --seed) and render "
        "--per-anatomy hip and thigh views of each of their hips, and --ap-per-anatomy AP pelvis views of an anatomy "
        "of both hips of a whole pelvis (default 0)",
    )
    parser.add_argument(
        "--per-anatomy",
        type=non_negative_int,
        default=8,
        help="hip views and as many thigh views per hip of a virtual anatomy (default 8)",
    )
    parser.add_argument(
        "--ap-per-anatomy",
        type=non_negative_int,
        default=20,
        help="AP pelvis views per virtual anatomy of both hips of a whole pelvis (default 20: with --per-anatomy 8, "
        "the real CTs' mix of AP and single-hip views at half their number)",
    )
    parser.add_argument(
        "--transplants",
        type=non_negative_int,
        default=0,
        help="also place other CTs' femurs into N bodies of every whole-pelvis CT (as simulate-cohort --transplants) "
        "and render their views as an anatomy's (--per-anatomy, --ap-per-anatomy); whole-CT folds keep them away "
        "from the donors' folds too (default 0)",
    )
    parser.add_argument(
        "--moved-femurs",
        type=non_negative_int,
        default=0,
        help="also make N bodies of every whole-pelvis CT with each femur moved in its own hip joint (up to 3 mm along "
        "each axis, bmdgan.cohort.transplant.MOVE_MM) and render their views as an anatomy's (--per-anatomy, "
        "--ap-per-anatomy): the head sits elsewhere against the acetabulum than in the scan (default 0)",
    )
    parser.add_argument(
        "--prepared",
        default=None,
        help="folder of prepared CTs to reuse (e.g. a cohort's 'prepared'; default OUT/prepared)",
    )
    parser.add_argument(
        "--allow-metal",
        action="store_true",
        help="also label hips with an implant in their proximal-femur region (prepared with the metal left out of "
        "the density; marked so that no cohort uses them): users' radiographs show such hips, and a CT with one "
        "then gives AP pelvis views too",
    )
    add_segmentation(parser)
    add_seed(parser)


def positioning_ranges(text: str) -> tuple[float, float, float]:
    """argparse type of ``--ap-positioning-deg``: three half-ranges in degrees (0-45), about the long, left-right
    and beam axes (the order of :data:`bmdgan.cohort.pelvis_case.POSITIONING_DEG`)."""
    values = comma_list(float, example="10,15,3", unique=False)(text)
    if len(values) != 3 or not all(math.isfinite(v) and 0 <= v <= 45 for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not three half-ranges of 0-45 degrees (about the long, left-right and beam axes, "
            "e.g. 10,15,3)"
        )
    return values


def run(args) -> int:
    from pathlib import Path

    from bmdgan.cli.ct_options import ct_paths, segmentations_of
    from bmdgan.cohort.anatomy import prepare_anatomies
    from bmdgan.cohort.generator import prepare_cts
    from bmdgan.cohort.transplant import prepare_moved_femurs, prepare_transplants, transplant_host
    from bmdgan.detection.landmark_views import simulate_landmark_views
    from bmdgan.errors import InputError

    paths = ct_paths(args.cts, args.exclude)
    prepared = Path(args.prepared) if args.prepared else Path(args.out) / "prepared"
    print(f"preparing {len(paths)} CTs (labels, landmarks)...")
    ct_ids, skipped = prepare_cts(
        paths, prepared, segmentations=segmentations_of(args.segmentation), allow_metal=args.allow_metal
    )
    for ct_id, reason in skipped.items():
        print(f"  skipped {ct_id}: {reason}")
    if not ct_ids:
        raise InputError(None, "no CT could be prepared", "see the reasons above")
    anatomies = {}
    if args.anatomies:
        print(f"making {args.anatomies} virtual anatomies of every CT (deformed CTs, measured again)...")
        for ct_id in ct_ids:
            anatomies[ct_id], failed = prepare_anatomies(prepared, [ct_id], args.anatomies, args.seed)
            for key, reason in failed.items():
                print(f"  skipped {key}: {reason}")
    bodies = []  # (kind, entries, reasons of the failed ones) of each kind of body made from a whole pelvis
    if args.transplants:
        print(f"placing other CTs' femurs into {args.transplants} bodies of every whole pelvis (measured again)...")
        bodies.append(("transplant", *prepare_transplants(prepared, args.transplants, ct_ids)))
    if args.moved_femurs:
        print(f"moving the femurs of every whole pelvis in their joints, {args.moved_femurs} bodies of each...")
        bodies.append(("moved-femur", *prepare_moved_femurs(prepared, args.moved_femurs, args.seed, ct_ids)))
    for kind, entries, failed in bodies:
        for key, reason in failed.items():
            print(f"  skipped {key}: {reason}")
        if not entries and not failed:
            print(
                f"  no {kind} body: no CT given is a whole pelvis with both hips measurable (an implanted one is not)"
            )
        for entry in entries:  # filed under the CT it was made from: whole-CT folds keep its views with that CT
            anatomies.setdefault(transplant_host(entry), []).append(entry)
    counts = simulate_landmark_views(
        str(prepared),
        ct_ids,
        args.out,
        args.per_hip,
        args.ap_per_ct,
        args.seed,
        anatomies=anatomies,
        per_anatomy=args.per_anatomy,
        ap_per_anatomy=args.ap_per_anatomy,
        with_metal=args.allow_metal,
        ct_views=args.ct_views,
        screw_views=args.screw_views,
        ap_positioning_deg=args.ap_positioning_deg,
    )
    print(
        ", ".join(f"{n} {view} views" for view, n in sorted(counts.items())) + f" from {len(ct_ids)} CTs -> {args.out}"
    )
    return 0
