"""A review picture of a whole-pelvis CT's AP pelvis view: the simulated radiograph next to its stage-1 DRR and
one PF-DRR per hip, with each hip's input region outlined, and each region as the model sees it (cut around the
projected head, oriented by the femur, left mirrored, at the cohort's image size) (``simulate-cohort --picture``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..datasets.normalise import apply_hip_roi
from ..projection.ap_pelvis import AP_PELVIS_SOURCE_TO_DETECTOR_MM
from .pelvis_case import Positioning, hip_region, render_pelvis
from .virtual_patient import REFERENCE_BMI, VirtualPatient

PICTURE_PIXEL_MM = 1.0
"""Detector pitch of the picture (mm): small enough for a document (the cohort's own pitch is
:func:`bmdgan.datasets.normalise.render_pitch_mm`; the same code at another pitch)."""


def write_ap_pelvis_picture(settings, scene, path: str | Path) -> dict:
    """PNG of the CT's own bone (no density or fat change) in a neutral AP pelvis (SID 1100 mm, 200 mm
    object-to-detector, no rotation) with the settings' acquisition; returns what the picture shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patient = VirtualPatient(f"{scene.ct_id}-own-bone", scene.ct_id, 1.0, 1.0, 1.0, REFERENCE_BMI)
    neutral = Positioning(0.0, 0.0, 0.0, (0.0, 0.0), AP_PELVIS_SOURCE_TO_DETECTOR_MM, 200.0)
    full = render_pelvis(settings, scene, patient, "standing", neutral, pitch_mm=PICTURE_PIXEL_MM)
    images, geometry, collimation = full["images"], full["geometry"], full["collimation"]
    sides = sorted((prepared.side for prepared in scene.bones), key=lambda side: side != "right")  # image order
    drr_top = float(images["drr_stage1"].max())
    top = [
        ("simulated AP pelvis radiograph", images["radiograph"], None),
        ("stage-1 DRR (pelvis + femurs)", images["drr_stage1"], drr_top),
    ]
    top += [(f"PF-DRR, {side} hip", images[f"drr_pf_{side}"], drr_top) for side in sides]
    bottom, outlines = [], []
    rows, columns = settings.image_shape
    for side in sides:
        roi, _, _ = hip_region(geometry, next(bone for bone in scene.bones if bone.side == side), settings.image_shape)
        outlines.append(np.array(roi.corners_px() + roi.corners_px()[:1]))
        how = f"{columns} x {rows}" + (", mirrored" if roi.mirrored else "")
        bottom += [
            (f"{side} hip input ({how})", apply_hip_roi(images["radiograph"], roi), None),
            ("its PF-DRR, same cut", apply_hip_roi(images[f"drr_pf_{side}"], roi, outside=0.0), drr_top),
        ]
    figure, axes = plt.subplots(
        2, max(len(top), len(bottom)), figsize=(11, 7.2), gridspec_kw={"height_ratios": (0.85, 1.0)}
    )
    figure.subplots_adjust(left=0.01, right=0.91, top=0.92, bottom=0.01, wspace=0.04, hspace=0.1)
    for row, panels in enumerate((top, bottom)):
        for axis in axes[row]:
            axis.axis("off")
        for axis, (title, image, vmax) in zip(axes[row], panels):
            shown = axis.imshow(image, cmap="gray" if vmax is None else "magma", vmin=0, vmax=vmax)
            if row == 0:
                for outline in outlines:
                    axis.plot(outline[:, 0], outline[:, 1], color="cyan", linewidth=0.6, linestyle="--")
                axis.set_xlim(-0.5, image.shape[1] - 0.5)
                axis.set_ylim(image.shape[0] - 0.5, -0.5)
            axis.set_title(title, fontsize=8)
    figure.colorbar(shown, cax=figure.add_axes((0.93, 0.3, 0.012, 0.4)), label="DRRs: g/cm2 of bone mineral")
    kept = f"{collimation.rows} of {collimation.full_rows} rows kept" if collimation.collimated else "not collimated"
    figure.suptitle(
        f"{scene.ct_id}: AP pelvis, SID {geometry.source_to_detector_mm:g} mm, "
        f"{geometry.detector_columns} x {geometry.detector_rows} px at {geometry.column_spacing_mm:g} mm "
        f"(detector 430 x 350 mm, {kept}); patient's right on the image's left; dashed: each hip's input region",
        fontsize=8,
    )
    with atomic_path(Path(path)) as temporary:
        figure.savefig(temporary, dpi=72, format="png")
    plt.close(figure)
    return {
        "ct": scene.ct_id,
        "sides": sides,
        "image_px": list(images["radiograph"].shape),
        "pixel_mm": geometry.column_spacing_mm,
        "collimation": collimation.to_dict(),
    }
