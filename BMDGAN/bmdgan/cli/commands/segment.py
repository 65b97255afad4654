"""``bmdgan segment``: automatic femur and pelvis labels of one or both hips (or a given segmentation converted)."""

from __future__ import annotations

from bmdgan.cli.options import add_out

HELP = "label the femur (2) and pelvis (1) of a hip in a CT, automatically or from an existing segmentation"


def add_arguments(parser) -> None:
    parser.description = (
        f"{HELP}. With --side both on a whole-pelvis CT one label map per hip is written, "
        "named after -o with the side added (labels.nii.gz -> labels-left.nii.gz, labels-right.nii.gz)."
    )
    parser.add_argument("ct", help="CT volume (DICOM folder, .nii.gz, .nrrd, .mha) in HU")
    add_out(parser, "label map to write (.nii.gz, .nrrd, .mha)")
    parser.add_argument("--metal", help="also write the metal mask (0/1) here")
    from bmdgan.cli.ct_options import add_common_inputs

    add_common_inputs(parser, landmarks=False, calibration=False)


def run(args) -> int:
    import numpy as np

    from bmdgan.cli.ct_options import read_optional_inputs, side_path
    from bmdgan.ct import labels as L
    from bmdgan.ct.pipeline import segment_hips
    from bmdgan.io import read_ct, write_volume

    ct = read_ct(args.ct)
    inputs = read_optional_inputs(args, ct)
    if "label_volume" in inputs:
        from bmdgan.ct.segmentation import metal_mask

        results = [(args.side, inputs["label_volume"], metal_mask(ct), ["converted from the given segmentation"])]
    else:
        results = [(s.side, s.labels, s.metal, s.notes) for s in segment_hips(ct, side=args.side)]
    voxel_cm3 = ct.voxel_volume_mm3() / 1000.0
    for side, labels, metal, notes in results:
        one = len(results) == 1
        path = args.out if one else side_path(args.out, side)
        write_volume(labels, path)
        if args.metal:
            write_volume(
                ct.with_array(metal.astype(np.uint8), unit="label"), args.metal if one else side_path(args.metal, side)
            )
        femur_cm3 = float(L.femur_mask(labels.array).sum() * voxel_cm3)
        pelvis_cm3 = float((labels.array == L.PELVIS).sum() * voxel_cm3)
        print(
            f"{path}: {side} hip, femur {femur_cm3:.1f} cm3, pelvis {pelvis_cm3:.1f} cm3, "
            f"metal {float(metal.sum() * voxel_cm3):.2f} cm3"
        )
        for note in notes:
            print(f"  note: {note}")
    return 0
