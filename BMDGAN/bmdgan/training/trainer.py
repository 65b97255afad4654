"""Decomposition training of one stage (paper section 3.2): G and three conditional discriminators.

Runs on one CPU or GPU, or on several processes started by ``torchrun`` (DistributedDataParallel; the
process group comes from torchrun's environment: gloo on CPU, NCCL on CUDA). The global batch is
``batch_size * world_size * accumulation_steps``; GroupNorm has no batch statistics, so any split of the
same global batch gives the same gradients.

Each step: D learns to tell (x, y) from (x, G(x)) (real and fake pairs in one forward), then G minimises
L_GAN + 100 L1 + 1 GC + 10 FM with D's parameters frozen. A checkpoint after every epoch makes a killed run
resume exactly (same data order, augmentations and weights).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..compute import configure_torch
from ..datasets.format import CaseRecord, atomic_save_npy
from ..errors import InputError
from ..losses import DecompositionLoss
from ..models.discriminator import MultiscaleDiscriminator
from ..models.generator import build_generator
from ..progress import progress_bar
from .checkpoint import latest_checkpoint, load_checkpoint, load_weights, save_checkpoint
from .config import TrainingConfig
from .data import PairDataset
from .run_folder import append_history, truncate_history

SAMPLE_FOLDER = "samples"
"""Sub-folder of a stage's folder holding the sample pictures, ``epoch_NNNN.npy`` (0-based epoch)."""


def sample_path(stage_folder: Path, epoch: int) -> Path:
    """The sample picture of ``epoch``: float32 (rows, 3 x columns), values 0-1, side by side the radiograph
    (model input rescaled from [-1, 1]), the target DRR and the generator's DRR (both / DRR_SCALE_G_CM2, clamped)."""
    return Path(stage_folder) / SAMPLE_FOLDER / f"epoch_{epoch:04d}.npy"


@dataclass
class Process:
    """Where this process runs: rank and world size from torchrun (1 process otherwise)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def synchronise(self) -> None:
        """Under torchrun, hold each process here until all have come (e.g. until the main one wrote a file)."""
        if self.world_size > 1:
            dist.barrier()


def start_process(device: str = "auto") -> Process:
    """Join torchrun's process group when started by torchrun; pick the device."""
    configure_torch()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device.startswith("cuda"):  # "cuda:N" (bmdgan --device) picks device N outside torchrun
        local_rank = int(os.environ.get("LOCAL_RANK", device.partition(":")[2] or "0"))
        torch.cuda.set_device(local_rank)
        return Process(rank, world_size, torch.device("cuda", local_rank))
    return Process(rank, world_size, torch.device("cpu"))


def build_models(config: TrainingConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    generator = build_generator(config.backbone)
    discriminator = MultiscaleDiscriminator(in_channels=2, ndf=config.discriminator_width)
    return generator, discriminator


def real_and_fake(scales: list, count: int) -> tuple[list, list]:
    """The multi-scale discriminator's features of one forward pass over [real; fake] pairs, split into those of the
    first ``count`` (real) and of the rest (fake)."""
    return [[f[:count] for f in scale] for scale in scales], [[f[count:] for f in scale] for scale in scales]


def mean_across_processes(values: dict[str, float], process: Process) -> dict[str, float]:
    if process.world_size == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=process.device)
    dist.all_reduce(tensor)
    return {k: float(v) / process.world_size for k, v in zip(keys, tensor.tolist())}


class StageTrainer:
    """Trains G (and D) for one stage into ``run_folder/<stage>``; resumes from its latest checkpoint."""

    def __init__(
        self,
        config: TrainingConfig,
        dataset_folder: Path,
        records: list[CaseRecord],
        stage: str,
        run_folder: Path,
        process: Process,
        initial_weights: Path | None = None,
    ):
        self.config, self.stage, self.process = config, stage, process
        self.folder = Path(run_folder) / stage
        torch.manual_seed(config.seed)
        generator, discriminator = build_models(config)
        if initial_weights is not None:  # hierarchical learning: start stage 2 from stage 1
            load_weights(initial_weights, "generator", generator)
            load_weights(initial_weights, "discriminator", discriminator)
        self.generator = generator.to(process.device)
        self.discriminator = discriminator.to(process.device)
        self.optimizers = {
            name: torch.optim.AdamW(
                module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.5, 0.999)
            )
            for name, module in (("generator", self.generator), ("discriminator", self.discriminator))
        }
        self.schedulers = {
            name: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                optimizer, T_0=config.restart_period_epochs, T_mult=config.restart_multiplier
            )
            for name, optimizer in self.optimizers.items()
        }
        if process.world_size > 1:
            ids = [process.device.index] if process.device.type == "cuda" else None
            self.generator_ddp = DistributedDataParallel(self.generator, device_ids=ids)
            self.discriminator_ddp = DistributedDataParallel(self.discriminator, device_ids=ids)
        else:
            self.generator_ddp, self.discriminator_ddp = self.generator, self.discriminator
        weights = config.loss_weights
        self.loss = DecompositionLoss(weights["l1"], weights["gc"], weights["fm"], config.gan_mode)
        self.dataset = PairDataset(dataset_folder, records, stage, config.image_shape, config.augmentation, config.seed)
        self.sampler = torch.utils.data.DistributedSampler(
            self.dataset,
            num_replicas=process.world_size,
            rank=process.rank,
            shuffle=True,
            seed=config.seed,
            drop_last=True,
        )
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=config.batch_size, sampler=self.sampler, drop_last=True, num_workers=0
        )
        if len(self.loader) == 0:
            raise InputError(
                dataset_folder,
                f"{len(records)} training cases cannot fill one batch of "
                f"{config.batch_size} x {process.world_size} processes",
                "lower batch_size",
            )
        self.start_epoch = 0
        checkpoint = latest_checkpoint(self.folder / "checkpoints")
        if checkpoint is not None:
            state = load_checkpoint(
                checkpoint,
                {"generator": self.generator, "discriminator": self.discriminator},
                self.optimizers,
                self.schedulers,
            )
            self.start_epoch = state["epoch"] + 1
        if process.is_main:  # also without a checkpoint: a run killed before its first one logged epochs
            truncate_history(self.folder, self.start_epoch)

    def _autocast(self):
        if self.config.mixed_precision and self.process.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _no_sync(self, module, sync: bool):
        """DDP's gradient synchronisation off for a micro-batch that is not the last one (a fresh context each
        time: DDP's ``no_sync()`` can be entered only once)."""
        return nullcontext() if sync or self.process.world_size == 1 else module.no_sync()

    def _step(self, x: torch.Tensor, y: torch.Tensor, sync: bool) -> dict[str, float]:
        """One micro-batch: D update on real and fake pairs, then G update. Gradients are scaled for
        accumulation and only synchronised across processes on the last micro-batch (``sync``)."""
        scale = 1.0 / self.config.accumulation_steps
        with self._no_sync(self.generator_ddp, sync), self._autocast():
            fake = self.generator_ddp(x)
        # Discriminator: one forward over [real; fake] so DDP sees a single forward per backward.
        with self._no_sync(self.discriminator_ddp, sync), self._autocast():
            both = self.discriminator_ddp(torch.cat([x, x]), torch.cat([y, fake.detach()]))
            pred_real, pred_fake = real_and_fake(both, len(x))
            d_loss, d_parts = self.loss.discriminator_loss(pred_real, pred_fake)
            (d_loss * scale).backward()
        # Generator: D frozen and called without its DDP wrapper (no D gradients to synchronise).
        for parameter in self.discriminator.parameters():
            parameter.requires_grad_(False)
        with self._no_sync(self.generator_ddp, sync), self._autocast():
            both = self.discriminator(torch.cat([x, x]), torch.cat([y, fake]))
            pred_real, pred_fake = real_and_fake(both, len(x))
            g_loss, g_parts = self.loss.generator_loss(fake.float(), y, pred_fake, pred_real)
            (g_loss * scale).backward()
        for parameter in self.discriminator.parameters():
            parameter.requires_grad_(True)
        return {**{f"g_{k}": float(v) for k, v in g_parts.items()}, **{k: float(v) for k, v in d_parts.items()}}

    def train(self, stop_after_epochs: int | None = None, progress: bool = True) -> list[dict]:
        """Train to the configured number of epochs (or ``stop_after_epochs`` more); returns this run's history."""

        total_epochs = self.config.epochs[self.stage]
        last_epoch = (
            total_epochs if stop_after_epochs is None else min(total_epochs, self.start_epoch + stop_after_epochs)
        )
        writer = self._tensorboard()
        history = []
        for epoch in range(self.start_epoch, last_epoch):
            self.sampler.set_epoch(epoch)
            self.dataset.set_epoch(epoch)
            self.generator.train()
            self.discriminator.train()
            bar = progress_bar(
                self.loader,
                desc=f"{self.stage} epoch {epoch + 1}/{total_epochs}",
                disable=not (progress and self.process.is_main),
                leave=False,
            )
            micro, micro_losses = 0, []
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            for _, x, y in bar:
                x, y = x.to(self.process.device), y.to(self.process.device)
                micro += 1
                sync = micro % self.config.accumulation_steps == 0
                micro_losses.append(self._step(x, y, sync))
                if not sync:
                    continue
                for optimizer in self.optimizers.values():
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                losses = {key: float(np.mean([m[key] for m in micro_losses])) for key in micro_losses[0]}
                micro_losses = []
                losses = mean_across_processes(losses, self.process)
                record = {"epoch": epoch, "step": micro // self.config.accumulation_steps, **losses}
                history.append(record)
                bar.set_postfix(g=f"{losses['g_total']:.3f}", d=f"{losses['d']:.3f}")
            for scheduler in self.schedulers.values():
                scheduler.step()
            if self.process.is_main:
                self._log_epoch(writer, epoch, [h for h in history if h["epoch"] == epoch])
                if (epoch + 1) % self.config.checkpoint_every_epochs == 0 or epoch + 1 == total_epochs:
                    save_checkpoint(
                        self.folder / "checkpoints",
                        epoch,
                        {"generator": self.generator, "discriminator": self.discriminator},
                        self.optimizers,
                        self.schedulers,
                        {"stage": self.stage},
                    )
            if self.process.world_size > 1:
                dist.barrier()
        if writer is not None:
            writer.close()
        return history

    def _tensorboard(self):
        if not self.process.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.folder / "tensorboard"))

    def _log_epoch(self, writer, epoch: int, records: list[dict]) -> None:
        """Append this epoch's steps to history.jsonl; epoch means to TensorBoard; every ``sample_every_epochs``
        a sample picture to TensorBoard and to :func:`sample_path` (TensorBoard's file is written only every
        2 minutes, the .npy at once, for a live view)."""
        append_history(self.folder, records)
        for key in records[0]:
            if key not in ("epoch", "step"):
                writer.add_scalar(f"{self.stage}/{key}", float(np.mean([r[key] for r in records])), epoch)
        writer.add_scalar(f"{self.stage}/learning_rate", self.schedulers["generator"].get_last_lr()[0], epoch)
        if (epoch + 1) % self.config.sample_every_epochs == 0:
            _, x, y = self.dataset[0]
            self.generator.eval()
            with torch.no_grad():
                fake = self.generator(x[None].to(self.process.device))[0].cpu()
            panel = torch.cat([(x + 1) / 2, y.clamp(0, 1), fake.clamp(0, 1)], dim=2)  # radiograph | target | G(x)
            writer.add_image(f"{self.stage}/radiograph_target_prediction", panel, epoch)
            atomic_save_npy(sample_path(self.folder, epoch), panel[0].numpy())
            self.generator.train()
