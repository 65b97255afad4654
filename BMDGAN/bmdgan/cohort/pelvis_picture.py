"""A review picture of a whole-pelvis CT's AP pelvis view: the simulated radiograph next to its stage-1 DRR and
one PF-DRR per hip, with the centre line where the cohort splits it, and each hip's half as the model sees it
(cut, left mirrored, resized to the cohort's image size) (``simulate-cohort --picture``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..atomic import atomic_path
from ..datasets.normalise import apply_hip_crop, plan_hip_crop
from ..projection.ap_pelvis import AP_PELVIS_SOURCE_TO_DETECTOR_MM
from .pelvis_case import Positioning, render_pelvis
from .virtual_patient import REFERENCE_BMI, VirtualPatient

PICTURE_PIXEL_MM = 1.0
"""Detector pitch of the picture (mm): small enough for a document (the cohort's own pitch is
``350 mm / image rows``; the same code at another pitch)."""


def write_ap_pelvis_picture(settings, scene, path: str | Path) -> dict:
    """PNG of the CT's own bone (no density or fat change) in a neutral AP pelvis (SID 1100 mm, 200 mm
    object-to-detector, no rotation) with the settings' acquisition; returns what the picture shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patient = VirtualPatient(f"{scene.ct_id}-own-bone", scene.ct_id, 1.0, 1.0, 1.0, REFERENCE_BMI)
    rows = int(round(350.0 / PICTURE_PIXEL_MM))
    neutral = Positioning(0.0, 0.0, 0.0, (0.0, 0.0), AP_PELVIS_SOURCE_TO_DETECTOR_MM, 200.0)
    full = render_pelvis(replace(settings, image_shape=(rows, rows // 2)), scene, patient, "standing", neutral)
    images, geometry, collimation = full["images"], full["geometry"], full["collimation"]
    sides = sorted((prepared.side for prepared in scene.bones), key=lambda side: side != "right")  # image order
    drr_top = float(images["drr_stage1"].max())
    top = [
        ("simulated AP pelvis radiograph", images["radiograph"], None),
        ("stage-1 DRR (pelvis + femurs)", images["drr_stage1"], drr_top),
    ]
    top += [(f"PF-DRR, {side} hip", images[f"drr_pf_{side}"], drr_top) for side in sides]
    bottom = []
    rows, columns = settings.image_shape
    for side in sides:
        crop = plan_hip_crop(images["radiograph"].shape, side, settings.image_shape, bilateral=True)
        how = f"{columns} x {rows}" + (", mirrored" if crop.mirrored else "")
        bottom += [
            (f"{side} hip input ({how})", apply_hip_crop(images["radiograph"], crop), None),
            ("its PF-DRR, same cut", apply_hip_crop(images[f"drr_pf_{side}"], crop), drr_top),
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
                axis.axvline((image.shape[1] - 1) / 2.0, color="cyan", linewidth=0.6, linestyle="--")
            axis.set_title(title, fontsize=8)
    figure.colorbar(shown, cax=figure.add_axes((0.93, 0.3, 0.012, 0.4)), label="DRRs: g/cm2 of bone mineral")
    kept = f"{collimation.rows} of {collimation.full_rows} rows kept" if collimation.collimated else "not collimated"
    figure.suptitle(
        f"{scene.ct_id}: AP pelvis, SID {geometry.source_to_detector_mm:g} mm, "
        f"{geometry.detector_columns} x {geometry.detector_rows} px at {geometry.column_spacing_mm:g} mm "
        f"(detector 430 x 350 mm, {kept}); patient's right on the image's left; dashed: the split",
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
