"""``bmdgan measure-ct``: CT -> femur label, landmarks, PF region, calibrated vBMD and CT-aBMD, per hip."""

from __future__ import annotations

from bmdgan.cli.options import add_out, add_quiet

HELP = "measure QCT vBMD (mg/cm3) and CT-aBMD (g/cm2) of the proximal femur in a CT (labels, landmarks, calibration)"
LAYOUT = (
    "Outputs: one hip measured (a thigh crop, or --side left/right/auto) -> OUT/measurement.json, labels.nii.gz, "
    "metal.nii.gz, landmarks.mrk.json, calibration.json (and montage.png); both hips (the default on a "
    "whole-pelvis CT) -> the same files in OUT/left/ and OUT/right/, and OUT/measurement.json holding both "
    "records, the left-right difference and any hip refused (metal in its proximal-femur region)."
)


def add_arguments(parser) -> None:
    parser.description = f"{HELP}. {LAYOUT}"
    parser.add_argument("ct", help="CT volume (DICOM folder, .nii.gz, .nrrd, .mha) in HU")
    add_out(parser, "output folder (created if missing)")
    from bmdgan.cli.ct_options import add_common_inputs

    add_common_inputs(parser, default_side="both")
    parser.add_argument("--montage", action="store_true", help="also write montage.png for review")
    add_quiet(parser)


SUMMARY_KEYS = (
    "side",
    "qct_vbmd_mg_cm3",
    "ct_abmd_g_cm2",
    "pf_volume_cm3",
    "pf_projected_area_cm2",
    "pf_region_complete",
)


def _write_hip(analysis, folder, montage_title: str | None) -> dict:
    """The per-hip files in ``folder``; returns the measurement record."""
    from bmdgan.ct.calibration import write_json_atomic
    from bmdgan.ct.markups import write_mrk_json
    from bmdgan.ct.pipeline import measurement_record
    from bmdgan.io import write_volume

    folder.mkdir(parents=True, exist_ok=True)
    write_volume(analysis.label_volume(), folder / "labels.nii.gz")
    write_volume(
        analysis.ct.with_array(analysis.segmentation.metal.astype("uint8"), unit="label"), folder / "metal.nii.gz"
    )
    write_mrk_json(analysis.landmarks.points, folder / "landmarks.mrk.json")
    analysis.calibration.save(folder / "calibration.json")
    record = measurement_record(analysis)
    write_json_atomic(record, folder / "measurement.json")
    if montage_title is not None:
        from bmdgan.ct.montage import write_montage

        write_montage(analysis, folder / "montage.png", montage_title)
    return record


def run(args) -> int:
    import json
    from pathlib import Path

    from bmdgan import __version__
    from bmdgan.cli.ct_options import case_name, read_optional_inputs, step_progress
    from bmdgan.ct.calibration import write_json_atomic
    from bmdgan.ct.pipeline import (
        STEPS,
        analyse_ct,
        analyse_hips,
        hip_sides,
        left_right_difference,
    )
    from bmdgan.io import read_ct

    output = Path(args.out)
    ct = read_ct(args.ct)
    inputs = read_optional_inputs(args, ct)
    name = case_name(args.ct)
    refused: dict[str, str] = {}
    with step_progress(STEPS, f"measure-ct {name}", enabled=not args.quiet) as progress:
        if "label_volume" in inputs:
            analyses = [analyse_ct(ct, progress=progress, **inputs)]
        else:
            analyses = analyse_hips(ct, progress=progress, refused=refused, **inputs)
    per_side = args.side == "both" and len(hip_sides(ct)) > 1
    if not per_side:
        record = _write_hip(analyses[0], output, name if args.montage else None)
        print(json.dumps({key: record[key] for key in SUMMARY_KEYS}))
        return 0
    records = {a.side: _write_hip(a, output / a.side, f"{name} {a.side}" if args.montage else None) for a in analyses}
    summary = {
        "bmdgan_version": __version__,
        "ct": ct.source,
        "sides": list(records),
        "hips": records,
        "left_right_difference": left_right_difference(analyses),
        "refused": refused,
    }
    write_json_atomic(summary, output / "measurement.json")
    print(
        json.dumps(
            {
                "hips": {side: {key: r[key] for key in SUMMARY_KEYS} for side, r in records.items()},
                "left_right_difference": summary["left_right_difference"],
                "refused": refused,
            }
        )
    )
    return 0
