"""Shared test fixtures: paths to the real data in ``../shared/data`` and to the module folders."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_DATA = REPOSITORY.parent / "shared" / "data"
# The Slicer modules' Logic packages (BMDGANLib, ...) sit in the module folders, as in a Slicer install.
for module_folder in ("BMDGAN", "BMDGANRegistration", "BMDGANTraining"):
    sys.path.insert(0, str(REPOSITORY / module_folder))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
