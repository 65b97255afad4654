"""Phantomless (internal) density calibration from reference tissues in the same scan.

When no phantom was scanned with the patient, the scan's own air, fat and skeletal muscle (and blood,
when its region is given) serve as references: each has an assumed hydroxyapatite-equivalent density,
its CT number is measured, and the line through them is the calibration. This follows the internal
calibration approach of Boden et al. (J Digit Imaging 2:31, 1989), Gudmundsdottir et al. (Osteoporos
Int 3:84, 1993), Mueller et al. (Eur J Radiol 79:375, 2011; fat and muscle), Lee et al. (Bone 103:325,
2017; air and blood) and Michalski et al. (Med Eng Phys 78:55, 2020; air, adipose, blood, muscle,
bone); Winsor et al. (Bone 143:115759, 2021) compare tissue choices for the femur.

Assumed equivalent densities (``EQUIVALENT_DENSITY_MG_CM3``): the nominal CT numbers of the tissues
at 120 kVp (air -1000, adipose -100, skeletal muscle +50, unenhanced blood +40 HU) divided by a nominal
hydroxyapatite sensitivity of ``NOMINAL_HU_PER_MG_CM3`` = 1.25 HU per mg/cm3 (a typical phantom slope at
120 kVp; values of 1.1-1.5 are reported across scanners and tube voltages). The tissues thus correct
the scanner's offset and gain; the hydroxyapatite sensitivity itself is assumed.

Expected accuracy: the published internal calibrations agree with simultaneous phantom calibration
to within about 5-10 % in BMD on average, with larger errors for single cases and for tube voltages
far from 120 kVp (the slope is energy dependent). Use a phantom when absolute BMD matters; the
phantomless numbers are fit for relative comparisons within one scanner and protocol.

Tissues are found automatically, from the body (:func:`.body.body_mask`: the patient without the couch,
wires and markers) and the air around it: air = the lowest substantial peak of the CT-number histogram
in [-1100, -900] HU of the voxels outside the body (a peak, not a mean or median, and the lowest, so that
neither a couch's or mattress's foam, about -930 to -900 HU, nor the skin's partial-volume rim moves it;
the scanner's fill value outside its reconstruction circle is left out); fat and muscle = the peaks of the
histogram of the smoothed scan inside the body in [-190, -30] HU and [0, 100] HU. The result is therefore
the same with or without the couch in the field of view. A tissue that is missing or whose CT number is
implausible raises :class:`CalibrationError`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..io.volume import Volume
from . import grid
from .body import body_mask
from .calibration import Calibration, CalibrationError, linear_fit

NOMINAL_HU_PER_MG_CM3 = 1.25
"""Assumed CT-number increase per mg/cm3 hydroxyapatite at 120 kVp (HU per mg/cm3)."""
NOMINAL_TISSUE_HU = {"air": -1000.0, "adipose": -100.0, "muscle": 50.0, "blood": 40.0}
"""Nominal CT numbers (HU) of the reference tissues at 120 kVp (unenhanced blood)."""
EQUIVALENT_DENSITY_MG_CM3 = {name: hu / NOMINAL_HU_PER_MG_CM3 for name, hu in NOMINAL_TISSUE_HU.items()}
"""Assumed hydroxyapatite-equivalent densities (mg/cm3): air -800, adipose -80, muscle +40, blood +32."""
PLAUSIBLE_HU = {"air": (-1100.0, -900.0), "adipose": (-190.0, -30.0), "muscle": (0.0, 100.0), "blood": (0.0, 100.0)}
"""A measured tissue outside this range (HU) is not used: the region is wrong or the scan is not in HU."""
PHANTOMLESS_MIN_R2 = 0.98
"""Minimum R2 of the tissue fit."""
MIN_TISSUE_VOLUME_MM3 = {"air": 2000.0, "adipose": 5000.0, "muscle": 20000.0, "blood": 500.0}
FILL_HU = -1024.0
"""A volume whose minimum is this or lower (HU) holds that value as fill outside the reconstruction circle."""
AIR_PEAK_SHARE = 0.1
AIR_PEAK_HALF_WIDTH_HU = 10.0
"""Air is the lowest histogram peak (outside the body, below -900 HU) holding 10 % of those voxels within +-10 HU."""


def _histogram_peak(values: np.ndarray, low: float, high: float) -> tuple[float, int]:
    """CT number (HU) of the highest histogram peak in [low, high] and the count of values in range."""
    inside = values[(values >= low) & (values <= high)]
    if inside.size == 0:
        return float("nan"), 0
    counts, edges = np.histogram(inside, bins=np.arange(low, high + 2.0, 2.0))
    counts = ndimage.gaussian_filter1d(counts.astype(float), 2.0)
    peak = int(np.argmax(counts))
    return float((edges[peak] + edges[peak + 1]) / 2), int(inside.size)


def _air_peak(values: np.ndarray, low: float, high: float) -> float:
    """CT number (HU) of air: the lowest histogram peak in [low, high] that holds ``AIR_PEAK_SHARE`` of the values.

    Air is the darkest matter in a scan; other things that read below -900 HU outside the body (a couch's
    or a mattress's foam, about -930 to -900 HU) lie above it, and may hold more voxels than the air does.
    """
    counts, edges = np.histogram(values, bins=np.arange(low, high + 2.0, 2.0))
    smooth = ndimage.gaussian_filter1d(counts.astype(float), 2.0)
    centres = (edges[:-1] + edges[1:]) / 2
    peaks = [
        i
        for i in range(len(smooth))
        if smooth[i] > 0 and smooth[i] >= smooth[max(i - 1, 0)] and smooth[i] >= smooth[min(i + 1, len(smooth) - 1)]
    ]
    for i in peaks:
        near = np.abs(centres - centres[i]) <= AIR_PEAK_HALF_WIDTH_HU
        if counts[near].sum() >= AIR_PEAK_SHARE * counts.sum():
            return float(centres[i])
    return float(centres[int(np.argmax(smooth))])


def measure_tissues(ct: Volume, body: np.ndarray | None = None) -> dict[str, float]:
    """CT numbers (HU) of air, adipose and muscle found in the scan (see the module docstring).

    ``body``: the body mask ``[k, j, i]`` if already computed (:func:`.body.body_mask`).
    """
    if body is None:
        body = body_mask(ct)
    spacing = grid.spacing_kji(ct.geometry)
    voxel = ct.voxel_volume_mm3()
    measured = {}
    low, high = PLAUSIBLE_HU["air"]
    air = (ct.array >= low) & (ct.array <= high) & ~body
    fill = float(ct.array.min())
    if fill <= FILL_HU:  # the scanner's fill value outside its reconstruction circle is not a measurement
        air &= ct.array != fill
    if air.sum() * voxel >= MIN_TISSUE_VOLUME_MM3["air"]:
        measured["air"] = _air_peak(ct.array[air], low, high)
    box = grid.mask_box(body, 3.0, ct.geometry)
    if box is None:
        return measured
    smooth = ndimage.gaussian_filter(ct.array[box].astype(np.float32), np.maximum(1.0 / spacing, 0.3))
    inside = smooth[body[box]]
    for name, (low, high) in (("adipose", (-190.0, -30.0)), ("muscle", (0.0, 100.0))):
        peak, count = _histogram_peak(inside, low, high)
        if count * voxel >= MIN_TISSUE_VOLUME_MM3[name]:
            measured[name] = peak
    return measured


def tissue_values_from_labels(ct: Volume, labels: np.ndarray, names: dict[int, str]) -> dict[str, float]:
    """Mean CT numbers (HU) in user-given tissue regions: ``names`` maps label value -> tissue name."""
    measured = {}
    for value, name in names.items():
        if name not in NOMINAL_TISSUE_HU:
            raise CalibrationError(None, f"unknown reference tissue '{name}'", f"use {', '.join(NOMINAL_TISSUE_HU)}")
        region = labels == value
        if region.sum() * ct.voxel_volume_mm3() < MIN_TISSUE_VOLUME_MM3[name] / 10:
            raise CalibrationError(None, f"the {name} region is too small", "draw a larger region of that tissue")
        measured[name] = float(np.mean(ct.array[region]))
    return measured


def phantomless_calibration(
    ct: Volume, measured: dict[str, float] | None = None, body: np.ndarray | None = None
) -> Calibration:
    """Internal calibration from reference tissues (measured automatically unless ``measured`` is given).

    ``body``: the body mask ``[k, j, i]`` if already computed (:func:`.body.body_mask`), else it is found.
    """
    if measured is None:
        measured = measure_tissues(ct, body)
    usable = {}
    rejected = []
    for name, hu in measured.items():
        low, high = PLAUSIBLE_HU[name]
        if low <= hu <= high:
            usable[name] = hu
        else:
            rejected.append(f"{name} at {hu:.0f} HU is outside {low:.0f}..{high:.0f} HU")
    soft = [name for name in usable if name != "air"]
    if len(usable) < 2 or not soft:
        found = ", ".join(f"{n} {v:.0f} HU" for n, v in measured.items()) or "none"
        raise CalibrationError(
            ct.source or None,
            f"not enough reference tissues for a phantomless calibration (found: {found}"
            + (f"; {'; '.join(rejected)}" if rejected else "")
            + ")",
            "give a calibration from a phantom, or tissue regions (air, adipose, muscle)",
        )
    names = sorted(usable, key=lambda n: EQUIVALENT_DENSITY_MG_CM3[n])
    hu = [usable[n] for n in names]
    density = [EQUIVALENT_DENSITY_MG_CM3[n] for n in names]
    a, b, r2 = linear_fit(density, hu)
    if a <= 0 or r2 < PHANTOMLESS_MIN_R2:
        raise CalibrationError(
            ct.source or None,
            f"reference tissues do not fit a line (R2 = {r2:.3f})",
            "check the scan is in HU, or use a phantom calibration",
        )
    notes = [
        f"assumed hydroxyapatite sensitivity {NOMINAL_HU_PER_MG_CM3} HU per mg/cm3 (120 kVp nominal); "
        "expected agreement with a phantom calibration about 5-10 %"
    ] + rejected
    return Calibration(
        slope=1.0 / a,
        intercept=-b / a,
        r2=r2,
        method="phantomless (internal: " + ", ".join(names) + ")",
        reference_names=names,
        reference_hu=hu,
        reference_density_mg_cm3=density,
        notes=notes,
    )
