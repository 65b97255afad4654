"""Hip bones and sacrum: Dice against the TotalSegmentator example's masks (a reference, not truth), both
hip bones of a whole-pelvis radiotherapy CT, and the label convention that holds them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmdgan.cli.main import main
from bmdgan.ct import grid
from bmdgan.ct import labels as L
from bmdgan.ct.body import body_mask
from bmdgan.ct.pelvis import label_pelvis, superior_sign
from bmdgan.ct.pipeline import femurs_by_side
from bmdgan.errors import InputError
from bmdgan.io import read_ct


@pytest.fixture(scope="module")
def dice_table(shared_data, tmp_path_factory):
    folder = shared_data / "ct" / "totalsegmentator_example"
    out = tmp_path_factory.mktemp("compare")
    code = main(
        [
            "compare-labels",
            str(folder / "example_ct.nii.gz"),
            "--reference",
            str(folder / "masks_totalsegmentator_v1"),
            "-o",
            str(out),
        ]
    )
    assert code == 0
    return json.loads((out / "label_dice.json").read_text()), (out / "label_dice.md").read_text()


def test_hip_bones_agree_with_totalsegmentator(dice_table):
    """Hip bone Dice 0.859 (left) and 0.879 (right): the goal (0.85) is met on this CT."""
    record, markdown = dice_table
    rows = record["structures"]
    assert rows["hip_left"]["dice"] >= 0.85 and rows["hip_right"]["dice"] >= 0.85
    for side in ("left", "right"):  # volumes within 10 % of the reference's (376 cm3 each)
        assert rows[f"hip_{side}"]["automatic_cm3"] == pytest.approx(rows[f"hip_{side}"]["reference_cm3"], rel=0.10)
    assert "| hip_left | 0.8" in markdown and "| femur_right |" in markdown


def test_femurs_and_sacrum_against_totalsegmentator_as_they_are(dice_table):
    """Right femur 0.901 (0.919 over the axial slices both labels reach: the reference stops 6 mm lower at
    the head's dome, where the CT's joint space lies above ours; docs/labels.md). Before the femur's rim
    was limited to voxels brighter than muscle (``segmentation.SURFACE_HU`` 0 -> 100 HU) it was 0.863.

    Left femur 0.587: its neck holds screws. Without the metal the automatic left femur is the size of the
    right one (106.7 against 106.0 cm3), while the reference's left femur is 13 cm3 of screws and 48 cm3 of
    bone against 102 cm3 on the right: it leaves most of the screwed neck and head out, so its Dice says
    nothing about our label. Sacrum 0.522 (the thin lower sacrum and coccyx are missed)."""
    record, markdown = dice_table
    rows = record["structures"]
    right, left = rows["femur_right"], rows["femur_left"]
    assert right["dice"] >= 0.90 and right["dice_common_slices"] >= right["dice"]
    assert right["automatic_cm3"] == pytest.approx(right["reference_cm3"], rel=0.06)
    assert left["metal_automatic_cm3"] > 10.0  # the screws (CT > 2000 HU) lie in the automatic left femur
    left_bone = left["automatic_cm3"] - left["metal_automatic_cm3"]
    assert left_bone == pytest.approx(right["automatic_cm3"], rel=0.05)
    reference_left_bone = left["reference_cm3"] - left["metal_reference_cm3"]
    assert reference_left_bone < 0.6 * right["reference_cm3"]
    assert left["dice"] >= 0.5
    assert rows["sacrum"]["dice"] >= 0.5
    assert any("metal in the left femur" in note for note in record["notes"])
    assert "| femur_right | 0.9" in markdown and "Dice, common slices" in markdown
    assert record["seconds"]["pelvis"] < 10.0


def test_compare_labels_refuses_references_it_cannot_read(shared_data, tmp_path, capsys):
    from bmdgan.io import write_volume

    path = shared_data / "ct" / "totalsegmentator_example" / "example_ct.nii.gz"
    assert main(["compare-labels", str(path), "--reference", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    ct = read_ct(path)
    project = np.zeros(ct.array.shape, np.uint8)
    project[10:20, 10:20, 10:20] = L.FEMUR
    write_volume(ct.with_array(project, unit="label"), tmp_path / "project.nii.gz")
    reference = str(tmp_path / "project.nii.gz")
    assert main(["compare-labels", str(path), "--reference", reference, "-o", str(tmp_path / "out")]) == 2
    assert "does not say which side" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def pelvic_ref(shared_data):
    ct = read_ct(shared_data / "ct" / "pelvic_reference" / "Pelvic-Ref-002.nii.gz")
    return ct, body_mask(ct), femurs_by_side(ct)


@pytest.mark.slow
def test_both_hip_bones_of_a_whole_pelvis_ct(pelvic_ref):
    """Pelvic-Ref-002 (adult man, 1 x 1 x 3 mm): hip bones 422 and 435 cm3, each on its side of the
    midline, disjoint from the femurs, cupping its femoral head; the sacrum (289 cm3) between them."""
    ct, body, femurs = pelvic_ref
    assert set(femurs) == {"left", "right"}
    pelvis = label_pelvis(ct, body, {side: seg.femur for side, seg in femurs.items()})
    voxel_cm3 = ct.voxel_volume_mm3() / 1000
    for side, hip in pelvis.hip.items():
        assert 300.0 < hip.sum() * voxel_cm3 < 700.0  # adult hip bone with marrow (reference above: 376 cm3)
        assert not np.any(hip & (femurs["left"].femur | femurs["right"].femur))
        assert not np.any(hip & ~body)
        x = grid.index_to_lps(ct.geometry, np.argwhere(hip[::2, ::4, ::4]) * [2, 4, 4])[:, 0]
        assert np.all(x > pelvis.midline_x_mm) if side == "left" else np.all(x <= pelvis.midline_x_mm)
        head = femurs[side].head
        socket = grid.distance_from_points_mm(hip.shape, ct.geometry, head.centre_lps) < head.radius_mm + 10.0
        assert (hip & socket).sum() * voxel_cm3 > 10.0  # the acetabulum around this side's head
    assert not np.any(pelvis.hip["left"] & pelvis.hip["right"])
    sacrum_x = grid.index_to_lps(ct.geometry, np.argwhere(pelvis.sacrum[::2, ::4, ::4]) * [2, 4, 4])[:, 0]
    assert abs(float(np.median(sacrum_x)) - pelvis.midline_x_mm) < 10.0
    assert 150.0 < pelvis.sacrum.sum() * voxel_cm3 < 450.0
    labels = L.compose(
        pelvis.hip["left"],
        femurs["left"].femur,
        other_femur=femurs["right"].femur,
        other_pelvis=pelvis.hip["right"],
        sacrum=pelvis.sacrum,
    )
    assert set(np.unique(labels)) == {L.BACKGROUND, L.PELVIS, L.FEMUR, L.OTHER_FEMUR, L.OTHER_PELVIS, L.SACRUM}
    assert np.array_equal(L.femur_mask(labels), femurs["left"].femur)
    assert np.array_equal(L.pelvis_mask(labels), pelvis.hip["left"] | pelvis.hip["right"] | pelvis.sacrum)


def test_hip_bones_need_a_femur():
    from bmdgan.io import Volume, VolumeGeometry

    ct = Volume(np.zeros((4, 8, 8), np.float32), VolumeGeometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    with pytest.raises(InputError, match="no femur mask"):
        label_pelvis(ct, np.ones((4, 8, 8), bool), {})


def test_superior_comes_from_the_anatomy_not_the_header(shared_data):
    """The TotalSegmentator example stored upside down (slices reversed, header unchanged, as some IBSI
    crops are): the same hip bones, reversed. The reference's own femurs are the input, so this runs fast."""
    from bmdgan.io import read_label_volume

    folder = shared_data / "ct" / "totalsegmentator_example"
    ct = read_ct(folder / "example_ct.nii.gz")
    masks = folder / "masks_totalsegmentator_v1"
    femurs = {side: read_label_volume(masks / f"femur_{side}.nii.gz", like=ct).array > 0 for side in ("left", "right")}
    assert superior_sign(ct, femurs) == 1.0
    upright = label_pelvis(ct, body_mask(ct), femurs)
    flipped_ct = ct.with_array(ct.array[::-1].copy())
    flipped_femurs = {side: m[::-1].copy() for side, m in femurs.items()}
    assert superior_sign(flipped_ct, flipped_femurs) == -1.0
    flipped = label_pelvis(flipped_ct, body_mask(flipped_ct), flipped_femurs)
    for side in ("left", "right"):
        a, b = upright.hip[side], flipped.hip[side][::-1]
        assert a.sum() * ct.voxel_volume_mm3() / 1000 > 300.0
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.95  # 0.975, 0.967: the watershed breaks ties in scan order
    assert upright.sacrum.any() and flipped.sacrum.any()


def test_hip_bone_of_a_thigh_crop(shared_data):
    """IBSI STS_020: one leg, the crop cuts the body, no midline: the hip bone is what grows from the
    acetabulum (167 cm3: acetabulum, ischium, part of the ilium), not split, disjoint from the femur; the
    femur segmentation's own pelvis label is the bone next to its joint cut only (131 cm3)."""
    from bmdgan.ct.pipeline import segment_hips

    ct = read_ct(shared_data / "ct" / "ibsi_sts" / "STS_020.nii.gz")
    segmentation = segment_hips(ct)[0]
    side = "left"  # the sides of a crop are the caller's: the header's x is not trusted for the IBSI set
    pelvis = label_pelvis(ct, body_mask(ct), {side: segmentation.femur})
    hip = pelvis.hip[side]
    assert 120.0 < hip.sum() * ct.voxel_volume_mm3() / 1000 < 250.0
    assert not np.any(hip & segmentation.femur)
    assert not pelvis.sacrum.any() and pelvis.midline_x_mm is None
    head = segmentation.head
    socket = grid.distance_from_points_mm(hip.shape, ct.geometry, head.centre_lps) < head.radius_mm + 10.0
    assert (hip & socket).sum() * ct.voxel_volume_mm3() / 1000 > 10.0
