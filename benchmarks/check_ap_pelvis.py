"""The user's image, end to end: AP pelvis radiographs of whole-pelvis CTs go through ``estimate`` (hip detector,
input region, model) and each hip's aBMD is set beside that hip's CT-aBMD measured on the same CT.

Each CT is imaged with its own bone (no density change, reference BMI) by the cohort's AP pelvis simulator as a
43 x 35 cm DICOM at 0.5 mm, in a neutral position and in ``--positions`` - 1 drawn ones (rotation and tilt on the
table, centring, distances). The ground truth is each hip's CT-aBMD and the projected femoral head centre. The
upper third of each image (abdomen and spine, no hip) must get no BMD. Prints a table and writes
``summary.json`` and each estimate's result folder (``report.png``) under ``--out``.

Usage: python benchmarks/check_ap_pelvis.py --prepared DIR --out DIR [--cts Pelvic-Ref-002,Pelvic-Ref-005]
       [--model FOLDER | --model-folds CV_FOLDER --dataset COHORT] [--detector FOLDER | --detector-folds CV_FOLDER]
       [--positions 3] [--update-card]
``--prepared``: a folder of prepared CTs (``simulate-cohort``'s ``OUT/prepared``) holding both hips of each CT.
``--detector-folds``: a ``train-detector --cross-validate`` folder: each CT is then read by the fold detector that
never saw it.
``--model-folds``: a ``cross-validate`` folder over ``--dataset`` (a cohort with whole-CT folds): each CT is then
estimated by the fold model whose training never saw it, so the figure is one for a CT the model never saw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PIXEL_MM = 0.5


def fold_detector(cross_validation: Path, ct_id: str) -> Path:
    """The fold folder of a cross-validation whose detector never saw ``ct_id``."""
    summary = json.loads((cross_validation / "summary.json").read_text())
    return cross_validation / f"fold_{summary['folds'][ct_id]}"


def fold_model(cross_validation: Path, dataset: Path, ct_id: str) -> Path:
    """The model folder of a ``cross-validate`` run whose training never saw ``ct_id`` (its fold in ``dataset``)."""
    from bmdgan.datasets.folds import source_ct_of
    from bmdgan.datasets.format import read_manifest

    folds = {record.fold for record in read_manifest(dataset) if source_ct_of(record) == ct_id}
    if len(folds) != 1:
        raise SystemExit(f"{ct_id} is in folds {sorted(folds)} of {dataset}: give a cohort with whole-CT folds")
    return cross_validation / f"fold{folds.pop()}" / "model"


def who_estimates(args) -> str:
    """Which model and detector read each CT, and whether they saw it in training (for the card)."""
    model = (
        "each CT estimated by the fold model of the whole-CT cross-validation that never saw it"
        if args.model_folds
        else f"{args.model or 'the shipped model'} (see its training CTs above)"
    )
    detector = (
        "the fold detector that never saw the CT"
        if args.detector_folds
        else (args.detector or "the bundled detector, trained on the shared CTs' views, these included")
    )
    return f"{model}; detector: {detector}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cts", default="Pelvic-Ref-002,Pelvic-Ref-005")
    parser.add_argument("--model", default=None)
    parser.add_argument("--model-folds", default=None)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--detector", default=None)
    parser.add_argument("--detector-folds", default=None)
    parser.add_argument("--positions", type=int, default=3)
    parser.add_argument("--update-card", action="store_true", help="write the table into the model's MODEL_CARD.md")
    args = parser.parse_args()

    from bmdgan.cohort.generator import CohortSettings, pelvis_scene_of
    from bmdgan.cohort.pelvis_case import Positioning, render_pelvis, sample_positioning
    from bmdgan.cohort.virtual_patient import REFERENCE_BMI, VirtualPatient
    from bmdgan.detection.detector import DetectedHip, HipDetector
    from bmdgan.evaluation.model_card import update_card_section
    from bmdgan.inference.default_model import resolve_model_folder
    from bmdgan.inference.estimation import estimate_hip, estimate_radiograph, write_results
    from bmdgan.inference.model import DecompositionModel
    from bmdgan.inference.tscore import load_reference
    from bmdgan.io import Radiograph, read_radiograph
    from bmdgan.projection.ap_pelvis import AP_PELVIS_SOURCE_TO_DETECTOR_MM
    from bmdgan.projection.dicom_writer import write_dx_dicom

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.model_folds and not args.dataset:
        parser.error("--model-folds needs --dataset (the cohort the cross-validation ran on)")
    reference = load_reference()
    settings = CohortSettings(args.prepared, acquisition="reference")
    rows, no_hip = [], []
    for ct_id in args.cts.split(","):
        detector_folder = fold_detector(Path(args.detector_folds), ct_id) if args.detector_folds else args.detector
        detector = HipDetector.load(detector_folder)
        model_folder = (
            fold_model(Path(args.model_folds), Path(args.dataset), ct_id)
            if args.model_folds
            else resolve_model_folder(args.model)
        )
        model = DecompositionModel.load(model_folder)
        scene = pelvis_scene_of(args.prepared, ct_id)
        patient = VirtualPatient(f"{ct_id}-own-bone", ct_id, 1.0, 1.0, 1.0, REFERENCE_BMI)
        for position in range(args.positions):
            positioning = (
                Positioning(0.0, 0.0, 0.0, (0.0, 0.0), AP_PELVIS_SOURCE_TO_DETECTOR_MM, 200.0)
                if position == 0
                else sample_positioning(position, patient, "standing")
            )
            full = render_pelvis(settings, scene, patient, "standing", positioning, pitch_mm=PIXEL_MM)
            path = out / f"{ct_id}_position{position}.dcm"
            write_dx_dicom(path, full["simulated"], patient_id=f"SIM-{ct_id}-{position}", seed=position)
            radiograph = read_radiograph(path)
            results = estimate_radiograph(model, detector, radiograph, reference)
            write_results(out / path.stem, radiograph, results, model, str(model_folder), overwrite=True)
            found = {hip.side: hip for hip, _ in results}
            for bone in scene.bones:
                truth = sum(bone.abmd_components_g_cm2)
                head_truth, neck_truth = full["geometry"].project_points(
                    np.stack([bone.head_centre_lps, bone.neck_point_lps])
                )
                at_true_landmarks, _ = estimate_hip(
                    model, radiograph, DetectedHip(bone.side, tuple(head_truth), tuple(neck_truth), 1.0, 1.0), reference
                )  # the region from the CT's own landmarks: what the detector's error costs is the difference
                hip = found.get(bone.side)
                row = {
                    "ct": ct_id,
                    "position": position,
                    "side": bone.side,
                    "truth_g_cm2": truth,
                    "at_true_landmarks_g_cm2": at_true_landmarks.dxa_bmd_g_cm2,
                    "found": bool(hip),
                }
                if hip is not None:
                    spacing = radiograph.pixel_spacing_mm
                    row.update(
                        estimate_g_cm2=hip.dxa_bmd_g_cm2,
                        error_percent=100.0 * (hip.dxa_bmd_g_cm2 - truth) / truth,
                        head_error_mm=float(
                            np.hypot(
                                (hip.femoral_head_centre_px[0] - head_truth[0]) * spacing[1],
                                (hip.femoral_head_centre_px[1] - head_truth[1]) * spacing[0],
                            )
                        ),
                        trustworthy=hip.trustworthy,
                        warnings=hip.warnings,
                    )
                rows.append(row)
            upper = Radiograph(radiograph.pixels[: radiograph.shape[0] // 3].copy(), source=f"{path.stem} upper third")
            upper.pixel_spacing_mm = radiograph.pixel_spacing_mm
            no_hip.append(
                {"image": upper.source, "hips_found": len(estimate_radiograph(model, detector, upper, reference))}
            )
    within = [r for r in rows if r["found"] and abs(r["error_percent"]) <= 15.0]
    summary = {
        "model": args.model_folds or str(resolve_model_folder(args.model)),
        "detector": args.detector_folds or args.detector or "bundled",
        "hips": rows,
        "hips_found": sum(r["found"] for r in rows),
        "hips_within_15_percent": len(within),
        "no_hip_images": no_hip,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "| CT | position | side | CT-aBMD (g/cm2) | estimate (g/cm2) | error | head error (mm) | region from the CT's "
        "landmarks (g/cm2) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        start = f"| {r['ct']} | {r['position']} | {r['side']} | {r['truth_g_cm2']:.3f} |"
        end = f" {r['at_true_landmarks_g_cm2']:.3f} |"
        if r["found"]:
            lines.append(
                f"{start} {r['estimate_g_cm2']:.3f} | {r['error_percent']:+.1f} % | {r['head_error_mm']:.1f} |{end}"
            )
        else:
            lines.append(f"{start} not found | | |{end}")
    lines.append(
        f"{summary['hips_found']}/{len(rows)} hips found, {len(within)}/{len(rows)} within 15 % of their CT-aBMD; "
        f"upper thirds (no hip) with a hip found: {sum(n['hips_found'] > 0 for n in no_hip)}/{len(no_hip)}"
    )
    print("\n".join(lines))
    if args.update_card:
        update_card_section(
            resolve_model_folder(args.model),
            "ap-pelvis-check",
            "AP pelvis radiographs of whole-pelvis CTs",
            [
                "Measured by `python benchmarks/check_ap_pelvis.py "
                + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v and k != "update_card")
                + "`: each CT's own bone, a neutral and drawn positions, through `estimate` (hip detector, input "
                f"region, model). Model: {who_estimates(args)}. The last column cuts the region from the CT's own "
                "landmarks instead of the detector's: the difference is the detector's share of the error.",
                "",
                *lines,
            ],
        )


if __name__ == "__main__":
    main()
