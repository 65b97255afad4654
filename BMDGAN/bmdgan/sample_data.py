"""Where the bundled sample data lives, and which real CTs it reserves.

The repository's ``Resources/SampleData`` holds a real CT and a real radiograph (see its README for
licences). The CT listed in :data:`HELD_OUT_CT_IDS` is never used to train the shipped default model,
so the main job can show an honest estimate on it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

HELD_OUT_CT_IDS = ("STS_012",)
SAMPLE_CT = "STS_012.nii.gz"
SAMPLE_RADIOGRAPH = "331_DDH_1.dcm"
SAMPLE_SIMULATED_RADIOGRAPH = "STS_012_simulated_standing.dcm"
"""Simulated from the held-out CT; ``<stem>_truth.json`` beside it holds its CT-derived ground truth."""


def sample_data_dir() -> Path:
    """The sample-data folder: ``$BMDGAN_SAMPLE_DATA``, else ``Resources/SampleData`` of the repository
    (a clone) or of the scripted-modules folder (an installed Slicer extension)."""
    configured = os.environ.get("BMDGAN_SAMPLE_DATA")
    package = Path(__file__).resolve().parent
    candidates = (
        [Path(configured)]
        if configured
        else [package.parents[1] / "Resources" / "SampleData", package.parent / "Resources" / "SampleData"]
    )
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise InputError(
        candidates[0], "sample data folder not found", "run from a clone of the repository or set BMDGAN_SAMPLE_DATA"
    )
