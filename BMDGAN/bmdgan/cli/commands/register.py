"""``bmdgan register``: intensity-based 2D-3D registration of a CT to a radiograph (pose JSON, overlay, log)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..options import add_out, add_seed, add_threads, comma_list, non_negative_int

HELP = "register a CT to a radiograph (gradient correlation, CMA-ES): pose/geometry JSON, overlay PNG, log"

EXIT_FAILED_QUALITY = 3
"""Exit code when the registration ran but its quality grade is "failed" (with --strict: also "uncertain")."""
OUTPUT_SUFFIXES = (".nii.gz", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii", ".nrrd", ".mha")
"""File-name endings (any case) that the default output prefix leaves out; everything else of the name is kept."""
GEOMETRY_KEYS_HELP = (
    'projection geometry JSON (as written by `bmdgan register` or `bmdgan drr --geometry-out`): "format": '
    '"bmdgan-projection-geometry", "version": 1, "source_to_detector_mm" (SID, mm), "detector_columns" and '
    '"detector_rows" (pixels: those of the radiograph), "column_spacing_mm" and "row_spacing_mm" (detector pixel '
    'pitch, mm at the detector), "principal_point_px": {"column", "row"} (pixel where the central ray meets the '
    'detector), "camera_from_lps_mm" (4x4 matrix from CT LPS mm to camera mm: the start pose; camera: source at '
    'the origin, +z towards the detector, +x along columns, +y along rows); optional "projection": '
    '"perspective" (default) or "parallel". It fixes pitch and SID: --pixel-mm and --sid-mm are refused with it'
)
"""--geometry's help: the keys :meth:`bmdgan.projection.geometry.ProjectionGeometry.from_dict` needs, with units."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        HELP + ". Writes NAME.geometry.json (the registered projection geometry, readable by `bmdgan drr "
        "--geometry`), NAME.registration.json (quality grade, likely cause and reason, similarity, pose change, "
        "timings), NAME.overlay.png (radiograph with the DRR's edges in green and the projected bone outline in "
        "magenta) and NAME.log. Start pose: --landmarks, else --geometry's pose, else an AP view of the CT centre "
        "with a global search (from the femoral head and neck that the bundled hip detector finds, and from an "
        "in-plane FFT search; NAME.registration.json's start_search says which was used). Detector: --geometry, "
        "else the radiograph's DICOM tags (ImagerPixelSpacing, "
        "DistanceSourceToDetector) with --pixel-mm and --sid-mm replacing them when given. Quality grade: good, "
        "uncertain (check the overlay) or failed, with the likely cause (start_pose, side, pixel_spacing, "
        f"field_of_view, ...). Exit code 0 when the registration is good or uncertain, {EXIT_FAILED_QUALITY} when "
        f"it ran but failed its quality check (outputs written; with --strict also when uncertain), 2 for "
        "unusable input."
    )
    parser.add_argument("radiograph", type=Path, help="radiograph (DICOM DX/CR, or PNG/TIFF with --pixel-mm)")
    parser.add_argument("ct", type=Path, help="CT volume in HU (DICOM folder, NIfTI, NRRD, MHA)")
    add_out(parser, "folder for the outputs")
    parser.add_argument(
        "--name",
        help="output file prefix (default: the radiograph's file name without its .dcm/.png/.tif/.nii.gz... ending)",
    )
    parser.add_argument("--labels", type=Path, help="label map on the CT grid (e.g. TotalSegmentator)")
    parser.add_argument(
        "--structure",
        type=comma_list(int, example="88,89"),
        metavar="L1,L2",
        help="label values of the structure to register (e.g. 88 for the left femur); default "
        "with --labels: every non-zero label. It defines the bone of the checks, the centre "
        "of rotation and the outline; without --labels bone is HU > --bone-hu",
    )
    parser.add_argument(
        "--structure-drr",
        action="store_true",
        help="render the DRR from the structure alone (e.g. register the femur only)",
    )
    parser.add_argument(
        "--landmarks",
        type=Path,
        metavar="JSON",
        help="corresponding points (format: bmdgan.registration.landmark_pose) for the start pose",
    )
    parser.add_argument("--geometry", type=Path, metavar="JSON", help=GEOMETRY_KEYS_HELP)
    parser.add_argument(
        "--sid-mm",
        type=float,
        help="source-to-detector distance (mm); replaces the file's DistanceSourceToDetector "
        "(needed when it has none); not with --geometry",
    )
    parser.add_argument(
        "--pixel-mm",
        type=float,
        help="detector pixel pitch (mm at the detector); replaces the file's spacing (needed for "
        "PNG/TIFF); not with --geometry",
    )
    parser.add_argument(
        "--roi", type=Path, help="region-of-interest mask image (non-zero = use) on the radiograph's pixel grid"
    )
    parser.add_argument(
        "--similarity",
        choices=("gc", "ncc"),
        default="gc",
        help="similarity measure (default gc: gradient correlation; ncc for comparison)",
    )
    parser.add_argument(
        "--global-search",
        choices=("auto", "on", "off"),
        default="auto",
        help="search for a start before CMA-ES: from the hips the hip detector finds and an exhaustive in-plane "
        "search (auto: only without landmarks and without a --geometry pose)",
    )
    parser.add_argument(
        "--refine-steps",
        type=non_negative_int,
        default=0,
        help="Adam steps through the differentiable projector after CMA-ES (default 0)",
    )
    parser.add_argument("--bone-hu", type=float, default=200.0, help="bone threshold without labels (HU, default 200)")
    add_seed(parser, what="CMA-ES search")
    add_threads(parser, 1, "on a busy shared CPU 2 threads ran 4.5x slower than 1; more help only on an idle machine")
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"exit with code {EXIT_FAILED_QUALITY} also when the quality grade is 'uncertain'",
    )


def output_prefix(path: Path) -> str:
    """Default output prefix: the file name without one known ending of :data:`OUTPUT_SUFFIXES` (``a.b.dcm`` ->
    ``a.b``; a DICOM file named by its UID keeps its whole name), so that inputs differing after a dot do not
    overwrite each other's outputs."""
    name = path.name
    for suffix in OUTPUT_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def exit_code(quality, strict: bool) -> int:
    """0, or :data:`EXIT_FAILED_QUALITY` for a "failed" grade (with ``strict`` also for "uncertain")."""
    return EXIT_FAILED_QUALITY if quality.failed or (strict and not quality.good) else 0


def _refuse_conflicts(args) -> None:
    """--pixel-mm and --sid-mm with --geometry: the geometry JSON fixes pitch and SID, so they are refused rather
    than silently ignored."""
    from ...errors import InputError

    given = [
        option for option, value in (("--pixel-mm", args.pixel_mm), ("--sid-mm", args.sid_mm)) if value is not None
    ]
    if args.geometry is not None and given:
        raise InputError(
            None,
            f"{' and '.join(given)} cannot be combined with --geometry (the geometry JSON gives "
            "the detector pitch and SID)",
            "edit column_spacing_mm, row_spacing_mm and source_to_detector_mm in the JSON, or leave out --geometry",
        )
    for option, value in (("--pixel-mm", args.pixel_mm), ("--sid-mm", args.sid_mm)):
        if value is not None and not value > 0:
            raise InputError(None, f"{option} {value:g} is not positive", f"give {option} in mm")


def _spacing_notes(radiograph, geometry, source: str) -> list[str]:
    """What the log says about the detector pitch used: where it comes from, and where it disagrees with the
    file's ImagerPixelSpacing (by more than 1%)."""
    notes = [
        f"detector {geometry.detector_columns}x{geometry.detector_rows} px, pitch "
        f"{geometry.column_spacing_mm:g} x {geometry.row_spacing_mm:g} mm ({source}), SID "
        f"{geometry.source_to_detector_mm:g} mm"
    ]
    tagged = radiograph.imager_pixel_spacing_mm
    if tagged is not None and source != "ImagerPixelSpacing":
        row_mm, column_mm = tagged
        if abs(geometry.column_spacing_mm / column_mm - 1) > 0.01 or abs(geometry.row_spacing_mm / row_mm - 1) > 0.01:
            notes.append(
                f"the pitch from {source} differs from the file's ImagerPixelSpacing {column_mm:g} x "
                f"{row_mm:g} mm: the {source} value is used"
            )
    return notes


def detector_geometry(args, radiograph, ct):
    """The radiograph's detector with a starting pose, how the pose was chosen, and log notes about the spacing
    (a warning only where the spacing is guessed)."""
    import warnings
    from dataclasses import replace

    import numpy as np

    from ...errors import InputError
    from ...projection.geometry import (
        DEFAULT_OBJECT_TO_DETECTOR_MM,
        ProjectionGeometry,
        ap_pose,
        geometry_from_radiograph,
        volume_centre_lps,
    )

    if args.geometry is not None:
        geometry = ProjectionGeometry.load(args.geometry)
        if geometry.shape != radiograph.shape:
            raise InputError(
                args.geometry,
                f"describes a {geometry.detector_columns}x{geometry.detector_rows} "
                f"detector but the radiograph has {radiograph.shape[1]}x"
                f"{radiograph.shape[0]} pixels",
                "give the geometry of this radiograph",
            )
        return geometry, "given", _spacing_notes(radiograph, geometry, "--geometry")
    if args.pixel_mm is None and radiograph.imager_pixel_spacing_mm is None and radiograph.pixel_spacing_mm is None:
        raise InputError(
            args.radiograph,
            "has no pixel spacing (ImagerPixelSpacing or PixelSpacing)",
            "give --pixel-mm (the detector pitch in mm) or --geometry",
        )
    sid = args.sid_mm or radiograph.source_to_detector_mm
    if not sid:
        raise InputError(
            args.radiograph,
            "has no source-to-detector distance (DistanceSourceToDetector)",
            "give --sid-mm (e.g. 1000)",
        )
    notes = []
    if args.sid_mm and radiograph.source_to_detector_mm and abs(args.sid_mm - radiograph.source_to_detector_mm) > 1:
        notes.append(
            f"--sid-mm {args.sid_mm:g} replaces the file's DistanceSourceToDetector "
            f"{radiograph.source_to_detector_mm:g} mm"
        )
    if args.pixel_mm is not None:
        rows, columns = radiograph.shape
        centre = volume_centre_lps(ct.shape_ijk, ct.geometry.ijk_to_lps())
        geometry = ProjectionGeometry(
            sid,
            columns,
            rows,
            args.pixel_mm,
            args.pixel_mm,
            ((columns - 1) / 2.0, (rows - 1) / 2.0),
            ap_pose(np.asarray(centre), sid - DEFAULT_OBJECT_TO_DETECTOR_MM),
        )
        return geometry, "default", _spacing_notes(radiograph, geometry, "--pixel-mm") + notes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        geometry = geometry_from_radiograph(replace(radiograph, source_to_detector_mm=sid), volume=ct)
    source = "ImagerPixelSpacing"
    if radiograph.imager_pixel_spacing_mm is None:  # PixelSpacing at the patient, times the magnification if known
        factor = geometry.column_spacing_mm / radiograph.pixel_spacing_mm[1]
        source = radiograph.spacing_source + (f" x magnification {factor:.3g}" if abs(factor - 1) > 1e-6 else "")
    notes = _spacing_notes(radiograph, geometry, source) + notes
    notes += [
        f"warning: the pixel spacing is guessed: {warning.message} (give --pixel-mm if it is wrong)"
        for warning in caught
    ]
    return geometry, "default", notes


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
        raise InputError(
            args.labels,
            f"holds no voxel with label(s) {_structure_text(args) or 'non-zero'}",
            "check --structure against the label values of the file",
        )
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
        raise InputError(
            path,
            f"mask is {mask.shape[1]}x{mask.shape[0]} pixels, the radiograph {shape[1]}x{shape[0]}",
            "draw the ROI on the radiograph's pixel grid",
        )
    return mask


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time

    import torch
    from tqdm import tqdm

    from bmdgan.atomic import atomic_write_text

    from ...io import read_ct, read_radiograph
    from ...registration.landmark_pose import Landmarks, solve_landmark_pose
    from ...registration.overlay import registration_overlay, write_png_rgb
    from ...registration.pipeline import RegistrationSettings, register

    torch.set_num_threads(args.threads)
    lines: list[str] = []

    def log(message: str) -> None:
        stamped = f"[{time.strftime('%H:%M:%S')}] {message}"
        lines.append(stamped)
        tqdm.write(stamped, file=sys.stderr)

    _refuse_conflicts(args)
    radiograph = read_radiograph(args.radiograph)
    ct = read_ct(args.ct)
    # the reader's spacing warnings are about sizes at the patient; registration needs the detector pitch, and
    # detector_geometry says where that comes from (and warns only where it is guessed)
    for warning in radiograph.warnings:
        if "pixel spacing" not in warning:
            log(f"radiograph: {warning}")
    structure = _structure_mask(args, ct)
    geometry, start, notes = detector_geometry(args, radiograph, ct)
    for note in notes:
        log(note)
    landmarks = None
    if args.landmarks is not None:
        landmarks = Landmarks.load(args.landmarks)
        solved = solve_landmark_pose(geometry, landmarks.pixels, landmarks.lps_mm)
        geometry, start = geometry.with_pose(solved.camera_from_lps), "landmarks"
        log(f"start pose from {len(landmarks.names)} landmarks: reprojection RMS {solved.rms_px:.2f} px")
    roi = _roi(args.roi, radiograph.shape) if args.roi is not None else None
    global_search = args.global_search == "on" or (args.global_search == "auto" and start == "default")
    settings = RegistrationSettings(
        similarity=args.similarity,
        refine_steps=args.refine_steps,
        bone_threshold_hu=args.bone_hu,
        global_search=global_search,
        seed=args.seed,
    )
    log(
        f"registering {args.ct} to {args.radiograph} (start: {start}, similarity: {args.similarity}, "
        f"global search: {'on' if global_search else 'off'})"
    )
    structure_for_drr = structure if args.structure_drr else None
    result = register(
        radiograph.pixels,
        geometry,
        ct,
        settings=settings,
        structure_mask=structure_for_drr,
        roi=roi,
        start=start,
        landmarks=landmarks,
        progress=True,
        log=log,
        bone_mask=structure,
    )
    name = args.name or output_prefix(args.radiograph)
    out = args.out
    geometry_path = result.geometry.save(out / f"{name}.geometry.json")
    record = result.to_dict()
    record["inputs"] = {
        "radiograph": str(args.radiograph),
        "ct": str(args.ct),
        "labels": str(args.labels) if args.labels else None,
        "structure": _structure_text(args),
        "landmarks": str(args.landmarks) if args.landmarks else None,
        "geometry": str(args.geometry) if args.geometry else None,
        "roi": str(args.roi) if args.roi else None,
        "pixel_mm": args.pixel_mm,
        "sid_mm": args.sid_mm,
    }
    quality = result.quality
    code = exit_code(quality, args.strict)
    record["exit_code"] = code
    report_path = atomic_write_text(out / f"{name}.registration.json", json.dumps(record, indent=2) + "\n")
    overlay_path = write_png_rgb(
        out / f"{name}.overlay.png", registration_overlay(result, radiograph.pixels, ct, structure)
    )
    log(f"wrote {geometry_path}, {report_path}, {overlay_path}")
    atomic_write_text(out / f"{name}.log", "\n".join(lines) + "\n")
    summary = f"registration {quality.flag.upper()}: {args.similarity.upper()} {result.similarity:.3f}"
    if result.start_search is not None:
        summary += f" (start from the {result.start_search['chosen'].replace('_', ' ')})"
    if quality.good:
        print(f"{summary}; " + "; ".join(quality.messages))
    else:
        print(f"{summary}; likely cause {quality.cause}: {quality.reason}", file=sys.stderr)
    return code
