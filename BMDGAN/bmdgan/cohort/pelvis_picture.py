"""A review picture of a whole-pelvis CT's AP pelvis view: the simulated radiograph next to its stage-1 DRR and
one PF-DRR per hip, with the centre line where the cohort splits it (``simulate-cohort --picture``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

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

    from ..atomic import atomic_path

    patient = VirtualPatient(f"{scene.ct_id}-own-bone", scene.ct_id, 1.0, 1.0, 1.0, REFERENCE_BMI)
    rows = int(round(350.0 / PICTURE_PIXEL_MM))
    neutral = Positioning(0.0, 0.0, 0.0, (0.0, 0.0), AP_PELVIS_SOURCE_TO_DETECTOR_MM, 200.0)
    full = render_pelvis(replace(settings, image_shape=(rows, rows // 2)), scene, patient, "standing", neutral)
    images, geometry, collimation = full["images"], full["geometry"], full["collimation"]
    sides = [prepared.side for prepared in scene.bones]
    panels = [("simulated AP pelvis radiograph", images["radiograph"], "gray", None),
              ("stage-1 DRR (pelvis + femurs), g/cm2", images["drr_stage1"], "magma", None)]
    pf_top = max(float(images[f"drr_pf_{side}"].max()) for side in sides)
    panels += [(f"PF-DRR {side} hip, g/cm2", images[f"drr_pf_{side}"], "magma", pf_top) for side in sides]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.6))
    for axis, (title, image, colormap, top) in zip(np.atleast_1d(axes), panels):
        shown = axis.imshow(image, cmap=colormap, vmin=0, vmax=top)
        axis.axvline((image.shape[1] - 1) / 2.0, color="cyan", linewidth=0.6, linestyle="--")
        axis.set_title(title, fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
        if colormap != "gray":
            figure.colorbar(shown, ax=axis, fraction=0.04, pad=0.02).ax.tick_params(labelsize=6)
    kept = f"{collimation.rows} of {collimation.full_rows} rows kept" if collimation.collimated else "not collimated"
    figure.suptitle(f"{scene.ct_id}: AP pelvis, SID {geometry.source_to_detector_mm:g} mm, "
                    f"{geometry.detector_columns} x {geometry.detector_rows} px at {geometry.column_spacing_mm:g} mm "
                    f"(detector 430 x 350 mm, {kept}); patient's right on the image's left; dashed: the split",
                    fontsize=8)
    figure.tight_layout()
    with atomic_path(Path(path)) as temporary:
        figure.savefig(temporary, dpi=72, format="png")
    plt.close(figure)
    return {"ct": scene.ct_id, "sides": sides, "image_px": list(images["radiograph"].shape),
            "pixel_mm": geometry.column_spacing_mm, "collimation": collimation.to_dict()}
