"""``bmdgan segment``: automatic femur and pelvis labels of one hip (or a given segmentation converted)."""

from __future__ import annotations

from bmdgan.cli.options import add_out

HELP = "label the femur (2) and pelvis (1) of one hip in a CT, automatically or from an existing segmentation"


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT volume (DICOM folder, .nii.gz, .nrrd, .mha) in HU")
    add_out(parser, "label map to write (.nii.gz, .nrrd, .mha)")
    parser.add_argument("--metal", help="also write the metal mask (0/1) here")
    from bmdgan.cli.ct_options import add_common_inputs

    add_common_inputs(parser, landmarks=False, calibration=False)


def run(args) -> int:
    import numpy as np

    from bmdgan.ct import labels as L
    from bmdgan.cli.ct_options import read_optional_inputs
    from bmdgan.ct.segmentation import metal_mask, segment_femur
    from bmdgan.io import read_ct, write_volume

    ct = read_ct(args.ct)
    inputs = read_optional_inputs(args, ct)
    if "label_volume" in inputs:
        labels = inputs["label_volume"]
        metal = metal_mask(ct)
        notes = ["converted from the given segmentation"]
    else:
        segmentation = segment_femur(ct, side=args.side)
        labels, metal, notes = segmentation.labels, segmentation.metal, segmentation.notes
    write_volume(labels, args.out)
    if args.metal:
        write_volume(ct.with_array(metal.astype(np.uint8), unit="label"), args.metal)
    voxel_cm3 = ct.voxel_volume_mm3() / 1000.0
    femur_cm3 = float(L.femur_mask(labels.array).sum() * voxel_cm3)
    pelvis_cm3 = float((labels.array == L.PELVIS).sum() * voxel_cm3)
    print(f"{args.out}: femur {femur_cm3:.1f} cm3, pelvis {pelvis_cm3:.1f} cm3, metal {float(metal.sum() * voxel_cm3):.2f} cm3")
    for note in notes:
        print(f"  note: {note}")
    return 0
