"""``bmdgan demo``: the main job, on bundled data only.

Default: estimate BMD from the sample radiograph (simulated from a real CT the default model never saw) with
the default model, print it beside that CT's ground truth, write the report picture.
``--full``: every stage on the bundled CT (or on ``--data`` CTs): measure, simulate a small cohort, train a
tiny model for a few minutes, evaluate it on held-out virtual patients, write the pictures.
"""

from __future__ import annotations

from bmdgan.cli.options import add_out

HELP = "the main job: estimate BMD of the bundled sample radiograph with the default model (--full: whole pipeline)"


def add_arguments(parser) -> None:
    add_out(parser, "output folder", default="bmdgan-demo")
    parser.add_argument("--full", action="store_true", help="run every stage: CTs -> cohort -> training -> evaluation")
    parser.add_argument(
        "--data",
        default=None,
        help="with --full: a folder of CTs to use instead of the bundled one (e.g. ../shared/data/ct/ibsi_sts)",
    )
    parser.add_argument("--model", default=None, help="model folder (default: the bundled default model)")


def _estimate_sample(args) -> int:
    import json
    from pathlib import Path

    from bmdgan.detection.detector import HipDetector
    from bmdgan.errors import BMDGANError
    from bmdgan.inference.default_model import resolve_model_folder
    from bmdgan.inference.estimation import NO_HIP_FOUND, estimate_radiograph, write_results
    from bmdgan.inference.model import DecompositionModel
    from bmdgan.inference.tscore import load_reference, t_score, who_category
    from bmdgan.io import read_radiograph
    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

    folder = sample_data_dir()
    sample = folder / SAMPLE_SIMULATED_RADIOGRAPH
    truth = json.loads(sample.with_name(sample.stem + "_truth.json").read_text())
    print(
        f"[1/3] sample radiograph {sample.name}: simulated from real CT {truth['ct']} "
        f"({truth['image_shows']}); this CT was never used to train the default model"
    )
    model_folder = resolve_model_folder(args.model)
    model = DecompositionModel.load(model_folder)
    card = model.description.get("provenance", {})
    print(
        f"[2/3] model {model_folder} ({model.description['backbone']}, trained on "
        f"{card.get('training_cases', '?')} simulated radiographs)"
    )
    print("[3/3] decomposing the radiograph and estimating BMD...")
    radiograph = read_radiograph(sample)
    reference = load_reference()
    results = estimate_radiograph(model, HipDetector.load(), radiograph, reference)  # as `bmdgan estimate` does
    out = write_results(
        Path(args.out) / sample.stem, radiograph, results, model, str(model_folder), overwrite=True
    )  # the demo's own earlier result of the sample (never anything else)
    if len(results) != 1:
        raise BMDGANError(f"the bundled sample should show one hip, the detector found {len(results)}: {NO_HIP_FOUND}")
    hip = results[0][0]
    print(f"  hip found: {hip.side}, femoral head centre at pixel {hip.femoral_head_centre_px}")
    true_abmd, true_vbmd = truth["ct_abmd_g_cm2"], truth["qct_vbmd_mg_cm3"]
    true_t = t_score(true_abmd, reference)
    print(f"\nResult ({hip.method}), beside the ground truth measured on the same CT:")
    if hip.dxa_bmd_g_cm2 is not None:
        error = 100.0 * (hip.dxa_bmd_g_cm2 - true_abmd) / true_abmd
        print(
            f"  areal BMD (DXA-like)      {hip.dxa_bmd_g_cm2:7.3f} g/cm2    "
            f"truth {true_abmd:7.3f} g/cm2  ({error:+.1f}%)"
        )
        print(
            f"  T-score ({reference.site})  {hip.t_score:+7.1f} {hip.who_category:<13} truth {true_t:+.1f} "
            f"{who_category(true_t)}"
        )
    if hip.qct_bmd_mg_cm3 is not None:
        print(f"  volumetric BMD (QCT-like) {hip.qct_bmd_mg_cm3:7.0f} mg/cm3   truth {true_vbmd:7.0f} mg/cm3")
    for warning in hip.warnings:
        print(f"  warning: {warning}")
    print(f"  report picture: {out / 'report.png'}")
    return 0


def _full_pipeline(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    from bmdgan.cohort.generator import CohortSettings, prepare_cts, simulate_cohort
    from bmdgan.datasets.report import write_histograms, write_montage
    from bmdgan.errors import InputError
    from bmdgan.evaluation.evaluate import evaluate, write_evaluation
    from bmdgan.inference.model import DecompositionModel
    from bmdgan.io.ct import VOLUME_SUFFIXES
    from bmdgan.sample_data import SAMPLE_CT, sample_data_dir
    from bmdgan.training.config import load_config
    from bmdgan.training.run import train_run

    out = Path(args.out)
    if args.data:
        paths = sorted(p for p in Path(args.data).iterdir() if p.name.lower().endswith(VOLUME_SUFFIXES))
    else:
        paths = [sample_data_dir() / SAMPLE_CT]
    if not paths:
        raise InputError(args.data, "holds no CT volume", "give a folder of .nii.gz/.nrrd/.mha CTs")
    print(f"[1/4] measuring {len(paths)} CT(s): labels, landmarks, PF region, calibration, vBMD and CT-aBMD")
    ct_ids, skipped = prepare_cts(paths, out / "cohort" / "prepared")
    for ct_id, reason in skipped.items():
        print(f"      skipped {ct_id}: {reason}")
    patients = max(5, 10 // max(1, len(ct_ids)))
    print(f"[2/4] simulating {patients * len(ct_ids)} virtual patients x 2 poses from {', '.join(ct_ids)}")
    settings = CohortSettings(
        str(out / "cohort" / "prepared"),
        seed=0,
        patients_per_ct=patients,
        poses=("standing", "abduction"),
        image_shape=(256, 128),
        folds=5,
    )
    summary = simulate_cohort(settings, ct_ids, out / "cohort")
    write_montage(out / "cohort", out / "cohort_montage.png", samples=4)
    write_histograms(out / "cohort", out / "cohort_histograms.png")
    print(f"      {summary['images']} images in {summary['seconds']:.0f} s")
    print("[3/4] training a tiny decomposition model (hierarchical learning, a few minutes)")
    config = replace(load_config("smoke"), image_shape=(128, 64), epochs={"stage1": 6, "stage2": 6})
    train_run(config, out / "cohort", out / "run", fold=0)
    print("[4/4] evaluating on the held-out virtual patients (fold 0)")
    model = DecompositionModel.load(out / "run" / "model")
    result = evaluate(model, out / "cohort", fold=0, jpeg_qualities=(75, 25), bit_depths=(8,))
    write_evaluation(out / "evaluation", result)
    for target, metrics in result["report"]["methods"]["decomposition"].items():
        if metrics:
            print(f"      {target}: PCC {metrics['all']['pcc']:.3f}, MAE {metrics['all']['mae']:.4g}")
    print(f"pictures: {out / 'cohort_montage.png'}, {out / 'evaluation'} (Bland-Altman, correlation, robustness)")
    return 0


def run(args) -> int:
    return _full_pipeline(args) if args.full else _estimate_sample(args)
