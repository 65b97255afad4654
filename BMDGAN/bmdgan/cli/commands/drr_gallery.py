"""``bmdgan drr-gallery``: review pictures (PNG) of the default AP DRR of every CT in a folder.

Each CT is projected as its header geometry says (LPS from the file): a wrong or missing orientation in
the header (e.g. the IBSI STS set) shows up as an upside-down or mirrored picture, which is the point.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "write PNG pictures of the default AP DRR of each CT (for visual review of data and geometry)"

VOLUME_PATTERNS = ("*.nii.gz", "*.nii", "*.nrrd", "*.mha", "*.mhd")
SKIP_WORDS = ("mask", "label", "seg")
"""Files whose name contains one of these words, or under a folder whose name starts with one, are taken for
segmentations and skipped."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cts", nargs="*", type=Path, help="CT files (default: every CT found under --data)")
    from ..options import add_out

    add_out(parser, "output folder for the PNGs and gallery.json")
    parser.add_argument(
        "--data",
        type=Path,
        help="folder searched for CTs when none is given (default: $BMDGAN_DATA_DIR, else /work/shared/data)",
    )
    parser.add_argument("--max-side", type=int, default=512, help="longest image side in pixels (default 512)")
    parser.add_argument(
        "--energy-kev",
        type=float,
        default=50.0,
        help="effective energy (keV) for HU -> mu (material decomposition, NIST mu/rho)",
    )
    parser.add_argument("--limit", type=int, help="at most this many CTs")


def find_cts(folder: Path) -> list[Path]:
    """CT volume files under ``folder``, segmentations skipped, sorted."""
    found = set()
    for pattern in VOLUME_PATTERNS:
        for path in folder.rglob(pattern):
            parts = [part.lower() for part in path.relative_to(folder).parts]
            in_mask_folder = any(part.startswith(SKIP_WORDS) for part in parts[:-1])
            if not in_mask_folder and not any(word in parts[-1] for word in SKIP_WORDS):
                found.add(path)
    return sorted(found)


def run(args: argparse.Namespace) -> int:
    import json
    import time

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from bmdgan.atomic import atomic_path, atomic_write_text

    from ...errors import InputError
    from ...io import read_ct
    from ...progress import progress_bar
    from ...projection import default_ap_geometry, project_volume
    from ...projection.image_io import display_scale, write_png8
    from ...projection.materials import material_attenuation

    cts = list(args.cts)
    args.data = args.data or Path(os.environ.get("BMDGAN_DATA_DIR", "/work/shared/data"))
    if not cts:
        if not args.data.is_dir():
            raise InputError(args.data, "is not a folder", "give CT files or --data FOLDER")
        cts = find_cts(args.data)
    if args.limit:
        cts = cts[: args.limit]
    if not cts:
        raise InputError(args.data, "holds no CT volume", "give CT files or another --data folder")
    args.out.mkdir(parents=True, exist_ok=True)
    entries, pictures = [], []
    for path in progress_bar(cts, desc="DRR gallery", unit="CT"):
        ct = read_ct(path)
        geometry = default_ap_geometry(ct, pixel_spacing_mm=0.5, max_side_px=args.max_side)
        started = time.perf_counter()
        drr = project_volume(ct.with_array(material_attenuation(ct.array, args.energy_kev), unit="1/mm"), geometry)
        seconds = time.perf_counter() - started
        name = path.name.split(".")[0]
        picture = args.out / f"{name}_drr.png"
        image = display_scale(drr.image[0])
        write_png8(picture, image)
        pictures.append((name, image))
        entries.append(
            {
                "ct": str(path),
                "picture": picture.name,
                "shape_ijk": list(ct.shape_ijk),
                "spacing_mm": list(ct.geometry.spacing_mm),
                "direction": np.asarray(ct.geometry.direction).round(4).tolist(),
                "unit": drr.unit,
                "max_radiological_path": float(drr.image.max()),
                "render_seconds": round(seconds, 3),
                "geometry": geometry.to_dict(),
            }
        )
    columns = min(5, len(pictures))
    rows = -(-len(pictures) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (name, image) in zip(axes.ravel(), pictures):
        axis.imshow(image, cmap="gray", vmin=0, vmax=1)
        axis.set_title(name, fontsize=9)
    figure.suptitle("Default AP DRRs from the header geometry (patient left on image right, head up)", fontsize=10)
    figure.tight_layout()
    sheet = args.out / "gallery.png"
    with atomic_path(sheet) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    atomic_write_text(
        args.out / "gallery.json", json.dumps({"energy_kev": args.energy_kev, "cts": entries}, indent=2) + "\n"
    )
    print(f"wrote {len(entries)} DRR picture(s) and {sheet}")
    return 0
