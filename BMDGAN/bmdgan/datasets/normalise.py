"""The paper's image normalisation (section 3.1): split a bilateral radiograph at the vertical centre,
keep the target hip's half, mirror it so every hip looks like a right hip, resize to cover the target size
and centre-crop (256 wide x 512 high by default).

Orientation: in a standard AP radiograph the patient's right is on the viewer's left. The right hip
therefore lies in the left half and is kept as it is; the left hip lies in the right half and is mirrored.
The same :class:`HipCrop` applied to the radiograph and to its DRRs keeps them pixel-aligned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError

SIDES = ("left", "right")


@dataclass(frozen=True)
class HipCrop:
    """How a normalised image was cut from its source (pixels of the source image).

    side: the patient's hip ("left"/"right"); mirrored: True when the half was flipped left-right;
    column_start: first source column of the half; scale: output pixels per source pixel;
    crop_top/crop_left: offset of the output window in the resized half (output pixels).
    """

    side: str
    mirrored: bool
    column_start: int
    half_width: int
    source_rows: int
    scale: float
    crop_top: int
    crop_left: int
    output_rows: int
    output_columns: int

    def to_dict(self) -> dict:
        return asdict(self)

    def output_to_source_matrix(self) -> np.ndarray:
        """3x3 affine taking output pixel centres (column, row, 1) to source pixel coordinates (column, row, 1)."""
        step = 1.0 / self.scale
        column_offset = (self.crop_left + 0.5) * step - 0.5
        matrix = np.eye(3)
        if self.mirrored:
            matrix[0, 0], matrix[0, 2] = -step, self.column_start + self.half_width - 1 - column_offset
        else:
            matrix[0, 0], matrix[0, 2] = step, self.column_start + column_offset
        matrix[1, 1], matrix[1, 2] = step, (self.crop_top + 0.5) * step - 0.5
        return matrix

    def output_to_source(self, rows: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map output pixel centres back to source pixel coordinates (for outlines on the original image)."""
        columns, rows = np.asarray(columns, float), np.asarray(rows, float)
        source = self.output_to_source_matrix() @ np.stack([columns, rows, np.ones_like(rows)])
        return source[1], source[0]


def plan_hip_crop(
    source_shape: tuple[int, int], side: str, output_shape: tuple[int, int] = (512, 256), bilateral: bool = True
) -> HipCrop:
    """Plan the crop of ``side`` from an image of ``source_shape`` (rows, columns) into ``output_shape``.

    ``bilateral=False`` takes the whole image as the half (an image already cut to one hip).
    """
    if side not in SIDES:
        raise InputError(None, f"side must be 'left' or 'right', got {side!r}", "give the hip's side")
    rows, columns = source_shape
    half_width = columns // 2 if bilateral else columns
    column_start = 0 if not bilateral or side == "right" else columns - half_width
    out_rows, out_columns = output_shape
    scale = max(out_rows / rows, out_columns / half_width)  # cover the output: crop, never pad
    resized_rows, resized_columns = round(rows * scale), round(half_width * scale)
    return HipCrop(
        side=side,
        mirrored=side == "left",
        column_start=column_start,
        half_width=half_width,
        source_rows=rows,
        scale=scale,
        crop_top=(resized_rows - out_rows) // 2,
        crop_left=(resized_columns - out_columns) // 2,
        output_rows=out_rows,
        output_columns=out_columns,
    )


def apply_hip_crop(image: np.ndarray, crop: HipCrop) -> np.ndarray:
    """Cut, mirror, resize (antialiased bilinear: values keep their unit, e.g. g/cm2) and crop a 2D image."""
    import torch
    import torch.nn.functional as F

    if image.shape[0] != crop.source_rows:
        raise InputError(
            None,
            f"image has {image.shape[0]} rows, the crop was planned for {crop.source_rows}",
            "apply the crop to images of the same size",
        )
    half = image[:, crop.column_start : crop.column_start + crop.half_width]
    if crop.mirrored:
        half = half[:, ::-1]
    size = (round(crop.source_rows * crop.scale), round(crop.half_width * crop.scale))
    tensor = torch.from_numpy(np.ascontiguousarray(half, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0]
    window = resized[
        crop.crop_top : crop.crop_top + crop.output_rows, crop.crop_left : crop.crop_left + crop.output_columns
    ]
    return window.numpy().copy()
