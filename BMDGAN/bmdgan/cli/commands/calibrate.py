"""``bmdgan calibrate``: CT number -> density calibration (phantom rods or phantomless) as calibration.json."""

from __future__ import annotations

from bmdgan.cli.options import add_out, comma_list

HELP = "calibrate CT numbers (HU) to density (mg/cm3): phantom rods (preset or given densities) or phantomless"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT volume (DICOM folder, .nii.gz, .nrrd, .mha) in HU")
    add_out(parser, "calibration record to write (.json)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--phantom", help="phantom preset (resources/phantoms.json), e.g. B-MAS200, QRM-BDC/6, Mindways-Model3-CT"
    )
    source.add_argument(
        "--densities",
        type=comma_list(float, example="0,50,100,150,200", unique=False),
        metavar="MG_CM3,...",
        help="nominal rod densities (mg/cm3), comma-separated, in the order of --rod-points/--rod-labels",
    )
    source.add_argument(
        "--phantomless",
        action="store_true",
        help="internal calibration from air, fat and muscle in the scan (the default without a phantom)",
    )
    parser.add_argument(
        "--water",
        type=comma_list(float, example="1012,1057", unique=False),
        metavar="MG_CM3,...",
        help="water density of each rod (Mindways-type K2HPO4 solutions), comma-separated, with --densities",
    )
    parser.add_argument("--material", default="hydroxyapatite", help="reference material of --densities")
    rods = parser.add_mutually_exclusive_group()
    rods.add_argument("--rod-points", metavar="FILE", help="rod centres (.mrk.json or .fcsv), one point per rod")
    rods.add_argument("--rod-labels", metavar="LABELMAP", help="label map with each rod as its own label 1..n")
    parser.add_argument(
        "--rod-radius", type=float, default=4.0, help="with --rod-points: radius (mm) averaged around each point"
    )
    parser.add_argument(
        "--rod-length",
        type=float,
        default=20.0,
        help="with --rod-points: length (mm) along the scanner axis averaged at each point",
    )
    parser.add_argument("--min-r2", type=float, default=None, help="minimum R2 of the phantom fit (default 0.99)")


def run(args) -> int:
    import numpy as np

    from bmdgan.ct import calibration as C
    from bmdgan.ct.markups import read_landmark_file
    from bmdgan.ct.phantomless import phantomless_calibration
    from bmdgan.ct.rods import detect_rods, measure_rods_at_points, measure_rods_in_labels
    from bmdgan.errors import InputError
    from bmdgan.io import read_ct, read_label_volume

    ct = read_ct(args.ct)
    if args.phantomless or not (args.phantom or args.densities):
        if args.rod_points or args.rod_labels:
            raise InputError(None, "rods were given but no densities", "add --phantom NAME or --densities ...")
        calibration = phantomless_calibration(ct)
    else:
        count = len(C.preset(args.phantom)["rods_mg_cm3"]) if args.phantom else len(args.densities)
        if args.rod_points:
            points = read_landmark_file(args.rod_points)
            rods = measure_rods_at_points(ct, np.array(list(points.values())), args.rod_radius, args.rod_length)
        elif args.rod_labels:
            rods = measure_rods_in_labels(ct, read_label_volume(args.rod_labels, like=ct).array)
        else:
            rods = detect_rods(ct, count)
        hu = [rod.mean_hu for rod in rods]
        if args.phantom:
            calibration = C.fit_preset(hu, args.phantom)
        else:
            calibration = C.fit_phantom(
                hu,
                list(args.densities),
                water_mg_cm3=list(args.water) if args.water else None,
                material=args.material,
                min_r2=args.min_r2 if args.min_r2 is not None else C.PHANTOM_MIN_R2,
            )
    calibration.save(args.out)
    print(
        f"{args.out}: density_mg_cm3 = {calibration.slope:.5f} * HU + {calibration.intercept:.3f} "
        f"(R2 {calibration.r2:.5f}, {calibration.method})"
    )
    return 0
