"""``bmdgan make-sample``: the bundled sample radiograph (simulated from a held-out real CT) and its truth."""

from __future__ import annotations

from bmdgan.cli.options import add_out, add_seed

HELP = "simulate the sample radiograph (DX DICOM) of a held-out CT with its CT-derived ground truth"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="the held-out CT (default sample: Resources/SampleData/STS_012.nii.gz)")
    add_out(parser, "folder for <CT>_simulated_<pose>.dcm and its _truth.json")
    add_seed(parser, 2024, what="virtual patient and acquisition")
    parser.add_argument("--pose", default="standing", help="pose of the virtual patient (default standing)")


def run(args) -> int:
    from bmdgan.cohort.sample_case import write_sample_case

    dicom, truth = write_sample_case(args.ct, args.out, args.seed, pose=args.pose)
    print(f"{dicom}\n{truth}")
    return 0
