"""``bmdgan landmarks``: the eight proximal-femur landmarks as a Slicer markups file (LPS), per hip."""

from __future__ import annotations

from bmdgan.cli.options import add_out

HELP = "find the 8 proximal-femur landmarks (Uemura 2022) and write them as .mrk.json (and .fcsv)"


def add_arguments(parser) -> None:
    parser.description = (
        f"{HELP}. With --side both on a whole-pelvis CT one file per hip is written, named "
        "after -o with the side added (lm.mrk.json -> lm-left.mrk.json, lm-right.mrk.json)."
    )
    parser.add_argument("ct", help="CT volume (DICOM folder, .nii.gz, .nrrd, .mha) in HU")
    add_out(parser, "markups file to write (.mrk.json)")
    parser.add_argument("--fcsv", help="also write a legacy .fcsv (RAS) here")
    from bmdgan.cli.ct_options import add_common_inputs

    add_common_inputs(parser, calibration=False)


def run(args) -> int:
    from bmdgan.cli.ct_options import read_optional_inputs, side_path
    from bmdgan.ct.landmarks import estimate_landmarks
    from bmdgan.ct.markups import write_fcsv, write_mrk_json
    from bmdgan.ct.pipeline import segment_hips, segmentation_from_labels
    from bmdgan.io import read_ct

    ct = read_ct(args.ct)
    inputs = read_optional_inputs(args, ct)
    if "label_volume" in inputs:
        segmentations = [segmentation_from_labels(ct, inputs["label_volume"])]
    else:
        segmentations = segment_hips(ct, side=args.side)
    for segmentation in segmentations:
        one = len(segmentations) == 1
        landmarks = estimate_landmarks(segmentation.femur, ct.geometry, segmentation.head, segmentation.shaft)
        landmarks.points.update(inputs.get("landmark_points", {}))
        side = segmentation.side or landmarks.frame.side
        path = args.out if one else side_path(args.out, side)
        write_mrk_json(landmarks.points, path)
        if args.fcsv:
            write_fcsv(landmarks.points, args.fcsv if one else side_path(args.fcsv, side))
        print(f"{path}: {len(landmarks.points)} landmarks, side {side}")
        for note in landmarks.notes:
            print(f"  note: {note}")
    return 0
