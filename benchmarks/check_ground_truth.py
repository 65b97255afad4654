"""Checks of the CT ground truth a cohort rests on, for every real bone of its ``prepared`` folder
(``simulate-cohort``):

1. Is the proximal-femur region whole? A thigh crop's box may cut it: the PF voxels on each face of the scan, as a
   share of the region's largest section parallel to that face (0 %: inside the scan). A cut region's CT-aBMD is
   that of a truncated bone, and its simulated radiograph shows bone ending in a flat face.
2. How much does a femoral head's fitted centre depend on where the fit starts? :func:`bmdgan.ct.head.refine_head`
   fits the head sphere again from its prepared centre and from six starts 3 mm away along each LPS axis (the hip
   search starts from Hough votes a few mm off): the median and largest distance (mm) of the seven fitted centres
   from their median centre, and the radii (mm). Every landmark, PF region and detector target rests on it.
3. How oblique is each single-hip view to the body? The cohort views a hip in its anatomical frame (beam
   perpendicular to the neck and the proximal shaft, ``frame_axes``); a clinic's AP view looks along the body's
   anterior-posterior axis and turns the leg instead. The angle (deg) between the view's beam and the scan's AP
   axis (LPS y; for the IBSI crops, whose headers are untrustworthy, up to a flip), and between the frame's "up"
   and the slice axis (LPS z).
4. Does the head-centre landmark sit where the femur's own surface puts it? A sphere fitted (least squares, points
   more than 3 mm off dropped, five rounds) to the femur label's surface voxels on the head's cap (within 35 mm of
   the landmark, more than 60 degrees from the femur's lateral axis, so the neck stays out): its centre's offset
   from the landmark (mm; along the femur's frame: lateral, AP, up) and its radius (mm). The label's head surface
   is cut at the joint space found along rays, so a landmark a few mm off would show here; the hip detector's
   per-CT offsets (docs/hip-detection.md) are either the landmark's or the detector's.

Usage: python benchmarks/check_ground_truth.py COHORT/prepared [--offset-mm 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def fitted_centres(prepared, offset_mm: float) -> tuple[np.ndarray, list[float]]:
    """Head centres (LPS mm) and radii (mm) fitted from the prepared centre and six starts ``offset_mm`` away."""
    from bmdgan.ct.head import RAY_COUNT, fibonacci_directions, refine_head, smoothed_hu

    smooth = smoothed_hu(prepared.hu)
    directions = fibonacci_directions(RAY_COUNT)
    steps = np.vstack([np.zeros(3), offset_mm * np.eye(3), -offset_mm * np.eye(3)])
    heads = [refine_head(prepared.hu, smooth, prepared.head_centre_lps + step, directions) for step in steps]
    heads = [head for head in heads if head is not None]
    return np.array([head.centre_lps for head in heads]), [head.radius_mm for head in heads]


def label_head_sphere(prepared) -> tuple[np.ndarray, float] | None:
    """Check 4: (centre's offset from the head-centre landmark along the frame's lateral, AP and up axes in mm,
    radius in mm) of the sphere fitted to the femur label's head cap; None without a femur label."""
    from scipy import ndimage

    from bmdgan.ct.grid import index_to_lps
    from bmdgan.ct.head import fit_sphere

    if prepared.femur_mask is None:
        return None
    surface = prepared.femur_mask & ~ndimage.binary_erosion(prepared.femur_mask)
    points = index_to_lps(prepared.hu.geometry, np.argwhere(surface))
    lateral = prepared.frame_axes[0]
    centre, radius = prepared.head_centre_lps, 35.0
    near = np.linalg.norm(points - centre, axis=1) < radius
    for _ in range(5):
        offsets = points - centre
        distance = np.linalg.norm(offsets, axis=1)
        cap = offsets @ lateral < np.cos(np.radians(60.0)) * np.maximum(distance, 1e-6)
        centre, radius = fit_sphere(points[near & cap])
        near = np.abs(np.linalg.norm(points - centre, axis=1) - radius) < 3.0
    return prepared.frame_axes @ (centre - prepared.head_centre_lps), radius


def angle_to_axis_deg(vector, axis: int) -> float:
    """Angle (deg, 0-90) between a direction and an LPS axis, either way along it."""
    return float(np.degrees(np.arccos(min(abs(float(np.asarray(vector)[axis])) / float(np.linalg.norm(vector)), 1.0))))


def print_view_obliquity(folder: Path, keys: list[str]) -> None:
    """Check 3, from the bones' descriptions alone (no arrays are read)."""
    import json

    print("| bone | beam off the scan's AP axis (deg) | 'up' off the slice axis (deg) |\n| --- | --- | --- |")
    for key in keys:
        lateral, ap, up = json.loads((folder / f"{key}.json").read_text())["frame_axes"]
        print(f"| {key} | {angle_to_axis_deg(ap, 1):.0f} | {angle_to_axis_deg(up, 2):.0f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prepared", help="a simulate-cohort folder's prepared/ (real bones: keys without -aNN)")
    parser.add_argument("--offset-mm", type=float, default=3.0)
    args = parser.parse_args()

    import torch

    from bmdgan.cohort.prepared_ct import load_prepared, pf_scan_cuts, real_bones
    from bmdgan.ct.pf_region import describe_scan_cuts

    torch.set_num_threads(1)
    folder = Path(args.prepared)
    keys = [key for keys in real_bones(folder).values() for key in keys]
    print_view_obliquity(folder, keys)
    print("| bone | PF region cut by the scan (face: share of its section) |\n| --- | --- |")
    for key in keys:
        print(f"| {key} | {describe_scan_cuts(pf_scan_cuts(folder, key)) or 'whole'} |")
    print("\n| bone | fits | median shift (mm) | largest shift (mm) | radii (mm) |\n| --- | --- | --- | --- | --- |")
    medians, label_spheres = [], {}
    for key in keys:
        prepared = load_prepared(folder, key)  # read once: checks 2 and 4
        label_spheres[key] = label_head_sphere(prepared)
        centres, radii = fitted_centres(prepared, args.offset_mm)
        shifts = np.linalg.norm(centres - np.median(centres, axis=0), axis=1)
        medians.append(float(np.median(shifts)))
        print(
            f"| {key} | {len(centres)} of 7 | {np.median(shifts):.1f} | {shifts.max():.1f} | "
            f"{min(radii):.1f}-{max(radii):.1f} |"
        )
    print(f"median over bones of the median shift: {np.median(medians):.1f} mm")
    print(
        "\n| bone | label sphere off the landmark: lateral, AP, up (mm) | distance (mm) | radius (mm) |\n"
        "| --- | --- | --- | --- |"
    )
    for key in keys:
        fitted = label_spheres[key]
        if fitted is None:
            print(f"| {key} | no femur label in this cache | | |")
            continue
        offset, radius = fitted
        print(
            f"| {key} | {', '.join(f'{value:+.1f}' for value in offset)} | {np.linalg.norm(offset):.1f} | "
            f"{radius:.1f} |"
        )


if __name__ == "__main__":
    main()
