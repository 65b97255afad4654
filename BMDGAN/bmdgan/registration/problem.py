"""The registration problem: its settings, the inputs prepared once (:func:`prepare`) and the pose cost of one
resolution level (:class:`PoseCost`). Shared by the coarse-to-fine :mod:`.pipeline` and the :mod:`.global_search`
that can start it, so neither imports the other.

Pose parameters are relative to the starting pose, about the bone centroid, in camera axes
(:func:`bmdgan.projection.pose.camera_pose`): rotations in degrees, translations in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..projection.attenuation import hu_to_attenuation
from ..projection.geometry import ProjectionGeometry, volume_centre_lps
from ..projection.pose import camera_pose
from ..projection.projector import Projector
from . import levels as pyramid
from .defaults import BONE_THRESHOLD_HU, ENERGY_KEV
from .roi import Field, away_from_ct_border, bone_window, crop_geometry, exposed_field
from .similarity import make_similarity

PARAMETER_SCALE = np.array([4.0, 4.0, 4.0, 8.0, 8.0, 16.0])
"""One CMA-ES unit per parameter (degrees, degrees, degrees, mm, mm, mm): a start off by 10 degrees and
20 mm is about 2.5 units away; depth (the last, along the beam) is the least determined by one view,
so it gets the widest step."""
MAX_BONE_POINTS = 20000
"""Bone voxel centres kept (evenly subsampled) for windows, centroid and sanity checks."""


@dataclass(frozen=True)
class LevelSettings:
    """One resolution level: detector pitch (mm), CMA-ES generations and initial step (in units of
    :data:`PARAMETER_SCALE`), similarity patch side at the detector (mm; None: one global correlation),
    whether only the bone's window of the detector is rendered, the margin (mm at the detector) kept
    from the edge of the CT's projected field of view (see :func:`.roi.away_from_ct_border`), whether the
    depth (along the beam) stays fixed, and the half range (mm) of a depth scan before CMA-ES (0: none)."""

    pitch_mm: float
    generations: int
    sigma: float
    patch_mm: float | None = None
    window: bool = False
    border_mm: float = 10.0
    fix_depth: bool = False
    depth_scan_mm: float = 0.0


DEFAULT_LEVELS = (
    LevelSettings(pitch_mm=4.0, generations=30, sigma=1.0, patch_mm=32.0, window=False, border_mm=15.0),
    LevelSettings(pitch_mm=2.0, generations=20, sigma=0.3, patch_mm=16.0, window=True, border_mm=8.0, fix_depth=True),
    LevelSettings(
        pitch_mm=1.0, generations=14, sigma=0.1, patch_mm=12.0, window=True, border_mm=5.0, depth_scan_mm=24.0
    ),
)
"""Coarse to fine (about 4x, 2x, 1x of a 0.5 mm detector at 1 mm with 2x2 binning). The coarse level
captures the start offset (up to ~10 degrees and 20 mm; depth free so that a large depth offset does not
trap the other parameters); the 2 mm level refines with the depth fixed; the 1 mm level scans the depth
along the bone centroid's ray, then refines all six parameters to sub-millimetre accuracy.
Why depth is settled at the 1 mm level: the clinical tone curve of a radiograph moves blurred bone edges,
so at 4 mm (2 mm) pitch the best GC lies 10-20 mm (about 5 mm) too deep on simulated radiographs, at 1 mm
within 1-2 mm. A native 0.2-0.5 mm level would cost 4-25x more per DRR for little gain."""


@dataclass(frozen=True)
class RegistrationSettings:
    """Knobs of :func:`.pipeline.register` (units in the names). ``coarse_restarts``: extra runs of the first level,
    with another seed and a 1.5x wider step, while its similarity stays below ``restart_below`` (a stuck
    coarse search costs 2-3 s to redo; a wrong basin costs the whole registration). ``max_level_pixels``:
    a level whose detector (window) has more pixels is binned further, which bounds the time per case
    (a whole pelvis at 1 mm is 450 x 500 pixels: 40 s for the last level on 2 cores; capped, about 18 s).
    ``hip_detector_start``: with ``global_search``, also start from the hips the bundled hip detector finds
    (:mod:`.hip_start`)."""

    similarity: str = "gc"
    levels: tuple[LevelSettings, ...] = DEFAULT_LEVELS
    population: int = 10
    refine_steps: int = 0
    refine_learning_rate: float = 0.02
    energy_kev: float = ENERGY_KEV
    bone_threshold_hu: float = BONE_THRESHOLD_HU
    window_margin_mm: float = 25.0
    search_range_deg: float = 30.0
    search_range_mm: float = 60.0
    global_search: bool = False
    hip_detector_start: bool = True
    coarse_restarts: int = 1
    restart_below: float = 0.6
    max_level_pixels: int = 120_000
    seed: int = 0

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["levels"] = [dict(level.__dict__) for level in self.levels]
        return data


@dataclass
class Problem:
    """Prepared inputs shared by the levels."""

    fixed: np.ndarray
    field: Field
    geometry: ProjectionGeometry
    attenuation: np.ndarray  # what the DRRs show: the CT, or the structure alone (1/mm)
    whole_attenuation: np.ndarray  # always the whole CT (1/mm): the quality GC is calibrated on it
    ijk_to_lps: np.ndarray
    spacing_mm: tuple[float, float, float]
    shape_ijk: tuple[int, int, int]
    bone_points: np.ndarray
    bone_volume_cm3: float
    centre_lps_mm: np.ndarray


class PoseCost:
    """Minus the similarity of the DRR at pose parameters (B, 6) to the level's radiograph: costs (B,).

    One level: block-averaged radiograph and CT, detector (or its bone window), similarity measure.
    """

    def __init__(
        self,
        problem: Problem,
        level: LevelSettings,
        settings: RegistrationSettings,
        base_pose: np.ndarray,
        current_pose: np.ndarray,
    ):
        factor = pyramid.detector_factor(problem.geometry, level.pitch_mm)
        while True:
            geometry, image, mask = self._detector(problem, level, settings, current_pose, factor)
            pixels = geometry.detector_columns * geometry.detector_rows
            if pixels <= settings.max_level_pixels:
                break
            factor = max(factor + 1, int(np.ceil(factor * np.sqrt(pixels / settings.max_level_pixels))))
        mask = mask & away_from_ct_border(
            geometry.with_pose(current_pose), problem.shape_ijk, problem.ijk_to_lps, level.border_mm
        )
        pitch = 0.5 * (geometry.column_spacing_mm + geometry.row_spacing_mm)
        magnification = geometry.with_pose(current_pose).magnification_at(problem.centre_lps_mm)
        axis = pyramid.beam_axis(problem.ijk_to_lps, current_pose)
        factors = pyramid.volume_factors(problem.spacing_mm, axis, pitch / magnification)
        values, ijk_to_lps = pyramid.pool_volume(problem.attenuation, problem.ijk_to_lps, factors)
        self.projector = Projector(values, ijk_to_lps, unit="1/mm")
        self._whole = (
            (problem.whole_attenuation, problem.ijk_to_lps, factors)
            if problem.whole_attenuation is not problem.attenuation
            else None
        )
        self.patch_px = None if level.patch_mm is None else max(4, int(round(level.patch_mm / pitch)))
        self.similarity = make_similarity(settings.similarity, image, mask, self.patch_px)
        self.image, self.mask = image, mask
        self.geometry = geometry
        self.volume_shape = values.shape
        self.base = torch.as_tensor(base_pose, dtype=torch.float64)
        self.centre = torch.as_tensor(problem.centre_lps_mm, dtype=torch.float64)

    @staticmethod
    def _detector(
        problem: Problem, level: LevelSettings, settings: RegistrationSettings, pose: np.ndarray, factor: int
    ):
        """Detector geometry, radiograph and field mask of the level (binned by ``factor``, bone window)."""
        geometry = pyramid.downsample_geometry(problem.geometry, factor)
        image = pyramid.downsample_image(problem.fixed, factor)
        mask = pyramid.downsample_mask(problem.field.mask, factor)
        if level.window:
            box = bone_window(geometry.with_pose(pose), problem.bone_points, settings.window_margin_mm)
            if box is not None:
                row0, row1, col0, col1 = box
                geometry = crop_geometry(geometry, box)
                image, mask = image[row0:row1, col0:col1], mask[row0:row1, col0:col1]
        return geometry, image, mask

    @property
    def pitch_mm(self) -> float:
        """Detector pitch of this level (mm): the level's, or coarser where the pixel cap applied."""
        return 0.5 * (self.geometry.column_spacing_mm + self.geometry.row_spacing_mm)

    def similarity_of(self, parameters) -> torch.Tensor:
        """Similarity (B,) of the DRRs at parameters (B, 6) (tensor: differentiable)."""
        poses = camera_pose(parameters, self.base, self.centre)
        images = self.projector.render(poses, self.geometry)
        return self.similarity(images[..., 0, :, :])

    def __call__(self, parameters: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return -self.similarity_of(torch.as_tensor(np.asarray(parameters, dtype=float))).numpy()

    def gradient_correlation(self, parameters: np.ndarray) -> float:
        """Patch GC of the whole CT's DRR at one parameter vector (6,), whatever measure is optimised and
        whatever structure the DRRs show: the quality flag is calibrated on exactly this."""
        measure = (
            self.similarity
            if self.similarity.name == "gc"
            else make_similarity("gc", self.image, self.mask, self.patch_px)
        )
        projector = self.projector
        if self._whole is not None:
            values, ijk_to_lps = pyramid.pool_volume(*self._whole)
            projector = Projector(values, ijk_to_lps, unit="1/mm")
        with torch.no_grad():
            poses = camera_pose(torch.as_tensor(np.asarray(parameters, dtype=float)), self.base, self.centre)
            return float(measure(projector.render(poses, self.geometry)[0]))


def bone_mask_of(hu: np.ndarray, threshold_hu: float, structure: np.ndarray | None = None) -> np.ndarray:
    """Voxels treated as bone: the given mask (labels) when there is one, else HU above the threshold."""
    if structure is not None:
        return np.asarray(structure, dtype=bool)
    return np.asarray(hu) > threshold_hu


def bone_points(mask: np.ndarray, ijk_to_lps: np.ndarray) -> np.ndarray:
    """LPS centres (mm) of at most :data:`MAX_BONE_POINTS` voxels of ``mask``, evenly subsampled."""
    k, j, i = np.nonzero(mask)
    if len(i) > MAX_BONE_POINTS:
        keep = np.linspace(0, len(i) - 1, MAX_BONE_POINTS).astype(np.int64)
        k, j, i = k[keep], j[keep], i[keep]
    return (np.c_[i, j, k, np.ones(len(i))] @ np.asarray(ijk_to_lps).T)[:, :3]


def prepare(
    pixels: np.ndarray,
    geometry: ProjectionGeometry,
    ct,
    settings: RegistrationSettings,
    structure_mask: np.ndarray | None = None,
    roi: np.ndarray | None = None,
    bone_mask: np.ndarray | None = None,
) -> Problem:
    """Check and prepare the inputs (see :func:`register`)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.shape != geometry.shape:
        raise InputError(
            None,
            f"the radiograph has {pixels.shape[1]}x{pixels.shape[0]} pixels but the geometry "
            f"describes a {geometry.detector_columns}x{geometry.detector_rows} detector",
            "give the geometry of this radiograph",
        )
    if ct.unit != "HU":
        raise InputError(ct.source or None, f"registration needs a CT in HU, got {ct.unit!r}", "give the CT in HU")
    if min(ct.shape_ijk) < 2:
        raise InputError(
            ct.source or None,
            f"the CT has {ct.shape_ijk} voxels: too thin to project",
            "give a 3D CT with at least 2 voxels along each axis",
        )
    for mask in (structure_mask, bone_mask):
        if mask is not None and np.asarray(mask).shape != ct.array.shape:
            raise InputError(None, "the structure mask is not on the CT grid", "resample the labels onto the CT")
    field_ = exposed_field(pixels)
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        if roi.shape != pixels.shape:
            raise InputError(
                None,
                f"the ROI mask has shape {roi.shape}, the radiograph {pixels.shape}",
                "give an ROI mask on the radiograph's pixel grid",
            )
        field_ = Field(field_.mask & roi, field_.collimated_fraction, field_.box)
    ijk_to_lps = ct.geometry.ijk_to_lps()
    whole = hu_to_attenuation(ct.array, settings.energy_kev)
    attenuation = whole if structure_mask is None else whole * np.asarray(structure_mask, dtype=np.float32)
    bone = bone_mask_of(ct.array, settings.bone_threshold_hu, bone_mask if bone_mask is not None else structure_mask)
    bone_volume_cm3 = float(bone.sum()) * ct.voxel_volume_mm3() / 1000.0
    points = bone_points(bone, ijk_to_lps)
    centre = points.mean(axis=0) if len(points) else volume_centre_lps(ct.shape_ijk, ijk_to_lps)
    if len(points) == 0:
        points = centre[None]
    return Problem(
        pixels,
        field_,
        geometry,
        attenuation,
        whole,
        ijk_to_lps,
        ct.geometry.spacing_mm,
        ct.shape_ijk,
        points,
        bone_volume_cm3,
        np.asarray(centre, dtype=float),
    )
