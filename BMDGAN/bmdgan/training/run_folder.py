"""The run folder's files, read and written here only: ``run.json`` (the settings a run was trained with) and each
stage's ``history.jsonl`` (one JSON line per optimiser step: epoch, step, losses).

The trainers, the regression stage, the model card and the Slicer Training module all go through these functions,
so the format has one owner. ``history.jsonl`` is appended to as epochs finish; a line torn by a kill is skipped
on reading and dropped on :func:`truncate_history`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_write_text
from ..io.members import read_json_object

RUN_SETTINGS = "run.json"
HISTORY = "history.jsonl"


def write_run_settings(run_folder: Path, settings: dict) -> None:
    atomic_write_text(Path(run_folder) / RUN_SETTINGS, json.dumps(settings, indent=2))


def read_run_settings(run_folder: str | Path) -> dict | None:
    """``run.json`` of a run folder (None when the folder has none yet); InputError when it is not a JSON object."""
    path = Path(run_folder) / RUN_SETTINGS
    return read_json_object(path, "training run folder") if path.exists() else None


def history_path(stage_folder: str | Path) -> Path:
    return Path(stage_folder) / HISTORY


def append_history(stage_folder: str | Path, records: list[dict]) -> None:
    """Append one epoch's step records (the stage folder is created when missing)."""
    path = history_path(stage_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as stream:
        stream.writelines(json.dumps(record) + "\n" for record in records)


def _records(path: Path) -> list[dict]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill
        if isinstance(record, dict) and "epoch" in record:
            records.append(record)
    return records


def read_history(stage_folder: str | Path) -> list[dict]:
    """A stage's logged steps, oldest first (empty before its first epoch)."""
    path = history_path(stage_folder)
    return _records(path) if path.exists() else []


def truncate_history(stage_folder: str | Path, epoch: int) -> None:
    """Forget logged steps of ``epoch`` and later: they are about to be trained again (the run was killed after
    logging them, before their checkpoint; with no checkpoint, ``epoch`` is 0). A torn line is dropped too."""
    path = history_path(stage_folder)
    if path.exists():
        kept = [record for record in _records(path) if record["epoch"] < epoch]
        atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))
