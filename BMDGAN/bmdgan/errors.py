"""Errors that tell the user what is wrong and what to fix."""

from __future__ import annotations

from pathlib import Path


class BMDGANError(Exception):
    """Base of the engine's user-facing errors; the command line turns them into exit code 2."""


class InputError(BMDGANError):
    """An input file or value cannot be used: names the file, the problem and the fix."""

    def __init__(self, path: str | Path | None, problem: str, fix: str = ""):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path else ""
        hint = f" ({fix})" if fix else ""
        super().__init__(f"{where}{problem}{hint}")
