"""Shared pieces of the CT commands (calibrate, segment, landmarks, measure-ct, ct-montage).

Reading the optional inputs (segmentation, landmarks, calibration) the same way everywhere, and a progress
display over the pipeline steps. Nothing here imports numpy until a command runs (``--help`` stays light).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..io.volume import Volume

SIDE_HELP = (
    "hip(s) to analyse, read from the anatomy (LPS +x is the patient's left): left or right (that hip; a "
    "side the CT does not hold is an error naming the sides it holds), both (every hip in the CT: two on a "
    "whole-pelvis CT, one on a thigh crop), auto (one hip: the best seen without an implant); left/right "
    "also pick femur_<side> out of a TotalSegmentator segmentation"
)


def add_common_inputs(
    parser, labels: bool = True, landmarks: bool = True, calibration: bool = True, default_side: str = "auto"
) -> None:
    """Arguments for the optional inputs every CT command accepts (``calibration``: the measuring commands,
    which also take ``--allow-metal``)."""
    parser.add_argument(
        "--side",
        choices=("left", "right", "both", "auto"),
        default=default_side,
        help=f"{SIDE_HELP} (default: {default_side})",
    )
    if labels:
        parser.add_argument(
            "--labels",
            nargs="+",
            metavar="SEGMENTATION",
            help="existing bone segmentation instead of the automatic one: a project label map "
            "(1 pelvis, 2 femur), TotalSegmentator femur_*/hip_* files or its multilabel file, "
            "or a Slicer .seg.nrrd",
        )
        parser.add_argument(
            "--label-map",
            default="auto",
            help="label convention of a multilabel --labels file: auto, project, "
            "totalsegmentator-v1, totalsegmentator-v2",
        )
    if landmarks:
        parser.add_argument(
            "--landmarks",
            metavar="FILE",
            help="landmarks (.mrk.json or .fcsv) that override the automatic ones by name",
        )
    if calibration:
        parser.add_argument(
            "--calibration",
            metavar="JSON",
            help="calibration record from 'bmdgan calibrate' (default: phantomless calibration)",
        )
        parser.add_argument(
            "--allow-metal",
            action="store_true",
            help="measure a hip with metal (an implant) in its proximal-femur region, the metal left "
            "out of the density (default: such a hip is refused)",
        )


def read_optional_inputs(args, ct: Volume) -> dict:
    """Keyword arguments for :func:`bmdgan.ct.pipeline.analyse_ct` from the parsed command line."""
    from ..ct.calibration import Calibration
    from ..ct.label_import import load_segmentation
    from ..ct.markups import read_landmark_file

    inputs = {"side": args.side}
    if getattr(args, "allow_metal", False):
        inputs["allow_metal"] = True
    for option in ("labels", "landmarks"):
        if getattr(args, option, None) and args.side not in ("left", "right"):
            raise InputError(
                None,
                f"--{option} needs --side left or --side right (which femur they belong to)",
                "add --side left or --side right",
            )
    if getattr(args, "labels", None):
        inputs["label_volume"] = load_segmentation(args.labels, ct, args.side, args.label_map)
    if getattr(args, "landmarks", None):
        inputs["landmark_points"] = read_landmark_file(args.landmarks)
    if getattr(args, "calibration", None):
        inputs["calibration"] = Calibration.load(args.calibration)
    return inputs


@contextmanager
def step_progress(steps: tuple[str, ...], description: str, enabled: bool = True):
    """A progress display that advances once per named step; yields the callback for
    ``analyse_ct(progress=...)``."""
    from ..progress import progress_bar

    bar = progress_bar(
        total=len(steps),
        desc=description,
        unit="step",
        file=sys.stderr,
        disable=not enabled,
        bar_format="{desc}: {n_fmt}/{total_fmt} {postfix} [{elapsed}]",
    )
    seen: list[str] = []

    def advance(step: str) -> None:
        if seen:
            bar.update(1)
        if bar.n >= bar.total:  # the next hip of a bilateral CT
            bar.total += len(steps)
        seen.append(step)
        bar.set_postfix_str(step)

    try:
        yield advance
        bar.update(bar.total - bar.n)
    finally:
        bar.close()


def side_path(path: str | Path, side: str) -> Path:
    """``path`` with ``-<side>`` before its suffix (labels.nii.gz -> labels-left.nii.gz): one file per hip."""
    path = Path(path)
    name = path.name
    stem = next((name[: -len(s)] for s in (".mrk.json", ".seg.nrrd", ".nii.gz") if name.lower().endswith(s)), path.stem)
    return path.with_name(f"{stem}-{side}{name[len(stem) :]}")


def case_name(path: str | Path) -> str:
    """File or folder name without the volume suffixes (STS_001.nii.gz -> STS_001)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def ct_paths(texts: list[str], exclude: tuple[str, ...] | list[str] = ()) -> list[Path]:
    """CT files named directly or found in folders (by suffix), less the CT ids in ``exclude``."""
    from bmdgan.cohort.generator import ct_id_of
    from bmdgan.io.ct import VOLUME_SUFFIXES

    paths = []
    for text in texts:
        path = Path(text)
        paths += (
            sorted(p for p in path.iterdir() if p.name.lower().endswith(VOLUME_SUFFIXES)) if path.is_dir() else [path]
        )
    return [p for p in paths if ct_id_of(p) not in set(exclude)]


def add_segmentation(parser) -> None:
    """``--segmentation CT_ID=SIDE:FILE[,FILE]`` (repeatable), read by :func:`segmentations_of`."""
    parser.add_argument(
        "--segmentation",
        action="append",
        default=[],
        metavar="CT_ID=SIDE:FILE[,FILE]",
        help="use these label files for a CT's femur (e.g. TotalSegmentator's femur_right and hip_right), repeatable",
    )


def segmentations_of(items: list[str]) -> dict[str, tuple[str, list[Path]]]:
    """{CT id: (side, label files)} from ``--segmentation CT_ID=SIDE:FILE[,FILE]`` values."""
    segmentations = {}
    for item in items:
        try:
            ct_id, rest = item.split("=", 1)
            side, files = rest.split(":", 1)
        except ValueError:
            raise InputError(
                None,
                f"--segmentation {item!r} is not CT_ID=SIDE:FILE[,FILE]",
                "e.g. example_ct=right:femur_right.nii.gz,hip_right.nii.gz",
            ) from None
        segmentations[ct_id] = (side, [Path(f) for f in files.split(",")])
    return segmentations
