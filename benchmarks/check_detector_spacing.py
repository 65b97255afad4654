"""How far can a radiograph's pixel spacing be off before the hip detector misplaces the head? A whole-CT
cross-validation's fold detectors read their held-out views with the spacing they are given multiplied by each
factor; head errors are measured at the true spacing.

Why: the detector works in millimetres (2 mm per pixel), so a wrong spacing shows it the hip larger or smaller than
it is. A DICOM with ImagerPixelSpacing only gives the spacing at the detector, 10-25 % larger than at the patient
(factor 1.1-1.25); a scanned film or a PNG with a guessed --pixel-mm can be off either way.

Usage (the cross-validation of ``train-detector --cross-validate``, and the landmark views it measured; about 4
minutes a factor for three folds of three members on one core):

    python benchmarks/check_detector_spacing.py detector/cross_validation landmarks --factors 0.9,1,1.1,1.2
"""

from __future__ import annotations

import argparse
from pathlib import Path

VIEW_KINDS = ("ap-pelvis", "hip", "thigh", "ct-as-scanned")


class MisreadSpacing:
    """A detector that is told a pixel spacing ``factor`` times the true one (everything else passes through)."""

    def __init__(self, detector, factor: float):
        self.detector, self.factor = detector, factor

    def detect(self, pixels, pixel_spacing_mm, **options):
        row_mm, column_mm = pixel_spacing_mm
        return self.detector.detect(pixels, (row_mm * self.factor, column_mm * self.factor), **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cross_validation", help="a cross-validation folder holding fold_K detector folders")
    parser.add_argument("views", help="the landmark-view folder its folds were measured on")
    parser.add_argument("--factors", default="0.85,0.9,1,1.1,1.15,1.25", help="spacing factors, comma-separated")
    parser.add_argument("--fold-count", type=int, default=4, help="whole-CT folds of the cross-validation")
    args = parser.parse_args()

    from bmdgan.detection.detector import HipDetector
    from bmdgan.detection.landmark_folder import read_views
    from bmdgan.detection.training import ct_folds, evaluate_detector, summarise

    views = read_views(args.views)
    folds = ct_folds(views, args.fold_count)
    detectors = {
        int(folder.name.split("_")[1]): HipDetector.load(folder)
        for folder in sorted(Path(args.cross_validation).glob("fold_*"))
        if (folder / "hip_detector.json").is_file()
    }
    if not detectors:
        raise SystemExit(f"{args.cross_validation} holds no finished fold_K detector")
    threshold = min(detector.found_confidence for detector in detectors.values())
    print(f"folds {sorted(detectors)}; head centres within 5 mm at each fold detector's own threshold")
    print("| spacing factor | " + " | ".join(VIEW_KINDS) + " | all | found | no-hip images with a hip |")
    print("| --- " * (len(VIEW_KINDS) + 4) + "|")
    for factor in (float(value) for value in args.factors.split(",")):
        rows = []
        for fold, detector in detectors.items():
            held_out = [v for v in views if folds[v.ct] == fold and v.anatomy is None]
            rows += evaluate_detector(MisreadSpacing(detector, factor), args.views, held_out)
        summary = summarise(rows, min_confidence=threshold)
        cells = [f"{summary[kind]['within_tolerance']}/{summary[kind]['hips']}" for kind in VIEW_KINDS]
        everything = summary["all"]
        print(
            f"| {factor:g} | " + " | ".join(cells) + f" | {everything['within_tolerance']}/{everything['hips']} "
            f"({100 * everything['within_tolerance'] / everything['hips']:.1f} %) | {everything['found']} | "
            f"{summary['no_hip_images_with_a_detection']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
