"""Read plain radiographs (DICOM DX/CR/secondary capture, PNG, JPEG, 16-bit TIFF).

Pixels come back as float32 ``[row, col]`` with bone bright (MONOCHROME1 is inverted), after the
DICOM modality LUT (rescale slope/intercept). Window/VOI metadata is kept, not applied.
Pixel spacing is never guessed: when a file has none, ``pixel_spacing_mm`` is None and a warning says so.
The file type is taken from the content (DICOM preamble, image signatures), the suffix only when the content says
nothing. What a file may cost is bounded before decoding: at most :data:`MAX_RADIOGRAPH_PIXELS` pixels, read from
the header (a 12000 x 12000 PNG would take 8 GB to estimate); decompression bombs are refused naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .sniff import sniff_format

RADIOGRAPH_MODALITIES = {"DX", "CR", "RF", "OT", "RG", "XA", "PX"}
"""DICOM modalities accepted as plain radiographs (OT covers most secondary captures)."""
GREY_TOLERANCE = 2.0
"""Largest mean difference between colour channels (grey levels) for an RGB file to count as grey."""
MAX_RADIOGRAPH_PIXELS = 50_000_000
"""Largest radiograph read (pixels, all frames and channels counted): a 43 x 43 cm detector at 0.1 mm is 18.5
megapixels; 50 megapixels keep one estimate under 2 GB of memory (``benchmarks/bench_memory.py``)."""
NO_SPACING = "sizes in mm are unknown (bmdgan estimate and register need them: give --pixel-mm with the spacing in mm)"
AT_DETECTOR = "ImagerPixelSpacing (at the detector)"
"""``spacing_source`` of a file whose spacing is given at the detector only: sizes at the patient are overestimated
by the geometric magnification (1.1-1.25 at the hip of an AP pelvis), and the hip detector, which works in mm,
misplaces more heads (docs/hip-detection.md, *A pixel spacing that is off*)."""
SPACING_AT_DETECTOR = (
    "pixel spacing is given at the detector only (ImagerPixelSpacing, no magnification factor): sizes at the patient "
    "are overestimated by the magnification (state it: estimate --magnification; in Slicer, the volume's spacing)"
)


def is_spacing_warning(warning: str) -> bool:
    """Whether a reader's warning is about the file's pixel spacing (none, or at the detector only): it goes once
    someone states the spacing."""
    return warning == SPACING_AT_DETECTOR or NO_SPACING in warning


@dataclass
class Radiograph:
    """A 2D projection radiograph.

    pixels: float32 [row, col], larger = more attenuation (bone bright).
    pixel_spacing_mm: (row, col) spacing in mm at the patient plane when known, else None.
    imager_pixel_spacing_mm: (row, col) spacing in mm at the detector (DICOM ImagerPixelSpacing).
    source_to_detector_mm / source_to_patient_mm: DICOM distances when present.
    """

    pixels: np.ndarray
    source: str = ""
    pixel_spacing_mm: tuple[float, float] | None = None
    spacing_source: str = "missing"
    imager_pixel_spacing_mm: tuple[float, float] | None = None
    magnification_factor: float | None = None
    source_to_detector_mm: float | None = None
    source_to_patient_mm: float | None = None
    laterality: str | None = None
    view_position: str | None = None
    modality: str | None = None
    photometric_interpretation: str | None = None
    bits_stored: int | None = None
    window_center: list[float] = field(default_factory=list)
    window_width: list[float] = field(default_factory=list)
    voi_lut_function: str | None = None
    has_voi_lut_sequence: bool = False
    patient_age_years: float | None = None
    """From DICOM PatientAge, else PatientBirthDate and StudyDate/AcquisitionDate; None when the header has none."""
    body_part: str | None = None
    """DICOM BodyPartExamined, upper case, when present."""
    warnings: list[str] = field(default_factory=list)

    def state_pixel_spacing(self, spacing_mm: float, source: str) -> None:
        """Use ``spacing_mm`` (mm, square pixels) for a file that does not state its spacing (``source`` says who
        stated it); the warning about the missing spacing goes."""
        self.pixel_spacing_mm, self.spacing_source = (spacing_mm, spacing_mm), source
        self.warnings = [warning for warning in self.warnings if not is_spacing_warning(warning)]

    def state_magnification(self, factor: float, source: str) -> bool:
        """Divide a spacing given at the detector only by the geometric magnification ``factor`` at the hip (source
        to detector over source to hip), stated by ``source``; the warning about it goes. Returns whether it applied:
        a file that states its spacing at the patient (PixelSpacing, or a magnification factor of its own) keeps it."""
        if self.spacing_source != AT_DETECTOR:
            return False
        row_mm, column_mm = self.imager_pixel_spacing_mm
        self.pixel_spacing_mm = (row_mm / factor, column_mm / factor)
        self.spacing_source = f"ImagerPixelSpacing/{source}"
        self.warnings = [warning for warning in self.warnings if not is_spacing_warning(warning)]
        return True

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape

    def describe(self) -> dict:
        """Plain-data summary (no pixels) for logs and JSON."""
        summary = {k: v for k, v in self.__dict__.items() if k != "pixels"}
        summary["rows"], summary["columns"] = self.pixels.shape
        summary["min"], summary["max"] = float(self.pixels.min()), float(self.pixels.max())
        return summary


def refuse_too_large(path: Path, rows: int, columns: int, layers: int = 1) -> None:
    """Refuse, from the header and before decoding, more than :data:`MAX_RADIOGRAPH_PIXELS` pixels."""
    pixels = int(rows) * int(columns) * max(1, int(layers))
    if pixels > MAX_RADIOGRAPH_PIXELS:
        limit = MAX_RADIOGRAPH_PIXELS // 1_000_000
        layered = f" x {layers} frames or channels" if layers > 1 else ""
        raise InputError(
            path,
            f"is {columns} x {rows} pixels{layered} ({pixels / 1e6:.0f} megapixels), more than "
            f"the {limit} megapixels bmdgan reads",
            f"give a single-frame radiograph of at most {limit} megapixels (downsample it)",
        )


def _grey_from_colour(array: np.ndarray, path: Path) -> np.ndarray:
    """Collapse an RGB(A) array whose channels are equal to one grey channel; refuse real colour. The test looks
    at every 4th row and column, so a large image costs one float32 copy, not six."""
    sample = array[::4, ::4, :3].astype(np.float32)
    spread = float(np.abs(sample - sample.mean(axis=-1, keepdims=True)).mean())
    if spread > GREY_TOLERANCE:
        raise InputError(
            path,
            f"is a colour image (channels differ by {spread:.1f} grey levels on average), not a radiograph",
            "give a grey-scale X-ray image",
        )
    return array[..., :3].mean(axis=-1, dtype=np.float32)


def _check_2d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = _grey_from_colour(array, path)
    if array.ndim != 2:
        raise InputError(
            path, f"has shape {array.shape}, not a single 2D radiograph", "give one single-frame radiograph"
        )
    if min(array.shape) < 32:
        raise InputError(path, f"is only {array.shape[1]}x{array.shape[0]} pixels", "give a full radiograph")
    pixels = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(pixels)):
        raise InputError(path, "contains NaN or infinite pixels", "re-export the image")
    if float(pixels.max() - pixels.min()) <= 0:
        raise InputError(path, "is blank (all pixels are equal)", "give a radiograph with image content")
    return pixels


def _floats(value) -> list[float]:
    """The numbers of a DICOM value; [] when it is missing or not numbers (a malformed value counts as missing)."""
    if value is None:
        return []
    try:
        if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
            return [float(v) for v in value]
        return [float(value)]
    except (TypeError, ValueError):
        return []


def _int(dataset, keyword: str, default: int) -> int:
    """An integer DICOM attribute, ``default`` when missing or malformed."""
    try:
        return int(dataset.get(keyword, default))
    except (TypeError, ValueError):
        return default


def _pair(value) -> tuple[float, float] | None:
    numbers = _floats(value)
    if len(numbers) != 2 or min(numbers) <= 0:
        return None
    return numbers[0], numbers[1]


def _optional_float(dataset, keyword: str) -> float | None:
    value = dataset.get(keyword)
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _rescale(dataset, path: Path) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept), refused unless finite numbers with a non-zero slope."""
    values = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        raw = dataset.get(keyword)
        try:
            value = default if raw is None or str(raw).strip() == "" else float(raw)
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value) or (keyword == "RescaleSlope" and value == 0):
            raise InputError(
                path,
                f"has an unusable {keyword} ({str(raw)[:40]!r})",
                "fix the DICOM header (slope: a non-zero number, intercept: a number) or re-export it",
            )
        values.append(value)
    return values[0], values[1]


def _dicom_header(path: Path):
    """The DICOM header without pixel data, refusing what is not DICOM, not a radiograph or too large to decode."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        layers = int(header.get("NumberOfFrames", 1) or 1) * int(header.get("SamplesPerPixel", 1) or 1)
    except Exception as error:  # pydicom raises several types for non-DICOM or broken files
        raise InputError(
            path,
            f"is not a readable DICOM file ({type(error).__name__}: {str(error)[:120]})",
            "check that the file is a complete DICOM radiograph",
        ) from None
    modality = str(header.get("Modality", "")) or None
    if modality is not None and modality not in RADIOGRAPH_MODALITIES:
        raise InputError(
            path,
            f"DICOM modality is {modality}, not a plain radiograph",
            "give a DX, CR or secondary-capture radiograph",
        )
    refuse_too_large(path, rows, columns, layers)
    return header


def read_dicom_radiograph(path: Path) -> Radiograph:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    _dicom_header(path)
    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises several types for non-DICOM or broken files
        raise InputError(
            path,
            f"is not a readable DICOM file ({type(error).__name__}: {str(error)[:120]})",
            "check that the file is a complete DICOM radiograph",
        ) from None
    modality = str(dataset.get("Modality", "")) or None  # checked with the header
    if "PixelData" not in dataset:
        raise InputError(
            path,
            "has no complete pixel data (the file is truncated or holds no image)",
            "give a complete DICOM radiograph",
        )
    slope, intercept = _rescale(dataset, path)
    try:
        raw = dataset.pixel_array
    except MemoryError:
        raise InputError(path, "pixel data do not fit in memory", "give a smaller radiograph") from None
    except Exception as error:  # truncated data, unsupported transfer syntax...
        raise InputError(
            path,
            f"pixel data cannot be decoded ({type(error).__name__}: {str(error)[:160]})",
            "the file is truncated or compressed in an unsupported way; re-export it",
        ) from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if raw.ndim == 3 and raw.shape[-1] in (3, 4):
        pixels = _check_2d(raw, path)
    else:
        pixels = _check_2d(np.asarray(apply_modality_lut(raw, dataset), dtype=np.float32), path)
    bits_stored = _int(dataset, "BitsStored", 8 * raw.dtype.itemsize)
    if photometric == "MONOCHROME1":
        # Stored range [0, 2^bits - 1] (or signed) after rescale: invert within it so bone is bright.
        signed = _int(dataset, "PixelRepresentation", 0) == 1
        low, high = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0, 2**bits_stored - 1)
        pixels = (slope * low + intercept) + (slope * high + intercept) - pixels

    radiograph = Radiograph(
        pixels=pixels.astype(np.float32),
        source=str(path),
        modality=modality,
        photometric_interpretation=photometric,
        bits_stored=bits_stored,
    )
    imager = _pair(dataset.get("ImagerPixelSpacing"))
    patient = _pair(dataset.get("PixelSpacing"))
    ermf = _optional_float(dataset, "EstimatedRadiographicMagnificationFactor")
    radiograph.imager_pixel_spacing_mm = imager
    radiograph.magnification_factor = ermf
    if patient is not None:
        radiograph.pixel_spacing_mm, radiograph.spacing_source = patient, "PixelSpacing"
    elif imager is not None and ermf:
        radiograph.pixel_spacing_mm = (imager[0] / ermf, imager[1] / ermf)
        radiograph.spacing_source = "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
    elif imager is not None:
        radiograph.pixel_spacing_mm, radiograph.spacing_source = imager, AT_DETECTOR
        radiograph.warnings.append(SPACING_AT_DETECTOR)
    else:
        radiograph.warnings.append(f"the file has no pixel spacing (PixelSpacing/ImagerPixelSpacing): {NO_SPACING}")
    radiograph.source_to_detector_mm = _optional_float(dataset, "DistanceSourceToDetector")
    radiograph.source_to_patient_mm = _optional_float(dataset, "DistanceSourceToPatient")
    laterality = dataset.get("ImageLaterality") or dataset.get("Laterality")
    radiograph.laterality = str(laterality) if laterality else None
    radiograph.view_position = str(dataset.get("ViewPosition", "")) or None
    radiograph.window_center = _floats(dataset.get("WindowCenter"))
    radiograph.window_width = _floats(dataset.get("WindowWidth"))
    radiograph.voi_lut_function = str(dataset.get("VOILUTFunction", "")) or None
    radiograph.has_voi_lut_sequence = "VOILUTSequence" in dataset
    radiograph.patient_age_years = _age_years(dataset)
    radiograph.body_part = str(dataset.get("BodyPartExamined", "")).strip().upper() or None
    return radiograph


_AGE_UNITS_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def _age_years(dataset) -> float | None:
    """The patient's age (years): PatientAge ("045Y", "010M", "003W", "002D"), else birth and study dates."""
    text = str(dataset.get("PatientAge", "")).strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] in _AGE_UNITS_YEARS:
        return int(text[:3]) * _AGE_UNITS_YEARS[text[3]]
    birth = str(dataset.get("PatientBirthDate", "")).strip()
    taken = str(dataset.get("StudyDate", "") or dataset.get("AcquisitionDate", "")).strip()
    if len(birth) == 8 and len(taken) == 8 and birth.isdigit() and taken.isdigit():
        from datetime import date

        try:
            born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:]))
            seen = date(int(taken[:4]), int(taken[4:6]), int(taken[6:]))
        except ValueError:
            return None
        return (seen - born).days / 365.25
    return None


def _tiff_page(tiff, path: Path):
    """The first page of an open TIFF, refused when larger than :data:`MAX_RADIOGRAPH_PIXELS`."""
    page = tiff.pages[0]
    shape = page.shape
    refuse_too_large(
        path, shape[0], shape[1] if len(shape) > 1 else 1, int(np.prod(shape[2:])) if len(shape) > 2 else 1
    )
    return page


def _read_tiff(path: Path, decode: bool = True) -> np.ndarray | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            page = _tiff_page(tiff, path)
            return page.asarray() if decode else None
    except InputError:
        raise
    except MemoryError:
        raise InputError(path, "does not fit in memory", "give a smaller radiograph") from None
    except Exception as error:  # tifffile raises several types
        raise InputError(path, f"is not a readable TIFF ({type(error).__name__})", "re-export the image") from None


def _read_pil(path: Path, decode: bool = True) -> np.ndarray | None:
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # PIL warns from 89 megapixels: our own limit below is lower and says more
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            columns, rows = image.size
            refuse_too_large(path, rows, columns, len(image.getbands()))
            if not decode:
                return None
            image.load()
            return np.asarray(image)
    except Image.DecompressionBombError:
        raise InputError(
            path,
            "is a decompression bomb (its header claims far more pixels than a radiograph has)",
            f"give a radiograph of at most {MAX_RADIOGRAPH_PIXELS // 1_000_000} megapixels",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(
            path,
            f"is not a readable image ({type(error).__name__}: {str(error)[:120]})",
            "give a complete PNG, JPEG, TIFF or DICOM file",
        ) from None
    except MemoryError:
        raise InputError(path, "does not fit in memory", "give a smaller radiograph") from None


def read_image_radiograph(path: Path, kind: str | None = None) -> Radiograph:
    """PNG, JPEG or TIFF (8 or 16 bit; ``kind``: "tiff" or "pil" from the content, else by suffix). These formats
    carry no trustworthy spacing: it is reported missing."""
    tiff = kind == "tiff" if kind else path.suffix.lower() in (".tif", ".tiff")
    array = _read_tiff(path) if tiff else _read_pil(path)
    pixels = _check_2d(array, path)
    radiograph = Radiograph(
        pixels=pixels, source=str(path), bits_stored=8 * array.dtype.itemsize, photometric_interpretation="MONOCHROME2"
    )
    radiograph.warnings.append(f"image files ({path.suffix or 'no suffix'}) carry no pixel spacing: {NO_SPACING}")
    return radiograph


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _kind(path: Path) -> str:
    """ "tiff", "pil" (PNG, JPEG) or "dicom": by content, by suffix when the content is none of these."""

    if not path.is_file():
        raise InputError(path, "does not exist or is not a file", "check the path")
    kind = sniff_format(path)
    if kind == "tiff" or (kind is None and path.suffix.lower() in (".tif", ".tiff")):
        return "tiff"
    if kind in ("png", "jpeg") or (kind is None and path.suffix.lower() in IMAGE_SUFFIXES):
        return "pil"
    return "dicom"


def check_radiograph_header(path: str | Path) -> None:
    """Refuse, from the header alone (nothing decoded), a file :func:`read_radiograph` would refuse for its type or
    size: a command can then turn away a decompression bomb before it loads a model (a few hundred MB)."""
    path = Path(path)
    kind = _kind(path)
    if kind == "tiff":
        _read_tiff(path, decode=False)
    elif kind == "pil":
        _read_pil(path, decode=False)
    else:
        _rescale(_dicom_header(path), path)


def read_radiograph(path: str | Path) -> Radiograph:
    """Read a radiograph by content (DICOM, PNG, JPEG, TIFF), by suffix when the content is none of these; raises
    :class:`InputError` naming the file and the problem."""
    path = Path(path)
    kind = _kind(path)
    if kind == "dicom":
        return read_dicom_radiograph(path)
    return read_image_radiograph(path, kind)
