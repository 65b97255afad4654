"""The evaluation folder's files, read and written here only: ``metrics.json`` (agreement per method, target and
pose) and ``predictions.csv`` (one row per image: case, patient, side, pose, PF-DRR PSNR and Dice, then
``<target>_truth`` and ``<target>_<method>`` columns, and ``<target>_lower``/``<target>_upper`` for a model with
prediction intervals). ``bmdgan evaluate``, cross-validation, the model card and
the Slicer Training module all go through these functions."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import InputError
from ..io.members import read_json_object

METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
INTERVAL_BOUNDS = ("lower", "upper")


def estimate_columns(header) -> list[tuple[str, str, str]]:
    """(method, target, column) of every ``<target>_<method>`` estimate column of ``predictions.csv``'s header
    (its truth and interval-bound columns left out)."""
    targets = [key[: -len("_truth")] for key in header if key.endswith("_truth")]
    return [
        (key[len(target) + 1 :], target, key)
        for target in targets
        for key in header
        if key.startswith(f"{target}_") and key[len(target) + 1 :] not in ("truth", *INTERVAL_BOUNDS)
    ]


def write_metrics(folder: Path, report: dict) -> None:
    atomic_write_text(Path(folder) / METRICS, json.dumps(report, indent=2))


def read_metrics(folder: str | Path) -> dict:
    """``metrics.json`` of an evaluation folder; InputError naming the folder when it has none."""
    path = Path(folder) / METRICS
    if not path.is_file():
        raise InputError(folder, f"has no {METRICS}", "evaluate the run first (bmdgan evaluate)")
    return read_json_object(path, "bmdgan evaluate --out folder")


def write_predictions(folder: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(Path(folder) / PREDICTIONS, buffer.getvalue())


def read_predictions(folder: str | Path) -> list[dict[str, str]]:
    """``predictions.csv`` rows as text, keyed by its header; InputError when missing or empty."""
    path = Path(folder) / PREDICTIONS
    if not path.is_file():
        raise InputError(folder, f"has no {PREDICTIONS}", "evaluate the run first (bmdgan evaluate)")
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        raise InputError(path, "has no predictions", "evaluate the run again")
    return rows
