"""Review picture of one CT analysis: femur views with labels, landmarks and cut planes, and the aBMD image.

Panels: (1) the femur's frontal plane (through the shaft axis and the head centre) resampled from the
CT; (2) the stored coronal slice and (3) the stored axial slice through the neck centre; (4) the CT-aBMD
projection (g/cm2). Femur: red, pelvis: blue, PF region: yellow; landmarks: green dots; cut planes:
cyan lines (head-neck plane) and magenta lines (distal plane).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from ..atomic import atomic_path
from . import grid
from . import labels as L
from .measurement import neutral_frame
from .pipeline import CTAnalysis

LANDMARK_SHORT = {
    "femoral_head_centre": "FHC",
    "neck_centre": "NC",
    "head_neck_superior": "S",
    "head_neck_inferior": "I",
    "head_neck_anterior": "A",
    "head_neck_posterior": "P",
    "shaft_2cm": "2cm",
    "shaft_5cm": "5cm",
}


def _plane_image(volume: np.ndarray, geometry, origin, right, down, size_px, pixel_mm, order=1):
    """Sample a volume on a plane: pixel (row, col) at origin + col*pixel*right + row*pixel*down."""
    rows, cols = np.mgrid[0 : size_px[0], 0 : size_px[1]]
    points = origin + (cols[..., None] * right + rows[..., None] * down) * pixel_mm
    kji = grid.lps_to_index(geometry, points.reshape(-1, 3)).T
    values = ndimage.map_coordinates(np.asarray(volume, np.float32), kji, order=order, mode="constant", cval=np.nan)
    return values.reshape(size_px), points


def _draw_view(axis, analysis: CTAnalysis, origin, right, down, size_px, pixel_mm, title):
    ct = analysis.ct
    labels = analysis.label_volume().array
    image, points = _plane_image(ct.array, ct.geometry, origin, right, down, size_px, pixel_mm)
    label_image, _ = _plane_image(labels, ct.geometry, origin, right, down, size_px, pixel_mm, order=0)
    axis.imshow(np.nan_to_num(image, nan=-1000), cmap="gray", vmin=-250, vmax=1250, interpolation="bilinear")
    for value, colour in ((L.PELVIS, "tab:blue"), (L.FEMUR, "red"), (L.PF_REGION, "yellow")):
        mask = label_image == value if value != L.FEMUR else np.isin(label_image, (L.FEMUR, L.PF_REGION))
        if mask.any():
            axis.contour(mask, [0.5], colors=colour, linewidths=0.8)
    normal = np.cross(right, down)
    for name, point in analysis.landmarks.points.items():
        offset = point - origin
        col, row = offset @ right / pixel_mm, offset @ down / pixel_mm
        depth = abs(offset @ normal)
        if 0 <= col < size_px[1] and 0 <= row < size_px[0]:
            axis.plot(col, row, "o", color="lime" if depth < 8 else "darkgreen", ms=3)
            axis.text(col + 3, row - 3, LANDMARK_SHORT.get(name, name), color="lime", fontsize=6)
    region = analysis.region
    for plane, colour in ((region.head_plane, "cyan"), (region.distal_plane, "magenta")):
        if plane is None:
            continue
        distance = (points - plane.point) @ plane.normal
        if np.nanmin(distance) < 0 < np.nanmax(distance):
            axis.contour(distance, [0.0], colors=colour, linewidths=0.8, linestyles="--")
    axis.set_title(title, fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])


def write_montage(analysis: CTAnalysis, path: str | Path, case_name: str = "") -> Path:
    """Write the review PNG (atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ct = analysis.ct
    landmarks = analysis.landmarks
    frame = neutral_frame(landmarks)
    centre = landmarks.points["femoral_head_centre"]
    neck_centre = landmarks.points["neck_centre"]
    pixel = 0.5
    figure, axes = plt.subplots(1, 4, figsize=(16, 5.2))
    # (1) the plane of the shaft axis and the head centre: lateral to the right, proximal up
    up = landmarks.frame.proximal
    lateral = frame.lateral
    if landmarks.shaft_point_lps is not None:
        offset = landmarks.shaft_point_lps - centre
        across = offset - (offset @ up) * up
        if np.linalg.norm(across) > 1.0:
            lateral = across / np.linalg.norm(across)
    size = (int(220 / pixel), int(160 / pixel))
    origin = centre - 60 * lateral + 50 * up
    _draw_view(axes[0], analysis, origin, lateral, -up, size, pixel, "femur: plane of shaft axis and head centre")
    # (2) stored coronal slice (i right, k up) through the head centre; (3) stored axial slice through the neck centre
    direction = np.asarray(ct.geometry.direction)
    i_axis, j_axis, k_axis = direction[:, 0], direction[:, 1], direction[:, 2]
    extent_mm = np.array(ct.array.shape[::-1]) * np.array(ct.geometry.spacing_mm)
    corner = grid.index_to_lps(ct.geometry, np.zeros((1, 3)))[0]
    through = (centre - corner) @ j_axis
    coronal_origin = corner + through * j_axis + extent_mm[2] * k_axis
    _draw_view(
        axes[1],
        analysis,
        coronal_origin,
        i_axis,
        -k_axis,
        (int(extent_mm[2] / pixel), int(extent_mm[0] / pixel)),
        pixel,
        "stored coronal slice (k up)",
    )
    level = (neck_centre - corner) @ k_axis
    axial_origin = corner + level * k_axis
    _draw_view(
        axes[2],
        analysis,
        axial_origin,
        i_axis,
        j_axis,
        (int(extent_mm[1] / pixel), int(extent_mm[0] / pixel)),
        pixel,
        "stored axial slice at the neck centre",
    )
    # (4) projection
    m = analysis.measurement
    shown = axes[3].imshow(m.projection_g_cm2, cmap="magma", vmin=0, vmax=max(2.0, float(m.projection_g_cm2.max())))
    figure.colorbar(shown, ax=axes[3], fraction=0.046, label="g/cm2")
    axes[3].set_title(f"CT-aBMD projection: {m.ct_abmd_g_cm2:.3f} g/cm2", fontsize=8)
    axes[3].set_xticks([])
    axes[3].set_yticks([])
    calibration = analysis.calibration.method
    notes = "; ".join(analysis.notes)[:220]
    figure.suptitle(
        f"{case_name}  side {analysis.side}  vBMD {m.qct_vbmd_mg_cm3:.1f} mg/cm3  "
        f"aBMD {m.ct_abmd_g_cm2:.3f} g/cm2  PF {m.pf_volume_cm3:.1f} cm3  [{calibration}]\n{notes}",
        fontsize=8,
    )
    figure.tight_layout()
    return _save(figure, path)


def write_failure_montage(ct, path: str | Path, case_name: str, message: str) -> Path:
    """Review picture of a CT that could not be measured: bone MIPs (as stored) and the reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.clip(ct.array, -200, 1500)
    spacing = grid.spacing_kji(ct.geometry)
    figure, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    for axis, (projection, aspect, title) in zip(
        axes,
        (
            (values.max(axis=1)[::-1], spacing[0] / spacing[2], "coronal MIP (k up)"),
            (values.max(axis=2)[::-1], spacing[0] / spacing[1], "sagittal MIP (k up)"),
            (values.max(axis=0), spacing[1] / spacing[2], "axial MIP"),
        ),
    ):
        axis.imshow(projection, cmap="gray", aspect=aspect)
        axis.set_title(title, fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    wrapped = "\n".join(message[i : i + 150] for i in range(0, len(message), 150))
    figure.suptitle(f"{case_name}: NOT MEASURED\n{wrapped}", fontsize=8, color="darkred")
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    """Write the figure as PNG atomically and release it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    plt.close(figure)
    return Path(path)
