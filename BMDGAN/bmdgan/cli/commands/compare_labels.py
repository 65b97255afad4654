"""``bmdgan compare-labels``: the automatic femur, hip-bone and sacrum labels of a CT against a reference
segmentation (e.g. TotalSegmentator's), as a Dice table in JSON and Markdown."""

from __future__ import annotations

from bmdgan.cli.options import add_out

HELP = "Dice of the automatic femur, hip-bone and sacrum labels (both sides) against a reference segmentation"

STRUCTURES = ("femur_left", "femur_right", "hip_left", "hip_right", "sacrum")
GOALS = {"femur": 0.90, "hip": 0.85}
"""Dice goals of issue 18 (femur, hip bone); the sacrum has none."""


def add_arguments(parser) -> None:
    parser.add_argument("ct", help="CT volume (DICOM folder, .nii.gz, .nrrd, .mha) in HU")
    parser.add_argument(
        "--reference",
        required=True,
        nargs="+",
        help="reference segmentation: a folder of TotalSegmentator files (femur_left.nii.gz, "
        "hip_right.nii.gz, sacrum.nii.gz, ...), those files, or one multilabel file",
    )
    parser.add_argument(
        "--label-map",
        default="auto",
        help="convention of a multilabel reference: auto, project, totalsegmentator-v1, totalsegmentator-v2",
    )
    add_out(parser, "folder for label_dice.json and label_dice.md")


def _reference_paths(given: list[str]) -> list:
    """The files of the reference: a folder's structure files, or the given files."""
    from pathlib import Path

    from bmdgan.errors import InputError

    paths = []
    for item in map(Path, given):
        if item.is_dir():
            found = [p for name in STRUCTURES for p in sorted(item.glob(f"{name}.nii*"))]
            if not found:
                raise InputError(
                    item,
                    "no TotalSegmentator structure files (femur_left.nii.gz, ...) in this folder",
                    "give the folder of TotalSegmentator's single-structure output, or a multilabel file",
                )
            paths += found
        elif item.exists():
            paths.append(item)
        else:
            raise InputError(item, "reference segmentation not found", "check the path")
    return paths


def _reference_masks(paths: list, ct, convention: str) -> dict:
    """Reference masks by structure name (absent structures are left out)."""
    import numpy as np

    from bmdgan.ct import labels as L
    from bmdgan.ct.label_import import guess_convention, load_segmentation
    from bmdgan.errors import InputError
    from bmdgan.io import read_label_volume

    single = len(paths) == 1 and not paths[0].name.lower().endswith(".seg.nrrd")
    if single and (
        convention == "project"
        or convention == "auto"
        and guess_convention(set(int(v) for v in np.unique(read_label_volume(paths[0]).array))) == "project"
    ):
        raise InputError(
            paths[0],
            "a project label map does not say which side its labels 1-3 belong to",
            "give TotalSegmentator's files or its multilabel map as the reference",
        )
    try:
        labels = load_segmentation(paths, ct, "left", convention, bilateral=True).array
        sides = {
            "femur_left": L.femur_mask(labels),
            "hip_left": labels == L.PELVIS,
            "femur_right": labels == L.OTHER_FEMUR,
            "hip_right": labels == L.OTHER_PELVIS,
        }
    except InputError:  # no left femur in the reference: read it from the right side
        labels = load_segmentation(paths, ct, "right", convention, bilateral=True).array
        sides = {
            "femur_right": L.femur_mask(labels),
            "hip_right": labels == L.PELVIS,
            "femur_left": labels == L.OTHER_FEMUR,
            "hip_left": labels == L.OTHER_PELVIS,
        }
    sides["sacrum"] = labels == L.SACRUM
    return {name: mask for name, mask in sides.items() if mask.any()}


def _dice(ours, theirs) -> float | None:
    total = int(ours.sum() + theirs.sum())
    return round(2.0 * float((ours & theirs).sum()) / total, 4) if total else None


def _common_slices(ours, theirs):
    """Bool over the array's slowest axis (axial slices): the slices both masks reach into, from the lowest
    to the highest they share (where one label ends earlier than the other, e.g. with the CT or its region)."""
    import numpy as np

    both = np.nonzero(ours.any(axis=(1, 2)) & theirs.any(axis=(1, 2)))[0]
    inside = np.zeros(ours.shape[0], bool)
    if len(both):
        inside[both[0] : both[-1] + 1] = True
    return inside


def structure_row(ours, theirs, metal, voxel_cm3: float, goal: float | None) -> dict:
    """One row of the table: Dice over the whole CT, over the axial slices both labels reach
    (:func:`_common_slices`) and with the metal voxels (CT > ``METAL_HU``) left out of both, the volumes
    (cm3) and the metal each label holds (cm3)."""
    common = _common_slices(ours, theirs)[:, None, None]
    return {
        "dice": _dice(ours, theirs),
        "dice_common_slices": _dice(ours & common, theirs & common),
        "dice_without_metal": _dice(ours & ~metal, theirs & ~metal),
        "automatic_cm3": round(float(ours.sum() * voxel_cm3), 2),
        "reference_cm3": round(float(theirs.sum() * voxel_cm3), 2),
        "metal_automatic_cm3": round(float((ours & metal).sum() * voxel_cm3), 2),
        "metal_reference_cm3": round(float((theirs & metal).sum() * voxel_cm3), 2),
        "goal": goal,
    }


def _markdown(record: dict) -> str:
    def number(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"Automatic labels of `{record['ct']}` against `{', '.join(record['reference'])}`.",
        "",
        "| structure | Dice | Dice, common slices | Dice, metal left out | automatic (cm3) | reference (cm3) "
        "| metal in automatic / reference (cm3) | goal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in record["structures"].items():
        goal = "-" if row["goal"] is None else f">= {row['goal']:.2f}"
        lines.append(
            f"| {name} | {number(row['dice'], 3)} | {number(row['dice_common_slices'], 3)} "
            f"| {number(row['dice_without_metal'], 3)} | {row['automatic_cm3']:.1f} | {row['reference_cm3']:.1f} "
            f"| {row['metal_automatic_cm3']:.1f} / {row['metal_reference_cm3']:.1f} | {goal} |"
        )
    lines += [""] + [f"- {note}" for note in record["notes"]]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    import json
    import time
    from pathlib import Path

    import numpy as np

    from bmdgan.atomic import atomic_write_text
    from bmdgan.ct.pipeline import METAL_HU, body_of, femurs_by_side, pelvis_labels
    from bmdgan.errors import InputError
    from bmdgan.io import read_ct

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "the output exists and is not a folder", "give a folder for -o/--out")
    ct = read_ct(args.ct)
    reference = _reference_masks(_reference_paths(args.reference), ct, args.label_map)
    seconds = {}
    started = time.perf_counter()
    body_of(ct)
    seconds["body"] = time.perf_counter() - started
    started = time.perf_counter()
    femurs = femurs_by_side(ct)
    notes = [note for seg in femurs.values() for note in seg.notes]
    seconds["femurs"] = time.perf_counter() - started
    automatic = {f"femur_{side}": seg.femur for side, seg in femurs.items()}
    if femurs:
        started = time.perf_counter()
        pelvis = pelvis_labels(ct)
        seconds["pelvis"] = time.perf_counter() - started
        automatic.update({f"hip_{side}": mask for side, mask in pelvis.hip.items()})
        automatic["sacrum"] = pelvis.sacrum
        notes += pelvis.notes
    for side, seg in femurs.items():
        metal_cm3 = float((seg.metal & seg.femur).sum() * ct.voxel_volume_mm3() / 1000.0)
        if metal_cm3 > 0.1:
            notes.append(f"metal in the {side} femur ({metal_cm3:.1f} cm3): its automatic label is affected")
    notes.append("the reference is a segmentation too (automatic ones are not truth): Dice measures agreement")
    voxel_cm3 = ct.voxel_volume_mm3() / 1000.0
    metal = ct.array > METAL_HU
    structures = {}
    for name in STRUCTURES:
        ours = automatic.get(name)
        theirs = reference.get(name)
        if ours is None and theirs is None:
            continue
        ours = np.zeros(ct.array.shape, bool) if ours is None else ours
        theirs = np.zeros(ct.array.shape, bool) if theirs is None else theirs
        structures[name] = structure_row(ours, theirs, metal, voxel_cm3, GOALS.get(name.split("_")[0]))
    record = {
        "ct": str(args.ct),
        "reference": [str(r) for r in args.reference],
        "structures": structures,
        "seconds": {step: round(value, 2) for step, value in seconds.items()},
        "notes": notes,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "label_dice.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(out / "label_dice.md", _markdown(record))
    for name, row in structures.items():
        dice = "-" if row["dice"] is None else f"{row['dice']:.3f}"
        common = "-" if row["dice_common_slices"] is None else f"{row['dice_common_slices']:.3f}"
        print(
            f"{name:12s} Dice {dice} (common slices {common})  "
            f"({row['automatic_cm3']:.1f} vs {row['reference_cm3']:.1f} cm3)"
        )
    print(f"written: {out / 'label_dice.json'}, {out / 'label_dice.md'}")
    return 0
