"""``bmdgan demo``: the main job on the bundled sample data (no user data needed)."""

from __future__ import annotations

HELP = "run the main job on the bundled sample CT and radiograph (Resources/SampleData)"


def add_arguments(parser) -> None:
    parser.add_argument("--sample-dir", default=None, help="folder of the sample data (default: the repository's "
                                                           "Resources/SampleData)")


def run(args) -> int:
    from pathlib import Path

    from bmdgan.io import read_ct, read_radiograph
    from bmdgan.sample_data import SAMPLE_CT, SAMPLE_RADIOGRAPH, sample_data_dir
    from bmdgan.cli.commands.info import describe_ct, describe_radiograph

    folder = Path(args.sample_dir) if args.sample_dir else sample_data_dir()
    print(f"[1/2] reading the sample CT {folder / SAMPLE_CT}")
    print("      " + describe_ct(read_ct(folder / SAMPLE_CT)))
    print(f"[2/2] reading the sample radiograph {folder / SAMPLE_RADIOGRAPH}")
    print("      " + describe_radiograph(read_radiograph(folder / SAMPLE_RADIOGRAPH)))
    return 0
