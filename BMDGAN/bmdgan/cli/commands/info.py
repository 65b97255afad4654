"""``bmdgan info``: read CTs or radiographs and print their geometry and value ranges."""

from __future__ import annotations

HELP = "read CT volumes or radiographs and print geometry (mm, LPS) and value ranges"


def add_arguments(parser) -> None:
    parser.add_argument(
        "paths", nargs="+", help="CT (DICOM folder, .nii.gz, .nrrd, .mha) or radiograph (.dcm, .png, .jpg, .tif) files"
    )
    parser.add_argument(
        "--as",
        dest="kind",
        choices=("auto", "ct", "radiograph"),
        default="auto",
        help="how to read the files (auto: by suffix; a .dcm file is read as a radiograph)",
    )


def describe_ct(volume) -> str:
    geometry = volume.geometry
    return (
        f"CT {volume.shape_ijk[0]} x {volume.shape_ijk[1]} x {volume.shape_ijk[2]} voxels, "
        f"spacing {' x '.join(f'{s:.3f}' for s in geometry.spacing_mm)} mm, "
        f"origin (LPS) {', '.join(f'{o:.1f}' for o in geometry.origin_mm)} mm, "
        f"HU {float(volume.array.min()):.0f} to {float(volume.array.max()):.0f}"
    )


def describe_radiograph(radiograph) -> str:
    spacing = radiograph.pixel_spacing_mm
    spacing_text = (
        f"{spacing[0]:.3f} x {spacing[1]:.3f} mm ({radiograph.spacing_source})" if spacing else "spacing MISSING"
    )
    rows, columns = radiograph.shape
    text = (
        f"radiograph {columns} x {rows} pixels, {spacing_text}, modality {radiograph.modality or 'n/a'}, "
        f"{radiograph.photometric_interpretation}, values {radiograph.pixels.min():.0f} to "
        f"{radiograph.pixels.max():.0f}"
    )
    for warning in radiograph.warnings:
        text += f"\n  warning: {warning}"
    return text


def read_any(path: str, kind: str):
    from pathlib import Path

    from bmdgan.io import read_ct, read_radiograph
    from bmdgan.io.radiograph import IMAGE_SUFFIXES

    is_radiograph = kind == "radiograph" or (kind == "auto" and Path(path).suffix.lower() in IMAGE_SUFFIXES + (".dcm",))
    if is_radiograph:
        return describe_radiograph(read_radiograph(path))
    return describe_ct(read_ct(path))


def run(args) -> int:
    from bmdgan.errors import about_file

    for path in args.paths:
        with about_file(path):
            print(f"{path}: {read_any(path, args.kind)}")
    return 0
