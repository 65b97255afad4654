"""Training checkpoints in safetensors (no pickle): weights, optimizer and scheduler state, RNG state.

A checkpoint is a folder ``epoch_NNNN`` written under a temporary name and renamed when complete, then
``latest.json`` is replaced atomically: a crash at any moment leaves the previous checkpoint usable.
Optimizer states are flattened to tensors; their non-tensor structure goes into ``state.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path, atomic_write_text
from ..errors import BMDGANError, InputError
from ..io.members import member_path
from ..models.checkpoint_compat import load_state_dict_checked

KEEP_LAST = 2


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, structure = {}, {"param_groups": state["param_groups"], "state": {}}
    for parameter_id, values in state["state"].items():
        structure["state"][str(parameter_id)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{parameter_id}.{key}"] = value.detach().cpu().contiguous()
                structure["state"][str(parameter_id)][key] = "tensor"
            else:
                structure["state"][str(parameter_id)][key] = value
    return tensors, structure


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], structure: dict) -> dict:
    state = {}
    for parameter_id, values in structure["state"].items():
        state[int(parameter_id)] = {
            key: tensors[f"{parameter_id}.{key}"] if value == "tensor" else value for key, value in values.items()
        }
    return {"state": state, "param_groups": structure["param_groups"]}


def save_checkpoint(
    folder: Path,
    epoch: int,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict,
    extra: dict,
) -> Path:
    """Write ``folder/epoch_{epoch:04d}`` and point ``folder/latest.json`` at it."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"epoch_{epoch:04d}"
    partial = folder / f".partial-epoch_{epoch:04d}"
    for stale in folder.glob(".partial-epoch_*"):  # this one, and those of other epochs a killed run left
        shutil.rmtree(stale, ignore_errors=True)
    partial.mkdir()
    state = {"epoch": epoch, "extra": extra, "optimizers": {}, "schedulers": {}}
    for name, module in modules.items():
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
            str(partial / f"{name}.safetensors"),
        )
    for name, optimizer in optimizers.items():
        tensors, structure = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(partial / f"optimizer_{name}.safetensors"))
        state["optimizers"][name] = structure
    for name, scheduler in schedulers.items():
        state["schedulers"][name] = scheduler.state_dict()
    save_file({"torch_cpu_rng": torch.get_rng_state()}, str(partial / "rng.safetensors"))
    (partial / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    atomic_write_text(folder / "latest.json", json.dumps({"checkpoint": final.name, "epoch": epoch}))
    earlier = sorted(p for p in folder.glob("epoch_*") if p.name < final.name)
    later = [p for p in folder.glob("epoch_*") if p.name > final.name]  # of an abandoned run, restarted
    for old in earlier[: max(len(earlier) - (KEEP_LAST - 1), 0)] + later:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / "latest.json"
    if not pointer.exists():
        return None
    path = folder / json.loads(pointer.read_text())["checkpoint"]
    if not (path / "state.json").exists():
        raise BMDGANError(f"{pointer} points at {path.name}, which is incomplete: delete latest.json to restart")
    return path


def weights_sha256(path: Path, name: str) -> str:
    """SHA-256 of ``name.safetensors`` in a checkpoint: identifies those weights even across retraining."""
    return hashlib.sha256((path / f"{name}.safetensors").read_bytes()).hexdigest()


def save_weights(module: torch.nn.Module, file: Path) -> None:
    """``module``'s weights to a safetensors file, atomically (a crash never leaves a truncated file)."""
    with atomic_path(file) as temporary:
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(temporary))


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a truncated or damaged file raises :class:`InputError` naming it."""
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise InputError(
            file,
            f"is not a complete safetensors file ({str(error)[:100]})",
            "the file is truncated or damaged: copy or export it again",
        ) from None


def load_weights(path: Path, name: str, module: torch.nn.Module) -> None:
    """Load ``name.safetensors`` (a plain name inside ``path``) into ``module``; a missing, damaged or mismatched
    file raises a clear error."""
    file = member_path(path, name, ".safetensors")
    if not file.exists():
        raise BMDGANError(f"{file} not found: the run folder is incomplete or from another stage")
    load_state_dict_checked(module, read_safetensors(file), what=str(file))


def load_checkpoint(
    path: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer], schedulers: dict
) -> dict:
    """Restore everything :func:`save_checkpoint` wrote; returns its ``state.json`` content."""
    state = json.loads((path / "state.json").read_text())
    for name, module in modules.items():
        load_weights(path, name, module)
    for name, optimizer in optimizers.items():
        tensors = load_file(str(path / f"optimizer_{name}.safetensors"))
        optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizers"][name]))
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict(state["schedulers"][name])
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch_cpu_rng"])
    return state
