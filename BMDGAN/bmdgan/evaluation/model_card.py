"""Package a trained model for shipping, with a model card that says plainly what it is and how well it does.

The card is written from facts on disk: the model description (``model.json``), the run's settings and
training histories (``run.json``, ``stage*/history.jsonl``), ``bmdgan evaluate``'s ``metrics.json`` files, and,
first, the figures on bones the model's recipe never saw: ``bmdgan cross-validate``'s ``pooled_metrics.json``
over whole-CT folds (with each CT's bias) and ``bmdgan learning-curve``'s ``learning_curve.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..atomic import atomic_write_text
from ..datasets.folds import source_ct_of, source_cts_of, split
from ..datasets.format import read_manifest
from ..errors import InputError
from ..io.members import read_json_object
from ..outputs import check_destination, result_folder
from ..training.run_folder import HISTORY, RUN_SETTINGS, read_history, read_run_settings
from .evaluation_folder import read_metrics

MAX_SHIPPED_MB = 30.0
WEAK_PCC = 0.5
"""Below this held-out aBMD PCC the card warns that the model mostly tracks the training mean."""
GOAL_PCC = 0.90
"""The project's goal for held-out aBMD PCC; below it the card says so first."""
CT_SOURCES = {
    "STS_": "IBSI / TCIA Soft-tissue-Sarcoma, CC BY 3.0; Vallières et al. 2015, doi:10.7937/K9/TCIA.2015.7GO2GSKS",
    "Pelvic-Ref-": "TCIA Pelvic-Reference-Data, CC BY 3.0; Yorke et al. 2019, doi:10.7937/TCIA.2019.woskq5oo",
    "example_ct": "TotalSegmentator example CT with its v1 femur/hip masks, Apache-2.0; Wasserthal et al., "
    "Radiol Artif Intell 2023",
}
"""Attribution of each shared CT by id prefix (see ``../shared/data/README.md`` and NOTICE.md)."""


def _ct_source_lines(cts: list[str]) -> list[str]:
    """One line per data source with the CT ids taken from it; unknown ids are listed as such."""
    lines = []
    for prefix, source in CT_SOURCES.items():
        ids = [ct for ct in cts if ct.startswith(prefix)]
        if ids:
            lines.append(f"- Real CTs ({source}): {', '.join(ids)}.")
    unknown = [ct for ct in cts if not any(ct.startswith(prefix) for prefix in CT_SOURCES)]
    if unknown:
        lines.append(f"- Other CTs (source not recorded here: add their attribution): {', '.join(unknown)}.")
    return lines


def _metric_rows(metrics: dict) -> list[str]:
    rows = []
    for method, targets in metrics["methods"].items():
        for target, values in targets.items():
            if values:
                m = values["all"]
                cv = f"{m['rms_cv_percent']:.1f}" if m["rms_cv_percent"] is not None else "-"
                rows.append(
                    f"| {method} | {target} | {m['n']} | {m['pcc']:.3f} | {m['icc']:.3f} | {m['mae']:.4g} | "
                    f"{m['see']:.4g} | {cv} |"
                )
    return rows


def _cross_validation_rows(pooled: dict) -> list[str]:
    """Pooled metrics of a whole-CT cross-validation with its spread diagnosis, one row per method and target."""
    rows = []
    for method, targets in pooled["methods"].items():
        for target, m in targets.items():
            d = pooled["diagnosis"][method][target]
            shown = [d[k] for k in ("within_ct_pcc_median", "pcc_without_ct_bias", "estimate_sd_over_truth_sd")]
            within, unbiased, spread = ("-" if v is None else f"{v:.2f}" for v in shown)
            rows.append(
                f"| {method} | {target} | {m['n']} | {m['pcc']:.3f} | {m['icc']:.3f} | {m['mae']:.4g} | "
                f"{m['see']:.4g} | {within} | {unbiased} | {spread} |"
            )
    return rows


def _cross_validation_section(title: str, pooled: dict, target: str = "ct_abmd_g_cm2") -> list[str]:
    """Pooled figures on whole held-out CTs, the three methods side by side, then each CT's ``target`` bias."""
    methods = [m for m in pooled["per_source_ct"] if target in pooled["per_source_ct"][m]]
    per_ct = {m: pooled["per_source_ct"][m][target] for m in methods}
    lines = [
        f"## Whole CTs held out: {title}",
        f"{pooled['images']} images of CTs held out whole (each CT and all its virtual patients in one fold, folds "
        f"{pooled['folds']}); every model trained without them with this model's recipe. These are the figures "
        "for a new patient's bone.",
        "",
        "| method | target | n | PCC | ICC(2,1) | MAE | SEE | within-CT PCC (median) | PCC without per-CT bias "
        "| SD estimate / SD truth |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *_cross_validation_rows(pooled),
        "",
        f"Bias of each held-out CT ({target}, mean estimate - truth; n images):",
        "",
        "| CT | n | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for ct, first in per_ct[methods[0]].items():
        biases = " | ".join(f"{per_ct[m][ct]['bias']:+.3f}" for m in methods)
        lines.append(f"| {ct} | {first['n']} | {biases} |")
    return lines + [""]


def _learning_curve_section(points: list[dict], target: str = "ct_abmd_g_cm2") -> list[str]:
    """Pooled held-out PCC / MAE against the real bones trained on (``bmdgan learning-curve``)."""
    methods = list(points[-1]["methods"])
    lines = [
        "## Learning curve (whole CTs held out)",
        f"The same held-out images ({points[-1]['images']}) at every point; each point trained on the first k of "
        f"its folds' training CTs for as many steps as all of their real bones, on those real bones alone or with "
        f"the virtual anatomies made from them. {target}, pooled PCC / MAE:",
        "",
        "| trained on | training CTs | real bones | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    for point in points:
        cells = []
        for method in methods:
            m = point["methods"].get(method, {}).get(target)
            cells.append(f"{m['pcc']:.2f} / {m['mae']:.3f}" if m else "-")
        trained_on = "real bones" if point.get("bone_set", "real") == "real" else "with virtual anatomies"
        lines.append(
            f"| {trained_on} | {point['training_cts']:.1f} | {point['training_bones']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    return lines + [""]


def _familiarity(metrics: dict, training_cts: list[str]) -> str:
    """Whether an evaluation's source CTs were among the model's training CTs: new patients of familiar bones read
    better than a new patient's bone will."""
    evaluated = metrics.get("source_cts")
    if evaluated is None:
        return "Source CTs not recorded (evaluated before bmdgan recorded them)."
    seen = [ct for ct in evaluated if ct in training_cts]
    if not seen:
        return f"CTs the model never saw ({_few(evaluated)}): a new patient's bone."
    if len(seen) == len(evaluated):
        return (
            f"New virtual patients of {len(seen)} CTs the model trained on: familiar bones, read better than new ones."
        )
    return f"{len(seen)} of its {len(evaluated)} CTs were in training ({_few(seen)})."


def _few(names: list[str], shown: int = 6) -> str:
    """The first ``shown`` names and how many more: a real cohort's hundreds of patients would drown the card."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _training_cts(settings: dict, cts: list[str]) -> list[str]:
    """The source CTs the run trained on: its dataset's cases outside its held-out fold (``cts`` as given when the
    dataset is no longer there)."""
    if not Path(settings["dataset"]).exists():
        return cts
    fold = settings.get("fold")
    records = read_manifest(settings["dataset"])
    return sorted({ct for r in (records if fold is None else split(records, fold)[0]) for ct in source_cts_of(r)})


def check_whole_ct_folds(title: str, cv_folder: Path, run_settings: dict) -> None:
    """Refuse a cross-validation that cannot speak for this model: a fold whose held-out source CTs also trained it
    (a patient-level split), or folds trained with another configuration than the packaged run's."""
    folds = read_json_object(cv_folder / "pooled_metrics.json", "cross-validation folder")["folds"]
    for fold in folds:
        fold_run = cv_folder / f"fold{fold}"
        settings = read_run_settings(fold_run)
        if settings is None:
            raise InputError(fold_run, f"({title}) has no {RUN_SETTINGS}", "give a bmdgan cross-validate --out folder")
        records = read_manifest(settings["dataset"])
        shared = {source_ct_of(r) for r in records if r.fold == fold} & {
            source_ct_of(r) for r in records if r.fold >= 0 and r.fold != fold
        }
        if shared:
            raise InputError(
                fold_run,
                f"({title}) holds out {sorted(shared)[0]} while its other virtual patients trained the fold: its "
                "folds are not whole CTs",
                "cross-validate a cohort simulated with --fold-by ct",
            )
        config, wanted = settings["config"], run_settings["config"]
        different = sorted(key for key in set(config) | set(wanted) if config.get(key) != wanted.get(key))
        if different:
            listed = "; ".join(f"{key}: {config.get(key)!r}, not {wanted.get(key)!r}" for key in different)
            raise InputError(
                fold_run,
                f"({title}) was trained with another configuration than the packaged run ({listed})",
                "cross-validate this model's recipe (the same --config)",
            )


def _history_summary(run: Path) -> list[str]:
    lines = []
    for history in sorted(run.glob(f"*/{HISTORY}")):
        records = read_history(history.parent)
        if records:
            last = records[-1]
            loss = last.get("g_l1", last.get("loss"))
            lines.append(
                f"- `{history.parent.name}`: {last['epoch'] + 1} epochs, {len(records)} optimiser steps, "
                f"last {'L1' if 'g_l1' in last else 'weighted L1'} {loss:.4g}"
            )
    return lines


def _estimate_abmd_pcc(metrics: dict) -> float | None:
    """Held-out aBMD PCC of what ``bmdgan estimate`` reports by default (regression when the model has it), from
    an evaluation's metrics or a cross-validation's pooled ones."""
    for method in ("decomposition+regression", "decomposition"):
        values = metrics["methods"].get(method, {}).get("ct_abmd_g_cm2")
        if values:
            return values["all"]["pcc"] if "all" in values else values["pcc"]
    return None


def _read_this_first(evaluations: dict[str, dict]) -> list[str]:
    """A plain warning whenever a held-out aBMD PCC (evaluation title -> metrics) is below the goal: strong when
    all are weak, naming the evaluations that fall short when others reach it."""
    pccs = {title: p for title, p in ((t, _estimate_abmd_pcc(m)) for t, m in evaluations.items()) if p is not None}
    if not pccs or min(pccs.values()) >= GOAL_PCC:
        return []
    listed = "; ".join(f"{p:.2f} on {title}" for title, p in pccs.items())  # whole-CT and familiar bones differ
    if max(pccs.values()) < WEAK_PCC:
        text = (
            "On images held out from its training this model's aBMD correlates only weakly with the truth "
            f"(PCC {listed}; goal {GOAL_PCC:.2f}): it has learned where the proximal femur is (see the Dice below) "
            "far better than how dense it is, and its estimates stay close to the training mean."
        )
    elif max(pccs.values()) >= GOAL_PCC:
        short = "; ".join(f"{title}, PCC {p:.2f}" for title, p in pccs.items() if p < GOAL_PCC)
        text = (
            f"This model's aBMD reaches the PCC goal of {GOAL_PCC:.2f} on some held-out evaluations below but "
            f"not on {short}: where images differ from its training cohort like that, trust single estimates "
            "less than the better tables suggest."
        )
    else:
        text = (
            f"On images held out from its training this model's aBMD follows the truth only moderately (PCC {listed}; "
            f"goal {GOAL_PCC:.2f}): it ranks bone density roughly but shrinks estimates towards the training "
            "mean, so single estimates can be off by the SEE below."
        )
    return [
        "## Read this first",
        text + " A close estimate on one radiograph, such as the bundled sample, is no "
        "evidence of accuracy. A useful model needs more distinct real bones than these (this project's whole-CT "
        "learning curve, docs/results.md), a larger image size and the `paper` configuration on a GPU.",
        "",
    ]


def _cohort_acquisition(settings: dict) -> str:
    """The training cohort's acquisition setting (cohorts made before site protocols drew every image's own)."""
    dataset = Path(settings["dataset"]) / "dataset.json"
    cohort = json.loads(dataset.read_text()).get("settings") if dataset.exists() else None
    return cohort.get("acquisition", "varied") if cohort else "not recorded"


def write_model_card(
    model_folder: Path,
    run: Path,
    evaluations: dict[str, Path],
    training_command: str,
    training_minutes: float | None,
    cts: list[str],
    held_out_cts: list[str],
    cross_validations: dict[str, Path] | None = None,
    learning_curve: Path | None = None,
) -> str:
    """The card's text; ``cross_validations`` (title -> folder with ``pooled_metrics.json``) and
    ``learning_curve`` (folder with ``learning_curve.json``) come first after the calibrations."""
    description = read_json_object(model_folder / "model.json", "bmdgan model folder")
    settings = read_run_settings(run)
    if settings is None:
        raise InputError(run, f"has no {RUN_SETTINGS}", "give the folder of a training run")
    size_mb = sum(p.stat().st_size for p in model_folder.glob("*.safetensors")) / 1e6
    lines = [
        "# BMD-GAN default model",
        "",
        "**What it is.** A small decomposition network (generator backbone "
        f"`{description['backbone']}`, {size_mb:.1f} MB of safetensors weights) with its PF-DRR -> BMD calibrations"
        + (" and stage-3 regressors" if description.get("regressors") else "")
        + ", trained on this project's "
        "CPU from a **virtual cohort**: radiographs simulated from real CTs, never on clinical radiograph/DXA pairs.",
        "",
        "**Intended use.** Trying the software end to end, and as an initialisation for training on real data. "
        "**Not for clinical use**: its numbers describe simulated radiographs of the few real CTs listed below, "
        "not patients.",
        "",
        "## Training data",
        *_ct_source_lines(cts),
        f"- Held out entirely (never seen in training; the bundled sample radiograph is simulated from it): "
        f"{', '.join(held_out_cts)}.",
        "- Each virtual patient: bone mineral scaled (trabecular and cortical separately), BMI 17-35, four poses "
        "(standing, supine, abduction, adduction), acquisition and processing `--acquisition "
        f"{_cohort_acquisition(settings)}` (see `bmdgan.projection.site_protocol`); ground truth (PF-DRR, CT-aBMD, "
        "vBMD) from the same CT (`bmdgan simulate-cohort`).",
        f"- Training cases: {description['provenance'].get('training_cases')} images ("
        + ("all of the cohort" if settings.get("fold") is None else f"fold {settings['fold']} held out")
        + f"), hierarchical learning: {description['provenance'].get('hierarchical')}.",
        "",
        "## Training",
        f"- Command (`Resources/Models/train_default.sh`): `{training_command}`",
        f"- Configuration: `{settings['config']['name']}`, image {settings['config']['image_shape'][0]} x "
        f"{settings['config']['image_shape'][1]}, batch {settings['config']['batch_size']}, epochs "
        f"{settings['config']['epochs']}.",
    ]
    if training_minutes is not None:
        lines.append(f"- Wall time on the 2-core CPU: {training_minutes:.0f} min.")
    lines += _history_summary(run)
    lines += ["", "## Calibrations stored with the model (PF-DRR mean above the threshold -> BMD)"]
    for calibration in description["calibrations"]:
        lines.append(
            f"- {calibration['target']}: threshold {calibration['threshold']:.3f} g/cm2, slope "
            f"{calibration['slope']:.4g}, intercept {calibration['intercept']:.4g} {calibration['unit']} "
            f"(training PCC {calibration['pcc_train']:.3f})"
        )
    lines += ["- T-score reference: NHANES III total hip, women 20-29 (`bmdgan/resources/tscore_references.json`).", ""]
    metrics_of = {title: read_metrics(folder) for title, folder in evaluations.items()}
    trained_on = _training_cts(settings, cts)
    pooled_of = {
        title: read_json_object(Path(folder) / "pooled_metrics.json", "cross-validation folder")
        for title, folder in (cross_validations or {}).items()
    }
    for title, folder in (cross_validations or {}).items():
        check_whole_ct_folds(title, Path(folder), settings)
    lines += _read_this_first({f"whole CTs held out ({title})": p for title, p in pooled_of.items()} | metrics_of)
    for title, pooled in pooled_of.items():
        lines += _cross_validation_section(title, pooled)
    if learning_curve is not None:
        points = json.loads((Path(learning_curve) / "learning_curve.json").read_text())
        lines += _learning_curve_section(points)
    if metrics_of and pooled_of:
        lines += [
            "The evaluations below are single cohorts, not whole-CT folds: read them beside the whole-CT figures "
            "above.",
            "",
        ]
    for title, metrics in metrics_of.items():
        lines += [
            f"## Held-out evaluation: {title}",
            f"{_familiarity(metrics, trained_on)} {metrics['cases']} images; PF-DRR PSNR "
            f"{metrics['pf_drr']['psnr_db_mean']:.1f} dB, "
            f"Dice {metrics['pf_drr']['dice_mean']:.3f}.",
            "",
            "| method | target | n | PCC | ICC(2,1) | MAE | SEE | RMS-CV % |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += _metric_rows(metrics) + [""]
    lines += [
        "## Licences and attribution",
        "Weights: Apache-2.0, like the code. Training data: simulated from the CTs listed above, under "
        "their licences; see `NOTICE.md`.",
        "",
    ]
    return "\n".join(lines)


def update_card_section(model_folder: Path, key: str, title: str, lines: list[str]) -> Path:
    """Write (or replace) the section ``key`` of a model folder's MODEL_CARD.md, between HTML comment markers, so
    that a check measured after packaging (e.g. ``benchmarks/check_ap_pelvis.py --update-card``) is in the card."""
    path = Path(model_folder) / "MODEL_CARD.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    section = "\n".join([start, f"## {title}", "", *lines, end])
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    return atomic_write_text(path, text)


def package_model(
    model_folder: str | Path,
    run: str | Path,
    out: str | Path,
    evaluations: dict[str, Path],
    training_command: str,
    training_minutes: float | None,
    cts: list[str],
    held_out_cts: list[str],
    overwrite: bool = False,
    cross_validations: dict[str, Path] | None = None,
    learning_curve: Path | None = None,
) -> Path:
    """Copy the model (weights + model.json) into ``out`` and write ``MODEL_CARD.md``; refuses > 30 MB. ``out`` is
    written by :func:`bmdgan.outputs.result_folder`: new or empty, or with ``overwrite`` an earlier package holding
    nothing else; only the files model.json names are copied (:func:`bmdgan.models.model_folder.model_files`)."""
    from ..models.model_folder import model_files

    model_folder, run, out = Path(model_folder), Path(run), Path(out)
    if not (model_folder / "model.json").is_file():
        raise InputError(model_folder, "is not a model folder", "give a training run's 'model' folder")
    check_destination(out, "package-model", overwrite)
    files = model_files(model_folder)
    size_mb = sum(p.stat().st_size for p in files if p.suffix == ".safetensors") / 1e6
    if size_mb > MAX_SHIPPED_MB:
        raise InputError(
            model_folder, f"weights are {size_mb:.1f} MB, more than {MAX_SHIPPED_MB:.0f} MB", "ship a smaller model"
        )
    card = write_model_card(
        model_folder,
        run,
        evaluations,
        training_command,
        training_minutes,
        cts,
        held_out_cts,
        cross_validations,
        learning_curve,
    )
    with result_folder(out, "package-model", overwrite) as staging:
        for path in files:
            shutil.copyfile(path, staging / path.name)
        (staging / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    return out
