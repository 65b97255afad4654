"""Atomic file writing: write to a temporary file beside the target, then ``os.replace`` it into place.

A crash or an exception while writing never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix, so writers that choose the format by suffix work);
    it becomes ``path`` when the block succeeds and is deleted otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    handle, temporary = tempfile.mkstemp(suffix=suffix, dir=path.parent, prefix=".partial-")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; when the block succeeds it replaces ``path`` as a whole
    (no file of an older version stays behind), otherwise it is deleted and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".partial-{path.name}-"))
    try:
        yield temporary
        if path.exists():
            previous = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".previous-{path.name}-"))
            os.replace(path, previous / path.name)
            os.replace(temporary, path)
            shutil.rmtree(previous)
        else:
            os.replace(temporary, path)
        os.chmod(path, 0o755)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
