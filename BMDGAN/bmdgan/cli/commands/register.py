"""``bmdgan register``: intensity-based 2D-3D registration of a CT to a radiograph (pose JSON, overlay, log)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..options import add_out, add_seed, add_threads, comma_list, non_negative_int

HELP = "register a CT to a radiograph (gradient correlation, CMA-ES): pose/geometry JSON, overlay PNG, log"

EXIT_FAILED_QUALITY = 3
"""Exit code with --strict when the registration finished but its quality flag is "failed"."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        HELP + ". Writes NAME.geometry.json (the registered projection geometry, readable by `bmdgan drr "
        "--geometry`), NAME.registration.json (quality flag and messages, similarity, pose change, timings), "
        "NAME.overlay.png (radiograph with the DRR's edges in green and the projected bone outline in magenta) "
        "and NAME.log. Start pose: --landmarks, else --geometry's pose, else an AP view of the CT centre with a "
        f"global search. Exit code 0 when finished (check the quality flag; with --strict, {EXIT_FAILED_QUALITY} "
        "when it is 'failed'), 2 for unusable input.")
    parser.add_argument("radiograph", type=Path, help="radiograph (DICOM DX/CR, or PNG/TIFF with --pixel-mm)")
    parser.add_argument("ct", type=Path, help="CT volume in HU (DICOM folder, NIfTI, NRRD, MHA)")
    add_out(parser, "folder for the outputs")
    parser.add_argument("--name", help="output file prefix (default: the radiograph's file name)")
    parser.add_argument("--labels", type=Path, help="label map on the CT grid (e.g. TotalSegmentator)")
    parser.add_argument("--structure", type=comma_list(int, example="88,89"), metavar="L1,L2",
                        help="label values of the structure to register (e.g. 88 for the left femur); default "
                             "with --labels: every non-zero label. It defines the bone of the checks, the centre "
                             "of rotation and the outline; without --labels bone is HU > --bone-hu")
    parser.add_argument("--structure-drr", action="store_true",
                        help="render the DRR from the structure alone (e.g. register the femur only)")
    parser.add_argument("--landmarks", type=Path, metavar="JSON",
                        help="corresponding points (format: bmdgan.registration.landmark_pose) for the start pose")
    parser.add_argument("--geometry", type=Path, metavar="JSON",
                        help="projection geometry JSON of the radiograph (detector, SID) with an initial pose")
    parser.add_argument("--sid-mm", type=float, help="source-to-detector distance (mm) when the file has none")
    parser.add_argument("--pixel-mm", type=float,
                        help="detector pixel pitch (mm) when the file has none (PNG/TIFF)")
    parser.add_argument("--roi", type=Path,
                        help="region-of-interest mask image (non-zero = use) on the radiograph's pixel grid")
    parser.add_argument("--similarity", choices=("gc", "ncc"), default="gc",
                        help="similarity measure (default gc: gradient correlation; ncc for comparison)")
    parser.add_argument("--global-search", choices=("auto", "on", "off"), default="auto",
                        help="exhaustive in-plane search before CMA-ES (auto: only without landmarks and "
                             "without a --geometry pose)")
    parser.add_argument("--refine-steps", type=non_negative_int, default=0,
                        help="Adam steps through the differentiable projector after CMA-ES (default 0)")
    parser.add_argument("--bone-hu", type=float, default=200.0, help="bone threshold without labels (HU, default 200)")
    add_seed(parser, what="CMA-ES search")
    add_threads(parser, 1, "on a busy shared CPU 2 threads ran 4.5x slower than 1; more help only on an idle "
                           "machine")
    parser.add_argument("--strict", action="store_true",
                        help=f"exit with code {EXIT_FAILED_QUALITY} when the quality flag is 'failed'")


def _detector_geometry(args, radiograph, ct):
    """The radiograph's detector with a starting pose, and how the pose was chosen."""
    import numpy as np

    from ...errors import InputError
    from ...projection.geometry import (DEFAULT_OBJECT_TO_DETECTOR_MM, ProjectionGeometry, ap_pose,
                                        geometry_from_radiograph, volume_centre_lps)

    if args.geometry is not None:
        geometry = ProjectionGeometry.load(args.geometry)
        if geometry.shape != radiograph.shape:
            raise InputError(args.geometry, f"describes a {geometry.detector_columns}x{geometry.detector_rows} "
                                            f"detector but the radiograph has {radiograph.shape[1]}x"
                                            f"{radiograph.shape[0]} pixels", "give the geometry of this radiograph")
        return geometry, "given"
    if args.pixel_mm is not None:
        sid = radiograph.source_to_detector_mm or args.sid_mm
        if not sid:
            raise InputError(args.radiograph, "has no source-to-detector distance", "give --sid-mm (e.g. 1000)")
        rows, columns = radiograph.shape
        centre = volume_centre_lps(ct.shape_ijk, ct.geometry.ijk_to_lps())
        geometry = ProjectionGeometry(sid, columns, rows, args.pixel_mm, args.pixel_mm,
                                      ((columns - 1) / 2.0, (rows - 1) / 2.0),
                                      ap_pose(np.asarray(centre), sid - DEFAULT_OBJECT_TO_DETECTOR_MM))
        return geometry, "default"
    return geometry_from_radiograph(radiograph, volume=ct, source_to_detector_mm=args.sid_mm), "default"


def _structure_mask(args, ct):
    import numpy as np

    from ...errors import InputError
    from ...io import read_label_volume
    if args.labels is None:
        if args.structure or args.structure_drr:
            raise InputError(None, "--structure and --structure-drr need --labels", "give the label map with --labels")
        return None
    labels = read_label_volume(args.labels, like=ct).array
    mask = np.isin(labels, args.structure) if args.structure else labels != 0
    if not mask.any():
        raise InputError(args.labels, f"holds no voxel with label(s) {_structure_text(args) or 'non-zero'}",
                         "check --structure against the label values of the file")
    return mask


def _structure_text(args) -> str | None:
    """--structure as given on the command line ("88,89"), for messages and the record."""
    return ",".join(str(value) for value in args.structure) if args.structure else None


def _roi(path: Path, shape):
    import numpy as np

    from ...errors import InputError

    if path.suffix.lower() == ".npy":
        mask = np.load(path) != 0
    else:
        from PIL import Image

        try:
            with Image.open(path) as image:
                mask = np.asarray(image.convert("L")) > 0
        except OSError as error:
            raise InputError(path, f"is not a readable mask image ({error})", "give a PNG/TIFF mask") from None
    if mask.shape != tuple(shape):
        raise InputError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} pixels, the radiograph "
                               f"{shape[1]}x{shape[0]}", "draw the ROI on the radiograph's pixel grid")
    return mask


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time

    import torch
    from tqdm import tqdm

    from ...io import read_ct, read_radiograph
    from bmdgan.atomic import atomic_write_text
    from ...registration.landmark_pose import Landmarks, solve_landmark_pose
    from ...registration.overlay import registration_overlay, write_png_rgb
    from ...registration.pipeline import RegistrationSettings, register

    torch.set_num_threads(args.threads)
    lines: list[str] = []

    def log(message: str) -> None:
        stamped = f"[{time.strftime('%H:%M:%S')}] {message}"
        lines.append(stamped)
        tqdm.write(stamped, file=sys.stderr)

    radiograph = read_radiograph(args.radiograph)
    ct = read_ct(args.ct)
    for warning in radiograph.warnings:
        log(f"radiograph: {warning}")
    structure = _structure_mask(args, ct)
    geometry, start = _detector_geometry(args, radiograph, ct)
    landmarks = None
    if args.landmarks is not None:
        landmarks = Landmarks.load(args.landmarks)
        solved = solve_landmark_pose(geometry, landmarks.pixels, landmarks.lps_mm)
        geometry, start = geometry.with_pose(solved.camera_from_lps), "landmarks"
        log(f"start pose from {len(landmarks.names)} landmarks: reprojection RMS {solved.rms_px:.2f} px")
    roi = _roi(args.roi, radiograph.shape) if args.roi is not None else None
    global_search = args.global_search == "on" or (args.global_search == "auto" and start == "default")
    settings = RegistrationSettings(similarity=args.similarity, refine_steps=args.refine_steps,
                                    bone_threshold_hu=args.bone_hu, global_search=global_search, seed=args.seed)
    log(f"registering {args.ct} to {args.radiograph} (start: {start}, similarity: {args.similarity}, "
        f"global search: {'on' if global_search else 'off'})")
    structure_for_drr = structure if args.structure_drr else None
    result = register(radiograph.pixels, geometry, ct, settings=settings, structure_mask=structure_for_drr,
                      roi=roi, start=start, landmarks=landmarks, progress=True, log=log,
                      bone_mask=structure)
    name = args.name or args.radiograph.name.split(".")[0]
    out = args.out
    geometry_path = result.geometry.save(out / f"{name}.geometry.json")
    record = result.to_dict()
    record["inputs"] = {"radiograph": str(args.radiograph), "ct": str(args.ct),
                        "labels": str(args.labels) if args.labels else None, "structure": _structure_text(args),
                        "landmarks": str(args.landmarks) if args.landmarks else None,
                        "geometry": str(args.geometry) if args.geometry else None,
                        "roi": str(args.roi) if args.roi else None}
    report_path = atomic_write_text(out / f"{name}.registration.json", json.dumps(record, indent=2) + "\n")
    overlay_path = write_png_rgb(out / f"{name}.overlay.png",
                                 registration_overlay(result, radiograph.pixels, ct, structure))
    log(f"wrote {geometry_path}, {report_path}, {overlay_path}")
    atomic_write_text(out / f"{name}.log", "\n".join(lines) + "\n")
    flag = result.quality.flag.upper()
    print(f"registration {flag}: {args.similarity.upper()} {result.similarity:.3f}; "
          + "; ".join(result.quality.messages), file=sys.stderr if not result.quality.good else sys.stdout)
    if args.strict and not result.quality.good:
        return EXIT_FAILED_QUALITY
    return 0
