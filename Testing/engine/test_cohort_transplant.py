"""A femur placed into another body (bmdgan.cohort.transplant), on analytic femurs: the donor's mineral (mg/cm3)
arrives through both calibrations, aligned at the head, mirrored for the other side (its front stays in front),
the host's own femur is gone and its acetabulum stays; donors the transplant would spoil are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmdgan.cohort.prepared_ct import PreparedCT, head_radius_mm, save_prepared
from bmdgan.cohort.transplant import (
    MOVE_MM,
    check_donor,
    cut_face,
    donor_points,
    femur_move_lps,
    host_cts,
    make_transplant,
    moved_entry,
    moved_femurs,
    prepare_moved_femurs,
    prepare_transplants,
    transplant_hips,
    transplant_host,
)
from bmdgan.errors import InputError
from bmdgan.io import Volume, VolumeGeometry

SOFT_TISSUE_HU = 40.0


def femur_ct(
    side, head, offset_mm, density_mg_cm3, calibration, spacing_mm, shape, origin, bump=False, socket=False, radius=20.0
):
    """An analytic femur in LPS (head sphere of ``radius`` mm, a neck, a shaft of radius 10 mm ``offset_mm`` lateral
    of the head, down to the grid's bottom) in a soft-tissue body; ``bump``: a 6 mm bone knob on the shaft's
    anterior face (LPS -y), which tells front from back; ``socket``: an acetabular shell medial of the head."""
    k, j, i = np.indices(shape)
    x, y, z = (origin[0] + spacing_mm * i, origin[1] + spacing_mm * j, origin[2] + spacing_mm * k)
    lateral = -1.0 if side == "right" else 1.0  # the patient's right is -x in LPS
    hx, hy, hz = head
    sx = hx + lateral * offset_mm
    femur = (x - hx) ** 2 + (y - hy) ** 2 + (z - hz) ** 2 < radius**2
    femur |= (np.abs(z - hz + 5) < 9) & (np.abs(y - hy) < 9) & ((x - hx) * lateral > 0) & ((x - sx) * lateral < 0)
    femur |= ((x - sx) ** 2 + (y - hy) ** 2 < 10**2) & (z < hz - 5)
    if bump:
        femur |= (x - sx) ** 2 + (y - hy + 12) ** 2 + (z - hz + 60) ** 2 < 6**2
    pelvis = np.zeros(shape, bool)
    if socket:
        distance = np.sqrt((x - hx) ** 2 + (y - hy) ** 2 + (z - hz) ** 2)
        pelvis = (distance > 23) & (distance < 28) & ((x - hx) * lateral < -5)
    slope, intercept = calibration["slope"], calibration["intercept"]
    hu = np.full(shape, SOFT_TISSUE_HU, np.float32)
    hu[femur | pelvis] = (density_mg_cm3 - intercept) / slope
    geometry = VolumeGeometry((spacing_mm,) * 3, origin)
    up = np.array([0.0, 0.0, 1.0])
    lateral_axis = np.array([lateral, 0.0, 0.0])
    return PreparedCT(
        "CT",
        Volume(hu, geometry, "HU", "analytic"),
        slope * hu + intercept,
        femur | pelvis,
        femur & (z > hz - 60) & (z < hz + 8),  # as the real PF regions, it leaves out the head's top
        np.array(head, float),
        np.array([sx, hy, hz - 50.0]),
        side,
        (0.5, 0.3),
        (200.0, 100.0),
        dict(calibration),
        np.stack([lateral_axis, np.cross(up, lateral_axis), up]),
        np.ones(shape, bool),
        femur_mask=femur,
    )


HOST_CALIBRATION = {"slope": 0.8, "intercept": -20.0}
DONOR_CALIBRATION = {"slope": 0.6, "intercept": 10.0}


def host():
    return femur_ct(
        "right", (10.0, 0.0, 40.0), 30.0, 600.0, HOST_CALIBRATION, 2.0, (85, 60, 60), (-60, -60, -100), socket=True
    )


def donor(**changes):
    settings = dict(
        side="left",
        head=(-30.0, 20.0, 10.0),
        offset_mm=42.0,
        density_mg_cm3=900.0,
        calibration=DONOR_CALIBRATION,
        spacing_mm=1.5,
        shape=(120, 80, 100),
        origin=(-80, -40, -140),
        bump=True,
    )
    settings.update(changes)
    return femur_ct(**settings)


def density_at(prepared_hu: Volume, points_lps) -> np.ndarray:
    """Host-calibrated density (mg/cm3) at LPS points (nearest voxel)."""
    geometry = prepared_hu.geometry
    ijk = np.rint((np.asarray(points_lps, float) - geometry.origin_mm) / geometry.spacing_mm).astype(int)
    hu = prepared_hu.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    return HOST_CALIBRATION["slope"] * hu + HOST_CALIBRATION["intercept"]


def test_donor_femur_arrives_aligned_mirrored_with_its_mineral_and_the_host_femur_goes():
    receiving, giving = host(), donor()
    # The map takes the host's head centre to the donor's, and a point lateral in the host to lateral in the donor.
    np.testing.assert_allclose(
        donor_points(receiving, giving, receiving.head_centre_lps[None])[0], giving.head_centre_lps
    )
    np.testing.assert_allclose(donor_points(receiving, giving, [[0.0, 0.0, 40.0]])[0], [-20.0, 20.0, 10.0])
    volume, body = make_transplant([(receiving, giving)])
    assert body.all() and volume.array.shape == receiving.hu.array.shape
    # The donor's shaft, 42 mm lateral of the host's head (the host's own is 30 mm), carries the donor's 900 mg/cm3
    # through both calibrations: HU = (900 - 10) / 0.6 = 1483 in the donor, (900 + 20) / 0.8 = 1150 here.
    donor_shaft = [[10.0 - 42.0, 0.0, -20.0], [10.0 - 42.0, 0.0, 0.0]]
    np.testing.assert_allclose(density_at(volume, donor_shaft), 900.0, rtol=0.01)
    # The host's own shaft, where no donor bone comes, is the host's soft tissue now (density of 40 HU).
    soft = HOST_CALIBRATION["slope"] * SOFT_TISSUE_HU + HOST_CALIBRATION["intercept"]
    np.testing.assert_allclose(density_at(volume, [[10.0 - 30.0 + 8.0, 0.0, -30.0]]), soft, atol=1.0)
    # The head sits where the host's was, with the donor's density; the acetabulum stays the host's.
    np.testing.assert_allclose(density_at(volume, [[10.0, 0.0, 40.0], [10.0, 0.0, 55.0]]), 900.0, rtol=0.01)
    np.testing.assert_allclose(density_at(volume, [[10.0 + 25.0, 0.0, 40.0]]), 600.0, rtol=0.01)
    # Mirrored, not turned: the knob on the donor's front (LPS -y) is on the front of the host's femur too.
    front, back = [[10.0 - 42.0, -12.0, -20.0]], [[10.0 - 42.0, 14.0, -20.0]]
    assert density_at(volume, front)[0] == pytest.approx(900.0, rel=0.01)
    assert density_at(volume, back)[0] == pytest.approx(soft, abs=1.0)


def test_donors_that_the_transplant_would_spoil_are_refused():
    with pytest.raises(InputError, match="3 mm from its centre: less than half"):  # the scan ends 3 mm below it
        check_donor(donor(shape=(99, 80, 100)))
    with pytest.raises(InputError, match="cuts its femoral head on two faces"):  # on top and 15 mm medially
        check_donor(donor(shape=(108, 80, 100), origin=(-45, -40, -140)))
    with pytest.raises(InputError, match="cuts its femoral head on its side"):  # 15 mm medially: no top to mirror
        check_donor(donor(origin=(-45, -40, -140)))
    with pytest.raises(InputError, match="cuts its PF region"):  # the scan ends 5 mm into the shaft's lateral side
        check_donor(donor(shape=(120, 80, 65)))
    with pytest.raises(InputError, match="whole shaft only (69|70) mm"):  # its scan ends 70 mm below the head centre
        check_donor(donor(origin=(-80, -40, -60), shape=(66, 80, 100)))
    assert check_donor(donor()).reach_mm == pytest.approx(150.0, abs=5.0)  # the shaft runs to the scan's end
    with pytest.raises(InputError, match="no femur label"):
        check_donor(PreparedCT(**{**donor().__dict__, "femur_mask": None}))


def test_a_head_its_scan_cut_is_completed_from_its_own_other_half():
    """Five IBSI thigh crops end 11-16 mm above the head centre: the cap beyond is mirrored from the head's other side
    across the cut's plane, and only within the head's radius: an analytic head comes out as if it were whole."""
    receiving, cut = host(), donor(shape=(108, 80, 100))  # its scan ends 10.5 mm above the head centre
    assert cut_face(cut, cut.femur_mask, 20.0) == (0, 107)
    assert head_radius_mm(cut, cut.femur_mask) == pytest.approx(20.0, abs=1.0)
    volume, _ = make_transplant([(receiving, cut)])
    whole, _ = make_transplant([(receiving, donor())])
    cap = [[10.0, 0.0, 56.0], [10.0, 0.0, 58.0], [4.0, 0.0, 56.0]]  # 16-18 mm above the head centre
    np.testing.assert_allclose(density_at(volume, cap), 900.0, rtol=0.01)
    soft = HOST_CALIBRATION["slope"] * SOFT_TISSUE_HU + HOST_CALIBRATION["intercept"]
    assert density_at(volume, [[10.0, 0.0, 64.0]])[0] == pytest.approx(soft, abs=1.0)  # 4 mm beyond the sphere
    k, j, i = np.indices(volume.array.shape)
    inside = (-60 + 2.0 * i - 10) ** 2 + (-60 + 2.0 * j) ** 2 + (-100 + 2.0 * k - 40) ** 2 < 16**2
    np.testing.assert_allclose(volume.array[inside], whole.array[inside], atol=1.0)


def test_a_shorter_donor_ends_the_new_scan_where_its_shaft_ends():
    receiving = host()  # its scan shows 140 mm of shaft below the head centre (z = 40 down to -100)
    volume, body = make_transplant([(receiving, donor(origin=(-80, -40, -100), shape=(94, 80, 100)))])
    lowest_z = volume.geometry.origin_mm[2]  # 110 mm of donor shaft: the scan now starts 110 mm below the head
    assert 40.0 - 115.0 <= lowest_z <= 40.0 - 105.0
    assert volume.array.shape[0] == body.shape[0] == 85 - round((lowest_z + 100.0) / 2.0)
    np.testing.assert_array_equal(volume.array[-1], make_transplant([(receiving, donor())])[0].array[-1])


def test_every_femur_of_the_other_cts_goes_into_each_body(tmp_path):
    fields = host().__dict__
    for ct_id, side in [("BODY", "left"), ("BODY", "right"), ("A", "auto"), ("B", "left"), ("C", "auto")]:
        save_prepared(
            PreparedCT(**{**fields, "ct_id": ct_id, "key": ct_id if side == "auto" else f"{ct_id}_{side}"}), tmp_path
        )
    assert host_cts(tmp_path) == ["BODY"]  # a whole pelvis; B is one hip of a CT, A and C thigh crops
    entries = [transplant_hips(tmp_path, "BODY", index) for index in range(2)]
    assert [entry for entry, _ in entries] == ["BODY-t00", "BODY-t01"]
    assert entries[0][1] == [("BODY_left", "A", "BODY-t00_left"), ("BODY_right", "B_left", "BODY-t00_right")]
    assert {donor for _, hips in entries for _, donor, _ in hips} == {"A", "B_left", "C"}
    # A transplant is a derived bone: recorded, it is no longer a real CT's bone, and not a donor again.
    (tmp_path / "BODY-t00_left.transplant.json").write_text(json.dumps({"host_key": "BODY_left"}))
    save_prepared(PreparedCT(**{**fields, "ct_id": "BODY", "key": "BODY-t00_left"}), tmp_path)
    assert transplant_hips(tmp_path, "BODY", 0) == ("BODY-t00", entries[0][1])
    # A folder made from other CTs deals other donors to the same keys: resuming it is refused, not mixed.
    record = {"host_key": "BODY_left", "donor_key": "C"}
    (tmp_path / "BODY-t00_left.transplant.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="made with C's femur moved by .* where this run would place A's"):
        prepare_transplants(tmp_path, 1, progress=False)


def test_a_femur_moved_in_its_own_joint_carries_its_head_and_leaves_the_acetabulum():
    """A body's own femur set back into its hip a few mm off (the detector's views of other head-acetabulum
    relations): its head and shaft move by exactly that, with their own density, and the acetabulum stays."""
    body = host()
    move = np.array([-2.0, 2.0, 4.0])  # 2 mm lateral (the patient's right is -x), 2 mm back, 4 mm up
    volume, _ = make_transplant([(body, body)], [move])
    head, shaft = np.array([10.0, 0.0, 40.0]), np.array([10.0 - 30.0, 0.0, -20.0])
    np.testing.assert_allclose(density_at(volume, [head + move, head + move + [0, 0, 18.0]]), 600.0, rtol=0.01)
    soft = HOST_CALIBRATION["slope"] * SOFT_TISSUE_HU + HOST_CALIBRATION["intercept"]
    assert density_at(volume, [head - [0, 0, 18.0]])[0] == pytest.approx(soft, abs=1.0)  # was inside, now below it
    np.testing.assert_allclose(density_at(volume, [shaft + move + [-8.0, 0, 0]]), 600.0, rtol=0.01)
    assert density_at(volume, [shaft + [9.0, 0, 0]])[0] == pytest.approx(soft, abs=1.0)  # left behind: soft tissue
    np.testing.assert_allclose(density_at(volume, [head + [25.0, 0.0, 0.0]]), 600.0, rtol=0.01)  # acetabulum
    # The hip as the detector's views use it: its labels and landmarks carried by the move (2 mm voxels: 1, 1, 2).
    (hip,) = moved_femurs([body], [move])
    np.testing.assert_allclose(hip.head_centre_lps, body.head_centre_lps + move)
    np.testing.assert_array_equal(hip.hu.array, volume.array)
    np.testing.assert_array_equal(
        np.argwhere(hip.femur_mask).mean(0), np.argwhere(body.femur_mask).mean(0) + [2, 1, -1]
    )
    assert hip.pf_mask.sum() == body.pf_mask.sum() and not (hip.pf_mask & ~hip.femur_mask).any()
    acetabulum = body.bone_mask & ~body.femur_mask
    assert acetabulum.any() and (hip.bone_mask[acetabulum]).all() and hip.bone_mask[hip.femur_mask].all()
    # The moves are drawn per hip and body from the seed, within MOVE_MM along each axis of the femur's frame.
    moves = np.array([femur_move_lps(body, 0, index) for index in range(20)])
    local = moves @ np.asarray(body.frame_axes).T
    assert np.abs(local).max() <= MOVE_MM and np.abs(local).max(axis=0).min() > 0.6 * MOVE_MM
    np.testing.assert_array_equal(femur_move_lps(body, 0, 3), moves[3])
    assert not np.allclose(femur_move_lps(body, 1, 3), moves[3])


def test_a_femur_moved_towards_its_socket_leaves_the_socket_bone():
    """A head moved 3 mm medially (MOVE_MM, towards the acetabulum: the patient's right hip's medial is +x) closes
    most of the 3 mm joint space of the analytic hip; the soft-tissue margin the femur brings must not replace the
    socket's bone (23-28 mm from the old head centre), while the head itself arrives whole."""
    body = host()
    move = np.array([MOVE_MM, 0.0, 0.0])
    volume, _ = make_transplant([(body, body)], [move])
    head = np.array([10.0, 0.0, 40.0])
    socket = [head + [distance, 0.0, 0.0] for distance in (24.0, 26.0)]  # 21 and 23 mm from the moved head centre
    np.testing.assert_allclose(density_at(volume, socket), 600.0, rtol=0.01)
    assert density_at(body.hu, [head + move + [17.0, 0.0, 0.0]])[0] < 100.0  # the joint space before the move
    np.testing.assert_allclose(density_at(volume, [head + move + [17.0, 0.0, 0.0]]), 600.0, rtol=0.01)


def test_moved_femur_bodies_resume_only_with_the_same_moves(tmp_path):
    fields = host().__dict__
    for side in ("left", "right"):
        save_prepared(PreparedCT(**{**fields, "ct_id": "BODY", "side": side, "key": f"BODY_{side}"}), tmp_path)
    assert moved_entry("BODY", 0) == "BODY-m00" and transplant_host("BODY-m00") == "BODY"
    record = {"host_key": "BODY_left", "donor_key": "BODY_left", "move_lps_mm": [0.0, 0.0, 0.0], "refused": "test"}
    (tmp_path / "BODY-m00_left.transplant.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="moved by \\[0.0, 0.0, 0.0\\] mm, where this run would place BODY_left's"):
        prepare_moved_femurs(tmp_path, 1, seed=0, progress=False)


def test_moved_femur_bodies_are_kept_on_resume_and_refused_with_another_seed(tmp_path):
    fields = host().__dict__
    for side in ("left", "right"):
        save_prepared(PreparedCT(**{**fields, "ct_id": "BODY", "side": side, "key": f"BODY_{side}"}), tmp_path)
    entries, refused = prepare_moved_femurs(tmp_path, 1, seed=0, progress=False)
    assert entries == ["BODY-m00"] and not refused
    made = {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("BODY-m00_*")}
    assert len(made) >= 4  # each hip's prepared files and its record
    assert prepare_moved_femurs(tmp_path, 1, seed=0, progress=False) == (entries, {})
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("BODY-m00_*")} == made  # kept, not remade
    with pytest.raises(InputError, match="where this run would place"):
        prepare_moved_femurs(tmp_path, 1, seed=1, progress=False)
