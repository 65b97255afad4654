"""First-use installation of the engine's requirements into Slicer's Python.

Slicer ships its own numpy, SimpleITK, VTK, pydicom...: replacing any of them breaks Slicer. So only
*missing* distributions are installed, with pip constrained to the versions already present
(``-c constraints``), and torch comes from the PyTorch extension (``PyTorchUtils``) when it is there.
The functions here are plain Python (no Qt): the widgets ask the user, then call :func:`install`.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "bmdgan" / "resources" / "requirements.txt"
LARGE_DOWNLOADS = {"torch": "PyTorch (about 200 MB for CPU, 2 GB or more with CUDA)", "tensorboard": "TensorBoard"}
"""Packages worth asking the user about before downloading."""


@dataclass(frozen=True)
class Requirement:
    name: str
    specifier: str

    def __str__(self) -> str:
        return f"{self.name}{self.specifier}"


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[Requirement]:
    """Requirement lines of ``path`` (comments and blank lines skipped)."""
    requirements = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", line)
            requirements.append(Requirement(match.group(1), match.group(2).strip()))
    return requirements


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_requirements(requirements: list[Requirement] | None = None) -> list[Requirement]:
    """Requirements with no installed distribution. Installed ones are kept whatever their version:
    an older package that Slicer ships is never replaced from here."""
    return [r for r in (requirements or read_requirements()) if installed_version(r.name) is None]


def constraints_text() -> str:
    """A pip constraints file pinning every installed distribution to its current version."""
    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]})
    return "\n".join(pins) + "\n"


def install(requirements: list[Requirement], pip_install) -> None:
    """Install ``requirements`` with ``pip_install`` (``slicer.util.pip_install`` in Slicer), constrained
    so that pip cannot upgrade or downgrade anything already installed."""
    if not requirements:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write(constraints_text())
    pip_install(" ".join(f'"{r}"' for r in requirements) + f' -c "{handle.name}"')
    Path(handle.name).unlink(missing_ok=True)


def describe_downloads(requirements: list[Requirement]) -> str:
    """Human-readable list for the confirmation dialog."""
    return ", ".join(LARGE_DOWNLOADS.get(r.name, r.name) for r in requirements)
