"""How much does a hip's aBMD move when its input region moves by a millimetre or two?

The detector places each hip's region from its femoral head centre and neck point; on CTs it never saw, it errs by
a few millimetres (docs/hip-detection.md). This re-cuts each detected hip's region with both points moved together
on a square grid of whole millimetres at the patient (``--step-mm``, out to ``--reach-mm``), estimates each, and
prints the spread of the aBMD (g/cm2): the share of a result that the region's placement alone decides.

Usage: python benchmarks/check_region_shift.py RADIOGRAPH [RADIOGRAPH ...] [--model FOLDER] [--reach-mm 2]
       [--step-mm 1] [--single-hip]
With no radiograph given, the bundled sample (a single-hip view) is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def shifted_estimates(model, radiograph, hip, reference, offsets_mm: list[float]) -> dict[tuple[float, float], float]:
    """aBMD (g/cm2) of ``hip`` with its head centre and neck point moved by (dx, dy) mm, for every pair of
    ``offsets_mm``."""
    from bmdgan.detection.detector import DetectedHip
    from bmdgan.inference.estimation import estimate_hip

    row_mm, column_mm = radiograph.pixel_spacing_mm
    values = {}
    for dx in offsets_mm:
        for dy in offsets_mm:
            moved = np.array([dx / column_mm, dy / row_mm])
            shifted = DetectedHip(
                hip.side,
                tuple(np.asarray(hip.femoral_head_centre_px) + moved),
                tuple(np.asarray(hip.neck_point_px) + moved),
                confidence=1.0,
                neck_confidence=1.0,
            )
            values[(dx, dy)] = estimate_hip(model, radiograph, shifted, reference)[0].dxa_bmd_g_cm2
    return values


def main() -> None:
    from bmdgan.detection.detector import HipDetector
    from bmdgan.inference.default_model import resolve_model_folder
    from bmdgan.inference.estimation import estimate_radiograph
    from bmdgan.inference.model import DecompositionModel
    from bmdgan.inference.tscore import load_reference
    from bmdgan.io import read_radiograph
    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("radiographs", nargs="*", help="radiograph files (default: the bundled sample)")
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--reach-mm", type=float, default=2.0, help="largest shift each way (mm at the patient)")
    parser.add_argument("--step-mm", type=float, default=1.0, help="grid step (mm)")
    parser.add_argument("--single-hip", action="store_true", help="the images show one hip (as for estimate)")
    args = parser.parse_args()
    sample = sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH
    paths = [Path(p) for p in args.radiographs] or [sample]
    model = DecompositionModel.load(resolve_model_folder(args.model))
    detector, reference = HipDetector.load(None), load_reference(None)
    steps = int(round(args.reach_mm / args.step_mm))
    offsets = [k * args.step_mm for k in range(-steps, steps + 1)]
    print(
        f"| image | side | aBMD at the detector | shifts within {args.step_mm:g} mm: range, SD | within "
        f"{args.reach_mm:g} mm: range, SD |"
    )
    print("| --- | --- | --- | --- | --- |")
    for path in paths:
        radiograph = read_radiograph(path)
        single = args.single_hip or path.name == sample.name
        for hip, _ in estimate_radiograph(model, detector, radiograph, reference, "auto", single):
            values = shifted_estimates(model, radiograph, hip, reference, offsets)
            near = [v for (dx, dy), v in values.items() if max(abs(dx), abs(dy)) <= args.step_mm]
            every = list(values.values())
            print(
                f"| {path.name} | {hip.side} | {hip.dxa_bmd_g_cm2:.3f} | {min(near):.3f}-{max(near):.3f}, "
                f"{np.std(near):.3f} | {min(every):.3f}-{max(every):.3f}, {np.std(every):.3f} |"
            )


if __name__ == "__main__":
    main()
