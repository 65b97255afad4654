"""One radiograph in, BMD out: the hip detector finds each hip (:mod:`bmdgan.detection`), the model's input region
is cut around it (:mod:`bmdgan.datasets.normalise`), and each hip gets its PF-DRR, DXA-like aBMD (g/cm2), QCT
vBMD (mg/cm3), T-score, WHO category, and warnings when the input does not look like what the model was trained
on. A radiograph where no hip is found gets no number, only the reason (:data:`NO_HIP_FOUND`).

``dxa_bmd_g_cm2`` comes from a calibration to clinical DXA when the model has one, else from the CT-derived
DXA-like aBMD (``ct_abmd_g_cm2``: what models trained on virtual cohorts know); ``dxa_like_source`` says which.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..datasets.normalise import PROXIMAL_FEMUR_BOX, apply_hip_roi, plan_hip_roi
from ..distribution_check import decomposition_regression_gap
from ..errors import InputError
from ..io import Radiograph
from ..io.float_image import write_float_image
from ..io.radiograph import IMAGE_SUFFIXES
from ..io.sniff import sniff_format
from ..outputs import result_folder, unique_names
from .report import draw_report
from .tscore import OSTEOPENIA_BELOW, OSTEOPOROSIS_AT_OR_BELOW, Reference, bmd_at_t_score, t_score, who_category
from .uncertainty import DEFAULT_COVERAGE

if TYPE_CHECKING:  # torch is imported only by what runs a model: a refused input costs no torch import
    from ..detection.detector import DetectedHip, HipDetector
    from .model import Decomposition, DecompositionModel

LATERALITY = {"L": "left", "R": "right"}


@dataclass
class HipEstimate:
    side: str
    method: str
    dxa_bmd_g_cm2: float | None
    dxa_like_source: str | None
    qct_bmd_mg_cm3: float | None
    t_score: float | None
    who_category: str | None
    reference: str
    femoral_head_centre_px: list[float]
    """[column, row] of the detected femoral head centre in the input radiograph (pixels)."""
    neck_point_px: list[float]
    roi_corners_px: list[list[float]]
    """The model's input region in the radiograph: four [column, row] corners (pixels)."""
    detector_confidence: float
    warnings: list[str] = field(default_factory=list)
    dxa_bmd_interval_g_cm2: list[float] | None = None
    """Central ``interval_coverage`` interval of the true aBMD (g/cm2), calibrated on CTs the model never saw
    (:mod:`bmdgan.inference.uncertainty`); None when the model has no calibration or the result is not trusted."""
    qct_bmd_interval_mg_cm3: list[float] | None = None
    interval_coverage: float | None = None
    probability_t_score_at_or_below_minus_2_5: float | None = None
    """P(true T-score <= -2.5: osteoporosis) from the same calibration."""
    probability_t_score_below_minus_1: float | None = None
    """P(true T-score < -1: osteopenia or osteoporosis)."""
    who_category_probability: float | None = None
    """P(the true WHO category is ``who_category``)."""

    @property
    def trustworthy(self) -> bool:
        return not self.warnings and self.dxa_bmd_g_cm2 is not None

    def to_dict(self) -> dict:
        return {**asdict(self), "trustworthy": self.trustworthy}


def areal_summary(hip: HipEstimate) -> str:
    """One hip's aBMD (g/cm2) with its interval, T-score and WHO category with its probability, as a line of text
    (``estimate``'s printout, the BMDGAN module's panel)."""
    if hip.dxa_bmd_g_cm2 is None:
        return "no aBMD"
    text = f"aBMD {hip.dxa_bmd_g_cm2:.3f} g/cm2"
    if hip.dxa_bmd_interval_g_cm2:
        low, high = hip.dxa_bmd_interval_g_cm2
        text += f" ({100 * hip.interval_coverage:.0f} % interval {low:.2f}-{high:.2f})"
    if hip.t_score is None:
        return text + ", no T-score"
    text += f", T-score {hip.t_score:+.1f} ({hip.who_category}"
    probability = hip.who_category_probability
    return text + (f", probability {probability:.2f})" if probability is not None else ")")


def side_hints(radiograph: Radiograph, side: str, single_hip: bool) -> tuple[str, bool]:
    """(side to look for, at most one hip?) for the detector: ``side`` "left"/"right" as given, else the DICOM
    laterality when present (one hip), else both sides; ``single_hip``: the image shows one hip."""
    if side in ("left", "right"):
        return side, True
    if radiograph.laterality in LATERALITY:
        return LATERALITY[radiograph.laterality], True
    return "auto", single_hip


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


METHODS = ("auto", "decomposition", "regression")
ADULT_AGE_YEARS = 20.0
"""T-scores compare with young adults (NHANES III, 20-29 years) and the model saw adult hips only."""
HIP_BODY_PARTS = {"HIP", "PELVIS", "FEMUR", "LEG", "LOWER LIMB", "LOWERLIMB", "LOWER EXTREMITY", "HIPS"}
"""DICOM BodyPartExamined values of a hip radiograph (any other named part is not one)."""
AP_VIEWS = {"AP", "PA"}
TRUSTED_DETECTOR_CONFIDENCE = 0.6
"""A hip the detector found less surely than this (it reports from its own, lower threshold) gets a number but no
trust: on CTs the detector never saw, 48 of 87 heads found at 0.25-0.6 lay within 5 mm (0.5-0.6 no better than
0.25-0.5), against 359 of 440 at 0.6 or more (docs/hip-detection.md); a misplaced head moves the input region. A
point the user placed counts as sure."""
MIN_REGION_ON_IMAGE = 0.9
"""Below this share of the input region's proximal-femur box on the radiograph
(:data:`bmdgan.datasets.normalise.PROXIMAL_FEMUR_BOX`), the proximal femur is cut by the image's edge."""
NO_HIP_FOUND = (
    "no hip found: the hip detector found no femoral head on this image (is it a hip or pelvis radiograph, the "
    "right way up, with its pixel spacing?); no BMD is given"
)


def not_an_adult_hip(radiograph: Radiograph) -> list[str]:
    """Why the header says this is not an adult AP hip radiograph (empty: nothing against it, or no header):
    the patient's age, the body part examined, the view position. Any reason withholds the T-score and the WHO
    category, not just flags them."""
    reasons = []
    age = radiograph.patient_age_years
    if age is not None and age < ADULT_AGE_YEARS:
        reasons.append(
            f"the patient is {age:.1f} years old (DICOM header): the model was trained on adult hips and T-scores "
            "and WHO categories apply to adults only; no category is given"
        )
    if radiograph.body_part is not None and radiograph.body_part not in HIP_BODY_PARTS:
        reasons.append(
            f"the DICOM header names the body part {radiograph.body_part}, not a hip or pelvis: no category is given"
        )
    if radiograph.view_position is not None and radiograph.view_position.upper() not in AP_VIEWS:
        reasons.append(
            f"the view is {radiograph.view_position} (DICOM ViewPosition), not AP: the model was trained on AP "
            "views; no category is given"
        )
    return reasons


def decompose_hip(model: DecompositionModel, radiograph: Radiograph, hip: DetectedHip) -> Decomposition:
    """The PF-DRR of one found hip: its input region cut from the radiograph (:mod:`bmdgan.datasets.normalise`)
    and decomposed."""
    roi = plan_hip_roi(hip.head_centre_px, hip.neck_point_px, hip.side, radiograph.pixel_spacing_mm, model.image_shape)
    return model.decompose(apply_hip_roi(radiograph.pixels, roi), roi)


def estimate_hip(
    model: DecompositionModel,
    radiograph: Radiograph,
    hip: DetectedHip,
    reference: Reference,
    method: str = "auto",
) -> tuple[HipEstimate, Decomposition]:
    """BMD of one detected hip. ``method``: "decomposition" (thresholded PF-DRR mean + linear fit), "regression"
    (stage-3 regressors from the learned representation) or "auto" (regression when the model has it; a target
    without a regressor still comes from the decomposition). The PF-DRR is computed in every case: it is the
    picture and the basis of the warnings."""
    if method not in METHODS:
        raise InputError(None, f"unknown method {method!r}", f"use one of {METHODS}")
    decomposition = decompose_hip(model, radiograph, hip)
    roi = decomposition.roi
    regressed = model.regress(decomposition.model_input) if method in ("auto", "regression") else {}
    if method == "regression" and not regressed:
        raise InputError(None, "the model has no stage-3 regressors", "train them or use --method decomposition")
    decomposed = model.bmd(decomposition)
    bmd = {**decomposed, **regressed}
    source = "dxa_bmd_g_cm2" if "dxa_bmd_g_cm2" in bmd else "ct_abmd_g_cm2" if "ct_abmd_g_cm2" in bmd else None
    areal = _finite(bmd.get(source)) if source else None
    volumetric = _finite(bmd.get("qct_vbmd_mg_cm3"))
    disagreement = decomposition_regression_gap(decomposed, regressed)
    refusals = not_an_adult_hip(radiograph)
    if not hip.confidence >= TRUSTED_DETECTOR_CONFIDENCE:  # NaN included
        refusals.append(
            f"the hip detector is unsure of this hip (confidence {hip.confidence:.2f} < "
            f"{TRUSTED_DETECTOR_CONFIDENCE}): the input region may be misplaced; check the marked femoral head "
            "centre and neck point (in Slicer, move them and estimate from the moved points); no category is given"
        )
    on_image = roi.inside_fraction(radiograph.shape, PROXIMAL_FEMUR_BOX)
    if on_image < MIN_REGION_ON_IMAGE:
        refusals.append(
            f"only {100 * on_image:.0f} % of the proximal femur's region lies on the image (the femur is cut by its "
            "edge): give a radiograph that shows the whole hip; no category is given"
        )
    warnings = refusals + list(radiograph.warnings) + model.warnings(decomposition, disagreement)
    if areal is None:
        warnings.append("no areal BMD: the model has no aBMD calibration or the PF region is empty")
    method_used = "decomposition+regression" if regressed else "decomposition"
    estimate = HipEstimate(
        side=hip.side,
        method=method_used,
        dxa_bmd_g_cm2=areal,
        dxa_like_source=source,
        qct_bmd_mg_cm3=volumetric,
        t_score=None,
        who_category=None,
        reference=reference.name,
        femoral_head_centre_px=[round(v, 1) for v in hip.head_centre_px],
        neck_point_px=[round(v, 1) for v in hip.neck_point_px],
        roi_corners_px=roi.corners_px(),
        detector_confidence=round(hip.confidence, 3),
        warnings=warnings,
    )
    if not warnings:  # a number that is not trusted gets no category, no interval and no probabilities
        add_category_and_interval(estimate, model, source, volumetric, reference)
    return estimate, decomposition


def add_category_and_interval(
    estimate: HipEstimate, model: DecompositionModel, source: str, volumetric: float | None, reference: Reference
) -> None:
    """The T-score and WHO category of a trusted estimate, and, when the model was calibrated on held-out CTs, the
    intervals of the true aBMD and vBMD and the probabilities of each T-score range."""
    areal = estimate.dxa_bmd_g_cm2
    estimate.t_score = t_score(areal, reference)
    estimate.who_category = who_category(estimate.t_score)
    areal_truth = model.interval(estimate.method, source)
    if areal_truth is None:
        return
    estimate.interval_coverage = DEFAULT_COVERAGE
    estimate.dxa_bmd_interval_g_cm2 = [round(v, 4) for v in areal_truth.interval(areal)]
    osteoporosis = areal_truth.probability_below(areal, bmd_at_t_score(OSTEOPOROSIS_AT_OR_BELOW, reference))
    low_bone_mass = areal_truth.probability_below(areal, bmd_at_t_score(OSTEOPENIA_BELOW, reference))
    estimate.probability_t_score_at_or_below_minus_2_5 = round(osteoporosis, 3)
    estimate.probability_t_score_below_minus_1 = round(low_bone_mass, 3)
    estimate.who_category_probability = round(
        {"osteoporosis": osteoporosis, "osteopenia": low_bone_mass - osteoporosis, "normal": 1.0 - low_bone_mass}[
            estimate.who_category
        ],
        3,
    )
    volumetric_truth = model.interval(estimate.method, "qct_vbmd_mg_cm3")
    if volumetric_truth is not None and volumetric is not None:
        estimate.qct_bmd_interval_mg_cm3 = [round(v, 1) for v in volumetric_truth.interval(volumetric)]


def estimate_radiograph(
    model: DecompositionModel,
    detector: HipDetector,
    radiograph: Radiograph,
    reference: Reference,
    side: str = "auto",
    single_hip: bool = False,
    method: str = "auto",
) -> list[tuple[HipEstimate, Decomposition]]:
    """Every hip the detector finds (``side`` and ``single_hip`` are hints: :func:`side_hints`), each estimated
    by :func:`estimate_hip`; an empty list when none is found (the result then says :data:`NO_HIP_FOUND`)."""
    wanted, one_hip = side_hints(radiograph, side, single_hip)
    hips = detector.detect(radiograph.pixels, radiograph.pixel_spacing_mm, wanted, one_hip)
    return [estimate_hip(model, radiograph, hip, reference, method) for hip in hips]


def result_summary(radiograph: Radiograph, results: list[tuple[HipEstimate, Decomposition]], model_folder: str) -> dict:
    """The result JSON of one radiograph: its source, the model folder, the pixel spacing (mm) and where it came
    from (the DICOM attribute, a magnification or --pixel-mm the user stated, or the Slicer node), and each hip's
    estimate (aBMD g/cm2, vBMD mg/cm3, T-score, WHO category, femoral head centre and input region in pixels,
    the detector's confidence, warnings, trustworthy); with no hip found, ``no_hip_found`` says why."""
    summary = {
        "source": radiograph.source,
        "model": model_folder,
        "pixel_spacing_mm": radiograph.pixel_spacing_mm,
        "pixel_spacing_source": radiograph.spacing_source,
        "hips": [hip.to_dict() for hip, _ in results],
    }
    if not results:
        summary["no_hip_found"] = NO_HIP_FOUND
    return summary


def write_results(
    folder: str | Path,
    radiograph: Radiograph,
    results: list[tuple[HipEstimate, Decomposition]],
    model: DecompositionModel,
    model_folder: str,
    overwrite: bool = False,
) -> Path:
    """``folder``: result.json, pf_drr_<side>.tif (g/cm2) and report.png, written as a whole or not at all, by
    :func:`bmdgan.outputs.result_folder` (an existing folder is replaced only with ``overwrite`` and only when it is
    an earlier estimate holding nothing else)."""

    with result_folder(folder, "estimate", overwrite) as partial:
        for hip, decomposition in results:
            write_float_image(
                partial / f"pf_drr_{hip.side}.tif",
                decomposition.pf_drr_g_cm2,
                "g/cm2",
                region=decomposition.roi.to_dict(),
                source=radiograph.source,
            )
        (partial / "result.json").write_text(json.dumps(result_summary(radiograph, results, model_folder), indent=2))
        draw_report(
            partial / "report.png",
            radiograph,
            results,
            model.distribution.threshold_g_cm2,
            None if results else NO_HIP_FOUND,
        )
    return Path(folder)


def input_files(paths: list[str]) -> list[Path]:
    """Radiographs named directly, found in folders, or listed one per line in a .txt file. A folder's files are
    taken by content (DICOM preamble, PNG/JPEG/TIFF signature: ``IMG_0001`` without a suffix is a DICOM too) or by a
    radiograph suffix (so that a broken ``.dcm`` is reported, not skipped); hidden files and DICOMDIR are left out."""

    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found += sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and not p.name.startswith(".")
                and p.name.upper() != "DICOMDIR"
                and (p.suffix.lower() in IMAGE_SUFFIXES + (".dcm",) or sniff_format(p) is not None)
            )
        elif path.suffix.lower() == ".txt" and path.is_file():
            found += [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
        else:
            found.append(path)
    if not found:
        raise InputError(None, "no radiograph found in the inputs", "give files, folders or a .txt list")
    return found


def output_folder_names(files: list[Path]) -> list[str]:
    """One distinct result-folder name per input, decided up front (:func:`bmdgan.outputs.unique_names`): the file's
    stem, numbered when several inputs share it, skipping numbers another input's name already uses (``a/x.dcm``,
    ``b/x.dcm`` and ``c/x-2.dcm`` give ``x-1``, ``x-3`` and ``x-2``)."""
    return unique_names([path.stem for path in files])
