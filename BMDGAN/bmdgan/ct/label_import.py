"""Read an existing bone segmentation into the project's label convention (:mod:`.labels`).

Accepted as they come:

* the project's own label map (values 0-3: pelvis 1, femur 2, PF region 3);
* TotalSegmentator output: the single-structure files (``femur_left.nii.gz``, ``hip_right.nii.gz``, ...,
  float 0/1 masks) or its multilabel file (v1 values 88-92 or v2 values 75-78, see
  ``resources/label_maps.json``);
* a Slicer segmentation file (``.seg.nrrd``) whose segments are named like those structures.

Only the measured side is kept: ``femur_<side>`` becomes femur (2), ``hip_<side>`` pelvis (1).
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

STRUCTURE_FILES = ("femur_left", "femur_right", "hip_left", "hip_right")


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
    if values <= {0, 1, 2, 3}:
        return "project"
    present = {name: len({mapping[s] for s in STRUCTURE_FILES} & values) for name, mapping in label_maps().items()}
    ranked = sorted(present.items(), key=lambda item: -item[1])
    if ranked[0][1] >= 2 and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
        return ranked[0][0]
    raise InputError(None, f"cannot tell which label convention this map uses (values {sorted(values)[:12]}...)",
                     "give --label-map totalsegmentator-v1 or totalsegmentator-v2, or a project label map (1 pelvis, 2 femur)")


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


def load_segmentation(paths: list[str | Path], ct: Volume, side: str, convention: str = "auto") -> Volume:
    """A label map in the project convention on the CT's grid, for the femur of ``side`` ('left'/'right').

    ``paths``: one multilabel file, or TotalSegmentator single-structure files (any of femur_<side> and
    hip_<side>; at least the femur). ``convention``: 'auto', 'project' or a name in label_maps.json.
    """
    paths = [Path(p) for p in paths]
    if side not in ("left", "right"):
        raise InputError(None, f"side must be 'left' or 'right' to pick structures from a segmentation, got '{side}'",
                         "give --side left or --side right")
    structures = {_structure_name(p): p for p in paths if _structure_name(p)}
    if structures:
        femur_path = structures.get(f"femur_{side}")
        if femur_path is None:
            raise InputError(paths[0], f"no femur_{side} file among the given segmentation files",
                             f"add femur_{side}.nii.gz or choose the other side")
        femur = read_label_volume(femur_path, like=ct).array > 0
        pelvis = None
        if f"hip_{side}" in structures:
            pelvis = read_label_volume(structures[f"hip_{side}"], like=ct).array > 0
        return ct.with_array(L.compose(pelvis, femur), unit="label")
    if len(paths) != 1:
        raise InputError(paths[0], "several segmentation files, but not named like TotalSegmentator's "
                         "(femur_left, femur_right, hip_left, hip_right)", "give one multilabel file or those files")
    path = paths[0]
    volume = read_label_volume(path, like=ct)
    values = set(int(v) for v in np.unique(volume.array))
    if path.name.lower().endswith(".seg.nrrd"):
        names = _seg_nrrd_names(path)
        femur_values = [v for v, n in names.items() if n in (f"femur_{side}", "femur")]
        pelvis_values = [v for v, n in names.items() if n in (f"hip_{side}", "pelvis", "hip")]
        if not femur_values:
            raise InputError(path, f"no segment named femur_{side} in the segmentation", "name the femur segment femur_left/femur_right")
        return ct.with_array(L.compose(np.isin(volume.array, pelvis_values), np.isin(volume.array, femur_values)), unit="label")
    convention = guess_convention(values) if convention == "auto" else convention
    if convention == "project":
        label_map = volume.array.astype(np.uint8)
        if not L.femur_mask(label_map).any():
            raise InputError(path, "the label map has no femur (label 2 or 3)", "check the label convention")
        return ct.with_array(label_map, unit="label")
    mapping = label_maps().get(convention)
    if mapping is None:
        raise InputError(path, f"unknown label convention '{convention}'", f"use project or one of {', '.join(label_maps())}")
    femur = volume.array == mapping[f"femur_{side}"]
    if not femur.any():
        raise InputError(path, f"no femur_{side} (label {mapping[f'femur_{side}']}) in the segmentation",
                         "choose the other side or check the label convention")
    pelvis = volume.array == mapping[f"hip_{side}"]
    return ct.with_array(L.compose(pelvis, femur), unit="label")
