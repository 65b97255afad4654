"""Find each hip on a radiograph: femoral head centre and neck point (source pixels) with a confidence.

A detector folder holds ``hip_detector.json`` (format, resolution, what it was trained on) and
``hip_detector.safetensors`` (weights; never pickle), and ``hip_refiner.safetensors`` where the description names
a second stage (:mod:`.refinement`: the head centre found again at 1 mm). An ensemble (:func:`write_ensemble`)
holds one weights file per member, networks trained alike with different seeds, and reads an image with the mean
of their logits: on CTs it never saw, a single training's figures move with its seed more than with any change of
recipe tried (docs/hip-detection.md), and an ensemble averages that variation out.

A hip's confidence is the probability that the image shows both its neck point and a femoral head beside it (each
map's softmax mass near its peak against that landmark's "absent" logit, :mod:`.network`): below the detector's
threshold (``found_confidence`` in its description, chosen by whole-CT cross-validation; :data:`FOUND_CONFIDENCE`
where it names none) no hip is reported on that side.

A detector trained with head disks (``"head_disks": true`` in its description, :data:`.layout.HEAD_DISKS`) reads
each head centre as the centroid of the disc its network draws around the head map's peak
(:func:`disk_centre`), and falls back to the peak where it draws none there."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..datasets.normalise import resample
from ..errors import InputError
from ..io.members import read_json_object
from .layout import CHANNELS, DOWNSAMPLING, HEAD_DISKS, heatmap_peak, mirrored
from .refinement import REFINER_MM_PER_PX, refine_head

DETECTOR_MM_PER_PX = 2.0
"""Resolution the detector works at (mm per pixel in the image plane): a femoral head (45-55 mm) spans ~25 px."""
HEATMAP_SIGMA_PX = 2.5
"""Standard deviation of the Gaussian a landmark is drawn as in the training targets (pixels: 5 mm)."""
NECK_TO_HEAD_SEARCH_PX = 30
"""The head of a side is looked for within this many pixels (60 mm) of that side's neck point (40 mm from the
head): a round head looks alike on both sides, the neck and shaft beside it tell the side."""
PEAK_RADIUS_PX = 8
"""Half-size of the window around a map's maximum whose mass counts as the landmark (pixels: 3 sigma)."""
FOUND_CONFIDENCE = 0.5
"""A head whose probability of being shown is below this is not reported (no hip on that side), for a detector
whose description names no threshold of its own."""
DISK_SEARCH_PX = 6
"""A head disc counts for a head map's peak if it holds the peak or comes within this many pixels (12 mm) of it."""
SAME_HIP_MM = 30.0
"""Two detections (a right and a left) whose heads lie closer than this are one hip: the less sure one is dropped."""
FORMAT = "bmdgan-hip-detector"
DESCRIPTION = "hip_detector.json"
WEIGHTS = "hip_detector"
REFINER_WEIGHTS = "hip_refiner"
DEFAULT_DETECTOR = Path(__file__).resolve().parents[1] / "resources" / "hip_detector"
"""The detector shipped with the package (trained on every measurable shared CT but STS_012, the sample's)."""
SIDES = ("right", "left")


@dataclass(frozen=True)
class DetectedHip:
    """One hip found on a radiograph: ``side`` (the patient's), head centre and neck point as (column, row) source
    pixels, and the detector's confidence in each."""

    side: str
    head_centre_px: tuple[float, float]
    neck_point_px: tuple[float, float]
    confidence: float
    neck_confidence: float
    """Probabilities (0-1) that the image shows the head and the neck point."""
    first_stage_head_px: tuple[float, float] | None = None
    """The first stage's head centre before the refinement moved it (None without a refinement)."""


def detector_grid(shape: tuple[int, int], pixel_spacing_mm: tuple[float, float]) -> tuple[np.ndarray, tuple[int, int]]:
    """(3x3 affine from detector pixels (column, row, 1) to source pixels, detector image shape): the source at
    :data:`DETECTOR_MM_PER_PX`, padded at its bottom and right to a multiple of the network's downsampling."""
    row_mm, column_mm = pixel_spacing_mm
    step_columns, step_rows = DETECTOR_MM_PER_PX / column_mm, DETECTOR_MM_PER_PX / row_mm
    rows = int(math.ceil(shape[0] / step_rows / DOWNSAMPLING)) * DOWNSAMPLING
    columns = int(math.ceil(shape[1] / step_columns / DOWNSAMPLING)) * DOWNSAMPLING
    matrix = np.array(
        [[step_columns, 0.0, 0.5 * step_columns - 0.5], [0.0, step_rows, 0.5 * step_rows - 0.5], [0.0, 0.0, 1.0]]
    )
    return matrix, (rows, columns)


def detector_image(pixels: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(network input [rows, columns] in [-1, 1] at :data:`DETECTOR_MM_PER_PX`, its 3x3 affine to source pixels).
    The 0.5/99.5 percentiles that scale it are taken over the radiograph itself, not the padding."""
    matrix, shape = detector_grid(pixels.shape, pixel_spacing_mm)
    image = resample(pixels, matrix, shape, outside="edge")
    inside = np.linalg.solve(matrix, np.array([pixels.shape[1] - 0.5, pixels.shape[0] - 0.5, 1.0]))
    rows, columns = max(1, int(inside[1])), max(1, int(inside[0]))
    low, high = np.percentile(image[:rows, :columns], [0.5, 99.5])
    scaled = np.clip((image - low) / max(float(high - low), 1e-6) * 2.0 - 1.0, -1.0, 1.0)
    return scaled.astype(np.float32), matrix


def _shown(logits: np.ndarray, absent: float, at: tuple[int, int]) -> float:
    """Probability that a landmark is shown at ``at`` (row, column): the softmax mass within
    :data:`PEAK_RADIUS_PX` of it against the absent logit (local, so that a larger image's background adds
    nothing)."""
    row, column = at
    radius = PEAK_RADIUS_PX
    window = logits[max(row - radius, 0) : row + radius + 1, max(column - radius, 0) : column + radius + 1]
    peak = float(window.max() + np.log(np.exp(window - window.max()).sum()))
    return float(1.0 / (1.0 + np.exp(absent - peak)))


def _near(logits: np.ndarray, centre: tuple[float, float], radius: float) -> np.ndarray:
    """exp(logits - max) within ``radius`` pixels of ``centre`` (column, row), 0 elsewhere: a map for
    :func:`heatmap_peak` that only looks there."""
    rows, columns = np.mgrid[0 : logits.shape[0], 0 : logits.shape[1]]
    inside = (columns - centre[0]) ** 2 + (rows - centre[1]) ** 2 <= radius**2
    masked = np.where(inside, logits, -np.inf)
    return np.where(inside, np.exp(masked - masked.max()), 0.0)


def disk_centre(probability: np.ndarray, near: tuple[float, float]) -> tuple[float, float] | None:
    """(column, row) of the head disc nearest ``near`` (column, row) in a map of each pixel's probability of being
    inside a femoral head: the probability-weighted centroid of the connected region above 0.5 that holds ``near``
    or comes within :data:`DISK_SEARCH_PX` of it; None when none does."""
    from scipy.ndimage import distance_transform_edt, label

    regions, count = label(probability > 0.5)
    if count == 0:
        return None
    column, row = (min(max(int(round(v)), 0), size - 1) for v, size in zip(near, probability.shape[::-1]))
    chosen = regions[row, column]
    if chosen == 0:
        distance, (rows, columns) = distance_transform_edt(regions == 0, return_indices=True)
        if distance[row, column] > DISK_SEARCH_PX:
            return None
        chosen = regions[rows[row, column], columns[row, column]]
    weights = np.where(regions == chosen, probability, 0.0)
    grid_rows, grid_columns = np.indices(probability.shape)
    total = float(weights.sum())
    return float((weights * grid_columns).sum() / total), float((weights * grid_rows).sum() / total)


class HipDetector:
    """A trained hip detector (see the module docstring). ``head_reading`` is how a head centre is read: "disk"
    (:func:`disk_centre`, a detector trained with head disks) or "peak" (the head map's peak); a detector with
    disks can be set to "peak" to measure what the discs add."""

    def __init__(self, networks: list, description: dict, folder: Path, refiner=None):
        self.networks, self.description, self.folder = [network.eval() for network in networks], description, folder
        self.refiner = refiner.eval() if refiner is not None else None
        self.head_reading = "disk" if description.get("head_disks") else "peak"

    @staticmethod
    def load(folder: str | Path | None = None) -> HipDetector:
        from ..training.checkpoint import load_weights
        from .network import HipHeatmapNet

        folder = Path(folder) if folder is not None else DEFAULT_DETECTOR
        path = folder / DESCRIPTION
        if not path.is_file():
            raise InputError(folder, f"is not a hip detector folder (no {DESCRIPTION})", "give a trained detector")
        description = read_json_object(path, "hip detector description")
        if description.get("format") != FORMAT or description.get("mm_per_px") != DETECTOR_MM_PER_PX:
            raise InputError(
                path, "is not a hip detector of this version (format or resolution differ)", "train it again"
            )
        threshold = description.get("found_confidence", FOUND_CONFIDENCE)
        if not _is_probability(threshold):
            raise InputError(path, f"names found_confidence {threshold!r}, not a probability in (0, 1)", "set it again")
        networks = []
        disks = len(HEAD_DISKS) if description.get("head_disks") else 0
        for member in member_weights(description):
            networks.append(HipHeatmapNet(disks=disks))
            load_weights(folder, member, networks[-1])
        refiner = None
        if "refiner" in description:
            refiner = HipHeatmapNet(maps=1)
            load_weights(folder, REFINER_WEIGHTS, refiner)
        return HipDetector(networks, description, folder, refiner)

    @property
    def found_confidence(self) -> float:
        """The confidence (0-1) below which a side is reported as showing no hip."""
        return float(self.description.get("found_confidence", FOUND_CONFIDENCE))

    def heatmaps(
        self, pixels: np.ndarray, pixel_spacing_mm: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits [channels, rows, columns] at the detector's resolution, absent logits [channels], the 3x3
        affine from the detector's pixels to source pixels); an ensemble's are its members' means (a constant
        added to one member's map and absent logit changes nothing downstream, so raw logits average as well as
        log-probabilities)."""
        import torch

        image, matrix = detector_image(pixels, pixel_spacing_mm)
        with torch.no_grad():
            outputs = [network(torch.from_numpy(image)[None, None]) for network in self.networks]
        logits = torch.stack([output[0][0] for output in outputs]).mean(dim=0)
        absent = torch.stack([output[1][0] for output in outputs]).mean(dim=0)
        return logits.numpy(), absent.numpy(), matrix

    def detect(
        self,
        pixels: np.ndarray,
        pixel_spacing_mm: tuple[float, float] | None,
        side: str = "auto",
        one_hip: bool = False,
        min_confidence: float | None = None,
    ) -> list[DetectedHip]:
        """The hips found (right first), each at most once. ``side`` ("left"/"right") keeps that side only;
        ``one_hip`` keeps the surest hip only (an image that shows one hip); a side read with a confidence below
        ``min_confidence`` (default: :attr:`found_confidence`) is not reported. 0 reports every reading: the
        cross-validation then measures any threshold from one pass (a threshold only drops the less sure of two
        hips too close together, which stays the less sure). The image is read as it is and mirrored (a right hip
        then reads as a left one) and the two readings are averaged: measured on CTs the detector never saw, this
        puts 5 points more head centres within 5 mm. Raises :class:`InputError` without a pixel spacing: the
        detector works in millimetres."""
        if pixel_spacing_mm is None:
            raise InputError(
                None,
                "the radiograph has no pixel spacing: the hip cannot be found and measured in millimetres",
                "give a DICOM with PixelSpacing or ImagerPixelSpacing, or state the spacing with --pixel-mm",
            )
        min_confidence = self.found_confidence if min_confidence is None else min_confidence
        pixels = np.asarray(pixels, np.float32)
        direct = self._read(pixels, pixel_spacing_mm, side)
        in_mirror = self._read(np.ascontiguousarray(pixels[:, ::-1]), pixel_spacing_mm, mirrored(side))
        last_column = pixels.shape[1] - 1
        found = []
        for hip_side in SIDES:
            readings = [direct.get(hip_side)]
            other = in_mirror.get(mirrored(hip_side))
            if other is not None:  # the mirror image's other side is this hip, mirrored back
                readings.append(
                    DetectedHip(
                        hip_side,
                        (last_column - other.head_centre_px[0], other.head_centre_px[1]),
                        (last_column - other.neck_point_px[0], other.neck_point_px[1]),
                        other.confidence,
                        other.neck_confidence,
                    )
                )
            readings = [reading for reading in readings if reading is not None]
            confidence = sum(reading.confidence for reading in readings) / 2.0  # a reading without it counts 0
            if not readings or not confidence >= min_confidence:  # a NaN confidence is no hip
                continue
            head = tuple(float(v) for v in np.mean([reading.head_centre_px for reading in readings], axis=0))
            first_stage = None
            if self.refiner is not None:
                first_stage, head = head, refine_head(self.refiner, pixels, pixel_spacing_mm, head, hip_side)
            found.append(
                DetectedHip(
                    hip_side,
                    head,
                    tuple(float(v) for v in np.mean([reading.neck_point_px for reading in readings], axis=0)),
                    float(confidence),
                    float(sum(reading.neck_confidence for reading in readings) / 2.0),
                    first_stage,
                )
            )
        if len(found) == 2:
            distance_mm = np.hypot(
                (found[0].head_centre_px[0] - found[1].head_centre_px[0]) * pixel_spacing_mm[1],
                (found[0].head_centre_px[1] - found[1].head_centre_px[1]) * pixel_spacing_mm[0],
            )
            if distance_mm < SAME_HIP_MM or one_hip:
                found = [max(found, key=lambda hip: hip.confidence)]
        return found

    def _read(self, pixels: np.ndarray, pixel_spacing_mm: tuple[float, float], side: str) -> dict[str, DetectedHip]:
        """{side: hip} before the confidence threshold: each side's neck point, the head nearest to it, and the AP
        rule on the neck's direction."""
        logits, absent, matrix = self.heatmaps(pixels, pixel_spacing_mm)
        head_channels = (CHANNELS.index("head_right"), CHANNELS.index("head_left"))
        heads = np.logaddexp(logits[head_channels[0]], logits[head_channels[1]])
        if self.head_reading == "disk":  # a round head looks alike on both sides, as for the head maps
            inside_head = 1.0 / (1.0 + np.exp(-logits[len(CHANNELS) :].max(axis=0)))
        found = {}
        for hip_side in SIDES:
            if side in SIDES and hip_side != side:
                continue
            neck_channel = CHANNELS.index(f"neck_{hip_side}")
            neck = heatmap_peak(np.exp(logits[neck_channel] - logits[neck_channel].max()))
            head = heatmap_peak(_near(heads, neck[:2], NECK_TO_HEAD_SEARCH_PX))
            at_head = (int(round(head[1])), int(round(head[0])))
            if self.head_reading == "disk":
                head = disk_centre(inside_head, head[:2]) or head[:2]
            neck_shown = _shown(logits[neck_channel], absent[neck_channel], (int(round(neck[1])), int(round(neck[0]))))
            confidence = min(
                neck_shown,
                max(_shown(logits[c], absent[c], at_head) for c in head_channels),
            )
            head_px, neck_px = (matrix @ np.array([*head[:2], 1.0]))[:2], (matrix @ np.array([*neck[:2], 1.0]))[:2]
            if (neck_px[0] < head_px[0]) != (hip_side == "right"):
                continue  # in an AP image a right hip's neck runs to the image's left of its head, a left hip's right
            found[hip_side] = DetectedHip(
                hip_side,
                (float(head_px[0]), float(head_px[1])),
                (float(neck_px[0]), float(neck_px[1])),
                float(confidence),
                float(neck_shown),
            )
        return found


def add_refiner(folder: Path, network, description: dict) -> Path:
    """Add a second stage to the detector folder ``folder`` (weights, then the description naming them)."""
    from ..training.checkpoint import save_weights

    path = folder / DESCRIPTION
    full = read_json_object(path, "hip detector description")
    save_weights(network, folder / f"{REFINER_WEIGHTS}.safetensors")
    full["refiner"] = {"mm_per_px": REFINER_MM_PER_PX, **description}
    atomic_write_text(path, json.dumps(full, indent=2) + "\n")
    return folder


def member_weights(description: dict) -> list[str]:
    """The weights files (names without ``.safetensors``) of a detector's networks: one, or an ensemble's members."""
    return [member["weights"] for member in description.get("members", [])] or [WEIGHTS]


def finished_detector(folder: Path, members: int) -> bool:
    """Whether ``folder`` holds a finished detector (its description written last); one of another member count
    than ``members`` raises :class:`InputError` rather than being kept in place of the one asked for."""
    path = folder / DESCRIPTION
    if not path.is_file():
        return False
    found = len(member_weights(read_json_object(path, "hip detector description")))
    if found != members:
        raise InputError(folder, f"holds a detector of {found} member(s), not {members}", "give another --out")
    return True


def write_ensemble(folder: Path, member_folders: list[Path]) -> Path:
    """Make ``folder`` an ensemble of the finished single detectors in ``member_folders`` (weights copied, then
    the description, which marks it complete). Refused unless the members' descriptions agree on everything but
    their seed, losses and threshold (CTs, views, epochs): the ensemble's record of how it was trained must hold for
    every member; its threshold is its own (:func:`set_found_confidence`)."""
    import shutil

    members = [read_json_object(member / DESCRIPTION, "hip detector description") for member in member_folders]
    own = ("seed", "last_epoch_losses", "found_confidence")  # an ensemble reads with a threshold of its own
    shared = [{key: value for key, value in member.items() if key not in own} for member in members]
    if any(other != shared[0] for other in shared) or any("members" in m or "refiner" in m for m in members):
        raise InputError(
            folder,
            "cannot join these detectors: they were trained on different CTs, views or epochs, or are not single "
            "first stages",
            "train every member on the same views (train-detector --members)",
        )
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, (member_folder, member) in enumerate(zip(member_folders, members, strict=True)):
        name = f"{WEIGHTS}_member{index}"
        shutil.copyfile(member_folder / f"{WEIGHTS}.safetensors", folder / f"{name}.safetensors")
        entries.append(
            {"weights": name, "seed": member.get("seed"), "last_epoch_losses": member.get("last_epoch_losses")}
        )
    atomic_write_text(folder / DESCRIPTION, json.dumps({**shared[0], "members": entries}, indent=2) + "\n")
    return folder


def _is_probability(threshold) -> bool:
    """Whether a detector threshold is a number strictly between 0 and 1."""
    return isinstance(threshold, (int, float)) and 0.0 < threshold < 1.0


def set_found_confidence(folder: Path, threshold: float) -> Path:
    """Give the finished detector in ``folder`` the confidence threshold ``threshold`` (0-1; its weights are kept,
    the description rewritten atomically)."""
    if not _is_probability(threshold):
        raise InputError(None, f"a found-confidence of {threshold} is not a probability in (0, 1)", "give e.g. 0.25")
    description = read_json_object(folder / DESCRIPTION, "hip detector description")
    atomic_write_text(folder / DESCRIPTION, json.dumps({**description, "found_confidence": threshold}, indent=2) + "\n")
    return folder


def write_detector(folder: Path, network, description: dict) -> Path:
    """Save a detector folder (weights then description, each atomically: the description marks it complete)."""
    from ..training.checkpoint import save_weights

    folder.mkdir(parents=True, exist_ok=True)
    save_weights(network, folder / f"{WEIGHTS}.safetensors")
    full = {"format": FORMAT, "version": 1, "mm_per_px": DETECTOR_MM_PER_PX, **description}
    atomic_write_text(folder / DESCRIPTION, json.dumps(full, indent=2) + "\n")
    return folder
