"""Picture of the head discs a detector trained with ``--head-disks`` draws on landmark views: each view at the
detector's 2 mm, the CT's femoral head (centre and radius, projected) in green, the disc the detector draws (its
probability at 0.5) in red and the head centre it reads (the disc's centroid, at its found confidence) as a red x.

    python benchmarks/draw_head_disks.py disks_f0/cross_validation/fold_0 landmarks Pelvic-Ref-002-ap-000 \\
        Pelvic-Ref-002_right-hip-000 -o docs/images/hip_detector_head_disks.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bmdgan.detection.detector import DETECTOR_MM_PER_PX, HipDetector, detector_image
    from bmdgan.detection.landmark_folder import read_image, read_views
    from bmdgan.detection.layout import CHANNELS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("detector", type=Path, help="a detector folder trained with --head-disks")
    parser.add_argument("views", help="a landmark-view folder")
    parser.add_argument("ids", nargs="+", help="view ids to draw")
    parser.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    detector = HipDetector.load(args.detector)
    if not detector.description.get("head_disks"):
        parser.error(f"{args.detector} was not trained with --head-disks")
    views = {view.id: view for view in read_views(args.views)}
    figure, axes = plt.subplots(1, len(args.ids), figsize=(5.0 * len(args.ids), 5.4), squeeze=False)
    for axis, view_id in zip(axes[0], args.ids):
        view = views[view_id]
        image = read_image(args.views, view)
        logits, _, matrix = detector.heatmaps(image, view.pixel_spacing_mm)
        disc = 1.0 / (1.0 + np.exp(-logits[len(CHANNELS) :].max(axis=0)))
        axis.imshow(detector_image(image, view.pixel_spacing_mm)[0], cmap="gray")
        axis.contour(disc, [0.5], colors="r")
        to_detector = np.linalg.inv(matrix)
        for side, radius_mm in view.head_radius_mm.items():
            head = view.landmarks.get(f"head_{side}")
            if head is not None and radius_mm is not None:
                centre = (to_detector @ [head[0], head[1], 1.0])[:2]
                axis.add_patch(plt.Circle(centre, radius_mm / DETECTOR_MM_PER_PX, fill=False, color="lime"))
                axis.plot(*centre, "+", color="lime")
        for hip in detector.detect(image, view.pixel_spacing_mm):
            axis.plot(*(to_detector @ [*hip.head_centre_px, 1.0])[:2], "rx")
        axis.set_title(view_id, fontsize=8)
        axis.axis("off")
    figure.suptitle(
        "green: the CT's femoral head (centre, radius) | red: the disc the detector draws (p = 0.5), x its centroid",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(args.out, dpi=100)
    plt.close(figure)
    print(f"picture: {args.out}")


if __name__ == "__main__":
    main()
