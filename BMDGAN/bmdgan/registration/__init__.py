"""Intensity-based 2D-3D registration of a CT to a plain radiograph (paper: Otake et al. 2012's method).

* :mod:`.similarity`: gradient correlation (global or in patches) and NCC, batched, differentiable, masked.
* :mod:`.landmark_pose`: pose from 2D-3D landmark correspondences (DLT + Levenberg-Marquardt); landmark JSON.
* :mod:`.levels`: coarse-to-fine radiograph, detector and CT (block averages).
* :mod:`.optimiser`: batched CMA-ES over the six pose parameters; Adam refinement through the projector.
* :mod:`.global_search`: FFT search of in-plane shift and rotation when there is no usable start.
* :mod:`.hip_start`: a start from the hip detector's femoral head and neck paired with the CT's.
* :mod:`.roi`: exposed field (collimation), bone window, projected-bone checks.
* :mod:`.problem`: settings, prepared inputs and the pose cost of one level (shared by the pipeline and the search).
* :mod:`.pipeline`: the coarse-to-fine pipeline and the result JSON.
* :mod:`.quality`: "good" / "uncertain" / "failed" grade with the likely cause (:mod:`.diagnosis`).
* :mod:`.overlay`: review picture. :mod:`.metrics`: mTRE.

Names are imported lazily (like :mod:`bmdgan.projection`), so importing the package does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "GradientCorrelation": "similarity",
    "NormalisedCrossCorrelation": "similarity",
    "gradient_correlation": "similarity",
    "normalised_cross_correlation": "similarity",
    "make_similarity": "similarity",
    "Landmarks": "landmark_pose",
    "LandmarkPose": "landmark_pose",
    "solve_landmark_pose": "landmark_pose",
    "cmaes_search": "optimiser",
    "adam_refine": "optimiser",
    "global_search": "global_search",
    "exposed_field": "roi",
    "DEFAULT_LEVELS": "problem",
    "LevelSettings": "problem",
    "RegistrationSettings": "problem",
    "RegistrationResult": "pipeline",
    "register": "pipeline",
    "Quality": "quality",
    "assess_quality": "quality",
    "registration_overlay": "overlay",
    "write_png_rgb": "overlay",
    "display_projections": "overlay",
    "drr_edges": "overlay",
    "bone_outline": "overlay",
    "mean_target_error_mm": "metrics",
    "mean_projection_distance_mm": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
