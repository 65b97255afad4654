"""Read an existing bone segmentation into the project's label convention (:mod:`.labels`).

Accepted as they come:

* the project's own label map (values 0-6, see :mod:`.labels`: pelvis 1, femur 2, PF region 3, ...);
* TotalSegmentator output: the single-structure files (``femur_left.nii.gz``, ``hip_right.nii.gz``, ...,
  float 0/1 masks) or its multilabel file (v1 values 88-92 or v2 values 75-78, see
  ``resources/label_maps.json``);
* a Slicer segmentation file (``.seg.nrrd``) whose segments are named like those structures.

The measured side: ``femur_<side>`` becomes femur (2), ``hip_<side>`` pelvis (1). With ``bilateral`` the
rest of the pelvis is kept too: the other side's femur (4) and hip bone (5), and the sacrum (6).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.ct import read_label_volume
from ..io.volume import Volume
from . import labels as L

STRUCTURE_FILES = ("femur_left", "femur_right", "hip_left", "hip_right", "sacrum")
SIDE_STRUCTURES = ("femur_left", "femur_right", "hip_left", "hip_right")
"""Structures whose labels tell a convention apart (the sacrum's value is shared by chance with other maps)."""


@lru_cache(maxsize=1)
def label_maps() -> dict:
    """Known multilabel conventions (name -> structure -> label value)."""
    text = resources.files("bmdgan").joinpath("resources/label_maps.json").read_text()
    return {name: value for name, value in json.loads(text).items() if not name.startswith("_")}


def _structure_name(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name if name in STRUCTURE_FILES else None


def guess_convention(values: set[int]) -> str:
    """Which convention a multilabel map follows: the one whose femur and hip labels are most present."""
    if values <= L.VALUES:
        return "project"
    present = {name: len({mapping[s] for s in SIDE_STRUCTURES} & values) for name, mapping in label_maps().items()}
    ranked = sorted(present.items(), key=lambda item: -item[1])
    if ranked[0][1] >= 2 and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
        return ranked[0][0]
    raise InputError(
        None,
        f"cannot tell which label convention this map uses (values {sorted(values)[:12]}...)",
        "give --label-map totalsegmentator-v1 or totalsegmentator-v2, or a project label map (1 pelvis, 2 femur)",
    )


def _seg_nrrd_names(path: Path) -> dict[int, str]:
    """Label value -> segment name of a Slicer .seg.nrrd (single layer)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    names = {}
    for key in reader.GetMetaDataKeys():
        if key.startswith("Segment") and key.endswith("_Name"):
            prefix = key[: -len("_Name")]
            value_key = prefix + "_LabelValue"
            if value_key in reader.GetMetaDataKeys():
                names[int(reader.GetMetaData(value_key))] = reader.GetMetaData(key).strip().lower().replace(" ", "_")
    return names


def _other(side: str) -> str:
    return "right" if side == "left" else "left"


def _compose(masks: dict[str, np.ndarray | None], side: str, bilateral: bool) -> np.ndarray:
    """Project labels from structure masks (``femur_left``, ``hip_right``, ``sacrum``, ...; missing ones None)."""
    extra = {}
    if bilateral:
        other = _other(side)
        extra = {
            "other_femur": masks.get(f"femur_{other}"),
            "other_pelvis": masks.get(f"hip_{other}"),
            "sacrum": masks.get("sacrum"),
        }
    return L.compose(masks.get(f"hip_{side}"), masks[f"femur_{side}"], **extra)


def load_segmentation(
    paths: list[str | Path], ct: Volume, side: str, convention: str = "auto", bilateral: bool = False
) -> Volume:
    """A label map in the project convention on the CT's grid, for the femur of ``side`` ('left'/'right').

    ``paths``: one multilabel file, or TotalSegmentator single-structure files (any of femur_<side>,
    hip_<side> and, with ``bilateral``, the other side's and sacrum; at least the femur). ``convention``:
    'auto', 'project' or a name in label_maps.json. ``bilateral``: keep the other side's femur and hip bone
    and the sacrum too (labels 4, 5, 6); without it only the measured side (labels 1-3) is kept.
    """
    paths = [Path(p) for p in paths]
    if side not in ("left", "right"):
        raise InputError(
            None,
            f"side must be 'left' or 'right' to pick structures from a segmentation, got '{side}'",
            "give --side left or --side right",
        )
    structures = {_structure_name(p): p for p in paths if _structure_name(p)}
    if structures:
        if f"femur_{side}" not in structures:
            raise InputError(
                paths[0],
                f"no femur_{side} file among the given segmentation files",
                f"add femur_{side}.nii.gz or choose the other side",
            )
        wanted = {f"femur_{side}", f"hip_{side}"}
        if bilateral:
            wanted |= {f"femur_{_other(side)}", f"hip_{_other(side)}", "sacrum"}
        masks = {
            name: read_label_volume(path, like=ct).array > 0 for name, path in structures.items() if name in wanted
        }
        return ct.with_array(_compose(masks, side, bilateral), unit="label")
    if len(paths) != 1:
        raise InputError(
            paths[0],
            "several segmentation files, but not named like TotalSegmentator's "
            "(femur_left, femur_right, hip_left, hip_right, sacrum)",
            "give one multilabel file or those files",
        )
    path = paths[0]
    volume = read_label_volume(path, like=ct)
    values = set(int(v) for v in np.unique(volume.array))
    if path.name.lower().endswith(".seg.nrrd"):
        names = _seg_nrrd_names(path)
        aliases = {
            f"femur_{side}": (f"femur_{side}", "femur"),
            f"hip_{side}": (f"hip_{side}", "pelvis", "hip"),
            f"femur_{_other(side)}": (f"femur_{_other(side)}",),
            f"hip_{_other(side)}": (f"hip_{_other(side)}",),
            "sacrum": ("sacrum",),
        }
        masks = {
            structure: np.isin(volume.array, [v for v, n in names.items() if n in accepted])
            for structure, accepted in aliases.items()
        }
        if not masks[f"femur_{side}"].any():
            raise InputError(
                path,
                f"no segment named femur_{side} in the segmentation",
                "name the femur segment femur_left/femur_right",
            )
        return ct.with_array(_compose(masks, side, bilateral), unit="label")
    convention = guess_convention(values) if convention == "auto" else convention
    if convention == "project":
        label_map = volume.array.astype(np.uint8)
        if not L.femur_mask(label_map).any():
            raise InputError(path, "the label map has no femur (label 2 or 3)", "check the label convention")
        if not bilateral:
            label_map[label_map > L.PF_REGION] = L.BACKGROUND
        return ct.with_array(label_map, unit="label")
    mapping = label_maps().get(convention)
    if mapping is None:
        raise InputError(
            path, f"unknown label convention '{convention}'", f"use project or one of {', '.join(label_maps())}"
        )
    masks = {structure: volume.array == value for structure, value in mapping.items()}
    if not masks[f"femur_{side}"].any():
        raise InputError(
            path,
            f"no femur_{side} (label {mapping[f'femur_{side}']}) in the segmentation",
            "choose the other side or check the label convention",
        )
    return ct.with_array(_compose(masks, side, bilateral), unit="label")
