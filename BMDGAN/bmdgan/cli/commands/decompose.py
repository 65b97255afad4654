"""``bmdgan decompose``: radiograph -> PF-DRR (float32 TIFF in g/cm2) with a trained model."""

from __future__ import annotations

from bmdgan.cli.options import add_device, add_out

HELP = "decompose a radiograph into the proximal-femur DRR (g/cm2) with a trained model"


def add_arguments(parser) -> None:
    parser.add_argument("radiograph", help="radiograph file (DICOM, PNG, JPEG, TIFF)")
    parser.add_argument("--model", required=True, help="model folder (a training run's 'model' folder)")
    parser.add_argument(
        "--side", choices=("left", "right"), required=True, help="the patient's hip to analyse (found by the detector)"
    )
    parser.add_argument("--detector", default=None, help="hip detector folder (default: the bundled one)")
    add_out(parser, "output TIFF (float32, g/cm2)")
    add_device(parser)


def run(args) -> int:
    from bmdgan.detection.detector import HipDetector
    from bmdgan.errors import InputError
    from bmdgan.inference.estimation import NO_HIP_FOUND, decompose_hip
    from bmdgan.inference.model import DecompositionModel
    from bmdgan.io import read_radiograph
    from bmdgan.io.float_image import write_float_image

    model = DecompositionModel.load(args.model, args.device)
    radiograph = read_radiograph(args.radiograph)
    found = HipDetector.load(args.detector).detect(radiograph.pixels, radiograph.pixel_spacing_mm, args.side, True)
    if not found:
        raise InputError(args.radiograph, NO_HIP_FOUND, f"check that it shows the {args.side} hip")
    decomposition = decompose_hip(model, radiograph, found[0])
    bmd = model.bmd(decomposition)
    write_float_image(
        args.out,
        decomposition.pf_drr_g_cm2,
        "g/cm2",
        source=str(args.radiograph),
        region=decomposition.roi.to_dict(),
        bmd=bmd,
    )
    print(
        f"PF-DRR written to {args.out} (g/cm2, {decomposition.pf_drr_g_cm2.shape[1]} x "
        f"{decomposition.pf_drr_g_cm2.shape[0]} pixels)"
    )
    for target, value in bmd.items():
        print(f"  {target}: {value:.3f}")
    return 0
