"""Stage 3 (paper section 3.3): BMD regressed from the learned representation, and the direct baseline.

* ``decomposition`` kind: R = {M_E from the trained stage-2 generator, CoAtNet head}. Phase 1 trains the
  head with M_E frozen (``epochs.stage3_frozen`` at ``learning_rate``), phase 2 tunes R end to end
  (``epochs.stage3_finetune`` at ``finetune_learning_rate``, 8e-6 in the paper).
* ``baseline`` kind: a ResNet-18-style CNN on the same hip crops (``epochs.baseline`` at ``learning_rate``).

Loss: the sample-weighted L1 of Eq. 9-11, weights from the training fold's distribution of the target.
One model per target. Checkpoints after every epoch (phase recorded), so a killed run resumes exactly; the
loss of every step goes to ``regression_<kind>_<target>/history.jsonl``.
Exported to ``run/model/regressor_<kind>_<target>.safetensors`` with its description in ``model.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch.nn.parallel import DistributedDataParallel

from ..atomic import atomic_write_text
from ..errors import InputError
from ..losses import sample_weights, weighted_l1_loss
from ..models.baseline_cnn import DirectRegressionCNN
from ..models.generator import build_generator
from ..models.regressor import build_regressor
from ..progress import progress_bar
from .augment import augment_sample, sample_generator
from .checkpoint import latest_checkpoint, load_checkpoint, load_weights, save_checkpoint, save_weights
from .config import TrainingConfig
from .data import PairDataset
from .run import BMD_TARGETS, check_run_settings, stage2_sha256, training_records
from .run_folder import append_history, truncate_history
from .trainer import mean_across_processes, start_process

KINDS = ("decomposition", "baseline")


class ValueDataset(PairDataset):
    """Item i: (index, radiograph [1, H, W] in [-1, 1], BMD [1] in the target's unit, sample weight [1])."""

    def __init__(self, folder, records, target: str, image_shape, augmentation=None, seed: int = 0):
        super().__init__(folder, records, "stage2", image_shape, augmentation, seed)
        self.values = np.array([getattr(r, target) for r in records], dtype=np.float32)
        if not np.all(np.isfinite(self.values)):
            raise InputError(folder, f"some training cases have no {target}", "choose a target every case has")
        self.weights = sample_weights(self.values).astype(np.float32)

    def __getitem__(self, index: int):
        x = self.radiograph(index)
        if self.augmentation is not None:
            x, _ = augment_sample(x, None, sample_generator(self.seed, self.epoch, index), self.augmentation)
        return index, x, torch.tensor([self.values[index]]), torch.tensor([self.weights[index]])


def build_model(kind: str, config: TrainingConfig, run_folder: Path, values: np.ndarray) -> torch.nn.Module:
    """The regressor (from stage 2's generator) or the baseline, predicting around the training mean."""
    mean, std = float(values.mean()), float(values.std() + 1e-6)
    if kind == "baseline":
        return DirectRegressionCNN(config.baseline_width, mean, std)
    stage2 = latest_checkpoint(run_folder / "stage2" / "checkpoints")
    if stage2 is None:
        raise InputError(run_folder, "stage 3 needs the stage-2 generator, and none was found", "train stage 2 first")
    generator = build_generator(config.backbone)
    load_weights(stage2, "generator", generator)
    return build_regressor(generator, config.image_shape, config.regression_head, 1, mean, std)


def encoder_fingerprint(kind: str, run_folder: Path) -> str | None:
    """SHA-256 of the stage-2 generator weights a decomposition regressor inherits its encoder from (None for
    the baseline)."""
    return stage2_sha256(run_folder) if kind == "decomposition" else None


def refuse_stale_encoder(folder: Path, extra: dict, fingerprint: str | None) -> None:
    """Stage 3 started on one stage-2 encoder must not be resumed or re-exported on another (stage 2 trained
    further or again since): its head learned the old encoder's features."""
    started_from = extra.get("encoder_sha256")
    if started_from is not None and started_from != fingerprint:
        raise InputError(
            folder,
            "this stage-3 run began on another stage-2 generator than the run's current one "
            "(stage 2 was trained further or again since)",
            "delete this folder to train stage 3 on the current encoder",
        )


def phase_of_epoch(kind: str, config: TrainingConfig, epoch: int) -> int:
    """Index of the phase (frozen encoder, end to end) that ``epoch`` (0-based) belongs to; the last one beyond."""
    end = 0
    for index, (epochs, _, _) in enumerate(phases(kind, config)):
        end += epochs
        if epoch < end:
            return index
    return len(phases(kind, config)) - 1


def refuse_changed_phases(folder: Path, recorded_phase: int, configured_phase: int) -> None:
    """The checkpoint's phase must be the one the configured epochs put it in: otherwise the phase lengths changed
    mid-run and resuming would freeze a tuned encoder again or load an optimiser of other parameters."""
    if recorded_phase != configured_phase:
        raise InputError(
            folder,
            f"the last checkpoint is in phase {recorded_phase} but the configured epochs put it "
            f"in phase {configured_phase} (stage3_frozen changed mid-run)",
            "restore the run's epochs, or delete this folder to train stage 3 again",
        )


def phases(kind: str, config: TrainingConfig) -> list[tuple[int, float, bool]]:
    """(epochs, learning rate, encoder frozen) per phase."""
    if kind == "baseline":
        return [(config.epochs["baseline"], config.learning_rate, False)]
    return [
        (config.epochs["stage3_frozen"], config.learning_rate, True),
        (config.epochs["stage3_finetune"], config.finetune_learning_rate, False),
    ]


def train_regression(
    config: TrainingConfig,
    dataset_folder: str | Path,
    run_folder: str | Path,
    target: str,
    kind: str = "decomposition",
    fold: int | None = None,
    device: str = "auto",
    stop_after_epochs: int | None = None,
    progress: bool = True,
    poses: tuple[str, ...] | None = None,
) -> list[dict]:
    """Train (or resume) one regression model; exports it into ``run/model`` when all phases are done."""

    if kind not in KINDS or target not in BMD_TARGETS:
        raise InputError(
            None, f"unknown regression {kind!r} of {target!r}", f"kinds: {KINDS}; targets: {sorted(BMD_TARGETS)}"
        )
    dataset_folder, run_folder = Path(dataset_folder), Path(run_folder)
    process = start_process(device)
    check_run_settings(run_folder, dataset_folder, fold, poses, config)
    if not (run_folder / "model" / "model.json").exists():
        raise InputError(
            run_folder,
            "stage 3 and the baseline are added to a finished decomposition model, and this run has none",
            "finish stages 1-2 (bmdgan train) first",
        )
    records = training_records(dataset_folder, fold, poses)
    dataset = ValueDataset(dataset_folder, records, target, config.image_shape, config.augmentation, config.seed)
    torch.manual_seed(config.seed)
    model = build_model(kind, config, run_folder, dataset.values).to(process.device)
    folder = run_folder / f"regression_{kind}_{target}"
    checkpoint = latest_checkpoint(folder / "checkpoints")
    encoder_sha256 = encoder_fingerprint(kind, run_folder)
    done_epochs = 0
    if checkpoint is not None:
        state = json.loads((checkpoint / "state.json").read_text())
        refuse_stale_encoder(folder, state["extra"], encoder_sha256)
        done_epochs = state["epoch"] + 1
        refuse_changed_phases(folder, state["extra"]["phase"], phase_of_epoch(kind, config, state["epoch"]))
    if process.is_main:
        truncate_history(folder, done_epochs)
    if checkpoint is not None and done_epochs >= sum(p[0] for p in phases(kind, config)):
        load_weights(checkpoint, "model", model)  # already trained: export what was trained, not a fresh model
        if process.is_main:
            export_regressor(run_folder, model, kind, target, config, encoder_sha256)
        return []
    sampler = torch.utils.data.DistributedSampler(
        dataset, process.world_size, process.rank, shuffle=True, seed=config.seed, drop_last=True
    )
    loader = torch.utils.data.DataLoader(dataset, config.batch_size, sampler=sampler, drop_last=True)
    if len(loader) == 0:
        raise InputError(
            dataset_folder,
            f"{len(records)} training cases cannot fill one batch of "
            f"{config.batch_size} x {process.world_size} processes",
            "lower batch_size",
        )
    history, epoch_start, budget = [], 0, stop_after_epochs
    for phase_index, (epochs, learning_rate, frozen) in enumerate(phases(kind, config)):
        phase_end = epoch_start + epochs
        if done_epochs >= phase_end:
            epoch_start = phase_end
            continue
        if hasattr(model, "freeze_encoder"):
            model.freeze_encoder(frozen)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=config.restart_period_epochs, T_mult=config.restart_multiplier
        )
        if checkpoint is not None:
            resumes_this_phase = done_epochs > epoch_start
            load_checkpoint(
                checkpoint,
                {"model": model},
                {"model": optimizer} if resumes_this_phase else {},
                {"model": scheduler} if resumes_this_phase else {},
            )
            checkpoint = None
        wrapped = DistributedDataParallel(model, find_unused_parameters=frozen) if process.world_size > 1 else model
        for epoch in range(max(done_epochs, epoch_start), phase_end):
            if budget is not None and budget <= 0:
                return history
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            model.train()
            for step, (_, x, y, w) in enumerate(
                progress_bar(
                    loader,
                    desc=f"{kind} {target} epoch {epoch + 1}/{sum(p[0] for p in phases(kind, config))}",
                    disable=not (progress and process.is_main),
                    leave=False,
                )
            ):
                x, y, w = x.to(process.device), y.to(process.device), w.to(process.device)
                loss = weighted_l1_loss(wrapped(x), y, w)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                history.append(
                    {
                        "epoch": epoch,
                        "phase": phase_index,
                        "step": step,
                        **mean_across_processes({"loss": float(loss.detach())}, process),
                    }
                )
            scheduler.step()
            if process.is_main:
                append_history(folder, [h for h in history if h["epoch"] == epoch])
                save_checkpoint(
                    folder / "checkpoints",
                    epoch,
                    {"model": model},
                    {"model": optimizer},
                    {"model": scheduler},
                    {"kind": kind, "target": target, "phase": phase_index, "encoder_sha256": encoder_sha256},
                )
            if budget is not None:
                budget -= 1
        epoch_start = phase_end
    if process.is_main:
        export_regressor(run_folder, model, kind, target, config, encoder_sha256)
    return history


def export_regressor(
    run_folder: Path, model: torch.nn.Module, kind: str, target: str, config: TrainingConfig, encoder_sha256: str | None
) -> Path:
    """Add ``regressor_<kind>_<target>.safetensors`` to ``run/model`` and describe it in ``model.json`` (with the
    stage-2 generator its encoder came from, so a re-exported decomposition model keeps only matching heads)."""
    folder = run_folder / "model"
    description_path = folder / "model.json"
    if not description_path.exists():
        raise InputError(folder, "no exported decomposition model to add the regressor to", "finish stage 2 first")
    name = f"regressor_{kind}_{target}"
    save_weights(model, folder / f"{name}.safetensors")
    with FileLock(str(folder / ".model.json.lock")):  # stage 3 and the baseline may finish together
        description = json.loads(description_path.read_text())
        description.setdefault("regressors", {})[name] = {
            "kind": kind,
            "target": target,
            "unit": BMD_TARGETS[target],
            "regression_head": config.regression_head,
            "baseline_width": config.baseline_width,
            "image_shape": list(config.image_shape),
            "backbone": config.backbone,
            "encoder_sha256": encoder_sha256,
        }
        atomic_write_text(description_path, json.dumps(description, indent=2))
    return folder / f"{name}.safetensors"


def load_regressor(model_folder: Path, name: str, backbone_generator=None) -> torch.nn.Module:
    """Rebuild and load an exported regressor (safetensors, checked against its architecture)."""
    description = json.loads((Path(model_folder) / "model.json").read_text())["regressors"][name]
    if description["kind"] == "baseline":
        model = DirectRegressionCNN(description["baseline_width"])
    else:
        generator = backbone_generator or build_generator(description["backbone"])
        model = build_regressor(generator, tuple(description["image_shape"]), description["regression_head"])
    load_weights(Path(model_folder), name, model)
    return model.eval()
