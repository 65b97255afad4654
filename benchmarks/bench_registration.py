"""Accuracy and speed of 2D-3D registration on simulated radiographs with known poses.

For each case: a shared CT (the IBSI thigh CTs, one leg each, and the TotalSegmentator pelvis CT), a
random true view (the default AP geometry, 0.5 mm detector pitch, turned by up to 5 degrees and moved by
up to 10 mm), a radiograph simulated there (``bmdgan.projection.simulator``: material physics, scatter,
quantum and electronic noise, detector blur, clinical processing, parameters drawn per case), and a start
offset from the truth of up to 10 degrees (random axis through the bone centroid) and up to 20 mm
(random direction). Each similarity (GC, NCC) registers from the same start.

Targets of the mTRE: bone voxels, HU > 200 in the thigh CTs (the proximal femur and shaft; a little
acetabulum in some), the TotalSegmentator femur masks (both proximal femurs) in the pelvis CT.
Success: final mTRE < 2 mm. The overlay picture of every registration goes to ``--out``.

Usage: python benchmarks/bench_registration.py --out /tmp/registration_overlays [--max-minutes 10]
       [--cases 30] [--similarity gc ncc] [--threads 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from bmdgan.io import read_ct, read_label_volume
from bmdgan.projection import camera_pose, default_ap_geometry
from bmdgan.projection.simulator import sample_parameters, simulate_radiograph
from bmdgan.registration.metrics import mean_projection_distance_mm, mean_target_error_mm
from bmdgan.registration.overlay import registration_overlay, write_png_rgb
from bmdgan.registration.pipeline import RegistrationSettings, register

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
SUCCESS_MM = 2.0
"""Success: final mTRE below this (mm)."""
MAX_START_DEG, MAX_START_MM = 10.0, 20.0
"""Largest start offset: rotation angle (degrees) and translation length (mm)."""
MAX_VIEW_DEG, MAX_VIEW_MM = 5.0, 10.0
"""Largest deviation of the true view from the default AP view, per axis (degrees, mm)."""


def load_cases() -> list[tuple[str, object, np.ndarray]]:
    """(name, CT, target mask [k, j, i]) of every shared CT used."""
    cases = []
    for path in sorted((DATA / "ibsi_sts").glob("STS_*.nii.gz")):
        ct = read_ct(path)
        cases.append((path.name.split(".")[0], ct, ct.array > 200.0))
    folder = DATA / "totalsegmentator_example"
    if (folder / "example_ct.nii.gz").is_file():
        ct = read_ct(folder / "example_ct.nii.gz")
        femurs = [
            read_label_volume(folder / "masks_totalsegmentator_v1" / f"femur_{side}.nii.gz", like=ct).array > 0
            for side in ("left", "right")
        ]
        cases.append(("TotalSeg_pelvis", ct, femurs[0] | femurs[1]))
    return cases


def lps_points(mask: np.ndarray, ct) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    return (np.c_[i, j, k, np.ones(len(i))] @ ct.geometry.ijk_to_lps().T)[:, :3]


def random_offset(rng: np.random.Generator, max_deg: float, max_mm: float) -> np.ndarray:
    """Pose parameters (3 angles in degrees, 3 mm) of a rotation by up to ``max_deg`` about a random axis
    and a translation of up to ``max_mm`` in a random direction."""
    axis = rng.normal(size=3)
    angles = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(rng.uniform(0.0, max_deg)))
    direction = rng.normal(size=3)
    return np.concatenate(
        [angles.as_euler("xyz", degrees=True), direction / np.linalg.norm(direction) * rng.uniform(0.0, max_mm)]
    )


def summary(name: str, rows: list[dict]) -> None:
    errors = [row["mtre"] for row in rows]
    seconds = [row["seconds"] for row in rows]
    success = [row["mtre"] < SUCCESS_MM for row in rows]
    good = [row["flag"] == "good" for row in rows]
    false_good = sum(g and not s for g, s in zip(good, success))
    false_alarm = sum(s and not g for g, s in zip(good, success))
    print(
        f"{name.upper():4s} n={len(rows)}  success (mTRE < {SUCCESS_MM:g} mm) {100 * np.mean(success):.0f}% "
        f"({sum(success)}/{len(rows)})  median mTRE {statistics.median(errors):.2f} mm  "
        f"90th pct {np.percentile(errors, 90):.2f} mm  "
        f"median mPD {statistics.median(r['mpd'] for r in rows):.2f} mm  "
        f"time median {statistics.median(seconds):.1f} s, max {max(seconds):.1f} s  flagged good {sum(good)}  "
        f"good-but-wrong {false_good}  failed-but-right {false_alarm}"
    )
    right = [row["similarity"] for row, s in zip(rows, success) if s]
    wrong = [row["similarity"] for row, s in zip(rows, success) if not s]
    if right:
        print(
            f"      final {name.upper()} of successes: min {min(right):.3f} median {statistics.median(right):.3f}"
            + (f"; of failures: max {max(wrong):.3f}" if wrong else "")
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the overlay PNGs")
    parser.add_argument("--cases", type=int, default=100, help="most cases (default %(default)s)")
    parser.add_argument(
        "--max-minutes", type=float, default=10.0, help="start no new case after this wall time (default %(default)s)"
    )
    parser.add_argument("--similarity", nargs="+", default=["gc", "ncc"], choices=["gc", "ncc"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if not DATA.is_dir():
        print(f"shared CTs not found in {DATA}", file=sys.stderr)
        return 2
    cts = load_cases()
    began = time.perf_counter()
    results = {name: [] for name in args.similarity}
    print(
        f"{'case':>4s} {'CT':16s} {'start mTRE':>10s} "
        + " ".join(
            f"{s.upper() + ' mTRE':>9s} {'mPD':>5s} {s.upper():>6s} {'flag':>6s} {'s':>5s}" for s in args.similarity
        )
    )
    per_case = []
    for number in range(args.cases):
        elapsed = time.perf_counter() - began
        if per_case and elapsed + statistics.median(per_case) > 60.0 * args.max_minutes:
            break
        case_began = time.perf_counter()
        name, ct, target = cts[number % len(cts)]
        rng = np.random.default_rng(args.seed * 1000 + number)
        points = lps_points(target, ct)
        centre = points.mean(axis=0)
        geometry = default_ap_geometry(ct, pixel_spacing_mm=0.5)
        view = np.concatenate([rng.uniform(-MAX_VIEW_DEG, MAX_VIEW_DEG, 3), rng.uniform(-MAX_VIEW_MM, MAX_VIEW_MM, 3)])
        truth = camera_pose(view, geometry.camera_from_lps, centre).numpy()
        simulated = simulate_radiograph(ct, geometry.with_pose(truth), sample_parameters(rng), rng=rng)
        pixels = simulated.pixels.astype(np.float32)
        start = camera_pose(random_offset(rng, MAX_START_DEG, MAX_START_MM), truth, centre).numpy()
        start_error = mean_target_error_mm(points, truth, start)
        line = f"{number:4d} {name:16s} {start_error:10.2f} "
        for similarity in args.similarity:
            settings = RegistrationSettings(similarity=similarity, seed=number)
            result = register(pixels, geometry.with_pose(start), ct, settings=settings, start="perturbed truth")
            error = mean_target_error_mm(points, truth, result.geometry.camera_from_lps)
            distance = mean_projection_distance_mm(geometry, points, truth, result.geometry.camera_from_lps)
            row = {
                "mtre": error,
                "mpd": distance,
                "similarity": result.similarity,
                "flag": result.quality.flag,
                "seconds": result.seconds,
            }
            results[similarity].append(row)
            picture = registration_overlay(
                result,
                pixels,
                ct,
                extra_lines=[
                    f"benchmark case {number} {name}: mTRE {error:.2f} mm (start {start_error:.1f} mm), "
                    f"{'SUCCESS' if error < SUCCESS_MM else 'FAILURE'}"
                ],
            )
            write_png_rgb(args.out / f"case{number:03d}_{name}_{similarity}.png", picture)
            line += (
                f"{error:9.2f} {distance:5.2f} {result.similarity:6.3f} {result.quality.flag:>6s} "
                f"{result.seconds:5.1f} "
            )
        print(line, flush=True)
        per_case.append(time.perf_counter() - case_began)
    print(
        f"\n{len(per_case)} cases in {(time.perf_counter() - began) / 60:.1f} min on {torch.get_num_threads()} "
        f"thread(s); start offsets up to {MAX_START_DEG:g} degrees and {MAX_START_MM:g} mm"
    )
    for similarity, rows in results.items():
        if rows:
            summary(similarity, rows)
    print(f"overlays: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
