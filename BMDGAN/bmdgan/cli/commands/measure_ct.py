"""``bmdgan measure-ct``: CT -> femur label, landmarks, PF region, calibrated vBMD and CT-aBMD."""

from __future__ import annotations

from bmdgan.cli.options import add_out, add_quiet

HELP = "measure QCT vBMD (mg/cm3) and CT-aBMD (g/cm2) of the proximal femur in a CT (labels, landmarks, calibration)"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT volume (DICOM folder, .nii.gz, .nrrd, .mha) in HU")
    add_out(parser, "output folder (created if missing)")
    from bmdgan.cli.ct_options import add_common_inputs

    add_common_inputs(parser)
    parser.add_argument("--montage", action="store_true", help="also write montage.png for review")
    add_quiet(parser)


def run(args) -> int:
    import json
    from pathlib import Path

    from bmdgan.ct.calibration import write_json_atomic
    from bmdgan.cli.ct_options import case_name, read_optional_inputs, step_progress
    from bmdgan.ct.markups import write_mrk_json
    from bmdgan.ct.pipeline import STEPS, analyse_ct, measurement_record
    from bmdgan.io import read_ct, write_volume

    output = Path(args.out)
    ct = read_ct(args.ct)
    inputs = read_optional_inputs(args, ct)
    with step_progress(STEPS, f"measure-ct {case_name(args.ct)}", enabled=not args.quiet) as progress:
        analysis = analyse_ct(ct, progress=progress, **inputs)
    output.mkdir(parents=True, exist_ok=True)
    write_volume(analysis.label_volume(), output / "labels.nii.gz")
    write_volume(ct.with_array(analysis.segmentation.metal.astype("uint8"), unit="label"), output / "metal.nii.gz")
    write_mrk_json(analysis.landmarks.points, output / "landmarks.mrk.json")
    analysis.calibration.save(output / "calibration.json")
    record = measurement_record(analysis)
    write_json_atomic(record, output / "measurement.json")
    if args.montage:
        from bmdgan.ct.montage import write_montage

        write_montage(analysis, output / "montage.png", case_name(args.ct))
    print(json.dumps({key: record[key] for key in ("side", "qct_vbmd_mg_cm3", "ct_abmd_g_cm2", "pf_volume_cm3",
                                                   "pf_projected_area_cm2", "pf_region_complete")}))
    return 0
