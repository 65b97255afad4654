"""Honest confidence, end to end (issue 23): which images get a trusted number with a WHO category, and how often
the prediction intervals hold, for the shipped model (or ``--model``).

Through ``estimate`` (hip detector, input region, model, checks), image sets the model was not made for must get no
trusted category, and images like its training data should keep theirs:

* ``paediatric``: the 10 real paediatric AP pelvis radiographs of ``../shared/data/xray/ddh_pediatric``;
* ``no hip``: the upper third of AP pelvis radiographs (abdomen and spine), axial CT slices through the hips (HU)
  passed off as radiographs, and the lower half of single-hip views (femoral shaft only);
* ``implant``: single-hip views of STS_012 with three screws across its neck (:mod:`bmdgan.cohort.implant`), through
  the detector and, so that the model's own checks are measured too, cut at the CT's own landmarks;
* ``familiar``: the same STS_012 views without screws, and AP pelvis radiographs of the whole-pelvis CTs.

Prediction intervals: the coverage leaving each calibration CT out, at the calibration site and at another site
(stored by ``bmdgan calibrate-confidence``).

Usage: python benchmarks/check_confidence.py --prepared DIR [DIR ...] --out DIR [--model FOLDER] [--update-card]
``--prepared``: ``simulate-cohort``'s ``OUT/prepared`` folders that hold STS_012 and the pelvic_reference CTs.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PELVIC_CTS = ("Pelvic-Ref-002", "Pelvic-Ref-005")
HIP_VIEWS = [(patient, pose) for patient in range(2) for pose in ("standing", "supine", "abduction", "adduction")]


def reason_of(warning: str) -> str:
    """A short name for the check behind a warning (for the table)."""
    for key, words in (
        ("appearance", "looks unlike"),
        ("PF area", "proximal-femur region has"),
        ("dense material", "dense material"),
        ("disagreement", "disagree"),
        ("appearance and area", "at the same time"),
        ("femur cut by the edge", "lies on the image"),
        ("header", "DICOM header"),
        ("age", "years old"),
        ("detector unsure", "unsure of this hip"),
    ):
        if words in warning:
            return key
    return "other"


def prepared_holding(folders: list[Path], ct_id: str) -> Path:
    """The first of the prepared-CT ``folders`` that holds ``ct_id``."""
    from bmdgan.cohort.prepared_ct import prepared_bones

    for folder in folders:
        if prepared_bones(folder, ct_id):
            return folder
    raise SystemExit(f"no --prepared folder holds {ct_id}: give a cohort's 'prepared' folder made from it")


def hip_view_radiographs(prepared_folder: Path, screws: bool, out: Path):
    """STS_012's single-hip views (with or without neck screws), oriented as right hips: [(Radiograph, femoral head
    centre px, neck point px)] with the points projected from the CT."""
    from dataclasses import replace

    from bmdgan.cohort.implant import with_neck_screws
    from bmdgan.cohort.prepared_ct import load_prepared, prepared_bones
    from bmdgan.cohort.sample_case import simulated_hip_view
    from bmdgan.io import read_radiograph
    from bmdgan.projection.dicom_writer import write_dx_dicom

    prepared = load_prepared(prepared_folder, prepared_bones(prepared_folder, "STS_012")[0])
    prepared = with_neck_screws(prepared) if screws else replace(prepared, key="STS_012_plain")
    views = []
    for patient, pose in HIP_VIEWS:
        record, simulated = simulated_hip_view(prepared, seed=11, patient=patient, pose=pose)
        path = out / f"{record.case_id}{'_screws' if screws else ''}.dcm"
        radiograph = read_radiograph(write_dx_dicom(path, simulated, patient_id=f"SIM-{record.patient_id}"))
        provenance = json.loads(record.provenance)
        views.append((radiograph, provenance["head_centre_px"], provenance["neck_point_px"]))
    return views


def ap_pelvis_radiographs(prepared_folders: list[Path], out: Path):
    """AP pelvis radiographs of each whole-pelvis CT (from the first of ``prepared_folders`` that holds it), neutral
    and in two drawn positions: [Radiograph]."""
    from bmdgan.cohort.generator import CohortSettings, pelvis_scene_of
    from bmdgan.cohort.pelvis_case import Positioning, render_pelvis, sample_positioning
    from bmdgan.cohort.virtual_patient import REFERENCE_BMI, VirtualPatient
    from bmdgan.io import read_radiograph
    from bmdgan.projection.ap_pelvis import AP_PELVIS_SOURCE_TO_DETECTOR_MM
    from bmdgan.projection.dicom_writer import write_dx_dicom

    images = []
    for ct_id in PELVIC_CTS:
        prepared_folder = prepared_holding(prepared_folders, ct_id)
        settings = CohortSettings(str(prepared_folder), acquisition="reference")
        scene = pelvis_scene_of(str(prepared_folder), ct_id)
        patient = VirtualPatient(f"{ct_id}-own-bone", ct_id, 1.0, 1.0, 1.0, REFERENCE_BMI)
        for position in range(3):
            positioning = (
                Positioning(0.0, 0.0, 0.0, (0.0, 0.0), AP_PELVIS_SOURCE_TO_DETECTOR_MM, 200.0)
                if position == 0
                else sample_positioning(position, patient, "standing")
            )
            full = render_pelvis(settings, scene, patient, "standing", positioning, pitch_mm=0.5)
            path = out / f"{ct_id}_ap_pelvis_{position}.dcm"
            images.append(read_radiograph(write_dx_dicom(path, full["simulated"], patient_id=f"SIM-{ct_id}")))
    return images


def ct_slices_as_radiographs():
    """Axial slices (HU) of Pelvic-Ref-002 through its femoral heads, passed off as radiographs (1 mm pixels)."""
    from bmdgan.io import Radiograph, read_ct

    ct = read_ct(SHARED / "ct" / "pelvic_reference" / "Pelvic-Ref-002.nii.gz")
    slices = []
    for k in np.linspace(0.15, 0.45, 3) * ct.array.shape[0]:
        radiograph = Radiograph(ct.array[int(k)].astype(np.float32), source=f"Pelvic-Ref-002 axial slice {int(k)}")
        radiograph.pixel_spacing_mm = (1.0, 1.0)
        slices.append(radiograph)
    return slices


def crop(radiograph, rows: slice, name: str):
    from bmdgan.io import Radiograph

    part = Radiograph(radiograph.pixels[rows].copy(), source=f"{radiograph.source} {name}")
    part.pixel_spacing_mm = radiograph.pixel_spacing_mm
    return part


def outcome(results) -> dict:
    """Hips found, hips with a trusted number and a category, and the reasons the others gave."""
    hips = [hip for hip, _ in results]
    return {
        "hips": len(hips),
        "trusted_with_category": sum(hip.trustworthy and hip.who_category is not None for hip in hips),
        "reasons": sorted({reason_of(w) for hip in hips for w in hip.warnings}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", required=True, type=Path, nargs="+")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", default=None)
    parser.add_argument("--update-card", action="store_true", help="write the tables into the model's MODEL_CARD.md")
    args = parser.parse_args()

    from bmdgan.detection.detector import DetectedHip, HipDetector
    from bmdgan.evaluation.model_card import update_card_section
    from bmdgan.inference.default_model import resolve_model_folder
    from bmdgan.inference.estimation import estimate_hip, estimate_radiograph
    from bmdgan.inference.model import DecompositionModel
    from bmdgan.inference.tscore import load_reference
    from bmdgan.io import read_radiograph
    from bmdgan.progress import progress_bar

    args.out.mkdir(parents=True, exist_ok=True)
    model_folder = resolve_model_folder(args.model)
    model, detector, reference = DecompositionModel.load(model_folder), HipDetector.load(None), load_reference()
    images = args.out / "images"
    images.mkdir(exist_ok=True)
    plain, screwed = (
        hip_view_radiographs(prepared_holding(args.prepared, "STS_012"), False, images),
        hip_view_radiographs(prepared_holding(args.prepared, "STS_012"), True, images),
    )
    ap_views = ap_pelvis_radiographs(args.prepared, images)
    sets = {
        "paediatric (real)": [read_radiograph(p) for p in sorted((SHARED / "xray" / "ddh_pediatric").glob("*.dcm"))],
        "no hip: AP pelvis upper thirds": [crop(r, slice(0, r.shape[0] // 3), "upper third") for r in ap_views],
        "no hip: CT slices as radiographs": ct_slices_as_radiographs(),
        "no hip: lower half of hip views": [crop(r, slice(r.shape[0] // 2, None), "lower half") for r, _, _ in plain],
        "implant: hip views, screws in the neck": [r for r, _, _ in screwed],
        "familiar: hip views of an unseen CT": [r for r, _, _ in plain],
        "familiar: AP pelvis of the whole-pelvis CTs": ap_views,
    }
    rows = []
    for name, images in sets.items():
        for radiograph in progress_bar(images, desc=name):
            rows.append(
                {"set": name, "image": radiograph.source}
                | outcome(estimate_radiograph(model, detector, radiograph, reference))
            )
    for radiograph, head, neck in screwed:  # the model's own checks, whatever the detector does
        hip = DetectedHip("right", tuple(head), tuple(neck), 1.0, 1.0)
        result = estimate_hip(model, radiograph, hip, reference)
        rows.append({"set": "implant: cut at the CT's landmarks", "image": radiograph.source} | outcome([result]))
    table = [
        "| image set | images | hips found | trusted, with a category | reasons given |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in dict.fromkeys(r["set"] for r in rows):
        chosen = [r for r in rows if r["set"] == name]
        reasons = Counter(reason for r in chosen for reason in r["reasons"])
        table.append(
            f"| {name} | {len(chosen)} | {sum(r['hips'] for r in chosen)} | "
            f"{sum(r['trusted_with_category'] for r in chosen)} | "
            + (", ".join(f"{k} {v}" for k, v in reasons.most_common()) or "-")
            + " |"
        )
    description = json.loads((Path(model_folder) / "model.json").read_text())
    calibration = description.get("confidence_calibration", {})
    intervals = [
        "| images | method | target | images | coverage of the 90 % interval | median width |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for where, key in (
        ("calibration site", "interval_check_leaving_each_ct_out"),
        ("another site", "interval_check_other_site_leaving_each_ct_out"),
    ):
        for method, targets in calibration.get(key, {}).items():
            for target, check in targets.items():
                images = sum(c["images"] for c in check["per_ct"].values())
                intervals.append(
                    f"| {where} | {method} | {target} | {images} | {100 * check['coverage']:.1f} % (per CT: "
                    + ", ".join(f"{ct} {100 * c['coverage']:.0f} %" for ct, c in check["per_ct"].items())
                    + f") | {check['width']:.3g} |"
                )
    sites = (
        "at the calibration site, and imaged at another site"
        if calibration.get("interval_check_other_site_leaving_each_ct_out")
        else "at the calibration site"
    )
    alarms = calibration.get("false_alarms", {})
    summary = {"model": str(model_folder), "rows": rows, "calibration": calibration}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        *table,
        "",
        f"Out-of-distribution limits: {description['training_distribution'].get('calibrated_on')}. Images of a "
        f"source CT flagged with the limits fitted on the other CTs' images (the false-alarm rate a new familiar CT "
        f"sees): {100 * alarms.get('flagged_leaving_each_ct_out', float('nan')):.1f} % of {alarms.get('images')}.",
        "",
        f"Prediction intervals, each calibration CT's images ({sites}) against the interval fitted on the other CTs:",
        "",
        *intervals,
    ]
    print("\n".join(lines))
    if args.update_card:
        update_card_section(
            Path(model_folder),
            "confidence-check",
            "Confidence: intervals, and what gets no trusted number",
            [
                "Measured by `bash Resources/Models/calibrate_default_confidence.sh` (`bmdgan calibrate-confidence`, "
                "then `python benchmarks/check_confidence.py`). A row's images go through `estimate`; "
                '"trusted, with a category" counts hips given `trustworthy: true` and a WHO category.',
                "",
                *lines,
            ],
        )


if __name__ == "__main__":
    main()
