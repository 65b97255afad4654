"""Time one BMD estimate (hip detection, input region, decomposition, regression) of the bundled radiograph after
the model is loaded (goal: under 1 s on the 2-core CPU),
median of repeats, beside the generator's forward pass alone (the baseline it cannot beat) and the hip detection
of one member of the bundled detector's ensemble alone (what the ensemble costs).

Usage: python benchmarks/bench_estimate.py [--model FOLDER] [--repeats 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

from timing import median_seconds


def main() -> None:
    import torch

    from bmdgan.detection.detector import HipDetector
    from bmdgan.inference.default_model import resolve_model_folder
    from bmdgan.inference.estimation import estimate_radiograph
    from bmdgan.inference.model import DecompositionModel
    from bmdgan.inference.tscore import load_reference
    from bmdgan.io import read_radiograph
    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = DecompositionModel.load(resolve_model_folder(args.model))
    load_s = time.perf_counter() - start
    radiograph = read_radiograph(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH)
    reference = load_reference()
    detector = HipDetector.load()
    estimate_s = median_seconds(lambda: estimate_radiograph(model, detector, radiograph, reference), args.repeats)
    detect_s = median_seconds(lambda: detector.detect(radiograph.pixels, radiograph.pixel_spacing_mm), args.repeats)
    one_member = HipDetector(detector.networks[:1], detector.description, detector.folder)
    member_s = median_seconds(lambda: one_member.detect(radiograph.pixels, radiograph.pixel_spacing_mm), args.repeats)
    x = torch.zeros(1, 1, *model.image_shape)
    with torch.no_grad():
        forward_s = median_seconds(lambda: model.generator(x), args.repeats)
    rows, columns = radiograph.shape
    print(
        f"radiograph {columns} x {rows}, model {model.description['backbone']} at {model.image_shape[1]} x "
        f"{model.image_shape[0]}, {args.threads} threads"
    )
    print(f"model load (once)           : {load_s:.3f} s")
    print(f"estimate (median of {args.repeats:>2})     : {estimate_s:.3f} s   (goal < 1 s), of which")
    print(f"  hip detection             : {detect_s:.3f} s   ({len(detector.networks)} member(s))")
    print(f"hip detection, one member   : {member_s:.3f} s   ensemble / one = {detect_s / member_s:.1f}x")
    print(f"generator forward (baseline): {forward_s:.3f} s   estimate / forward = {estimate_s / forward_s:.1f}x")


if __name__ == "__main__":
    main()
