"""``bmdgan estimate``: radiograph(s) in; PF-DRR, aBMD, vBMD, T-score, WHO category, warnings and a report out.

Exit codes: 0 every radiograph estimated; 2 an input could not be read (the others are still estimated); 3 the hip
detector found no hip on a radiograph (its result folder says why, with no number)."""

from __future__ import annotations

from bmdgan.cli.options import add_device, add_out, magnification, positive_mm

HELP = "estimate BMD from radiographs (files, folders or a .txt list): result.json, PF-DRR and report.png each"


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", help="radiographs (DICOM, PNG, JPEG, TIFF), folders or .txt lists")
    parser.add_argument("--model", default=None, help="model folder (default: the bundled default model)")
    parser.add_argument(
        "--detector",
        default=None,
        help="hip detector folder (default: the bundled one, trained on the shared CTs but the sample's)",
    )
    parser.add_argument(
        "--side",
        choices=("auto", "left", "right"),
        default="auto",
        help="hip to analyse (a hint to the hip detector); auto: DICOM laterality if present, else every hip found",
    )
    parser.add_argument(
        "--method",
        choices=("auto", "decomposition", "regression"),
        default="auto",
        help="auto: stage-3 regression when the model has it, else the PF-DRR mean",
    )
    parser.add_argument(
        "--single-hip", action="store_true", help="images show one hip only (the detector keeps its surest hip)"
    )
    parser.add_argument(
        "--pixel-mm",
        type=positive_mm,
        default=None,
        help="pixel spacing (mm) of images that do not state it (PNG, JPEG, TIFF; a DICOM's own spacing wins)",
    )
    parser.add_argument(
        "--magnification",
        type=magnification,
        default=None,
        help="geometric magnification at the hip (source-to-detector over source-to-hip distance, about 1.1-1.25 for "
        "an AP pelvis) of DICOMs whose spacing is given at the detector only (ImagerPixelSpacing, no magnification "
        "factor): their spacing at the patient is the detector's divided by it (a file's spacing at the patient wins)",
    )
    parser.add_argument("--reference", default=None, help="T-score reference (see resources/tscore_references.json)")
    add_out(parser, "output folder: one subfolder per radiograph")
    add_device(parser)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace earlier estimates in the output folder (never anything else)"
    )


def run(args) -> int:
    import sys
    from pathlib import Path

    from bmdgan.errors import about_file, describe_expected_error
    from bmdgan.inference.default_model import resolve_model_folder
    from bmdgan.inference.estimation import input_files, output_folder_names
    from bmdgan.io.radiograph import check_radiograph_header
    from bmdgan.outputs import check_destination
    from bmdgan.progress import progress_bar

    files = input_files(args.inputs)
    destinations = [Path(args.out) / name for name in output_folder_names(files)]
    for destination in destinations:  # before any work: every result folder must be free or replaceable
        check_destination(destination, "estimate", args.overwrite)
    model_folder = resolve_model_folder(args.model)
    failures, accepted = 0, []
    for path, destination in zip(files, destinations):  # headers only: a bomb is refused before torch loads
        try:
            with about_file(path):
                check_radiograph_header(path)
            accepted.append((path, destination))
        except Exception as error:
            message = describe_expected_error(error)
            if message is None or args.debug:
                raise
            failures += 1
            print(f"bmdgan estimate: error: {message}", file=sys.stderr)
    if not accepted:
        return 2

    from bmdgan.detection.detector import HipDetector
    from bmdgan.inference.estimation import NO_HIP_FOUND, areal_summary, estimate_radiograph, write_results
    from bmdgan.inference.model import DecompositionModel
    from bmdgan.inference.tscore import load_reference
    from bmdgan.io import read_radiograph

    model = DecompositionModel.load(model_folder, args.device)
    detector = HipDetector.load(args.detector)
    reference = load_reference(args.reference)
    no_hip = 0
    for path, destination in progress_bar(accepted, desc="estimating", disable=len(accepted) < 2):
        try:
            with about_file(path):
                radiograph = read_radiograph(path)
            if radiograph.pixel_spacing_mm is None and args.pixel_mm is not None:
                radiograph.state_pixel_spacing(args.pixel_mm, "--pixel-mm")
            if args.magnification is not None:
                radiograph.state_magnification(args.magnification, "--magnification")
            results = estimate_radiograph(
                model, detector, radiograph, reference, args.side, args.single_hip, args.method
            )
            folder = write_results(destination, radiograph, results, model, str(model_folder), args.overwrite)
        except Exception as error:  # one bad file (unreadable, decompression bomb...) does not stop the batch
            message = describe_expected_error(error)
            if message is None or args.debug:
                raise
            failures += 1
            print(f"bmdgan estimate: error: {message}", file=sys.stderr)
            continue
        if not results:
            no_hip += 1
            print(f"{path.name}: {NO_HIP_FOUND}")
        for hip, _ in results:
            numbers = areal_summary(hip)
            if hip.qct_bmd_mg_cm3 is not None:
                numbers += f", vBMD {hip.qct_bmd_mg_cm3:.0f} mg/cm3"
            print(f"{path.name} {hip.side} hip: {numbers}" + ("" if hip.trustworthy else "  [NOT TRUSTWORTHY]"))
            for warning in hip.warnings:
                print(f"  warning: {warning}")
        print(f"  -> {folder}")
    return 2 if failures else 3 if no_hip else 0
