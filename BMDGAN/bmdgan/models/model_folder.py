"""The model folder format (``run/model``): ``model.json`` naming the generator and the regressors, each a
safetensors file inside the folder. Read here once, by training (re-export), inference and the model card."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..io.members import member_path, read_json_object

MODEL_FORMAT = "bmdgan-model"
MODEL_FORMAT_VERSION = 1


def read_model_description(folder: str | Path) -> dict:
    """``model.json`` of a model folder, checked: a JSON object of this format and version whose regressor names
    are plain file names inside the folder. Raises :class:`InputError` naming the file."""
    path = Path(folder) / "model.json"
    description = read_json_object(path, "bmdgan model folder")
    if description.get("format") != MODEL_FORMAT or description.get("version") != MODEL_FORMAT_VERSION:
        raise InputError(
            path,
            f"model format {description.get('format')} version {description.get('version')} "
            f"is not {MODEL_FORMAT} version {MODEL_FORMAT_VERSION}",
            "use a model trained with a matching bmdgan version",
        )
    regressors = description.get("regressors", {})
    if not isinstance(regressors, dict) or not all(
        isinstance(entry, dict) and "kind" in entry and "target" in entry for entry in regressors.values()
    ):
        raise InputError(path, "has a malformed 'regressors' entry", "export the model again")
    for name in regressors:
        member_path(folder, name, ".safetensors", described_in=path)
    return description


def model_files(folder: str | Path) -> list[Path]:
    """Every file of a model folder that ``model.json`` names (itself, the generator, the regressors), each inside
    the folder: what shipping the model copies."""
    folder = Path(folder)
    description = read_model_description(folder)
    names = ["generator", *description.get("regressors", {})]
    return [folder / "model.json"] + [
        member_path(folder, name, ".safetensors", folder / "model.json") for name in names
    ]
