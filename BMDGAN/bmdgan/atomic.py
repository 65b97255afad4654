"""Atomic file writing: write to a temporary file beside the target, then ``os.replace`` it into place.

A crash or an exception while writing never leaves a half-written file under the final name. Files get the
mode ``open`` would give them (0666 less the umask), not ``mkstemp``'s 0600. Whole result folders of a command are
written by :mod:`bmdgan.outputs`, which also decides what an existing destination may be replaced.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_unique_folder(parent: Path, kind: str, name: str) -> Path:
    """A new empty folder ``parent/.<kind>-<pid>-<random>-<name>`` created with the user's umask (unlike
    ``mkdtemp``); the process id lets a later run remove it if this process is killed
    (:func:`bmdgan.atomic.remove_stale_partials`)."""
    for _ in range(100):
        path = parent / f".{kind}-{os.getpid()}-{secrets.token_hex(4)}-{name}"
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
    raise InputError(parent, "cannot create a temporary folder (100 names taken)", "clean the folder")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix, so writers that choose the format by suffix work);
    it becomes ``path`` when the block succeeds and is deleted otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    handle, temporary = tempfile.mkstemp(suffix=suffix, dir=path.parent, prefix=f".partial-{os.getpid()}-")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, in UTF-8 whatever the locale (model cards hold non-ASCII text)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; when the block succeeds it replaces ``path`` as a whole
    (no file of an older version stays behind), otherwise it is deleted and ``path`` is left as it was. For folders
    the caller owns entirely (a cache entry, a checkpoint); a command's result folders go through
    :func:`bmdgan.outputs.result_folder`. Created with the user's umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent)
    temporary = make_unique_folder(path.parent, "partial", path.name)
    try:
        yield temporary
        if path.exists():
            previous = make_unique_folder(path.parent, "previous", path.name)
            os.replace(path, previous / path.name)
            os.replace(temporary, path)
            shutil.rmtree(previous)
        else:
            os.replace(temporary, path)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


TEMPORARY_NAME = re.compile(r"^\.(partial|previous)-(\d+)-")
"""Temporary files and folders of this module and :mod:`bmdgan.outputs`: ``.partial-<pid>-...``."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its files alone
    return True


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Delete the temporaries (``.partial-<pid>-*``, ``.previous-<pid>-*``) that a killed process left in ``folder``
    (not below it): those whose process no longer runs. A live process's temporaries are left alone, so two
    commands may share a folder. Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = TEMPORARY_NAME.match(path.name)
        if match is None or _process_alive(int(match.group(2))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
