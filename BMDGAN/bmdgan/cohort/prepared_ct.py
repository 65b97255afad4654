"""A real CT made ready for the cohort: HU, calibrated density, masks, landmarks and the linear parts of its
CT-aBMD and vBMD, cached on disk (``<ct_id>.npz`` + ``<ct_id>.json``) so that workers load it in a blink.

Because aBMD and vBMD are linear in the mineral (the PF region and its projection do not depend on density),
each is stored as two components, trabecular and cortical: a virtual patient with factors (k_trab, k_cort) has
aBMD = k_trab * a_trab + k_cort * a_cort, and the same for vBMD.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..errors import InputError
from ..io import Volume, VolumeGeometry


@dataclass
class PreparedCT:
    ct_id: str
    hu: Volume
    density_mg_cm3: np.ndarray
    bone_mask: np.ndarray
    pf_mask: np.ndarray
    head_centre_lps: np.ndarray
    shaft_point_lps: np.ndarray
    side: str
    abmd_components_g_cm2: tuple[float, float]
    vbmd_components_mg_cm3: tuple[float, float]
    calibration: dict
    frame_axes: np.ndarray
    """3x3, rows: the neutral frame's lateral (along the neck), AP and up (along the shaft) LPS unit vectors:
    the anatomical frame the cohort views the hip in (DXA-like positioning), whatever the CT header says."""

    @property
    def pf_centre_lps(self) -> np.ndarray:
        k, j, i = np.nonzero(self.pf_mask)
        return (self.hu.geometry.ijk_to_lps() @ np.array([i.mean(), j.mean(), k.mean(), 1.0]))[:3]


def save_prepared(prepared: PreparedCT, folder: Path) -> None:
    """Write the arrays (npz) then the description (json): the json's presence marks a complete cache entry."""
    with atomic_path(folder / f"{prepared.ct_id}.npz") as temporary:
        np.savez_compressed(temporary, hu=prepared.hu.array.astype(np.float32),
                            density=prepared.density_mg_cm3.astype(np.float32),
                            bone=prepared.bone_mask.astype(np.uint8), pf=prepared.pf_mask.astype(np.uint8))
    geometry = prepared.hu.geometry
    atomic_write_text(folder / f"{prepared.ct_id}.json", json.dumps({
        "ct_id": prepared.ct_id, "source": prepared.hu.source, "spacing_mm": geometry.spacing_mm,
        "origin_mm": geometry.origin_mm, "direction": np.asarray(geometry.direction).tolist(), "side": prepared.side,
        "head_centre_lps": prepared.head_centre_lps.tolist(), "shaft_point_lps": prepared.shaft_point_lps.tolist(),
        "abmd_components_g_cm2": list(prepared.abmd_components_g_cm2),
        "vbmd_components_mg_cm3": list(prepared.vbmd_components_mg_cm3), "calibration": prepared.calibration,
        "frame_axes": np.asarray(prepared.frame_axes).tolist()},
        indent=2))


def has_prepared(folder: Path, ct_id: str) -> bool:
    return (folder / f"{ct_id}.json").is_file() and (folder / f"{ct_id}.npz").is_file()


def load_prepared(folder: Path, ct_id: str) -> PreparedCT:
    if not has_prepared(folder, ct_id):
        raise InputError(folder, f"no prepared CT {ct_id}", "run the cohort preparation first")
    description = json.loads((folder / f"{ct_id}.json").read_text())
    arrays = np.load(folder / f"{ct_id}.npz", allow_pickle=False)
    geometry = VolumeGeometry(tuple(description["spacing_mm"]), tuple(description["origin_mm"]),
                              np.array(description["direction"]))
    return PreparedCT(ct_id, Volume(arrays["hu"], geometry, "HU", description["source"]), arrays["density"],
                      arrays["bone"].astype(bool), arrays["pf"].astype(bool),
                      np.array(description["head_centre_lps"]), np.array(description["shaft_point_lps"]),
                      description["side"], tuple(description["abmd_components_g_cm2"]),
                      tuple(description["vbmd_components_mg_cm3"]), description["calibration"],
                      np.array(description["frame_axes"]))


def density_components(density_mg_cm3: np.ndarray, cortical_threshold_mg_cm3: float) -> tuple[np.ndarray, np.ndarray]:
    """(trabecular, cortical) parts of a calibrated density: they add up to it voxel by voxel."""
    cortical = density_mg_cm3 > cortical_threshold_mg_cm3
    return np.where(cortical, 0.0, density_mg_cm3), np.where(cortical, density_mg_cm3, 0.0)


def prepare_ct(path: str | Path, ct_id: str, side: str = "auto",
               segmentation: list[str | Path] | None = None) -> PreparedCT:
    """Run the CT analysis (automatic labels, landmarks, PF region, phantomless calibration) and derive what the
    cohort needs. The aBMD/vBMD components are measured by the same code as ``bmdgan measure-ct``, on CTs whose
    calibrated density is the trabecular or the cortical part: the two add up to the full measurement."""
    from ..ct import labels as L
    from ..ct.measurement import measure_pf, neutral_frame
    from ..ct.pipeline import analyse_ct
    from ..io import read_ct
    from .channels import CORTICAL_THRESHOLD_MG_CM3

    ct = read_ct(path)
    labels = None
    if segmentation:  # e.g. TotalSegmentator's femur_<side> and hip_<side> files, for scans where the
        from ..ct.label_import import load_segmentation  # automatic femur is not good enough

        labels = load_segmentation(segmentation, ct, side)
    analysis = analyse_ct(ct, side=side, label_volume=labels)
    calibration = analysis.calibration
    density = calibration.density(ct.array).astype(np.float32)
    labels = analysis.label_volume().array
    pf = labels == L.PF_REGION
    components = []
    for part in density_components(density, CORTICAL_THRESHOLD_MG_CM3):
        as_hu = ct.with_array(((part - calibration.intercept) / calibration.slope).astype(np.float32))
        components.append(measure_pf(as_hu, analysis.segmentation.femur, analysis.region, analysis.landmarks,
                                     calibration, analysis.segmentation.metal))
    points = analysis.landmarks.points
    head = np.asarray(points["femoral_head_centre"], float)
    shaft = points.get("shaft_5cm")
    if shaft is None:  # short scans: a point 50 mm down the shaft axis from the head centre
        shaft = head - 50.0 * analysis.landmarks.shaft_axis()
    return PreparedCT(ct_id, ct, density, labels > 0, pf, head, np.asarray(shaft, float),
                      analysis.landmarks.frame.side,
                      (components[0].ct_abmd_g_cm2, components[1].ct_abmd_g_cm2),
                      (components[0].qct_vbmd_mg_cm3, components[1].qct_vbmd_mg_cm3),
                      {**calibration.to_dict(), "full_ct_abmd_g_cm2": analysis.measurement.ct_abmd_g_cm2,
                       "full_qct_vbmd_mg_cm3": analysis.measurement.qct_vbmd_mg_cm3},
                      neutral_frame(analysis.landmarks).matrix())
