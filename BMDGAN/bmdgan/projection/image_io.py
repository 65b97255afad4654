"""Image files of projections: float32 DRR TIFF with JSON metadata, review PNGs (8 and 16 bit).

DRR TIFF: one float32 page per channel, shape (C, rows, cols); the first page's ImageDescription is
JSON::

    {"format": "bmdgan-drr", "version": 1, "unit": "g/cm2", "quantity": "areal density",
     "channels": ["all", "femur"], "geometry": {<projection geometry JSON>}, ...extra keys}

Any TIFF reader gets the pixel values; :func:`read_drr_tiff` also recovers units, channels and geometry.
All writers are atomic (temporary file + ``os.replace``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from .geometry import ProjectionGeometry
from .projector import DRR

DRR_FORMAT = "bmdgan-drr"
DRR_VERSION = 1


def write_drr_tiff(path: str | Path, drr: DRR, extra: dict | None = None) -> Path:
    """Write a DRR as float32 TIFF pages with the JSON description above."""
    import tifffile

    description = {
        "format": DRR_FORMAT,
        "version": DRR_VERSION,
        "unit": drr.unit,
        "quantity": drr.quantity,
        "channels": list(drr.channels),
        "geometry": drr.geometry.to_dict(),
    }
    description.update(extra or {})
    image = np.ascontiguousarray(drr.image, dtype=np.float32)
    with atomic_path(path) as temporary:
        tifffile.imwrite(temporary, image, photometric="minisblack", description=json.dumps(description), metadata=None)
    return Path(path)


def read_drr_tiff(path: str | Path) -> tuple[DRR, dict]:
    """Read a DRR TIFF written by :func:`write_drr_tiff`: the DRR and the whole metadata dict."""
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist", "check the path")
    try:
        with tifffile.TiffFile(path) as tiff:
            description = tiff.pages[0].description
            image = tiff.asarray()
        metadata = json.loads(description)
    except Exception as error:  # tifffile and json raise several types
        raise InputError(
            path, f"is not a bmdgan DRR TIFF ({type(error).__name__})", "give a file written by bmdgan drr"
        ) from None
    if not isinstance(metadata, dict) or metadata.get("format") != DRR_FORMAT:
        raise InputError(path, "has no bmdgan DRR metadata", "give a file written by bmdgan drr")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    geometry = ProjectionGeometry.from_dict(metadata["geometry"], path)
    return DRR(image, list(metadata["channels"]), metadata["unit"], metadata.get("quantity", ""), geometry), metadata


def display_scale(image: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5) -> np.ndarray:
    """Map an image to [0, 1] between percentiles of its non-zero pixels (for review pictures only)."""
    image = np.asarray(image, dtype=np.float64)
    values = image[image != 0]
    if values.size == 0:
        return np.zeros(image.shape, dtype=np.float32)
    low, high = np.percentile(values, [low_percentile, high_percentile])
    low = min(low, 0.0)
    if high <= low:
        high = low + 1.0
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def write_png16(path: str | Path, image01: np.ndarray) -> Path:
    """16-bit grey PNG of a [0, 1] image (full 0-65535 range so any viewer shows it)."""
    from PIL import Image

    pixels = np.rint(np.clip(np.asarray(image01, dtype=np.float64), 0.0, 1.0) * 65535.0).astype(np.uint16)
    with atomic_path(path) as temporary:
        Image.fromarray(pixels).save(temporary, format="PNG")
    return Path(path)


def write_png8(path: str | Path, image01: np.ndarray) -> Path:
    """8-bit grey PNG of a [0, 1] image (review pictures)."""
    from PIL import Image

    pixels = np.rint(np.clip(np.asarray(image01, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    with atomic_path(path) as temporary:
        Image.fromarray(pixels).save(temporary, format="PNG")
    return Path(path)
