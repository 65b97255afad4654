"""A real CT made ready for the cohort: HU, calibrated density, masks, landmarks and the linear parts of its
CT-aBMD and vBMD, cached on disk (``<ct_id>.npz`` + ``<ct_id>.json``) so that workers load it in a blink.

Because aBMD and vBMD are linear in the mineral (the PF region and its projection do not depend on density),
each is stored as two components, trabecular and cortical: a virtual patient with factors (k_trab, k_cort) has
aBMD = k_trab * a_trab + k_cort * a_cort, and the same for vBMD.

A CT that holds both hips is prepared once per side, each under its own key (``<ct_id>_left``,
``<ct_id>_right``; a CT prepared without a side keeps ``<ct_id>``), and ``<ct_id>.sides.json`` records which
sides were prepared and why any was not. The HU kept for projection are set to air outside the patient's body
(couch, wires), and the body mask is kept with the arrays.

A hip with an implant in its PF region is refused, unless it is prepared with ``allow_metal`` (the metal left out
of its density) for the hip detector's views, which need every hip a radiograph shows: its record then holds the
metal's volume, and :func:`prepared_bones` lists it only for callers that ask for such hips, so no cohort, model or
BMD figure uses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..ct import labels as L
from ..ct.grid import index_to_lps
from ..ct.hips import MIN_IMPLANT_CM3
from ..ct.label_import import load_segmentation  # automatic femur is not good enough
from ..datasets.normalise import NECK_POINT_MM
from ..errors import InputError
from ..io import Volume, VolumeGeometry, read_ct


@dataclass
class PreparedCT:
    ct_id: str
    hu: Volume
    density_mg_cm3: np.ndarray
    bone_mask: np.ndarray
    pf_mask: np.ndarray
    head_centre_lps: np.ndarray
    shaft_point_lps: np.ndarray
    side: str
    abmd_components_g_cm2: tuple[float, float]
    vbmd_components_mg_cm3: tuple[float, float]
    calibration: dict
    frame_axes: np.ndarray
    """3x3, rows: the neutral frame's lateral (along the neck), AP and up (along the shaft) LPS unit vectors:
    the anatomical frame the cohort views the hip in (DXA-like positioning), whatever the CT header says."""
    body_mask: np.ndarray | None = None
    """bool [k, j, i]: the patient's body (the HU outside it are air); None for caches made before body masks."""
    key: str = ""
    """Cache key: ``<ct_id>_<side>`` for one side of a CT prepared side by side, else the CT id."""
    femur_mask: np.ndarray | None = None
    """bool [k, j, i]: the measured side's femur (PF region included); None for caches made before it was kept."""
    donor_ct: str = ""
    """The CT this hip's femur came from when it was placed into ``ct_id``'s body (:mod:`bmdgan.cohort.transplant`):
    a second source, so folds by CT keep it away from both CTs' held-out folds; empty for a CT's own femur."""
    metal_in_pf_cm3: float = 0.0
    """Metal in the PF region (cm3): above :data:`bmdgan.ct.hips.MIN_IMPLANT_CM3` only for a hip prepared with
    ``allow_metal``, which only the detector's views use (:func:`prepared_bones`)."""

    @property
    def cache_key(self) -> str:
        return self.key or self.ct_id

    @property
    def implanted(self) -> bool:
        """Whether this hip was prepared with an implant in its PF region (``allow_metal``): detector views only."""
        return implanted(self.metal_in_pf_cm3)

    @property
    def neck_point_lps(self) -> np.ndarray:
        """The point :data:`NECK_POINT_MM` from the head centre along the femur's lateral axis (the neck axis made
        perpendicular to the shaft; LPS mm): with the head centre it orients the model's input region."""
        return np.asarray(self.head_centre_lps, float) + NECK_POINT_MM * np.asarray(self.frame_axes, float)[0]

    @property
    def pf_centre_lps(self) -> np.ndarray:
        k, j, i = np.nonzero(self.pf_mask)
        return (self.hu.geometry.ijk_to_lps() @ np.array([i.mean(), j.mean(), k.mean(), 1.0]))[:3]


def save_prepared(prepared: PreparedCT, folder: Path) -> None:
    """Write the arrays (npz) then the description (json): the json's presence marks a complete cache entry."""
    key = prepared.cache_key
    arrays = {
        "hu": prepared.hu.array.astype(np.float32),
        "density": prepared.density_mg_cm3.astype(np.float32),
        "bone": prepared.bone_mask.astype(np.uint8),
        "pf": prepared.pf_mask.astype(np.uint8),
    }
    if prepared.body_mask is not None:
        arrays["body"] = prepared.body_mask.astype(np.uint8)
    if prepared.femur_mask is not None:
        arrays["femur"] = prepared.femur_mask.astype(np.uint8)
    with atomic_path(folder / f"{key}.npz") as temporary:
        np.savez_compressed(temporary, **arrays)
    geometry = prepared.hu.geometry
    atomic_write_text(
        folder / f"{key}.json",
        json.dumps(
            {
                "ct_id": prepared.ct_id,
                "source": prepared.hu.source,
                "spacing_mm": geometry.spacing_mm,
                "origin_mm": geometry.origin_mm,
                "direction": np.asarray(geometry.direction).tolist(),
                "side": prepared.side,
                "head_centre_lps": prepared.head_centre_lps.tolist(),
                "shaft_point_lps": prepared.shaft_point_lps.tolist(),
                "abmd_components_g_cm2": list(prepared.abmd_components_g_cm2),
                "vbmd_components_mg_cm3": list(prepared.vbmd_components_mg_cm3),
                "calibration": prepared.calibration,
                "frame_axes": np.asarray(prepared.frame_axes).tolist(),
                "key": key,
                **({"donor_ct": prepared.donor_ct} if prepared.donor_ct else {}),
                **({"metal_in_pf_cm3": prepared.metal_in_pf_cm3} if prepared.metal_in_pf_cm3 else {}),
            },
            indent=2,
        ),
    )


def head_radius_mm(prepared: PreparedCT, femur: np.ndarray) -> float:
    """A prepared hip's femoral head radius (mm) from its femur label ``femur``: the median distance from its head
    centre of the label's surface voxels in the head's medial cone (within 60 deg of medial, away from the neck),
    within 40 mm of the centre, plus half a voxel along that direction."""
    from scipy.ndimage import binary_erosion

    surface = np.argwhere(femur & ~binary_erosion(femur, border_value=1))  # not where the scan cut it
    offset = index_to_lps(prepared.hu.geometry, surface) - prepared.head_centre_lps
    distance = np.linalg.norm(offset, axis=1)
    lateral = np.asarray(prepared.frame_axes, float)[0]
    medial = -(offset @ lateral) > 0.5 * distance
    chosen = distance[medial & (distance < 40.0)]
    if len(chosen) < 20:
        raise InputError(
            None, f"{prepared.cache_key}: no femoral head surface around its head centre", "check its labels"
        )
    geometry = prepared.hu.geometry  # surface voxels' centres lie half a voxel inside the surface
    half_voxel = 0.5 * np.abs(np.asarray(geometry.direction, float).T @ lateral) @ np.asarray(geometry.spacing_mm)
    return float(np.median(chosen) + half_voxel)


def has_prepared(folder: Path, key: str) -> bool:
    return (folder / f"{key}.json").is_file() and (folder / f"{key}.npz").is_file()


def side_key(ct_id: str, side: str) -> str:
    """Cache key of one side of a CT ('auto': the CT id, as caches made before sides)."""
    return ct_id if side == "auto" else f"{ct_id}_{side}"


def prepared_bones(folder: Path, ct_id: str, with_metal: bool = False) -> list[str]:
    """Cache keys of the prepared hips of a CT: ``<ct_id>`` (one hip), or its ``_left``/``_right`` sides; a hip
    prepared with an implant only ``with_metal`` (the detector's views)."""
    keys = [key for key in (ct_id, side_key(ct_id, "left"), side_key(ct_id, "right")) if has_prepared(folder, key)]
    return keys if with_metal else [key for key in keys if not has_metal(folder, key)]


def implanted(metal_in_pf_cm3: float) -> bool:
    """Whether this much metal in a PF region (cm3) is an implant (the CT analysis's rule, which refuses it)."""
    return metal_in_pf_cm3 > MIN_IMPLANT_CM3


def has_metal(folder: Path, key: str) -> bool:
    """Whether the prepared hip ``key`` was prepared with an implant in its PF region (``allow_metal``)."""
    description = json.loads((Path(folder) / f"{key}.json").read_text(encoding="utf-8"))
    return implanted(description.get("metal_in_pf_cm3", 0.0))


DERIVED_BONE_RECORDS = (".anatomy.json", ".transplant.json")
"""Suffixes of the records that mark a prepared bone made from real ones (a virtual anatomy, a femur placed into
another body): ``<key><suffix>`` beside its cache."""


def is_derived_bone(folder: Path, key: str) -> bool:
    """Whether the prepared bone ``key`` is a virtual anatomy or a transplant rather than a real CT's hip."""
    return any((Path(folder) / f"{key}{suffix}").exists() for suffix in DERIVED_BONE_RECORDS)


def real_bones(folder: Path) -> dict[str, list[str]]:
    """Cache keys of the prepared hips of every real CT in ``folder``, by CT id, sorted: every prepared bone but
    the virtual anatomies and transplants (:data:`DERIVED_BONE_RECORDS`)."""
    bones: dict[str, list[str]] = {}
    for description in sorted(Path(folder).glob("*.json")):
        key = description.stem
        if "." in key or not has_prepared(Path(folder), key) or is_derived_bone(folder, key):
            continue  # a sides record, a derived bone's record, an unfinished entry or a derived bone
        record = json.loads(description.read_text(encoding="utf-8"))
        if not implanted(record.get("metal_in_pf_cm3", 0.0)):  # an implanted hip trains the detector only
            bones.setdefault(record["ct_id"], []).append(key)
    return dict(sorted(bones.items()))


def pf_scan_cuts(folder: Path, key: str) -> dict[str, float]:
    """:func:`bmdgan.ct.pf_region.scan_cut_shares` of a prepared bone's PF region (read from its cache alone)."""
    from ..ct.pf_region import scan_cut_shares

    with np.load(folder / f"{key}.npz") as arrays:
        return scan_cut_shares(arrays["pf"].astype(bool))


def sides_record_path(folder: Path, ct_id: str) -> Path:
    return folder / f"{ct_id}.sides.json"


def load_prepared(folder: Path, key: str) -> PreparedCT:
    if not has_prepared(folder, key):
        raise InputError(folder, f"no prepared CT {key}", "run the cohort preparation first")
    description = json.loads((folder / f"{key}.json").read_text())
    arrays = np.load(folder / f"{key}.npz", allow_pickle=False)
    geometry = VolumeGeometry(
        tuple(description["spacing_mm"]), tuple(description["origin_mm"]), np.array(description["direction"])
    )
    return PreparedCT(
        description["ct_id"],
        Volume(arrays["hu"], geometry, "HU", description["source"]),
        arrays["density"],
        arrays["bone"].astype(bool),
        arrays["pf"].astype(bool),
        np.array(description["head_centre_lps"]),
        np.array(description["shaft_point_lps"]),
        description["side"],
        tuple(description["abmd_components_g_cm2"]),
        tuple(description["vbmd_components_mg_cm3"]),
        description["calibration"],
        np.array(description["frame_axes"]),
        arrays["body"].astype(bool) if "body" in arrays.files else None,
        description.get("key", ""),
        arrays["femur"].astype(bool) if "femur" in arrays.files else None,
        description.get("donor_ct", ""),
        description.get("metal_in_pf_cm3", 0.0),
    )


def density_components(density_mg_cm3: np.ndarray, cortical_threshold_mg_cm3: float) -> tuple[np.ndarray, np.ndarray]:
    """(trabecular, cortical) parts of a calibrated density: they add up to it voxel by voxel."""
    cortical = density_mg_cm3 > cortical_threshold_mg_cm3
    return np.where(cortical, 0.0, density_mg_cm3), np.where(cortical, density_mg_cm3, 0.0)


BodyMask = Callable[[Volume], np.ndarray] | np.ndarray


def prepare_ct(
    path: str | Path | Volume,
    ct_id: str,
    side: str = "auto",
    segmentation: list[str | Path] | None = None,
    body_mask: BodyMask | None = None,
    allow_metal: bool = False,
) -> PreparedCT:
    """Run the CT analysis of one hip (``side``: 'left', 'right' or 'auto'; automatic labels, landmarks, PF
    region, phantomless calibration) and derive what the cohort needs. ``path``: a CT file or an already read
    :class:`Volume` in HU. ``body_mask``: the body (bool [k, j, i]) of the CT or a function giving it (default
    :func:`bmdgan.ct.pipeline.body_of`): the analysis sees the CT as scanned (its own air calibrates it),
    the HU kept for projection are set to air outside the body. The aBMD/vBMD
    components are measured by the same code as ``bmdgan measure-ct``, on CTs whose calibrated density is the
    trabecular or the cortical part: the two add up to the full measurement."""
    from ..ct.measurement import measure_pf, neutral_frame
    from ..ct.pipeline import analyse_ct, body_of
    from ..projection.ap_pelvis import clean_outside_body
    from .channels import CORTICAL_THRESHOLD_MG_CM3

    ct = path if isinstance(path, Volume) else read_ct(path)
    if body_mask is None or callable(body_mask):
        body = (body_mask or body_of)(ct)
    else:
        body = np.asarray(body_mask, dtype=bool)
    labels = None
    if segmentation:  # e.g. TotalSegmentator's femur_<side> and hip_<side> files, for scans where the
        labels = load_segmentation(segmentation, ct, side)
    analysis = analyse_ct(ct, side=side, label_volume=labels, allow_metal=allow_metal)
    calibration = analysis.calibration
    ct = clean_outside_body(ct, body)
    density = calibration.density(ct.array).astype(np.float32)
    labels = analysis.label_volume().array
    pf = labels == L.PF_REGION
    components = []
    for part in density_components(density, CORTICAL_THRESHOLD_MG_CM3):
        as_hu = ct.with_array(((part - calibration.intercept) / calibration.slope).astype(np.float32))
        components.append(
            measure_pf(
                as_hu,
                analysis.segmentation.femur,
                analysis.region,
                analysis.landmarks,
                calibration,
                analysis.segmentation.metal,
            )
        )
    points = analysis.landmarks.points
    head = np.asarray(points["femoral_head_centre"], float)
    shaft = points.get("shaft_5cm")
    if shaft is None:  # short scans: a point 50 mm down the shaft axis from the head centre
        shaft = head - 50.0 * analysis.landmarks.shaft_axis()
    return PreparedCT(
        ct_id,
        ct,
        density,
        labels > 0,
        pf,
        head,
        np.asarray(shaft, float),
        analysis.landmarks.frame.side,
        (components[0].ct_abmd_g_cm2, components[1].ct_abmd_g_cm2),
        (components[0].qct_vbmd_mg_cm3, components[1].qct_vbmd_mg_cm3),
        {
            **calibration.to_dict(),
            "full_ct_abmd_g_cm2": analysis.measurement.ct_abmd_g_cm2,
            "full_qct_vbmd_mg_cm3": analysis.measurement.qct_vbmd_mg_cm3,
        },
        neutral_frame(analysis.landmarks).matrix(),
        body,
        side_key(ct_id, side),
        analysis.segmentation.femur.astype(bool),
        metal_in_pf_cm3=analysis.measurement.metal_volume_cm3,
    )
