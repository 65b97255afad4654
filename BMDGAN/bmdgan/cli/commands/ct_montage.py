"""``bmdgan ct-montage``: one review picture per hip (labels, landmarks, cut planes, aBMD projection)."""

from __future__ import annotations

from bmdgan.cli.options import add_out, add_quiet

HELP = "write a review montage PNG per CT hip: femur views with labels, landmarks and cut planes, and the aBMD image"


def add_arguments(parser) -> None:
    parser.description = (
        f"{HELP}. One hip -> <case>.png; both hips of a whole-pelvis CT (the default) -> "
        "<case>-left.png and <case>-right.png."
    )
    parser.add_argument("cts", nargs="+", help="CT volumes (DICOM folders, .nii.gz, .nrrd, .mha)")
    add_out(parser, "folder for the <case>.png pictures")
    from bmdgan.cli.ct_options import add_common_inputs

    add_common_inputs(parser, default_side="both")
    add_quiet(parser)


def run(args) -> int:
    from pathlib import Path

    from bmdgan.cli.ct_options import case_name, read_optional_inputs, step_progress
    from bmdgan.ct.montage import write_failure_montage, write_montage
    from bmdgan.ct.pipeline import STEPS, analyse_ct, analyse_hips
    from bmdgan.errors import BMDGANError
    from bmdgan.io import read_ct

    output = Path(args.out)
    failed = 0
    for path in args.cts:
        name = case_name(path)
        ct = read_ct(path)
        refused: dict[str, str] = {}
        try:
            inputs = read_optional_inputs(args, ct)
            with step_progress(STEPS, f"ct-montage {name}", enabled=not args.quiet) as progress:
                if "label_volume" in inputs:
                    analyses = [analyse_ct(ct, progress=progress, **inputs)]
                else:
                    analyses = analyse_hips(ct, progress=progress, refused=refused, **inputs)
        except BMDGANError as error:
            failed += 1
            picture = write_failure_montage(ct, output / f"{name}.png", name, str(error))
            print(f"{picture}: not measured: {error}")
            continue
        for side, reason in refused.items():
            picture = write_failure_montage(ct, output / f"{name}-{side}.png", f"{name} {side}", reason)
            print(f"{picture}: not measured: {reason}")
        for analysis in analyses:
            title = name if len(analyses) + len(refused) == 1 else f"{name}-{analysis.side}"
            picture = write_montage(analysis, output / f"{title}.png", title)
            m = analysis.measurement
            print(
                f"{picture}: side {analysis.side}, vBMD {m.qct_vbmd_mg_cm3:.1f} mg/cm3, "
                f"aBMD {m.ct_abmd_g_cm2:.3f} g/cm2, PF {m.pf_volume_cm3:.1f} cm3"
            )
    return 2 if failed == len(args.cts) else 0
