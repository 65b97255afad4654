"""``bmdgan make-sample``: the bundled sample radiograph (simulated from a held-out real CT) and its truth."""

from __future__ import annotations

HELP = "simulate the sample radiograph (DX DICOM) of a held-out CT with its CT-derived ground truth"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="the held-out CT (default sample: Resources/SampleData/STS_012.nii.gz)")
    parser.add_argument("--out", required=True, help="folder for <CT>_simulated_<pose>.dcm and its _truth.json")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--pose", default="standing")


def run(args) -> int:
    from bmdgan.cohort.sample_case import write_sample_case

    dicom, truth = write_sample_case(args.ct, args.out, args.seed, pose=args.pose)
    print(f"{dicom}\n{truth}")
    return 0
