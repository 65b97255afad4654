"""Logic of the training module: training runs in a separate ``bmdgan train`` process, never in Slicer's GUI
thread. This class starts it, follows it through the run folder's ``history.jsonl`` files (progress, loss
curves into table and plot nodes), stops it, and resumes it by starting it again on the same run folder
(training resumes from its last checkpoint).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ComputeEnvironment:
    torch_version: str
    cuda_devices: tuple[str, ...]
    cpu_threads: int

    @property
    def default_device(self) -> str:
        """"cuda" when a GPU is visible, else "cpu"."""
        return "cuda" if self.cuda_devices else "cpu"

    def describe(self) -> str:
        gpus = ", ".join(self.cuda_devices) if self.cuda_devices else "none"
        return f"PyTorch {self.torch_version}; GPUs: {gpus}; CPU threads: {self.cpu_threads}"


@dataclass
class TrainingRequest:
    """What to train: mirrors the options of ``bmdgan train``."""

    dataset: str
    run_folder: str
    config: str = "cpu"
    fold: int | None = None
    stages: str = "both"
    device: str = "auto"
    hierarchical: bool = True
    extra_arguments: list[str] = field(default_factory=list)

    def command(self, python: str) -> list[str]:
        arguments = [python, "-m", "bmdgan", "train", self.dataset, "--out", self.run_folder, "--config", self.config,
                     "--stages", self.stages, "--device", self.device]
        if self.fold is not None:
            arguments += ["--fold", str(self.fold)]
        if not self.hierarchical:
            arguments.append("--no-hierarchical")
        return arguments + list(self.extra_arguments)


@dataclass
class Progress:
    stage: str | None
    epoch: int
    total_epochs: int
    steps: int

    @property
    def fraction(self) -> float:
        return 0.0 if not self.total_epochs else min(1.0, self.epoch / self.total_epochs)


class TrainingLogic:
    """Starts, follows and stops one training process at a time."""

    STAGES = ("stage1", "stage2")

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.request: TrainingRequest | None = None
        self.log_path: Path | None = None

    def compute_environment(self) -> ComputeEnvironment:
        import torch

        devices = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return ComputeEnvironment(torch.__version__, devices, torch.get_num_threads())

    def resolve_device(self, requested: str) -> str:
        """"auto" -> the best available device; "cuda" without a GPU is an error that says so."""
        from bmdgan.errors import InputError

        environment = self.compute_environment()
        if requested == "auto":
            return environment.default_device
        if requested == "cuda" and not environment.cuda_devices:
            raise InputError(None, "a GPU was requested but PyTorch sees none", "choose CPU or install a CUDA build")
        return requested

    # --- the training process -------------------------------------------------------------------------------

    def start(self, request: TrainingRequest, python: str | None = None) -> subprocess.Popen:
        """Start (or resume: same run folder) training; output goes to ``run_folder/training.log``."""
        if self.is_running():
            from bmdgan.errors import BMDGANError

            raise BMDGANError("a training process is already running: stop it first")
        folder = Path(request.run_folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "training.log"
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(request.command(python or sys.executable), stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.request = request
        return self.process

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Ask the process to stop (SIGINT, like Ctrl+C), then kill it if it does not; the last completed epoch's
        checkpoint is kept, so starting again resumes there. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    # --- following a run --------------------------------------------------------------------------------------

    @staticmethod
    def history(run_folder: str | Path, stage: str) -> list[dict]:
        path = Path(run_folder) / stage / "history.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def progress(self, run_folder: str | Path) -> Progress:
        """The furthest stage with logged epochs, and how far it is (epochs from run.json's configuration)."""
        run_folder = Path(run_folder)
        settings_path = run_folder / "run.json"
        epochs = json.loads(settings_path.read_text())["config"]["epochs"] if settings_path.exists() else {}
        for stage in reversed(self.STAGES):
            history = self.history(run_folder, stage)
            if history:
                return Progress(stage, history[-1]["epoch"] + 1, int(epochs.get(stage, 0)), len(history))
        return Progress(None, 0, int(epochs.get("stage1", 0)), 0)

    def epoch_losses(self, run_folder: str | Path, stage: str) -> dict[str, np.ndarray]:
        """Mean of each logged loss per epoch: {"epoch": [...], "g_total": [...], ...}."""
        history = self.history(run_folder, stage)
        if not history:
            return {}
        epochs = sorted({h["epoch"] for h in history})
        keys = [k for k in history[0] if k not in ("epoch", "step")]
        curves = {"epoch": np.array(epochs, dtype=float)}
        for key in keys:
            curves[key] = np.array([np.mean([h[key] for h in history if h["epoch"] == e]) for e in epochs])
        return curves

    def update_loss_plot(self, scene, run_folder: str | Path, stage: str, name: str = "BMD-GAN training losses"):
        """Put the per-epoch losses into a table node and a plot chart node (one series per loss); returns the
        chart node, or None before the first epoch has been logged."""
        import slicer

        curves = self.epoch_losses(run_folder, stage)
        if not curves:
            return None
        table = scene.GetFirstNodeByName(f"{name} table") or scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
        table.RemoveAllColumns()
        columns = list(curves)
        slicer.util.updateTableFromArray(table, np.stack([curves[c] for c in columns], axis=1), columns)
        chart = scene.GetFirstNodeByName(name) or scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        chart.RemoveAllPlotSeriesNodeIDs()
        chart.SetTitle(f"{stage} losses per epoch")
        chart.SetXAxisTitle("epoch")
        for column in columns[1:]:
            series_name = f"{name} {column}"
            series = scene.GetFirstNodeByName(series_name) or scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode",
                                                                                     series_name)
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("epoch")
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeScatter)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return chart

    @staticmethod
    def model_folder(run_folder: str | Path) -> Path | None:
        """The run's exported model (what the BMDGAN module uses), once stage 2 has finished."""
        folder = Path(run_folder) / "model"
        return folder if (folder / "model.json").is_file() else None
