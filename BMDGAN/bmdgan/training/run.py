"""A training run: stage 1 then stage 2 (hierarchical learning) or stage 2 from scratch, then the BMD fit.

The run folder holds ``run.json`` (settings), ``stage1/`` and ``stage2/`` (checkpoints, history.jsonl,
TensorBoard logs) and, when stage 2 is done, ``model/`` (what ``bmdgan decompose``/``estimate`` load):
``generator.safetensors`` and ``model.json`` (backbone, image shape, scaling, and the DRR -> BMD
calibrations: threshold tuned on the ground-truth PF-DRRs of the training fold as in the paper's Fig. 4,
linear fit on the model's own PF-DRRs of the training fold).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..atomic import atomic_write_text, remove_stale_partials
from ..bmd_from_drr import DrrBmdCalibration, fit_linear, pearson_r, pf_drr_mean, tune_threshold
from ..datasets.folds import split
from ..datasets.format import read_header, read_manifest
from ..distribution_check import TrainingDistribution, fit_distribution, pooled
from ..errors import InputError
from ..io.members import member_path
from ..models.model_folder import MODEL_FORMAT, MODEL_FORMAT_VERSION, read_model_description
from .checkpoint import latest_checkpoint, save_weights, weights_sha256
from .config import TrainingConfig
from .data import DRR_SCALE_G_CM2, PairDataset
from .pretrained import check_same_start, pretrained_start
from .run_folder import read_run_settings, write_run_settings
from .trainer import StageTrainer, start_process

BMD_TARGETS = {"ct_abmd_g_cm2": "g/cm2", "dxa_bmd_g_cm2": "g/cm2", "qct_vbmd_mg_cm3": "mg/cm3"}
DEFAULT_REGION_THRESHOLD_G_CM2 = 0.1
"""PF-region threshold of the distribution check when no BMD column was known (no calibration to borrow it from)."""


def training_records(dataset_folder: Path, fold: int | None, poses: tuple[str, ...] | None = None):
    """Cases used for training: all but ``fold`` (None: all cases), only of ``poses`` when given (the paper's
    Fig. 7: train on two poses, test on the other two)."""
    records = read_manifest(dataset_folder)
    if poses:
        records = [r for r in records if r.pose in poses]
        if not records:
            raise InputError(dataset_folder, f"no case has a pose in {list(poses)}", "check the pose names")
    if fold is None:
        return records
    if fold not in {r.fold for r in records}:
        raise InputError(dataset_folder, f"no case is in fold {fold}", "assign folds or pick an existing fold")
    return split(records, fold)[0]


def predict_drrs(
    generator: torch.nn.Module, dataset: PairDataset, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """G's DRRs (g/cm2, [N, H, W]) and pooled encoder features ([N, C]) for every item (no augmentation)."""
    generator.eval()
    drrs, features = [], []
    with torch.no_grad():
        for index in range(len(dataset)):
            representation = generator.encode(dataset[index][1][None].to(device))
            drrs.append(generator.decoder(representation)[0, 0].float().cpu().numpy() * DRR_SCALE_G_CM2)
            features.append(pooled(representation)[0])
    return np.stack(drrs), np.stack(features)


def fit_bmd_calibrations(
    generator, dataset_folder: Path, records, config: TrainingConfig, device: torch.device
) -> tuple[list[DrrBmdCalibration], TrainingDistribution]:
    """One DRR -> BMD calibration per ground-truth column known for the training cases, and the training
    distribution that estimation compares new radiographs with."""
    dataset = PairDataset(dataset_folder, records, "stage2", config.image_shape)
    predicted, features = predict_drrs(generator, dataset, device)
    truth = np.stack([dataset[i][2][0].numpy() * DRR_SCALE_G_CM2 for i in range(len(dataset))])
    calibrations = []
    for column, unit in BMD_TARGETS.items():
        values = np.array([getattr(r, column) for r in records], dtype=float)
        known = np.isfinite(values)
        if known.sum() < 3:
            continue
        threshold = tune_threshold(truth[known], values[known]).threshold
        averages = np.asarray(pf_drr_mean(predicted[known], threshold), dtype=float)
        usable = np.isfinite(averages)
        slope, intercept = fit_linear(averages[usable], values[known][usable])
        calibrations.append(
            DrrBmdCalibration(
                threshold, slope, intercept, column, unit, pearson_r(averages[usable], values[known][usable])
            )
        )
    threshold = calibrations[0].threshold if calibrations else DEFAULT_REGION_THRESHOLD_G_CM2
    return calibrations, fit_distribution(features, predicted, threshold)


def export_model(
    run_folder: Path,
    generator: torch.nn.Module,
    config: TrainingConfig,
    calibrations: list[DrrBmdCalibration],
    distribution: TrainingDistribution,
    provenance: dict,
) -> Path:
    """Write ``run_folder/model``: the generator weights and everything needed to use them."""
    folder = run_folder / "model"
    save_weights(generator, folder / "generator.safetensors")
    description = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "created_by": f"bmdgan {__version__}",
        "backbone": config.backbone,
        "image_shape": list(config.image_shape),
        "input_scaling": "radiograph percentiles 0.5/99.5 -> [-1, 1]",
        "drr_scale_g_cm2": DRR_SCALE_G_CM2,
        "output_unit": "g/cm2",
        "calibrations": [c.to_dict() for c in calibrations],
        "training_distribution": distribution.to_dict(),
        "provenance": provenance,
    }
    regressors = regressors_still_valid(folder, run_folder)
    if regressors:
        description["regressors"] = regressors
    atomic_write_text(folder / "model.json", json.dumps(description, indent=2))
    return folder


def regressors_still_valid(model_folder: Path, run_folder: Path) -> dict:
    """The stage-3 entries of an existing ``model.json`` that survive re-exporting stage 2: every baseline (it never
    used the generator) and the decomposition regressors whose encoder is the current stage-2 generator; the
    weights of the others are deleted (their heads learned another encoder's features)."""
    path = model_folder / "model.json"
    if not path.exists():
        return {}
    current = stage2_sha256(run_folder)
    kept = {}
    for name, entry in read_model_description(model_folder).get("regressors", {}).items():  # names checked there
        if entry["kind"] == "baseline" or entry.get("encoder_sha256") == current:
            kept[name] = entry
        else:
            member_path(model_folder, name, ".safetensors", path).unlink(missing_ok=True)
    return kept


def check_run_settings(
    run_folder: Path, dataset_folder: Path, fold: int | None, poses: tuple[str, ...] | None, config: TrainingConfig
) -> None:
    """A run folder belongs to one dataset, held-out fold, pose set, backbone and image size (``run.json``):
    resuming it or adding a stage with other ones would train on the held-out fold or mix weights made for
    other inputs. Epoch counts may change (training longer is resuming)."""
    recorded = read_run_settings(run_folder)
    if recorded is None:
        return
    wanted = {
        "fold": fold,
        "poses": sorted(poses) if poses else "all",
        "backbone": config.backbone,
        "image_shape": list(config.image_shape),
    }
    have = {
        "fold": recorded["fold"],
        "poses": sorted(recorded["poses"]) if recorded["poses"] != "all" else "all",
        "backbone": recorded["config"]["backbone"],
        "image_shape": recorded["config"]["image_shape"],
    }
    recorded_dataset = Path(recorded["dataset"])
    if recorded_dataset.exists():
        wanted["dataset"], have["dataset"] = str(dataset_folder.resolve()), str(recorded_dataset.resolve())
    different = {key: (have[key], wanted[key]) for key in wanted if have[key] != wanted[key]}
    if different:
        listed = "; ".join(f"{key}: run {old!r}, now {new!r}" for key, (old, new) in different.items())
        raise InputError(
            run_folder,
            f"this run was trained with other settings ({listed})",
            "pass the run's own --fold/--poses/--config and dataset, or train into a new --out folder",
        )


def train_run(
    config: TrainingConfig,
    dataset_folder: str | Path,
    run_folder: str | Path,
    fold: int | None = None,
    stages: tuple[str, ...] = ("stage1", "stage2"),
    hierarchical: bool = True,
    device: str = "auto",
    stop_after_epochs: int | None = None,
    progress: bool = True,
    poses: tuple[str, ...] | None = None,
    pretrained: str | Path | None = None,
) -> dict[str, list[dict]]:
    """Train the requested stages (resuming each from its checkpoints); returns each stage's history.
    ``pretrained``: a run (itself trained hierarchically) whose last stage-2 weights start stage 2 in place of
    stage 1's, which is then not trained (:mod:`.pretrained`)."""
    dataset_folder, run_folder = Path(dataset_folder), Path(run_folder)
    read_header(dataset_folder)
    process = start_process(device)
    start, start_sha256 = (
        (None, None) if pretrained is None else pretrained_start(pretrained, dataset_folder, fold, config)
    )
    check_run_settings(run_folder, dataset_folder, fold, poses, config)
    check_same_start(run_folder, start_sha256)
    if start is not None:
        stages = tuple(stage for stage in stages if stage != "stage1")
        if not stages:
            raise InputError(run_folder, "a pretrained start takes stage 1's place", "train stage2 from it")
    records = training_records(dataset_folder, fold, poses)
    settings = {
        "config": config.to_dict(),
        "dataset": str(dataset_folder),
        "fold": fold,
        "stages": list(stages),
        "poses": list(poses) if poses else "all",
        "hierarchical": hierarchical,
        "pretrained": None
        if pretrained is None
        else {"run": str(Path(pretrained).resolve()), "generator_sha256": start_sha256},
        "world_size": process.world_size,
    }
    if process.is_main:
        run_folder.mkdir(parents=True, exist_ok=True)
        for place in (run_folder, run_folder / "model", *(run_folder / stage for stage in stages)):
            remove_stale_partials(place)  # temporaries of a killed earlier run
        write_run_settings(run_folder, settings)
    histories: dict[str, list[dict]] = {}
    trainer = None
    for stage in stages:
        initial = start if stage == "stage2" else None
        if stage == "stage2" and hierarchical and start is None:
            initial = latest_checkpoint(run_folder / "stage1" / "checkpoints")
            if initial is None:
                raise InputError(
                    run_folder,
                    "hierarchical learning needs stage 1's weights, and none were found",
                    "train stage1 first or use --no-hierarchical",
                )
        trainer = StageTrainer(config, dataset_folder, records, stage, run_folder, process, initial)
        histories[stage] = trainer.train(stop_after_epochs, progress)
        if trainer.start_epoch + len({h["epoch"] for h in histories[stage]}) < config.epochs[stage]:
            return histories  # stopped early on request: later stages wait for the resume
    if "stage2" in stages and process.is_main and trainer is not None:
        encoder = stage2_sha256(run_folder)
        if not _exported(run_folder, encoder):
            calibrations, distribution = fit_bmd_calibrations(
                trainer.generator, dataset_folder, records, config, process.device
            )
            export_model(
                run_folder,
                trainer.generator,
                config,
                calibrations,
                distribution,
                {
                    "dataset": str(dataset_folder),
                    "fold": fold,
                    "hierarchical": hierarchical,
                    "pretrained": settings["pretrained"],
                    "training_cases": len(records),
                    "poses": list(poses) if poses else "all",
                    "encoder_sha256": encoder,
                },
            )
    return histories


def stage2_sha256(run_folder: Path) -> str | None:
    """SHA-256 of the latest stage-2 generator weights of a run (None before stage 2): what its exported model and
    its decomposition regressors were made from, recognised even when stage 2 was retrained to the same epoch."""
    stage2 = latest_checkpoint(run_folder / "stage2" / "checkpoints")
    return None if stage2 is None else weights_sha256(stage2, "generator")


def _exported(run_folder: Path, encoder: str | None) -> bool:
    """Whether ``run_folder/model`` was exported from the stage-2 weights ``encoder`` (their SHA-256): resuming a
    finished run then keeps it as it is. Fitting the DRR -> BMD lines again would give the same model up to the
    floating-point order of another thread count, and a changed model is evaluated again by whoever checks it."""
    folder = run_folder / "model"
    if encoder is None or not (folder / "model.json").is_file() or not (folder / "generator.safetensors").is_file():
        return False
    return read_model_description(folder).get("provenance", {}).get("encoder_sha256") == encoder
