"""``bmdgan dataset-report``: montage of samples and histograms of the ground truth of a dataset folder."""

from __future__ import annotations

from bmdgan.cli.options import add_out, add_seed, positive_int

HELP = "pictures of a dataset: sample montage (radiograph | stage-1 DRR | PF-DRR) and ground-truth histograms"


def add_arguments(parser) -> None:
    parser.add_argument("dataset", help="dataset folder")
    add_out(parser, "output folder for montage.png and histograms.png")
    parser.add_argument("--samples", type=positive_int, default=8, help="cases in the montage (default 8)")
    add_seed(parser, what="choice of the montage's cases")


def run(args) -> int:
    from pathlib import Path

    from bmdgan.datasets.format import read_manifest
    from bmdgan.datasets.report import write_histograms, write_montage

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = read_manifest(args.dataset)
    montage = write_montage(args.dataset, out / "montage.png", args.samples, args.seed)
    histograms = write_histograms(args.dataset, out / "histograms.png")
    patients = len({r.patient_id for r in records})
    print(f"{len(records)} images of {patients} patients; {montage}, {histograms}")
    return 0
