"""Does a hip detector read the femoral head, or where the pelvis around it puts the head? The same AP pelvis
radiographs (same virtual patient, position, acquisition and central ray) of a whole-pelvis CT as scanned and of its
bodies with each femur moved in its own joint (:func:`bmdgan.cohort.transplant.prepare_moved_femurs`, up to 3 mm per
axis): a detector that reads the head moves its estimate with the head (slope 1), one that reads the pelvis stays
(slope 0).

For each detector: per image axis, the least-squares slope of the estimate's move on the head's move (mm at the
patient, over every hip found in both images), and each side's mean head offset on the CT as scanned (mm, image
axes: + to the image's right and down). Give detectors that never saw the CT (a whole-CT fold's), or the slope says
how it remembers that body.

Usage (about 1 minute a body on one core, after the CT is prepared, e.g. by ``simulate-landmarks``):

    python benchmarks/check_moved_femurs.py --prepared landmarks/prepared --ct Pelvic-Ref-002 --bodies 6 \
        --patients 4 detector/cross_validation/fold_0
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np


def read_hips(detector, image: np.ndarray, geometry, scene, spacings: dict) -> dict:
    """{side: (true head, found head or None)} in mm at the patient (image axes) of one AP pelvis radiograph.
    ``spacings``: {side: (row, column) mm per pixel at that head}, filled from the first image it is given (the CT
    as scanned) and kept for the moved bodies: a head moved front-back changes its magnification a little, which
    must not count as a move across the image."""
    rows = {}
    for hip in scene.bones:
        head = np.asarray(hip.head_centre_lps, float)
        magnification = geometry.magnification_at(head)
        spacing = spacings.setdefault(
            hip.side, (geometry.row_spacing_mm / magnification, geometry.column_spacing_mm / magnification)
        )
        truth = geometry.project_points(head[None])[0] * spacing[::-1]
        found = {h.side: h for h in detector.detect(image, spacing, min_confidence=0.0)}.get(hip.side)
        rows[hip.side] = (truth, None if found is None else np.asarray(found.head_centre_px) * spacing[::-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("detectors", nargs="+", help="hip detector folders")
    parser.add_argument("--prepared", required=True, help="cache folder holding the prepared whole-pelvis CT")
    parser.add_argument("--ct", required=True, help="the whole-pelvis CT's id, e.g. Pelvic-Ref-002")
    parser.add_argument("--bodies", type=int, default=6, help="bodies with moved femurs (made if missing)")
    parser.add_argument("--patients", type=int, default=4, help="AP pelvis radiographs of each body")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write every reading here")
    args = parser.parse_args()

    import torch

    from bmdgan.cohort.generator import CohortSettings, pelvis_scene_of
    from bmdgan.cohort.pelvis_case import render_pelvis, sample_positioning
    from bmdgan.cohort.transplant import prepare_moved_femurs
    from bmdgan.cohort.virtual_patient import POSES, sample_patient
    from bmdgan.detection.detector import HipDetector
    from bmdgan.detection.landmark_views import RENDER_MM_PER_PX

    torch.set_num_threads(1)
    entries, refused = prepare_moved_femurs(args.prepared, args.bodies, args.seed, [args.ct])
    for key, reason in refused.items():
        print(f"refused {key}: {reason}")
    detectors = {folder: HipDetector.load(folder) for folder in args.detectors}
    settings = CohortSettings(args.prepared, seed=args.seed, acquisition="varied")
    readings = []  # (body, patient, side, detector, truth, found)
    centre = pelvis_scene_of(args.prepared, args.ct).centre_lps.copy()
    spacings = {}  # patient: {side: mm per pixel at the head as scanned}
    for body in [args.ct, *entries]:
        # the central ray aims between the heads: kept where it aims in the CT as scanned, so that only the femurs move
        scene = replace(pelvis_scene_of(args.prepared, body), centre_lps=centre)
        for index in range(args.patients):
            patient = sample_patient(args.seed, f"{args.ct}-landmarks", index)  # the same patient in every body
            pose = list(POSES)[index % len(POSES)]
            positioning = sample_positioning(args.seed, patient, pose)
            full = render_pelvis(settings, scene, patient, pose, positioning, pitch_mm=RENDER_MM_PER_PX)
            for folder, detector in detectors.items():
                for side, (truth, found) in read_hips(
                    detector,
                    full["images"]["radiograph"],
                    full["geometry"],
                    scene,
                    spacings.setdefault(index, {}),
                ).items():
                    readings.append((body, index, side, folder, truth, found))
    as_scanned = {
        (index, side, folder): (truth, found) for body, index, side, folder, truth, found in readings if body == args.ct
    }
    for folder in detectors:
        moved, followed = [], []
        for body, index, side, name, truth, found in readings:
            base_truth, base_found = as_scanned[(index, side, name)]
            if body != args.ct and name == folder and found is not None and base_found is not None:
                moved.append(truth - base_truth)
                followed.append(found - base_found)
        if not moved:
            print(f"{folder}: no hip found both as scanned and moved")
            continue
        moved, followed = np.array(moved), np.array(followed)
        slopes = (moved * followed).sum(axis=0) / (moved**2).sum(axis=0)
        print(
            f"{folder}: estimate moves {slopes[0]:.2f} x the head across, {slopes[1]:.2f} x up-down ({len(moved)} hips)"
        )
        for side in ("right", "left"):
            offsets = [
                found - truth
                for (_, s, f), (truth, found) in as_scanned.items()
                if f == folder and s == side and found is not None
            ]
            if offsets:
                print(f"  {side} hip as scanned: mean head offset {np.round(np.mean(offsets, axis=0), 1).tolist()} mm")
    if args.json:
        rows = [
            {
                "body": b,
                "patient": i,
                "side": s,
                "detector": f,
                "truth_mm": t.tolist(),
                "found_mm": None if x is None else x.tolist(),
            }
            for b, i, s, f, t, x in readings
        ]
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(rows, stream, indent=1)


if __name__ == "__main__":
    main()
