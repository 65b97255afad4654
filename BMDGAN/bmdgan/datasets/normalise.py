"""The model's input: a region of fixed size in millimetres around the femoral head, oriented by the femur.

Whatever the field of view of the radiograph (AP pelvis, one hip, hip and thigh), the networks see the same piece of
anatomy at the same scale: :data:`ROI_MM` (height x width, mm at the patient, from the radiograph's pixel spacing:
DICOM PixelSpacing, or the detector's over the magnification) with the femoral head centre at :data:`HEAD_IN_ROI`,
the femur's lateral axis (the neck axis made perpendicular to the shaft) horizontal and the head medial (on the
right) as in a right hip; a left hip is mirrored. The cohort cuts it from the projected landmarks (ground truth),
``estimate`` from the hip detector's (:mod:`bmdgan.detection`): the same :func:`plan_hip_roi` and
:func:`apply_hip_roi` in both, so training and use agree.

The numbers reproduce the single-hip view the shipped model was trained on (280 x 140 mm at the bone; measured
over its 9 bones and 4 poses: head centre at 0.39 of the height and 0.73 of the width, lateral axis horizontal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

SIDES = ("left", "right")
ROI_MM = (280.0, 140.0)
"""Height and width of the model's input region (mm at the patient)."""
HEAD_IN_ROI = (0.39, 0.73)
"""Where the femoral head centre lies in the region: fraction of its height (from the top) and of its width (from
the left, after mirroring a left hip): the acetabulum above, the shaft below, the greater trochanter left."""
NECK_POINT_MM = 40.0
"""Distance of the neck point from the head centre along the femur's lateral axis (mm at the patient): over the
neck of an adult femur (head radius 22-27 mm, neck 30-40 mm long). The two points orient the region."""
RENDER_OVERSAMPLING = 1.5
"""Simulated radiographs are rendered this many times finer than the model's input, then cut to it (resampling
with antialiasing, as a user's finer radiograph is)."""
PROXIMAL_FEMUR_BOX = ((0.3, 0.72), (0.2, 0.85))
"""Where the proximal femur lies in the input region, as fractions of its (rows, columns) seen as a right hip: its
ground-truth PF-DRR spanned rows 0.316-0.703 and columns 0.211-0.836 in 464 images of 12 CTs (new virtual patients
of the training CTs and of three unseen ones). Outside it only soft tissue and shaft, which an AP pelvis radiograph
may cut off."""
ANTIALIAS_SIGMA_PER_STEP = 0.4
"""Gaussian pre-blur (source pixels per output step) before resampling to a coarser grid: no aliasing, and the
mean of a density image (g/cm2) is kept."""


def render_pitch_mm(output_shape: tuple[int, int]) -> float:
    """Detector pixel size (mm) to simulate a radiograph at, for a model input of ``output_shape`` (rows, columns):
    :data:`RENDER_OVERSAMPLING` times finer than the input at the bone, magnified by ~1.2 on the detector."""
    return 1.2 * ROI_MM[0] / output_shape[0] / RENDER_OVERSAMPLING


@dataclass(frozen=True)
class HipROI:
    """Where the model's input was cut from a source image (pixels of the source image).

    side: the patient's hip; head_centre_px: (column, row) of the femoral head centre; medial_direction:
    unit vector (column, row) from the neck towards the head in the source image (the region's +column axis);
    pixel_spacing_mm: (row, column) spacing of the source image at the patient (mm); output_rows /
    output_columns: the input size."""

    side: str
    head_centre_px: tuple[float, float]
    medial_direction: tuple[float, float]
    pixel_spacing_mm: tuple[float, float]
    output_rows: int
    output_columns: int

    @property
    def mirrored(self) -> bool:
        """True for a left hip: its medial side (head) would be on the left, the region turns it to the right."""
        return self.side == "left"

    @property
    def step_mm(self) -> tuple[float, float]:
        """(row, column) size of one output pixel in mm."""
        return ROI_MM[0] / self.output_rows, ROI_MM[1] / self.output_columns

    def output_to_source_matrix(self) -> np.ndarray:
        """3x3 affine taking output pixel centres (column, row, 1) to source pixel coordinates (column, row, 1)."""
        u = np.asarray(self.medial_direction, float)  # output +column, as a source direction
        v = np.array([-u[1], u[0]]) if not self.mirrored else np.array([u[1], -u[0]])  # output +row
        row_mm, column_mm = self.pixel_spacing_mm
        step_rows, step_columns = self.step_mm
        to_pixels = np.array([1.0 / column_mm, 1.0 / row_mm])  # a (column, row) mm vector in source pixels
        head_u = HEAD_IN_ROI[1] * ROI_MM[1]
        head_v = HEAD_IN_ROI[0] * ROI_MM[0]
        matrix = np.eye(3)
        matrix[:2, 0] = u * step_columns * to_pixels
        matrix[:2, 1] = v * step_rows * to_pixels
        matrix[:2, 2] = (
            np.asarray(self.head_centre_px, float)
            + ((0.5 * step_columns - head_u) * u + (0.5 * step_rows - head_v) * v) * to_pixels
        )
        return matrix

    def output_to_source(self, rows: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map output pixel centres back to source pixel coordinates (row, column): outlines on the original image."""
        columns, rows = np.asarray(columns, float), np.asarray(rows, float)
        source = self.output_to_source_matrix() @ np.stack([columns, rows, np.ones_like(rows)])
        return source[1], source[0]

    def corners_px(self) -> list[list[float]]:
        """The region's four corners in source pixels [column, row]: top-left, top-right, bottom-right,
        bottom-left as the model sees it (outer pixel edges)."""
        rows = np.array([-0.5, -0.5, self.output_rows - 0.5, self.output_rows - 0.5])
        columns = np.array([-0.5, self.output_columns - 0.5, self.output_columns - 0.5, -0.5])
        source_rows, source_columns = self.output_to_source(rows, columns)
        return [[round(float(c), 1), round(float(r), 1)] for c, r in zip(source_columns, source_rows)]

    def inside_fraction(self, source_shape: tuple[int, int], box=((0.0, 1.0), (0.0, 1.0))) -> float:
        """Fraction of the region's ``box`` ((first, last) row and column fractions; default the whole region) that
        lies on the source image (the rest is filled at its edge)."""
        (top, bottom), (left, right) = box
        first_row, first_column = int(top * self.output_rows), int(left * self.output_columns)
        last_row = max(first_row + 1, int(round(bottom * self.output_rows)))
        last_column = max(first_column + 1, int(round(right * self.output_columns)))
        rows, columns = np.mgrid[first_row:last_row:2, first_column:last_column:2]
        source_rows, source_columns = self.output_to_source(rows.ravel(), columns.ravel())
        inside = (
            (source_rows >= -0.5)
            & (source_rows <= source_shape[0] - 0.5)
            & (source_columns >= -0.5)
            & (source_columns <= source_shape[1] - 0.5)
        )
        return float(inside.mean())

    def to_dict(self) -> dict:
        return {
            "side": self.side,
            "mirrored": self.mirrored,
            "head_centre_px": [round(float(v), 2) for v in self.head_centre_px],
            "medial_direction": [round(float(v), 5) for v in self.medial_direction],
            "pixel_spacing_mm": [float(v) for v in self.pixel_spacing_mm],
            "output_rows": self.output_rows,
            "output_columns": self.output_columns,
            "roi_mm": list(ROI_MM),
            "corners_px": self.corners_px(),
        }


def plan_hip_roi(
    head_centre_px: tuple[float, float],
    neck_point_px: tuple[float, float],
    side: str,
    pixel_spacing_mm: tuple[float, float] | None,
    output_shape: tuple[int, int],
) -> HipROI:
    """The region of ``side``'s hip from its head centre and a point on its neck axis lateral of the head (both
    (column, row) source pixels), on an image with ``pixel_spacing_mm`` (row, column) mm."""
    if side not in SIDES:
        raise InputError(None, f"side must be 'left' or 'right', got {side!r}", "give the hip's side")
    if pixel_spacing_mm is None or not all(math.isfinite(s) and s > 0 for s in pixel_spacing_mm):
        raise InputError(
            None,
            f"the radiograph has no usable pixel spacing ({pixel_spacing_mm})",
            "give a DICOM with PixelSpacing or ImagerPixelSpacing, or state the spacing (e.g. --pixel-mm)",
        )
    row_mm, column_mm = pixel_spacing_mm
    head = np.asarray(head_centre_px, float)
    lateral_mm = (np.asarray(neck_point_px, float) - head) * np.array([column_mm, row_mm])
    length = float(np.hypot(*lateral_mm))
    if not math.isfinite(length) or length < 1e-6:
        raise InputError(None, "the neck point coincides with the head centre", "give a point on the neck axis")
    medial = -lateral_mm / length
    return HipROI(
        side,
        (float(head[0]), float(head[1])),
        (float(medial[0]), float(medial[1])),
        (float(row_mm), float(column_mm)),
        int(output_shape[0]),
        int(output_shape[1]),
    )


def region_landmarks(shape: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """(head centre px, neck point px, pixel spacing mm) of an image that is already an input region of ``shape``
    (a dataset case, as a right hip): cutting the region again from these gives the image back."""
    rows, columns = shape
    step = (ROI_MM[0] / rows, ROI_MM[1] / columns)
    head = (HEAD_IN_ROI[1] * columns - 0.5, HEAD_IN_ROI[0] * rows - 0.5)
    return head, (head[0] - NECK_POINT_MM / step[1], head[1]), step


def resample(
    image: np.ndarray, output_to_source: np.ndarray, output_shape: tuple[int, int], outside: str | float = "edge"
) -> np.ndarray:
    """``image`` sampled at the output pixel centres mapped by the 3x3 affine ``output_to_source`` ((column, row,
    1) -> (column, row, 1)), bilinear after a Gaussian pre-blur where the output is coarser than the source.
    ``outside``: "edge" repeats the nearest source pixel (a radiograph), a number fills (0 for a density map)."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    rows, columns = output_shape
    grid_rows, grid_columns = np.mgrid[0:rows, 0:columns].astype(np.float64)
    source = output_to_source @ np.stack([grid_columns.ravel(), grid_rows.ravel(), np.ones(rows * columns)])
    source_columns, source_rows = source[0], source[1]
    steps = np.hypot(output_to_source[0, :2], output_to_source[1, :2])  # source pixels per output pixel, by axis
    sigma = ANTIALIAS_SIGMA_PER_STEP * float(max(steps.max(), 1.0)) if steps.max() > 1.0 else 0.0
    margin = int(math.ceil(3 * sigma)) + 2
    top = int(np.clip(np.floor(source_rows.min()) - margin, 0, image.shape[0] - 1))
    bottom = int(np.clip(np.ceil(source_rows.max()) + margin + 1, top + 1, image.shape[0]))
    left = int(np.clip(np.floor(source_columns.min()) - margin, 0, image.shape[1] - 1))
    right = int(np.clip(np.ceil(source_columns.max()) + margin + 1, left + 1, image.shape[1]))
    window = image[top:bottom, left:right]  # only what the region reaches is blurred (a 50 MP image stays cheap)
    if sigma > 0:
        window = ndimage.gaussian_filter(window, sigma, mode="nearest")
    coordinates = np.stack([source_rows - top, source_columns - left])
    if outside == "edge":
        coordinates[0] = np.clip(coordinates[0], 0, window.shape[0] - 1)
        coordinates[1] = np.clip(coordinates[1], 0, window.shape[1] - 1)
        values = ndimage.map_coordinates(window, coordinates, order=1, mode="nearest")
    else:
        values = ndimage.map_coordinates(window, coordinates, order=1, mode="constant", cval=float(outside))
        off = (
            (source_rows < -0.5)
            | (source_rows > image.shape[0] - 0.5)
            | (source_columns < -0.5)
            | (source_columns > image.shape[1] - 0.5)
        )
        values[off] = float(outside)
    return values.reshape(rows, columns).astype(np.float32)


def apply_hip_roi(image: np.ndarray, roi: HipROI, outside: str | float = "edge") -> np.ndarray:
    """Cut the region ``roi`` from a 2D image of the source's size (radiograph: ``outside="edge"``; a DRR in g/cm2:
    ``outside=0.0``, values keep their unit)."""
    return resample(image, roi.output_to_source_matrix(), (roi.output_rows, roi.output_columns), outside)
