"""Shared pieces of the CT commands (calibrate, segment, landmarks, measure-ct, ct-montage).

Reading the optional inputs (segmentation, landmarks, calibration) the same way everywhere, and a progress
display over the pipeline steps. Nothing here imports numpy until a command runs (``--help`` stays light).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..io.volume import Volume


def add_common_inputs(parser, labels: bool = True, landmarks: bool = True, calibration: bool = True) -> None:
    """Arguments for the optional inputs every CT command accepts."""
    parser.add_argument("--side", choices=("auto", "left", "right"), default="auto",
                        help="hip to analyse (auto: the best femoral head in view; left/right choose between two "
                             "hips, and pick femur_<side> out of a TotalSegmentator segmentation)")
    if labels:
        parser.add_argument("--labels", nargs="+", metavar="SEGMENTATION",
                            help="existing bone segmentation instead of the automatic one: a project label map "
                                 "(1 pelvis, 2 femur), TotalSegmentator femur_*/hip_* files or its multilabel file, "
                                 "or a Slicer .seg.nrrd")
        parser.add_argument("--label-map", default="auto",
                            help="label convention of a multilabel --labels file: auto, project, "
                                 "totalsegmentator-v1, totalsegmentator-v2")
    if landmarks:
        parser.add_argument("--landmarks", metavar="FILE",
                            help="landmarks (.mrk.json or .fcsv) that override the automatic ones by name")
    if calibration:
        parser.add_argument("--calibration", metavar="JSON",
                            help="calibration record from 'bmdgan calibrate' (default: phantomless calibration)")


def read_optional_inputs(args, ct: Volume) -> dict:
    """Keyword arguments for :func:`bmdgan.ct.pipeline.analyse_ct` from the parsed command line."""
    from ..ct.calibration import Calibration
    from ..ct.label_import import load_segmentation
    from ..ct.markups import read_landmark_file

    inputs = {"side": args.side}
    if getattr(args, "labels", None):
        side = args.side
        if side == "auto":
            from ..errors import InputError
            raise InputError(None, "--labels needs --side left or --side right (which femur to take)",
                             "add --side left or --side right")
        inputs["label_volume"] = load_segmentation(args.labels, ct, side, args.label_map)
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

    bar = progress_bar(total=len(steps), desc=description, unit="step", file=sys.stderr, disable=not enabled,
               bar_format="{desc}: {n_fmt}/{total_fmt} {postfix} [{elapsed}]")
    seen: list[str] = []

    def advance(step: str) -> None:
        if seen:
            bar.update(1)
        seen.append(step)
        bar.set_postfix_str(step)

    try:
        yield advance
        bar.update(len(steps) - bar.n)
    finally:
        bar.close()


def case_name(path: str | Path) -> str:
    """File or folder name without the volume suffixes (STS_001.nii.gz -> STS_001)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
