"""Files named inside a folder's own description (``model.json``'s regressors, ...): a name read from a file must
never reach a path outside that folder, or a crafted model could make ``estimate`` read, and ``train`` delete, a
file elsewhere."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import InputError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""A plain file name: letters, digits, ``_``, ``.``, ``-``; no separator, no leading dot, at most 128 characters."""


def member_path(folder: str | Path, name: object, suffix: str = "", described_in: str | Path | None = None) -> Path:
    """``folder/<name><suffix>`` when ``name`` is a plain file name whose resolved path stays inside ``folder``
    (symbolic links included); else :class:`InputError` naming ``described_in`` (the file that gave the name)."""
    folder = Path(folder)
    source = described_in or folder
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise InputError(
            source,
            f"names a file {str(name)[:80]!r} that is not a plain file name inside the folder",
            "use names of letters, digits, '_', '.' and '-' only (no path); re-export the model",
        )
    path = folder / f"{name}{suffix}"
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symbolic-link loop
        inside = False
    if not inside:
        raise InputError(
            source,
            f"names {name}{suffix}, which leads outside {folder} (a symbolic link)",
            "copy the file into the folder instead of linking it",
        )
    return path


def read_json_object(path: str | Path, what: str) -> dict:
    """A JSON object from ``path``; a missing, unreadable or malformed file raises :class:`InputError` naming it."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, f"is missing: not a {what}", f"give a complete {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(
            path,
            f"cannot be read as JSON ({type(error).__name__}: {str(error)[:100]})",
            f"the {what} is damaged: export or copy it again",
        ) from None
    if not isinstance(value, dict):
        raise InputError(path, f"holds a JSON {type(value).__name__}, not an object", f"give a complete {what}")
    return value
