"""``bmdgan simulate-cohort``: a virtual cohort (radiographs + ground truth) from real CTs."""

from __future__ import annotations

from pathlib import Path

from bmdgan.cli.ct_options import add_segmentation
from bmdgan.cli.options import (
    add_image_size,
    add_out,
    add_seed,
    comma_list,
    non_negative_int,
    positive_int,
    share,
)

HELP = "generate a virtual cohort from real CTs: varied bone density, soft tissue, pose and acquisition"


def add_arguments(parser) -> None:
    parser.add_argument("cts", nargs="+", help="CT files, or folders of .nii.gz/.nrrd/.mha CTs")
    add_out(parser, "dataset folder (created, or finished when it exists)")
    parser.add_argument(
        "--exclude",
        type=comma_list(example="STS_012"),
        default="",
        help="CT ids to leave out (e.g. held-out CTs), comma-separated",
    )
    parser.add_argument("--patients-per-ct", type=positive_int, default=9, help="virtual patients per CT (default 9)")
    parser.add_argument(
        "--poses",
        type=comma_list(example="standing,supine"),
        default="standing,supine,abduction,adduction",
        help="poses of every virtual patient, comma-separated (default %(default)s)",
    )
    add_image_size(parser)
    parser.add_argument("--fold-count", type=positive_int, default=5, help="cross-validation folds (2 or more)")
    parser.add_argument(
        "--fold-by",
        choices=("patient", "ct"),
        default="patient",
        help="hold out virtual patients (the paper's split; their bones come from training CTs) or "
        "whole source CTs (every held-out bone unseen; needs at least --fold-count CTs)",
    )
    add_seed(parser, what="virtual patients and folds")
    parser.add_argument(
        "--acquisition",
        default="reference",
        help="'reference' (one site's protocol, as in the paper's single-hospital data), 'site:N' "
        "(another site drawn with seed N) or 'varied' (every image its own site and processing)",
    )
    parser.add_argument(
        "--view",
        choices=("auto", "hip", "ap-pelvis"),
        default="auto",
        help="'hip': one hip per image in its anatomical frame; 'ap-pelvis': the clinic's AP pelvis "
        "radiograph of a whole-pelvis CT, one case per hip (its input region around its femoral head); 'auto' "
        "(default): AP pelvis for a CT holding both hips, single-hip otherwise",
    )
    parser.add_argument(
        "--picture",
        metavar="PNG",
        help="also write a review picture of the first CT with two hips: its AP pelvis radiograph "
        "next to its stage-1 DRR and both PF-DRRs (docs/ap-pelvis.md)",
    )
    parser.add_argument(
        "--bone-draw",
        choices=("population", "source"),
        default="population",
        help="'population' (default): each virtual patient's CT-aBMD is drawn from the adult population "
        "(0.759 +/- 0.151 g/cm2, the paper's DXA cohort), whatever the source bone's density; 'source': a "
        "factor 0.65-1.6 of the source bone's own density (cohorts made before)",
    )
    parser.add_argument(
        "--anatomies",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="also make N virtual anatomies of every CT (size, neck length, neck-shaft angle, regional "
        "trabecular loss, cortical thinning; bmdgan.cohort.anatomy; a whole pelvis's two hips deformed at once, "
        "its views AP pelvis), each prepared from its own deformed CT and kept in its source CT's fold (default 0)",
    )
    parser.add_argument(
        "--transplants",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="also make N bodies of every whole-pelvis CT with two other CTs' femurs placed in its hip joints "
        "(bmdgan.cohort.transplant; ceil(femurs / 2) gives each body every femur), each hip prepared from the new "
        "CT; with --fold-by ct such a case trains only when neither CT is held out and is tested only when both "
        "are (default 0)",
    )
    parser.add_argument(
        "--max-pf-cut",
        type=share,
        metavar="SHARE",
        help="refuse a CT whose scan cuts one of its PF regions by more than SHARE of the region's section "
        "(e.g. 0.1): such a bone's CT-aBMD is that of the part in view (default: keep every CT and list the cuts)",
    )
    parser.add_argument("--workers", type=positive_int, default=2, help="processes (default 2)")
    add_segmentation(parser)


def _scan_cuts(prepared_folder: Path, ct_ids: list[str]) -> dict[str, dict[str, float]]:
    """Bones whose PF region the scan cuts (face: share of the region's section), each printed: used, but their
    CT-aBMD and radiographs are of the part of the bone in view."""
    from bmdgan.cohort.prepared_ct import pf_scan_cuts, prepared_bones
    from bmdgan.ct.pf_region import describe_scan_cuts

    cuts = {}
    for key in [key for ct_id in ct_ids for key in prepared_bones(prepared_folder, ct_id)]:
        if shares := pf_scan_cuts(prepared_folder, key):
            cuts[key] = shares
            print(
                f"  {key}: the scan cuts its PF region ({describe_scan_cuts(shares)} of its section); its truth is of "
                "the part in view"
            )
    return cuts


def run(args) -> int:
    import json

    from bmdgan.atomic import atomic_write_text
    from bmdgan.cli.ct_options import ct_paths, segmentations_of
    from bmdgan.cohort.anatomy import prepare_anatomies
    from bmdgan.cohort.generator import (
        CohortSettings,
        check_cohort_request,
        ct_id_of,
        prepare_cts,
        refuse_cut_cts,
        simulate_cohort,
    )
    from bmdgan.cohort.transplant import prepare_transplants
    from bmdgan.cohort.virtual_patient import POSES
    from bmdgan.errors import InputError
    from bmdgan.projection.site_protocol import parse_acquisition

    paths = ct_paths(args.cts, args.exclude)
    poses = args.poses
    unknown = set(poses) - set(POSES)
    if unknown:
        raise InputError(None, f"unknown poses {sorted(unknown)}", f"use {', '.join(POSES)}")
    out = Path(args.out)
    prepared_folder = out / "prepared"
    segmentations = segmentations_of(args.segmentation)
    parse_acquisition(args.acquisition)  # a typo fails before any work
    settings = CohortSettings(
        str(prepared_folder),
        args.seed,
        args.patients_per_ct,
        poses,
        args.image_size,
        args.fold_count,
        args.acquisition,
        args.fold_by,
        args.view,
        args.bone_draw,
    )
    check_cohort_request(settings, [ct_id_of(p) for p in paths], out)  # before minutes of CT preparation
    print(f"preparing {len(paths)} CTs (labels, landmarks, PF region, calibration, CT-aBMD/vBMD)...")
    ct_ids, skipped = prepare_cts(paths, prepared_folder, segmentations=segmentations)
    for ct_id, reason in skipped.items():
        print(f"  skipped {ct_id}: {reason}")
    if args.max_pf_cut is not None:
        refused = refuse_cut_cts(prepared_folder, ct_ids, args.max_pf_cut, out)
        for ct_id, reason in refused.items():
            print(f"  skipped {ct_id}: {reason}")
        skipped.update(refused)
        ct_ids = [ct_id for ct_id in ct_ids if ct_id not in refused]
    if not ct_ids:
        raise InputError(None, "no CT is left to simulate", "see the reasons above")
    real_ct_ids = ct_ids
    if args.anatomies:
        print(f"making {args.anatomies} virtual anatomies of every bone (deformed CTs, measured again)...")
        anatomies, failed = prepare_anatomies(prepared_folder, real_ct_ids, args.anatomies, args.seed)
        for key, reason in failed.items():
            print(f"  skipped {key}: {reason}")
        skipped.update(failed)
        ct_ids = [*ct_ids, *anatomies]
    if args.transplants:
        print(f"placing other CTs' femurs into {args.transplants} bodies of every whole pelvis (measured again)...")
        transplants, failed = prepare_transplants(prepared_folder, args.transplants, real_ct_ids)
        for key, reason in failed.items():
            print(f"  skipped {key}: {reason}")
        skipped.update(failed)
        ct_ids = [*ct_ids, *transplants]
    print(f"simulating {len(ct_ids) * args.patients_per_ct} virtual patients x {len(poses)} poses...")
    summary = simulate_cohort(settings, ct_ids, out, args.workers)
    summary["skipped_cts"] = skipped
    summary["pf_region_cut_by_scan"] = _scan_cuts(prepared_folder, ct_ids)
    if args.picture:
        summary["picture"] = _picture(settings, ct_ids, Path(args.picture))
    atomic_write_text(out / "cohort_summary.json", json.dumps(summary, indent=2))
    print(
        f"{summary['images']} images of {summary['patients']} virtual patients from {summary['cts']} CTs "
        f"in {summary['seconds']:.0f} s -> {out}"
    )
    return 0


def _picture(settings, ct_ids: list[str], path) -> dict:
    """The AP pelvis review picture of the first CT whose hips were prepared side by side (or the first CT)."""
    from pathlib import Path

    from bmdgan.cohort.generator import pelvis_scene_of
    from bmdgan.cohort.pelvis_picture import write_ap_pelvis_picture
    from bmdgan.cohort.prepared_ct import prepared_bones

    counts = {ct_id: len(prepared_bones(Path(settings.prepared_folder), ct_id)) for ct_id in ct_ids}
    ct_id = max(ct_ids, key=lambda name: counts[name])
    shown = write_ap_pelvis_picture(settings, pelvis_scene_of(settings.prepared_folder, ct_id), path)
    print(f"picture of {ct_id} ({', '.join(shown['sides'])} hip) -> {path}")
    return shown
