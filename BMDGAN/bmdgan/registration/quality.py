"""Per-case quality flag of a registration: "good" or "failed", with the reasons in plain words.

A registration is "good" only if every check passes:

* the CT holds bone (at least :data:`MIN_BONE_CM3` of voxels above the bone threshold or in the
  structure mask): without it there is nothing to register;
* the radiograph has edges in the region used (else any pose scores the same);
* the final patch gradient correlation at the finest level, of the whole CT's DRR, reaches :data:`GOOD_GC`
  (measured with GC whatever measure was optimised: NCC values of right and wrong poses overlap).
  Calibration (``benchmarks/bench_registration.py``, 23 simulated radiographs of the shared CTs with noise,
  scatter and clinical processing): registrations within 2 mm ended at GC 0.62-0.89 (median 0.78);
  mirrored (wrong-side) radiographs at 0.12 (thigh CT) and 0.33-0.35 (hip phantom);
* at least :data:`MIN_BONE_IN_VIEW` of the projected bone falls inside the exposed field of the
  radiograph (a pose that pushes the bone out of view can score well on the remaining soft tissue);
* when landmarks were given, they agree with the final pose within :data:`MAX_LANDMARK_RESIDUAL_MM`.

What the flag cannot see: one view determines the depth along the beam least; a few mm of depth error
move the picture by a fraction of a pixel (see the benchmark's mTRE versus mPD), so "good" means the
picture matches, not that the depth is right to 1 mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GOOD_GC = 0.50
"""Lowest final patch GC of a "good" registration (see the module docstring)."""
MIN_BONE_CM3 = 20.0
"""Least bone volume in the CT (cm3); a proximal femur holds about 100-200 cm3 above 200 HU."""
MIN_BONE_IN_VIEW = 0.9
"""Least fraction of the bone voxels that must project inside the radiograph's exposed field."""
MAX_LANDMARK_RESIDUAL_MM = 10.0
"""Largest RMS landmark reprojection distance (mm at the patient) accepted after registration."""
LARGE_COLLIMATION = 0.3
"""Collimated fraction of the image above which a note is added (not a failure by itself)."""


@dataclass
class Quality:
    """Flag ("good" or "failed"), one message per check (failures first) and the numbers checked."""

    flag: str
    messages: list[str]
    checks: dict = field(default_factory=dict)

    @property
    def good(self) -> bool:
        return self.flag == "good"

    def to_dict(self) -> dict:
        return {"flag": self.flag, "messages": list(self.messages), "checks": dict(self.checks),
                "thresholds": {"gradient_correlation": GOOD_GC, "min_bone_cm3": MIN_BONE_CM3,
                               "min_bone_in_view_fraction": MIN_BONE_IN_VIEW,
                               "max_landmark_residual_mm": MAX_LANDMARK_RESIDUAL_MM}}


def assess_quality(gradient_correlation: float, *, bone_volume_cm3: float, bone_in_view: float,
                   fixed_is_flat: bool = False, landmark_residual_mm: float | None = None,
                   collimated_fraction: float = 0.0) -> Quality:
    """The quality flag and messages of a finished registration (see the module docstring)."""
    failures, notes = [], []
    if bone_volume_cm3 < MIN_BONE_CM3:
        failures.append(f"the CT holds almost no bone ({bone_volume_cm3:.1f} cm3 < {MIN_BONE_CM3:g} cm3): "
                        "it does not contain the femur; give the CT of the hip")
    if fixed_is_flat:
        failures.append("the radiograph has no edges in the region used: check the image and the ROI")
    if gradient_correlation < GOOD_GC:
        failures.append(f"final GC {gradient_correlation:.3f} is below {GOOD_GC:g}: the DRR does not match the "
                        "radiograph (wrong side or mirrored image, another patient or body part, or a start too "
                        "far off: try landmarks)")
    else:
        notes.append(f"final GC {gradient_correlation:.3f} >= {GOOD_GC:g}")
    if bone_in_view < MIN_BONE_IN_VIEW:
        failures.append(f"only {100 * bone_in_view:.0f}% of the projected bone lies inside the exposed field "
                        f"(need {100 * MIN_BONE_IN_VIEW:.0f}%): the femur is cut off by the image edge or "
                        "collimation, or the pose is wrong")
    else:
        notes.append(f"{100 * bone_in_view:.0f}% of the projected bone inside the exposed field")
    if landmark_residual_mm is not None:
        if landmark_residual_mm > MAX_LANDMARK_RESIDUAL_MM:
            failures.append(f"the landmarks are {landmark_residual_mm:.1f} mm (RMS) from the registered pose "
                            f"(> {MAX_LANDMARK_RESIDUAL_MM:g} mm): the intensity match disagrees with them")
        else:
            notes.append(f"landmarks within {landmark_residual_mm:.1f} mm RMS")
    if collimated_fraction > LARGE_COLLIMATION:
        notes.append(f"{100 * collimated_fraction:.0f}% of the image is a uniform border (collimation or empty "
                     "background), excluded")
    checks = {"gradient_correlation": gradient_correlation, "bone_volume_cm3": bone_volume_cm3,
              "bone_in_view_fraction": bone_in_view,
              "fixed_is_flat": fixed_is_flat, "landmark_residual_mm": landmark_residual_mm,
              "collimated_fraction": collimated_fraction}
    return Quality("failed" if failures else "good", failures + notes, checks)
