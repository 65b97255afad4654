"""Quantitative 2D images (DRRs, density maps) as float32 TIFF with their unit and metadata.

The TIFF's ImageDescription holds a JSON object: at least ``unit`` (e.g. "g/cm2"), plus whatever the writer
adds (pixel spacing in mm, geometry, provenance). 8-bit PNGs would lose the unit and the values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError


def write_float_image(path: str | Path, image: np.ndarray, unit: str, **metadata) -> Path:
    """Write ``image`` [rows, columns] as float32 TIFF atomically; ``metadata`` must be JSON-serialisable."""
    import tifffile

    path = Path(path)
    description = json.dumps({"unit": unit, **metadata})
    with atomic_path(path) as temporary:
        tifffile.imwrite(temporary, np.asarray(image, dtype=np.float32), description=description, metadata=None)
    return path


def read_float_image(path: str | Path) -> tuple[np.ndarray, dict]:
    """(float32 image, metadata with ``unit``) of a file written by :func:`write_float_image`."""
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tiff:
            image = tiff.asarray().astype(np.float32)
            description = tiff.pages[0].description
    except Exception as error:  # tifffile raises several types for broken files
        raise InputError(path, f"is not a readable TIFF ({type(error).__name__})", "re-export the image") from None
    try:
        metadata = json.loads(description)
    except json.JSONDecodeError:
        raise InputError(path, "has no unit metadata", "write it with bmdgan") from None
    return image, metadata
