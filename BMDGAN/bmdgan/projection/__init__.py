"""Quantitative DRR projection and radiograph simulation.

* :mod:`.geometry`: :class:`ProjectionGeometry` (SID, detector, principal point, CT pose; JSON; DICOM).
* :mod:`.pose`: six pose parameters <-> 4x4 (torch, differentiable).
* :mod:`.projector`: :class:`Projector` line integrals (mg/cm3 -> g/cm2, 1/mm -> 1), masked, batched, autograd.
* :mod:`.reference`: plain trilinear ray-marching reference (cross-checks, benchmark baseline).
* :mod:`.attenuation`, :mod:`.materials`: NIST mu/rho, HU -> attenuation and -> material densities.
* :mod:`.simulator`, :mod:`.processing`, :mod:`.dicom_writer`, :mod:`.image_io`: simulated radiographs and files.
* :mod:`.ap_pelvis`: the clinic's AP pelvis view of a whole-pelvis CT (body only, collimated to the scanned range).

Names are imported lazily, so ``import bmdgan.projection.geometry`` (numpy only) does not import torch.

Typical use (registration renders a CMA-ES population of poses in one differentiable batch)::

    geometry = default_ap_geometry(ct)                         # or ProjectionGeometry.load(json)
    projector = Projector(mu_per_mm, ct.geometry.ijk_to_lps(), unit="1/mm")
    centre = volume_centre_lps(ct.shape_ijk, ct.geometry.ijk_to_lps())
    poses = camera_pose(params, geometry.camera_from_lps, centre)   # params (16, 6): degrees, mm
    images = projector.render(poses, geometry)                 # (16, 1, rows, cols), autograd to params
    drr = project_volume(density_mg_cm3, geometry, {"pf": pf_mask})  # numpy, g/cm2, no gradients
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AP_ROTATION": "geometry",
    "ProjectionGeometry": "geometry",
    "ap_pose": "geometry",
    "default_ap_geometry": "geometry",
    "geometry_from_radiograph": "geometry",
    "volume_centre_lps": "geometry",
    "volume_corners_lps": "geometry",
    "camera_pose": "pose",
    "camera_pose_parameters": "pose",
    "matrix_to_pose": "pose",
    "pose_to_matrix": "pose",
    "DRR": "projector",
    "LineIntegralUnit": "projector",
    "Projector": "projector",
    "line_integral_unit": "projector",
    "masks_from_labels": "projector",
    "project_volume": "projector",
    "SimulationParameters": "simulator",
    "SimulatedRadiograph": "simulator",
    "sample_parameters": "simulator",
    "simulate_radiograph": "simulator",
    "material_projections": "simulator",
    "hu_to_attenuation": "attenuation",
    "attenuation_volume": "attenuation",
    "mass_attenuation": "attenuation",
    "decompose_hu": "materials",
    "write_dx_dicom": "dicom_writer",
    "write_drr_tiff": "image_io",
    "read_drr_tiff": "image_io",
    "rotation_about": "geometry",
    "Collimation": "ap_pelvis",
    "ap_pelvis_centre": "ap_pelvis",
    "ap_pelvis_geometry": "ap_pelvis",
    "clean_outside_body": "ap_pelvis",
    "collimate_to_scan": "ap_pelvis",
    "project_ap_pelvis": "ap_pelvis",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
