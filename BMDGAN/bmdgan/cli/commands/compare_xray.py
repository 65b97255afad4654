"""``bmdgan compare-xray``: a real radiograph beside one simulated from a CT and its bone-only DRR (PNG)."""

from __future__ import annotations

from bmdgan.cli.options import add_out, add_seed

HELP = "picture: a real radiograph, a radiograph simulated from a CT, and the simulation's bone-only DRR"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT volume to simulate from (HU)")
    parser.add_argument("radiograph", help="a real radiograph of the same region (DICOM, PNG, JPEG, TIFF)")
    add_out(parser, "output PNG")
    add_seed(parser, what="simulated acquisition")


def run(args) -> int:
    from bmdgan.io import read_ct, read_radiograph
    from bmdgan.projection.comparison import write_comparison

    out = write_comparison(read_ct(args.ct), read_radiograph(args.radiograph), args.out, args.seed)
    print(f"comparison picture -> {out}")
    return 0
