"""The one place that decides where a command may write its result folders, and that writes them.

Rules (every command that writes a result folder goes through :func:`result_folder`):

- A result folder is built under a temporary name beside its destination and renamed into place when complete:
  a crash or an error leaves no half-written result under the final name.
- Nothing the command did not write is ever deleted. The command leaves a marker file, :data:`MARKER`, in each
  result folder, naming the command and every file it wrote. An existing destination is used only when it is an
  empty folder, or, with ``overwrite``, an earlier result of the same command that holds nothing but the files its
  marker lists; anything else is refused before any work, saying what to do.
- Folders are created with the user's umask (``mkdtemp`` would make them 0700), files as ``open`` would.
- Several inputs of one batch get distinct folder names up front (:func:`unique_names`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .atomic import make_unique_folder, remove_stale_partials
from .errors import InputError

MARKER = ".bmdgan-output.json"
"""Left in every result folder: ``{"command": ..., "files": [relative paths written]}``."""


def _marker_of(folder: Path) -> dict | None:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), list) else None


def _files_in(folder: Path) -> set[str]:
    """Relative paths (POSIX) of every file and folder under ``folder``, folders included."""
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")}


def _parents_of(names: set[str]) -> set[str]:
    parents = set()
    for name in names:
        parts = name.split("/")[:-1]
        parents |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    return parents


def check_writable(path: str | Path, what: str = "--out") -> Path:
    """Refuse an output path whose nearest existing ancestor is not a writable folder (before any work)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise InputError(existing, f"is a file, so {what} {path} cannot be created under it", f"choose another {what}")
    if not os.access(existing if existing.is_dir() else existing.parent, os.W_OK | os.X_OK):
        raise InputError(existing, "is not writable (read-only folder or no permission)", f"choose another {what}")
    return path


def check_destination(path: str | Path, command: str, overwrite: bool = False) -> Path:
    """Refuse, before any work, a result folder ``path`` that :func:`result_folder` could not write without
    deleting something ``command`` did not write. Returns ``path``."""
    path = Path(path)
    check_writable(path)
    if not path.exists() and not path.is_symlink():
        return path
    if not path.is_dir() or path.is_symlink():
        raise InputError(path, "exists and is not a folder", "choose a new folder name for the output")
    present = _files_in(path)
    if not present:
        return path
    marker = _marker_of(path)
    if marker is None or marker.get("command") != command:
        raise InputError(
            path,
            f"already exists and holds files that bmdgan {command} did not write",
            "choose a new or empty output folder, or move those files away; nothing was changed",
        )
    if not overwrite:
        raise InputError(
            path,
            f"already holds an earlier result of bmdgan {command}",
            "pass --overwrite to replace it, or choose another output folder",
        )
    listed = {str(name) for name in marker["files"]} | {MARKER}
    foreign = sorted(present - listed - _parents_of(listed))
    if foreign:
        raise InputError(
            path,
            f"holds files that bmdgan {command} did not write ({', '.join(foreign[:3])}"
            + (", ..." if len(foreign) > 3 else "")
            + "), so --overwrite would delete them",
            "move them elsewhere or choose another output folder",
        )
    return path


@contextlib.contextmanager
def result_folder(path: str | Path, command: str, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; when the block succeeds it becomes ``path`` (with :data:`MARKER`), as a whole.

    ``path`` must pass :func:`check_destination`; an earlier result it replaces is deleted only after the new one
    is in place. On an error ``path`` is left as it was and the staging folder is removed; temporaries of killed
    earlier runs beside ``path`` are removed first.
    """

    path = Path(path)
    check_destination(path, command, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent)
    staging = make_unique_folder(path.parent, "partial", path.name)
    try:
        yield staging
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        (staging / MARKER).write_text(
            json.dumps({"command": f"{command}", "files": written}, indent=1), encoding="utf-8"
        )
        check_destination(path, command, overwrite)  # nothing may have appeared there meanwhile
        if path.is_dir() and any(path.iterdir()):
            previous = make_unique_folder(path.parent, "previous", path.name)
            os.replace(path, previous / path.name)
            os.replace(staging, path)
            shutil.rmtree(previous)
        else:
            os.replace(staging, path)  # rename onto an empty folder or a new name
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def unique_names(stems: list[str]) -> list[str]:
    """One distinct folder name per input, decided up front: a stem used once keeps its name; a stem shared by
    several inputs becomes ``<stem>-1``, ``<stem>-2``, ... in input order, skipping any number whose name another
    input already has (``a/x.dcm``, ``b/x.dcm``, ``c/x-2.dcm`` give ``x-1``, ``x-3``, ``x-2``). Names are compared
    case-insensitively, as on macOS and Windows disks."""
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem.casefold()] = counts.get(stem.casefold(), 0) + 1
    taken = {stem.casefold() for stem in stems if counts[stem.casefold()] == 1}
    names = []
    for stem in stems:
        if counts[stem.casefold()] == 1:
            names.append(stem)
            continue
        number = 1
        while f"{stem}-{number}".casefold() in taken:
            number += 1
        taken.add(f"{stem}-{number}".casefold())
        names.append(f"{stem}-{number}")
    return names
