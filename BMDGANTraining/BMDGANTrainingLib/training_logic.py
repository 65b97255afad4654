"""Logic of the training module: training runs in a separate ``bmdgan train`` process, never in Slicer's GUI
thread. This class starts it, follows it through the run folder's ``history.jsonl`` files (progress, loss
curves into table and plot nodes) and sample pictures (the latest into a volume node), stops it, and resumes it
by starting it again on the same run folder (training resumes from its last checkpoint).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bmdgan.errors import BMDGANError, InputError
from bmdgan.io import Radiograph
from bmdgan.training.run_folder import read_history, read_run_settings
from BMDGANLib.engine_process import interrupt, start_engine_process


@dataclass(frozen=True)
class ComputeEnvironment:
    torch_version: str
    cuda_devices: tuple[str, ...]
    cpu_threads: int

    @property
    def default_device(self) -> str:
        """ "cuda" when a GPU is visible, else "cpu"."""
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
    pretrained: str = ""
    """A run whose last stage-2 weights start stage 2 in place of stage 1's (``--pretrained``); empty: none."""
    extra_arguments: list[str] = field(default_factory=list)

    def arguments(self) -> list[str]:
        """The ``bmdgan`` command line after ``python -m bmdgan``."""
        arguments = [
            "train",
            self.dataset,
            "--out",
            self.run_folder,
            "--config",
            self.config,
            "--stages",
            self.stages,
            "--device",
            self.device,
        ]
        if self.fold is not None:
            arguments += ["--fold", str(self.fold)]
        if not self.hierarchical:
            arguments.append("--no-hierarchical")
        if self.pretrained:
            arguments += ["--pretrained", self.pretrained]
        return arguments + list(self.extra_arguments)


@dataclass(frozen=True)
class Sample:
    """A sample picture the trainer wrote (see ``bmdgan.training.trainer.sample_path``)."""

    stage: str
    epoch: int  # 0-based, as in history.jsonl
    path: Path


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
        """ "auto" -> the best available device; "cuda" without a GPU is an error that says so."""
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
            raise BMDGANError("a training process is already running: stop it first")
        self.log_path = Path(request.run_folder) / "training.log"
        self.process = start_engine_process(request.arguments(), self.log_path, python, append=True)
        self.request = request
        return self.process

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Ask the process to stop (SIGINT, like Ctrl+C), then kill it if it does not; the last completed epoch's
        checkpoint is kept, so starting again resumes there. Returns the exit code."""
        return None if self.process is None else interrupt(self.process, timeout_s)

    # --- following a run --------------------------------------------------------------------------------------

    @staticmethod
    def history(run_folder: str | Path, stage: str) -> list[dict]:
        return read_history(Path(run_folder) / stage)

    def progress(self, run_folder: str | Path) -> Progress:
        """The furthest stage with logged epochs, and how far it is (epochs from run.json's configuration)."""
        run_folder = Path(run_folder)
        settings = read_run_settings(run_folder)
        epochs = settings["config"]["epochs"] if settings else {}
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
        table_name = f"{name} table"
        table = scene.GetFirstNodeByName(table_name) or scene.AddNewNodeByClass("vtkMRMLTableNode", table_name)
        table.RemoveAllColumns()
        columns = list(curves)
        slicer.util.updateTableFromArray(table, np.stack([curves[c] for c in columns], axis=1), columns)
        chart = scene.GetFirstNodeByName(name) or scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        chart.RemoveAllPlotSeriesNodeIDs()
        chart.SetTitle(f"{stage} losses per epoch")
        chart.SetXAxisTitle("epoch")
        for column in columns[1:]:
            series_name = f"{name} {column}"
            series = scene.GetFirstNodeByName(series_name) or scene.AddNewNodeByClass(
                "vtkMRMLPlotSeriesNode", series_name
            )
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("epoch")
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeScatter)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return chart

    def latest_sample(self, run_folder: str | Path) -> Sample | None:
        """The most recent sample picture of the run: the last epoch's of the furthest stage that has one."""
        from bmdgan.training.trainer import SAMPLE_FOLDER

        for stage in reversed(self.STAGES):
            paths = sorted((Path(run_folder) / stage / SAMPLE_FOLDER).glob("epoch_*.npy"))
            if paths:
                return Sample(stage, int(paths[-1].stem.split("_")[1]), paths[-1])
        return None

    def load_latest_sample(self, scene, run_folder: str | Path, name: str = "BMD-GAN training sample"):
        """Put the latest sample picture into a single-slice volume node (made once, then updated in place) laid out
        like a radiograph: side by side the radiograph, the target DRR and the generator's DRR, display values 0-1,
        1 mm nominal pixels (training images carry no pixel spacing). Returns (Sample, node), or None before the
        first sample (written every ``sample_every_epochs`` epochs)."""
        from bmdgan.training.data import DRR_SCALE_G_CM2
        from BMDGANLib.mrml_conversion import UNIT_ATTRIBUTE, radiograph_to_node

        sample = self.latest_sample(run_folder)
        if sample is None:
            return None
        pixels = np.load(sample.path).astype(np.float32)
        picture = Radiograph(pixels, source=f"{sample.stage} epoch {sample.epoch + 1}")
        node = radiograph_to_node(picture, scene, name, scene.GetFirstNodeByName(name))
        node.SetAttribute(UNIT_ATTRIBUTE, f"display 0-1 (DRRs: g/cm2 / {DRR_SCALE_G_CM2:g})")
        node.SetAttribute("BMDGAN.TrainingSample", f"{sample.stage} epoch {sample.epoch + 1}")
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, 1.0)  # one window for the three pictures, as TensorBoard shows them
        return sample, node

    @staticmethod
    def model_folder(run_folder: str | Path) -> Path | None:
        """The run's exported model (what the BMDGAN module uses), once stage 2 has finished."""
        folder = Path(run_folder) / "model"
        return folder if (folder / "model.json").is_file() else None
