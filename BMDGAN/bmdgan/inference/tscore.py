"""T-score and WHO category of a DXA-like areal BMD against a young-adult reference population.

References are data (``resources/tscore_references.json``); the default is the NHANES III total-hip
reference for women, which matches the proximal-femur (total-hip-like) region this project measures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

REFERENCES_FILE = Path(__file__).resolve().parents[1] / "resources" / "tscore_references.json"
OSTEOPENIA_BELOW = -1.0
OSTEOPOROSIS_AT_OR_BELOW = -2.5


@dataclass(frozen=True)
class Reference:
    name: str
    mean_g_cm2: float
    sd_g_cm2: float
    site: str
    population: str


def load_reference(name: str | None = None, path: Path = REFERENCES_FILE) -> Reference:
    data = json.loads(Path(path).read_text())
    name = name or data["default"]
    if name not in data["references"]:
        raise InputError(path, f"no T-score reference named {name!r}", f"use one of {sorted(data['references'])}")
    values = data["references"][name]
    if values["sd_g_cm2"] <= 0:
        raise InputError(path, f"reference {name!r} has a non-positive SD", "fix the reference table")
    return Reference(name, values["mean_g_cm2"], values["sd_g_cm2"], values["site"], values["population"])


def t_score(bmd_g_cm2: float, reference: Reference) -> float:
    """(BMD - young-adult mean) / young-adult SD."""
    return (bmd_g_cm2 - reference.mean_g_cm2) / reference.sd_g_cm2


def bmd_at_t_score(t: float, reference: Reference) -> float:
    """The aBMD (g/cm2) whose T-score is ``t``."""
    return reference.mean_g_cm2 + t * reference.sd_g_cm2


def who_category(t: float) -> str:
    """WHO: "normal" (T >= -1), "osteopenia" (-2.5 < T < -1), "osteoporosis" (T <= -2.5)."""
    if t <= OSTEOPOROSIS_AT_OR_BELOW:
        return "osteoporosis"
    if t < OSTEOPENIA_BELOW:
        return "osteopenia"
    return "normal"
