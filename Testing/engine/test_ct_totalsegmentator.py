"""The TotalSegmentator example CT (3 mm, both hips, screws in the left femoral neck): its v1 masks read
as they are, the automatic right femur against the shipped mask, and metal kept out of the density when a
hip with an implant is measured on purpose (``allow_metal``; by default it is refused, test_ct_bilateral.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bmdgan.ct import grid
from bmdgan.ct import labels as L
from bmdgan.ct.head import neck_direction
from bmdgan.ct.label_import import guess_convention, load_segmentation
from bmdgan.ct.pipeline import ImplantError, analyse_ct, segment_hips
from bmdgan.ct.segmentation import METAL_HU
from bmdgan.errors import InputError
from bmdgan.io import read_ct, read_label_volume

FILES = ("femur_left", "femur_right", "hip_left", "hip_right")


@pytest.fixture(scope="module")
def example(shared_data):
    folder = shared_data / "ct" / "totalsegmentator_example"
    ct = read_ct(folder / "example_ct.nii.gz")
    masks = folder / "masks_totalsegmentator_v1"
    return ct, {name: masks / f"{name}.nii.gz" for name in FILES}, masks / "example_seg_multilabel_v1.nii.gz"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("side", ["left", "right"])
def test_totalsegmentator_files_and_multilabel_map_to_project_labels(example, side):
    ct, files, multilabel = example
    from_files = load_segmentation(list(files.values()), ct, side)
    from_multilabel = load_segmentation([multilabel], ct, side)
    femur = read_label_volume(files[f"femur_{side}"], like=ct).array > 0
    hip = read_label_volume(files[f"hip_{side}"], like=ct).array > 0
    assert np.array_equal(L.femur_mask(from_files.array), femur)
    assert np.array_equal(from_files.array == L.PELVIS, hip & ~femur)
    assert np.array_equal(from_multilabel.array, from_files.array)
    values = set(int(v) for v in np.unique(read_label_volume(multilabel).array))
    assert guess_convention(values) == "totalsegmentator-v1"
    with pytest.raises(InputError, match="side must be"):
        load_segmentation([multilabel], ct, "auto")


def head_sphere_of_mask(femur: np.ndarray, hip: np.ndarray, ct) -> np.ndarray:
    """Centre (LPS mm) of the sphere fitted to the mask's femoral head: its surface facing the hip bone, trimmed."""
    surface = femur & ~ndimage.binary_erosion(femur)
    surface[0] = False  # the scan's bottom slice cuts the femur: not a surface
    points = grid.index_to_lps(ct.geometry, np.argwhere(surface).astype(float))
    facing = grid.index_to_lps(
        ct.geometry, np.argwhere(surface & ndimage.binary_dilation(hip, iterations=2)).astype(float)
    )

    def fit(p):
        solution, *_ = np.linalg.lstsq(np.column_stack([2 * p, np.ones(len(p))]), (p**2).sum(axis=1), rcond=None)
        return solution[:3], float(np.sqrt(solution[3] + solution[:3] @ solution[:3]))

    centre, radius = fit(facing)
    for _round in range(10):
        centre, radius = fit(points[np.abs(np.linalg.norm(points - centre, axis=1) - radius) < 4.0])
    return centre


def test_automatic_right_femur_agrees_with_totalsegmentator(example):
    """Dice 0.86 and the head centre 7.6 mm from the mask's head sphere (centre of the acetabular socket,
    :mod:`bmdgan.ct.socket`); before, the head sphere sat in the acetabular roof 18.4 mm away (Dice 0.79).

    No shaft is in view, so the neck direction comes from the body's midline (laterally and down); before
    that, the bone rays into the acetabulum were taken for the neck and the joint cut severed the neck (0.63).
    """
    ct, files, _ = example
    (segmentation,) = segment_hips(ct, side="right")
    automatic = segmentation.femur
    shipped = read_label_volume(files["femur_right"], like=ct).array > 0
    hip = read_label_volume(files["hip_right"], like=ct).array > 0
    assert dice(automatic, shipped) >= 0.85
    assert (automatic & shipped).sum() >= 0.8 * shipped.sum()  # the shipped femur is inside the label
    assert np.linalg.norm(segmentation.head.centre_lps - head_sphere_of_mask(shipped, hip, ct)) < 10.0
    neck = neck_direction(segmentation.head, None)
    assert neck[0] < -0.5 and neck[2] < -0.3  # the right neck runs laterally (LPS -x) and down


def test_left_femur_with_screws_is_measured_without_the_metal(example):
    ct, files, _ = example
    labels = load_segmentation(list(files.values()), ct, "left")
    with pytest.raises(ImplantError, match="left hip has metal"):
        analyse_ct(ct, label_volume=labels, side="left")  # the given label does not change the refusal
    analysis = analyse_ct(ct, label_volume=labels, side="left", allow_metal=True)
    m = analysis.measurement
    assert analysis.landmarks.frame.side == "left"
    assert m.metal_volume_cm3 > 1.0  # the screws are in the PF region...
    region, metal = analysis.region.mask, analysis.segmentation.metal
    density = analysis.calibration.density(ct.array)
    assert m.qct_vbmd_mg_cm3 == pytest.approx(
        float(density[region & ~metal].mean()), rel=1e-6
    )  # ...but not in the mean
    with_metal = float(density[region].mean())
    assert with_metal > m.qct_vbmd_mg_cm3 + 50.0
    assert not np.any(ct.array[region & ~metal] > METAL_HU)
    assert not analysis.region.complete  # no shaft in this scan: the record says the region is cut by the scan
    assert 0.2 < m.ct_abmd_g_cm2 < 1.5


def test_automatic_left_hip_runs_despite_the_screws(example):
    ct, files, _ = example
    analysis = analyse_ct(ct, side="left", allow_metal=True)
    assert np.isfinite(analysis.measurement.qct_vbmd_mg_cm3)
    assert np.isfinite(analysis.measurement.ct_abmd_g_cm2)
    assert analysis.segmentation.metal.sum() > 0  # the screws are found and masked
    automatic = analysis.segmentation.femur
    shipped = read_label_volume(files["femur_left"], like=ct).array > 0
    assert (
        dice(automatic, shipped) >= 0.5
    )  # 0.56 today (0.51 before the socket centring, 0.26 when the neck with the screws was cut off)
    assert (automatic & shipped).sum() >= 0.8 * shipped.sum()
    assert analysis.measurement.metal_volume_cm3 > 1.0  # the screws lie in the measured neck, kept out of the density


@pytest.mark.parametrize("side", ["left", "right"])
def test_bilateral_import_keeps_the_other_side_and_the_sacrum(example, side):
    ct, files, multilabel = example
    folder = files["femur_left"].parent
    all_files = list(files.values()) + [folder / "sacrum.nii.gz"]
    other = "right" if side == "left" else "left"
    from_files = load_segmentation(all_files, ct, side, bilateral=True)
    from_multilabel = load_segmentation([multilabel], ct, side, bilateral=True)
    assert np.array_equal(from_files.array, from_multilabel.array)
    read = {
        name: read_label_volume(folder / f"{name}.nii.gz", like=ct).array > 0
        for name in (f"femur_{side}", f"femur_{other}", f"hip_{other}", "sacrum")
    }
    assert np.array_equal(L.femur_mask(from_files.array), read[f"femur_{side}"])
    assert np.array_equal(from_files.array == L.OTHER_FEMUR, read[f"femur_{other}"] & ~read[f"femur_{side}"])
    assert (from_files.array == L.OTHER_PELVIS).sum() >= 0.99 * read[f"hip_{other}"].sum()
    assert (from_files.array == L.SACRUM).sum() >= 0.95 * read["sacrum"].sum()
    assert set(np.unique(from_files.array)) == {0, 1, 2, 4, 5, 6}
    measured_only = load_segmentation(all_files, ct, side)
    assert set(np.unique(measured_only.array)) == {0, 1, 2}  # without bilateral: the measured hip only, as before
