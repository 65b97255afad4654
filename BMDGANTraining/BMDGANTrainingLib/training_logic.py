"""Logic of the training module: what hardware a training run would use."""

from __future__ import annotations

from dataclasses import dataclass


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


class TrainingLogic:
    """Training runs in a separate process, never in Slicer's GUI thread; this class prepares and watches it."""

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
