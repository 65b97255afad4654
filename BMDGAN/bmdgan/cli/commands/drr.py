"""``bmdgan drr``: quantitative DRR of a CT (attenuation path) or calibrated CT (g/cm2), optionally masked."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "render a quantitative DRR (float32 TIFF or NPY+JSON with units and geometry) from a CT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..options import add_device, add_out
    from ..projection_options import add_geometry_arguments

    parser.add_argument("ct", type=Path, help="CT volume (HU, or calibrated mg/cm3 with --input-unit mg/cm3)")
    add_out(
        parser,
        "output image: .tif/.tiff = float32 TIFF, one page per channel, JSON metadata (units, "
        "channels, geometry) in the ImageDescription; .npy = array (C, rows, cols) plus a .json "
        "sidecar with the same metadata",
    )
    parser.add_argument(
        "--input-unit",
        choices=("HU", "mg/cm3", "1/mm"),
        default="HU",
        help="unit of the CT voxels: HU -> radiological path at --energy-kev (dimensionless); "
        "mg/cm3 (calibrated density) -> areal density g/cm2; 1/mm -> radiological path",
    )
    parser.add_argument(
        "--energy-kev",
        type=float,
        default=50.0,
        help="effective energy for HU -> linear attenuation (keV, 20-150, default %(default)s)",
    )
    parser.add_argument(
        "--hu-model",
        choices=("materials", "water"),
        default="materials",
        help="HU -> attenuation: 'materials' = adipose/soft tissue/bone mineral with their own NIST "
        "energy laws (bone contrast as in a radiograph); 'water' = mu_water * (1 + HU/1000)",
    )
    parser.add_argument("--labels", type=Path, help="label map on the CT grid (for --channel)")
    parser.add_argument(
        "--channel",
        action="append",
        metavar="NAME=L1,L2",
        help="masked channel from label values of --labels (repeatable), e.g. femur=88,89; "
        "with --labels but no --channel: one channel per label present",
    )
    parser.add_argument(
        "--mask",
        action="append",
        metavar="NAME=FILE",
        help="masked channel from a binary mask file on the CT grid (repeatable)",
    )
    parser.add_argument(
        "--include-unmasked", action="store_true", help="add the unmasked projection as the first channel ('all')"
    )
    parser.add_argument("--geometry-out", type=Path, help="also write the geometry JSON used")
    parser.add_argument("--png", type=Path, help="also write a 16-bit PNG preview of the first channel")
    add_device(parser)
    add_geometry_arguments(parser)


def _masks(args, ct) -> dict:
    import numpy as np

    from ...errors import InputError
    from ...io import read_label_volume
    from ..projection_options import parse_label_list, parse_named_values

    masks = {}
    channels = parse_named_values(args.channel, "--channel")
    if channels and args.labels is None:
        raise InputError(None, "--channel needs --labels", "give the label map with --labels")
    if args.labels is not None:
        labels = read_label_volume(args.labels, like=ct).array
        if not channels:
            channels = {f"label_{value}": str(value) for value in np.unique(labels) if value != 0}
        for name, text in channels.items():
            masks[name] = np.isin(labels, parse_label_list(text, "--channel"))
    for name, path in parse_named_values(args.mask, "--mask").items():
        if name in masks:
            raise InputError(None, f"channel name {name!r} is used twice", "give each channel a unique name")
        masks[name] = read_label_volume(Path(path), like=ct).array > 0
    return masks


def run(args: argparse.Namespace) -> int:
    import json
    import time

    import numpy as np

    from bmdgan.atomic import atomic_path, atomic_write_text

    from ...errors import InputError
    from ...io import read_ct
    from ...io.ct import read_volume
    from ...projection import project_volume
    from ...projection.attenuation import attenuation_volume
    from ...projection.image_io import display_scale, write_drr_tiff, write_png16
    from ...projection.materials import material_attenuation
    from ..projection_options import geometry_from_arguments

    suffix = args.out.suffix.lower()
    if suffix not in (".tif", ".tiff", ".npy"):
        raise InputError(
            args.out,
            "unknown output type",
            "use .tif/.tiff (TIFF with JSON metadata) or .npy (array plus .json sidecar)",
        )
    ct = read_ct(args.ct) if args.input_unit == "HU" else read_volume(args.ct, args.input_unit)  # HU checked
    if args.input_unit == "HU" and args.hu_model == "water":
        volume = attenuation_volume(ct, args.energy_kev)
    elif args.input_unit == "HU":
        volume = ct.with_array(material_attenuation(ct.array, args.energy_kev), unit="1/mm")
    else:
        volume = ct.with_array(ct.array, unit=args.input_unit)
    masks = _masks(args, ct)
    geometry = geometry_from_arguments(args, ct)
    started = time.perf_counter()
    drr = project_volume(
        volume, geometry, masks or None, include_unmasked=args.include_unmasked, device=args.device, progress=True
    )
    seconds = time.perf_counter() - started
    extra = {"source_ct": str(args.ct), "input_unit": args.input_unit, "render_seconds": round(seconds, 3)}
    if args.input_unit == "HU":
        extra["energy_kev"] = args.energy_kev
        extra["hu_model"] = args.hu_model
    if suffix == ".npy":
        metadata = {
            "format": "bmdgan-drr",
            "version": 1,
            "unit": drr.unit,
            "quantity": drr.quantity,
            "channels": drr.channels,
            "geometry": geometry.to_dict(),
            **extra,
        }
        with atomic_path(args.out) as temporary, open(temporary, "wb") as handle:
            np.save(handle, drr.image)
        atomic_write_text(args.out.with_suffix(".json"), json.dumps(metadata, indent=2) + "\n")
    else:
        write_drr_tiff(args.out, drr, extra)
    if args.geometry_out:
        geometry.save(args.geometry_out)
    if args.png:
        write_png16(args.png, display_scale(drr.image[0]))
    print(
        f"{args.out}: {len(drr.channels)} channel(s) {', '.join(drr.channels)}, {geometry.detector_columns}x"
        f"{geometry.detector_rows} px, unit {drr.unit} ({drr.quantity}), max {float(drr.image.max()):.4g}, "
        f"{seconds:.2f} s"
    )
    return 0
