"""Use a trained decomposition model: radiograph -> PF-DRR (g/cm2) -> BMD.

A model folder is what training exports (``run/model``): ``model.json`` and ``generator.safetensors``.
Weights are read with safetensors only (never pickle), and checked against the architecture. Every file name that
``model.json`` gives must be a plain name inside the folder (:func:`bmdgan.io.members.member_path`); a damaged
``model.json`` or weights file is an :class:`InputError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..bmd_from_drr import DrrBmdCalibration
from ..compute import configure_torch
from ..datasets.normalise import HipROI
from ..distribution_check import HipScores, TrainingDistribution, check, pooled, scores
from ..errors import InputError
from ..models.model_folder import read_model_description
from .uncertainty import PredictiveDistribution


def usable_device(device: str) -> torch.device:
    """``device`` ("cpu", "cuda", "cuda:1", "mps") when this machine has it, else :class:`InputError`."""
    try:
        torch_device = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(None, f"--device {device!r} is not a device name", "use cpu or cuda") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
    }
    if not available.get(torch_device.type, False):
        raise InputError(
            None,
            f"--device {device}: this machine has no {torch_device.type.upper()} device that PyTorch can use",
            "use --device cpu",
        )
    if (
        torch_device.type == "cuda"
        and torch_device.index is not None
        and torch_device.index >= torch.cuda.device_count()
    ):
        raise InputError(
            None, f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)", "use --device cuda:0"
        )
    return torch_device


@dataclass
class Decomposition:
    """The PF-DRR of one hip: ``pf_drr_g_cm2`` [rows, columns] on the model's input ``model_input``, cut from the
    radiograph by ``roi`` (None: the image given was the model's input already, e.g. a dataset case)."""

    pf_drr_g_cm2: np.ndarray
    model_input: np.ndarray
    roi: HipROI | None
    features: np.ndarray


class DecompositionModel:
    """A trained generator with its scaling and DRR -> BMD calibrations."""

    def __init__(self, generator: torch.nn.Module, description: dict, device: torch.device, folder: Path):
        self.generator, self.description, self.device, self.folder = generator.eval(), description, device, folder
        self._regressors: dict[str, torch.nn.Module] = {}
        try:
            self.image_shape = tuple(int(n) for n in description["image_shape"])
            self.drr_scale_g_cm2 = float(description["drr_scale_g_cm2"])
            self.calibrations = {c["target"]: DrrBmdCalibration.from_dict(c) for c in description["calibrations"]}
            self.distribution = TrainingDistribution.from_dict(description["training_distribution"])
            self.intervals = {
                (entry["method"], entry["target"]): PredictiveDistribution.from_dict(entry)
                for entry in description.get("prediction_intervals", [])
            }
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InputError(
                folder / "model.json",
                f"lacks or has a malformed entry ({type(error).__name__}: {str(error)[:80]})",
                "export the model again",
            ) from None

    @staticmethod
    def load(folder: str | Path, device: str = "cpu") -> DecompositionModel:
        from ..models.generator import build_generator
        from ..training.checkpoint import load_weights

        configure_torch()
        folder = Path(folder)
        if not (folder / "model.json").is_file():
            raise InputError(
                folder, "is not a bmdgan model folder (no model.json)", "give the 'model' folder of a training run"
            )
        description = read_model_description(folder)
        try:
            generator = build_generator(description["backbone"])
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                folder / "model.json",
                f"names no usable backbone ({type(error).__name__}: {str(error)[:80]})",
                "export the model again",
            ) from None
        load_weights(folder, "generator", generator)
        torch_device = usable_device(device)
        return DecompositionModel(generator.to(torch_device), description, torch_device, folder)

    def decompose(self, image: np.ndarray, roi: HipROI | None = None) -> Decomposition:
        """PF-DRR of one hip's input region ``image`` (the model's image shape; see
        :mod:`bmdgan.datasets.normalise`), cut by ``roi`` when it came from a radiograph."""
        x = self._network_input(image)
        with torch.no_grad():
            representation = self.generator.encode(x)  # once: the decoder and the distribution check share it
            drr = self.generator.decoder(representation)[0, 0].float().cpu().numpy() * self.drr_scale_g_cm2
        return Decomposition(np.clip(drr, 0.0, None).astype(np.float32), image, roi, pooled(representation)[0])

    def _network_input(self, image: np.ndarray) -> torch.Tensor:
        """[1, 1, H, W] in [-1, 1]: the input region as the networks were trained on it."""
        from ..training.data import normalise_radiograph

        if tuple(image.shape) != self.image_shape:
            raise InputError(
                None,
                f"the model's input is {self.image_shape[0]} x {self.image_shape[1]} pixels, got "
                f"{image.shape[0]} x {image.shape[1]}",
                "cut the hip's region with bmdgan.datasets.normalise at the model's image shape",
            )
        return torch.from_numpy(normalise_radiograph(image))[None, None].to(self.device)

    def scores(self, decomposition: Decomposition, disagreement_g_cm2: float | None = None) -> HipScores:
        """What the distribution checks measure on one hip (:mod:`bmdgan.distribution_check`);
        ``disagreement_g_cm2``: |decomposition - regression| aBMD when the model has both."""
        return scores(self.distribution, decomposition.features, decomposition.pf_drr_g_cm2, disagreement_g_cm2)

    def warnings(self, decomposition: Decomposition, disagreement_g_cm2: float | None = None) -> list[str]:
        """Why this result may not be trustworthy (empty: it looks like the images the limits came from)."""
        return check(self.distribution, self.scores(decomposition, disagreement_g_cm2))

    def interval(self, method: str, target: str) -> PredictiveDistribution | None:
        """The predictive distribution of ``target``'s truth around ``method``'s estimate, when the model was
        calibrated on held-out CTs (``bmdgan calibrate-confidence``); else None."""
        return self.intervals.get((method, target))

    def regress(self, image: np.ndarray, kind: str = "decomposition") -> dict[str, float]:
        """BMD per target from the exported stage-3 regressors of ``kind`` on one hip's input region (empty when
        there are none)."""
        from ..training.regression import load_regressor

        names = [n for n, d in self.description.get("regressors", {}).items() if d["kind"] == kind]
        if not names:
            return {}
        x = self._network_input(image)
        values = {}
        for name in names:
            if name not in self._regressors:
                self._regressors[name] = load_regressor(self.folder, name).to(self.device)
            with torch.no_grad():
                values[self.description["regressors"][name]["target"]] = float(self._regressors[name](x)[0, 0])
        return values

    def bmd(self, decomposition: Decomposition) -> dict[str, float]:
        """BMD per calibrated target (e.g. ``ct_abmd_g_cm2``, ``qct_vbmd_mg_cm3``); NaN when the PF region is empty."""
        return {
            target: float(calibration.predict(decomposition.pf_drr_g_cm2))
            for target, calibration in self.calibrations.items()
        }
