"""Where the default model lives: ``$BMDGAN_MODEL``, else ``Resources/Models/default`` of the repository or of
the installed extension. None ships until one has been trained from the virtual cohort."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError


def resolve_model_folder(requested: str | None) -> Path:
    """The model folder to use: the one requested, else the default one."""
    if requested:
        return Path(requested)
    configured = os.environ.get("BMDGAN_MODEL")
    package = Path(__file__).resolve().parents[1]  # bmdgan/
    candidates = (
        [Path(configured)]
        if configured
        else [
            package.parents[1] / "Resources" / "Models" / "default",
            package.parent / "Resources" / "Models" / "default",
        ]
    )
    for folder in candidates:
        if (folder / "model.json").is_file():
            return folder
    raise InputError(
        candidates[0],
        "no default model is installed",
        "train one with 'bmdgan train' and pass its 'model' folder with --model",
    )
