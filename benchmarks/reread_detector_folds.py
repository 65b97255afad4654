"""Read a cross-validation's held-out views again with its fold detectors, the head centre read another way
(``--reading peak``: the head map's peak; ``disk``: the head disc's centroid, for detectors trained with
``--head-disks``), so that what a detector's discs add is measured on the very networks and views.

Writes OUT/cross_validation/detections.json (and member_detections.json with ``--members``) in the format
``train-detector --cross-validate`` writes, for ``compare_detector_recipes.py``:

    python benchmarks/reread_detector_folds.py disks_f0 landmarks_anat --measured-views landmarks --folds 0 \\
        --reading peak -o disks_f0_peak
    python benchmarks/compare_detector_recipes.py disk=disks_f0 peak=disks_f0_peak --folds 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from bmdgan.atomic import atomic_write_text
    from bmdgan.detection.detector import HipDetector
    from bmdgan.detection.landmark_folder import read_views
    from bmdgan.detection.training import ct_folds, evaluate_detector

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("detectors", type=Path, help="a train-detector --cross-validate output folder")
    parser.add_argument("views", help="the landmark-view folder it was trained on (its CTs make the folds)")
    parser.add_argument("--measured-views", help="the folder whose held-out views are read (default: VIEWS)")
    parser.add_argument("--folds", default="0,1,2,3", help="folds to read, comma-separated")
    parser.add_argument("--fold-count", type=int, default=4)
    parser.add_argument("--reading", choices=("peak", "disk"), required=True, help="how each head centre is read")
    parser.add_argument("--members", action="store_true", help="also read with each ensemble member alone")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    folds = ct_folds(read_views(args.views), args.fold_count)
    measured_folder = args.measured_views or args.views
    measured = read_views(measured_folder)
    rows, member_rows = [], []
    for fold in (int(fold) for fold in args.folds.split(",")):
        fold_folder = args.detectors / "cross_validation" / f"fold_{fold}"
        held_out = [view for view in measured if folds[view.ct] == fold and view.anatomy is None]
        readers = [("ensemble", HipDetector.load(fold_folder))]
        if args.members:
            members = sorted((fold_folder / "members").glob("seed_*"))
            readers += [(index, HipDetector.load(member)) for index, member in enumerate(members)]
        for name, detector in readers:
            detector.head_reading = args.reading
            read = [{**row, "fold": fold} for row in evaluate_detector(detector, measured_folder, held_out)]
            if name == "ensemble":
                rows += read
            else:
                member_rows += [{**row, "member": name} for row in read]
        print(f"fold {fold}: {len(held_out)} held-out views read by {len(readers)} detector(s)")
    out = args.out / "cross_validation"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "detections.json", json.dumps(rows, indent=1) + "\n")
    if member_rows:
        atomic_write_text(out / "member_detections.json", json.dumps(member_rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
