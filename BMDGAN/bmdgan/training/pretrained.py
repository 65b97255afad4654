"""Starting a run from another run's weights: pretraining the decomposition on a larger set of images (the route of
Gu et al., SASHIMI 2024), then training the usual recipe from where it ended.

The pretrained run's last stage-2 generator and discriminator start this run's stage 2 in place of stage 1's
weights (hierarchical learning is itself a pretraining, and the pretrained run went through it), so stage 1 is not
trained. A pretraining run that learned from a CT this run holds
out would make its held-out figures a test on a seen bone, so such a run is refused, as is one made for another
backbone or input size.
"""

from __future__ import annotations

from pathlib import Path

from ..datasets.folds import source_cts_of, split
from ..datasets.format import CaseRecord, read_manifest
from ..errors import InputError
from .checkpoint import latest_checkpoint, weights_sha256
from .config import TrainingConfig
from .run_folder import read_run_settings


def _source_cts(records: list[CaseRecord]) -> set[str]:
    """Every real CT (or real patient) whose images are among ``records``, donors of transplanted femurs included."""
    return {ct for record in records for ct in source_cts_of(record)}


def _pretraining_cts(pretrained_run: Path, settings: dict) -> set[str]:
    """The source CTs a run trained on, read from the dataset its ``run.json`` names (every pose: the superset)."""
    dataset = Path(settings["dataset"])
    if not (dataset / "manifest.csv").is_file():
        raise InputError(
            pretrained_run,
            f"its dataset {dataset} is gone, so it cannot be checked that it never saw the CTs held out here",
            "restore that dataset folder, or pretrain again",
        )
    records = read_manifest(dataset)
    return _source_cts(records if settings["fold"] is None else split(records, settings["fold"])[0])


def pretrained_start(
    pretrained_run: str | Path, dataset_folder: Path, fold: int | None, config: TrainingConfig
) -> tuple[Path, str]:
    """(checkpoint, its generator's SHA-256): the last stage-2 weights of ``pretrained_run``, checked to fit
    ``config``'s backbone and input size and to have seen no CT that ``fold`` of ``dataset_folder`` holds out."""
    pretrained_run = Path(pretrained_run)
    settings = read_run_settings(pretrained_run)
    if settings is None:
        raise InputError(pretrained_run, "is not a training run (no run.json)", "give a run folder of bmdgan train")
    made_for = {"backbone": settings["config"]["backbone"], "image_shape": settings["config"]["image_shape"]}
    wanted = {"backbone": config.backbone, "image_shape": list(config.image_shape)}
    if made_for != wanted:
        raise InputError(
            pretrained_run,
            f"its weights were made for {made_for}, this run needs {wanted}",
            "pretrain with the same backbone and image_shape as this configuration",
        )
    checkpoint = latest_checkpoint(pretrained_run / "stage2" / "checkpoints")
    if checkpoint is None:
        raise InputError(pretrained_run, "has no stage-2 weights", "train its stage 2 first")
    if fold is not None:
        held_out = _source_cts(split(read_manifest(dataset_folder), fold)[1])
        seen = sorted(held_out & _pretraining_cts(pretrained_run, settings))
        if seen:
            raise InputError(
                pretrained_run,
                f"it trained on {', '.join(seen)}, which fold {fold} holds out here",
                "pretrain on a run that held out the same CTs: the same fold of cohorts folded alike by CT",
            )
    return checkpoint, weights_sha256(checkpoint, "generator")


def check_same_start(run_folder: Path, start_sha256: str | None) -> None:
    """A run's first stage starts once: resumed or extended with another pretrained start (or none where it had
    one), its ``run.json`` would name weights it never started from."""
    recorded = read_run_settings(run_folder)
    if recorded is None:
        return
    had = (recorded.get("pretrained") or {}).get("generator_sha256")
    if had != start_sha256:
        started = "a random start" if had is None else f"the pretrained run {recorded['pretrained']['run']}"
        raise InputError(
            run_folder,
            f"this run was started from {started}, not from the weights given now",
            "pass the run's own --pretrained (or none), or train into a new --out folder",
        )
