"""AP pelvis radiographs of the whole-pelvis CTs (Pelvic-Ref-002/005): nothing outside the body reaches the
image, and no step where the scanned volume ends (the detector is collimated to the scanned range)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from bmdgan.cli.commands.simulate_landmarks import positioning_ranges
from bmdgan.cohort.implant import METAL_HU, SCREW_DIAMETER_MM, screw_mask, with_screws_on
from bmdgan.cohort.pelvis_case import POSITIONING_DEG, sample_positioning
from bmdgan.cohort.prepared_ct import load_prepared, prepared_bones
from bmdgan.cohort.virtual_patient import sample_patient
from bmdgan.ct.body import body_mask
from bmdgan.detection.landmark_folder import read_views
from bmdgan.detection.landmark_views import screw_turn, simulate_landmark_views
from bmdgan.io import Volume, VolumeGeometry, read_ct
from bmdgan.projection.ap_pelvis import ap_pelvis_centre, ap_pelvis_geometry, clean_outside_body, project_ap_pelvis
from bmdgan.projection.simulator import material_projections


@pytest.fixture(scope="module")
def pelvis_005(shared_data):
    """Pelvic-Ref-005 (HU), its body mask, and the AP centre (body midline, mid-depth, mid-scan)."""
    ct = read_ct(shared_data / "ct" / "pelvic_reference" / "Pelvic-Ref-005.nii.gz")
    body = body_mask(ct)
    return ct, body, ap_pelvis_centre(body, ct.geometry.ijk_to_lps())


def _slab(ct, body, first: int, stop: int):
    """Slices [first, stop) of a CT and its body mask: a scan that ends earlier at both ends."""
    g = ct.geometry
    origin = np.asarray(g.origin_mm) + g.direction @ np.array([0.0, 0.0, first * g.spacing_mm[2]])
    return (
        Volume(ct.array[first:stop].copy(), VolumeGeometry(g.spacing_mm, tuple(origin), g.direction), "HU", "slab"),
        body[first:stop],
    )


def test_no_step_where_the_scanned_volume_ends(pelvis_005, one_torch_thread):
    """The same CT scanned 75 mm shorter at each end (25 slices of 3 mm): the collimated AP pelvis image keeps
    only rows whose rays stay in the scan through the body, so it equals the full scan's image on every kept row
    (the rows where the short scan ends included); without collimation those rows lose up to all the tissue."""
    ct, body, centre = pelvis_005
    short, short_body = _slab(ct, body, 25, ct.array.shape[0] - 25)
    cleaned_full = clean_outside_body(ct, body)
    errors = {}
    for collimate in (False, True):
        areal, geometry, collimation = project_ap_pelvis(
            short, short_body, centre, pixel_spacing_mm=1.0, collimate=collimate
        )
        truth = material_projections(cleaned_full, geometry).sum(axis=0)
        image = areal.sum(axis=0)
        inside = truth > 1.0  # g/cm2: body pixels
        relative = np.abs(image - truth) / np.maximum(truth, 1.0)
        errors[collimate] = relative[inside].max()
        if collimate:
            assert collimation.collimated and collimation.columns == collimation.full_columns == 430
            assert set(collimation.limited_by) == {"inferior end of the scan", "superior end of the scan"}
            assert 250 < collimation.rows < 330  # of 350 rows at 1 mm
            # No step at the rows where the scan ends: the first and last kept rows continue their neighbours.
            profile = np.array([row[mask].mean() for row, mask in zip(image, inside)])
            jumps = np.abs(np.diff(profile))
            assert max(jumps[:3].max(), jumps[-3:].max()) <= np.percentile(jumps, 99)
    print(f"largest relative error against the full scan: {errors}")
    assert errors[False] > 0.5  # without collimation: the body is cut off
    assert errors[True] < 0.005  # collimated: measured 0.0011


def test_full_detector_on_the_whole_scan_is_collimated_at_both_ends(pelvis_005, one_torch_thread):
    """A 650 mm tall detector sees past both ends of the scan; the uncollimated image falls to zero there."""
    ct, body, centre = pelvis_005
    full_geometry, _ = ap_pelvis_geometry(
        body, ct.geometry.ijk_to_lps(), centre, pixel_spacing_mm=1.0, detector_mm=(650.0, 430.0), collimate=False
    )
    geometry, collimation = ap_pelvis_geometry(
        body, ct.geometry.ijk_to_lps(), centre, pixel_spacing_mm=1.0, detector_mm=(650.0, 430.0)
    )
    assert (collimation.full_rows, collimation.first_row, collimation.rows) == (650, 103, 452)
    uncollimated = material_projections(clean_outside_body(ct, body), full_geometry).sum(axis=0)
    middle = uncollimated[:, 165:265].mean(axis=1)
    assert middle[:20].max() < 0.5 and middle[-20:].max() < 0.5  # beyond the scan: nothing
    kept = middle[collimation.first_row : collimation.first_row + collimation.rows]
    assert kept.min() > 8.0  # g/cm2: body on every kept row
    np.testing.assert_allclose(
        geometry.project_points(centre[None])[0], full_geometry.project_points(centre[None])[0] - [0, 103], atol=1e-6
    )


def test_couch_and_wires_outside_the_body_contribute_nothing(pelvis_005, one_torch_thread):
    """Pelvic-Ref-005 has a couch under the patient and ECG-like wires (up to 3071 HU) on the patient's right,
    outside the body. The AP pelvis projection equals that of the same CT with those voxels set to air."""
    ct, body, centre = pelvis_005
    outside = ~body & (ct.array > -400)
    x_lps = ct.geometry.ijk_to_lps()[0, 0] * np.nonzero(outside)[2] + ct.geometry.ijk_to_lps()[0, 3]
    assert ct.array[outside].max() >= 3000 and outside.sum() > 100_000
    assert np.median(x_lps[ct.array[outside] > 1500]) < 0  # the wires lie on the patient's right
    by_hand = ct.with_array(np.where(outside, np.float32(-1000.0), ct.array))
    areal, geometry, _ = project_ap_pelvis(ct, body, centre, pixel_spacing_mm=2.0)
    areal_by_hand, geometry_by_hand, _ = project_ap_pelvis(by_hand, body, centre, pixel_spacing_mm=2.0)
    assert geometry.shape == geometry_by_hand.shape
    np.testing.assert_array_equal(areal, areal_by_hand)
    # Without the body mask the couch and the wires would be in the image.
    unclean = material_projections(ct, geometry)
    assert np.abs(unclean - areal).max() > 1.0  # g/cm2


def test_simulate_xray_ap_pelvis_records_its_collimation(pelvis_005, tmp_path, capsys):
    """``simulate-xray --view ap-pelvis`` with a body mask file and a 650 mm tall detector at 2 mm: the image and its
    geometry are the collimated detector, and the JSON says which rows were kept and why."""
    from PIL import Image

    from bmdgan.cli.main import main
    from bmdgan.io import write_volume

    ct, body, _ = pelvis_005
    write_volume(ct.with_array(body.astype(np.uint8), unit="label"), tmp_path / "body.nii.gz")
    source = ct.source
    code = main(
        [
            "simulate-xray",
            source,
            "-o",
            str(tmp_path / "out"),
            "--view",
            "ap-pelvis",
            "--body-mask",
            str(tmp_path / "body.nii.gz"),
            "--pixel-mm",
            "2",
            "--rows",
            "325",
            "--columns",
            "215",
            "--sid-mm",
            "1100",
        ]
    )
    assert code == 0
    record = json.loads((tmp_path / "out" / "Pelvic-Ref-005_seed0.params.json").read_text())
    collimation = record["collimation"]
    assert record["view"] == "ap-pelvis" and record["body_mask"].endswith("body.nii.gz")
    assert collimation["collimated"] and collimation["full_rows"] == 325 and 180 < collimation["rows"] < 325
    assert set(collimation["limited_by"]) == {"inferior end of the scan", "superior end of the scan"}
    geometry = json.loads((tmp_path / "out" / "Pelvic-Ref-005_seed0.geometry.json").read_text())
    assert (geometry["detector_rows"], geometry["detector_columns"]) == (collimation["rows"], 215)
    assert np.asarray(Image.open(tmp_path / "out" / "Pelvic-Ref-005_seed0.png")).shape == (collimation["rows"], 215)
    assert "collimated to 215x" in capsys.readouterr().out
    (tmp_path / "g.json").write_text(json.dumps(geometry))
    assert (
        main(
            [
                "simulate-xray",
                source,
                "-o",
                str(tmp_path / "bad"),
                "--view",
                "ap-pelvis",
                "--geometry",
                str(tmp_path / "g.json"),
            ]
        )
        == 2
    )
    assert "--view ap-pelvis sets its own geometry" in capsys.readouterr().err


@pytest.mark.slow  # the hip search on a whole-pelvis CT: 36 s on the loaded 2-core machine
def test_simulate_xray_auto_view_takes_ap_pelvis_for_a_ct_with_both_hips(pelvis_005, tmp_path):
    from bmdgan.cli.main import main

    ct, _, _ = pelvis_005
    assert main(["simulate-xray", ct.source, "-o", str(tmp_path), "--pixel-mm", "2"]) == 0
    record = json.loads((tmp_path / "Pelvic-Ref-005_seed0.params.json").read_text())
    assert record["view"] == "ap-pelvis" and record["hips_in_ct"] == ["left", "right"]
    assert record["detector_mm"] == [350.0, 430.0]


# ---------------------------------------------------------------------- cohorts with both hips of a CT
def synthetic_pelvis_hips() -> list:
    """A synthetic whole-pelvis CT (4 mm voxels, LPS, head-first) holding two femurs, prepared side by side: the
    patient's right femur at -x, the left at +x with 1.5 times the mineral; a sacrum-like block between them."""
    from bmdgan.cohort.prepared_ct import PreparedCT

    shape = (90, 70, 110)  # k, j, i at 4 mm: 360 x 280 x 440 mm
    geometry = VolumeGeometry((4.0, 4.0, 4.0), (-218.0, -138.0, -178.0))
    k, j, i = np.indices(shape)
    x, y, z = -218 + 4.0 * i, -138 + 4.0 * j, -178 + 4.0 * k
    hu = np.where((x / 190) ** 2 + (y / 120) ** 2 < 1, 40.0, -1000.0).astype(np.float32)
    body = hu > -500
    sacrum = (np.abs(x) < 40) & (np.abs(y - 60) < 25) & (z > 0) & (z < 120)
    hips = []
    density = np.zeros(shape, np.float32)
    for side, sign, factor in (("right", -1.0, 1.0), ("left", 1.0, 1.5)):
        head = (x - sign * 80) ** 2 + y**2 + z**2 < 22**2
        neck = (np.abs(z + 12) < 10) & (np.abs(y) < 10) & (sign * x > 80) & (sign * x < 118)
        shaft = ((x - sign * 120) ** 2 + y**2 < 15**2) & (z < -10)
        bone = head | neck | shaft
        core = ((x - sign * 80) ** 2 + y**2 + z**2 < 17**2) | ((x - sign * 120) ** 2 + y**2 < 10**2) & (z < -10)
        density[bone] = np.where(core, 200.0, 900.0)[bone] * factor
        hips.append((side, sign, factor, bone, bone & (z > -70)))
    density[sacrum] = 250.0
    bone_any = density > 0
    hu[bone_any] = density[bone_any] / 0.75 + 40.0
    prepared = []
    for side, sign, factor, bone, pf in hips:
        lateral = np.array([sign, 0.0, 0.0])
        up = np.array([0.0, 0.0, 1.0])
        prepared.append(
            PreparedCT(
                "SYNP",
                Volume(hu, geometry, "HU", "synthetic pelvis"),
                density,
                bone | sacrum,
                pf,
                np.array([sign * 80, 0.0, 0.0]),
                np.array([sign * 120, 0.0, -80.0]),
                side,
                (0.3 * factor, 0.5 * factor),
                (150.0 * factor, 100.0 * factor),
                {"method": "synthetic"},
                np.stack([lateral, np.cross(up, lateral), up]),
                body,
                f"SYNP_{side}",
            )
        )
    return prepared


def test_ap_pelvis_cohort_gives_one_case_per_hip_with_its_own_truth(tmp_path, one_torch_thread):
    from bmdgan.cohort.generator import CohortSettings, make_patient_cases, patient_of
    from bmdgan.cohort.prepared_ct import save_prepared
    from bmdgan.datasets.normalise import region_landmarks

    for prepared in synthetic_pelvis_hips():
        save_prepared(prepared, tmp_path)
    settings = CohortSettings(
        str(tmp_path), seed=4, patients_per_ct=1, poses=("standing",), image_shape=(128, 64), bone_draw="source"
    )  # densities x the synthetic bones own: the head stays the PF-DRR's thickest part
    cases = make_patient_cases(settings, "SYNP", 0)
    assert [(record.side, record.mirrored, record.case_id) for record, _ in cases] == [
        ("left", True, "SYNP-v000-standing-left"),
        ("right", False, "SYNP-v000-standing-right"),
    ]
    patient = patient_of(settings, "SYNP", 0, "SYNP_left")
    truth = {record.side: record for record, _ in cases}
    images = {record.side: case_images for record, case_images in cases}
    for side, factor in (("right", 1.0), ("left", 1.5)):
        assert truth[side].ct_abmd_g_cm2 == pytest.approx(
            factor * (0.3 * patient.trabecular_factor + 0.5 * patient.cortical_factor)
        )
        assert images[side]["radiograph"].shape == (128, 64)
        assert (images[side]["drr_stage1"] >= images[side]["drr_pf"] - 1e-5).all()
    # Each region holds its own hip: the left femur has 1.5 times the mineral of the right one.
    ratio = images["left"]["drr_pf"].sum() / images["right"]["drr_pf"].sum()
    assert ratio == pytest.approx(1.5, rel=0.08)
    # Oriented like a right hip: the head (medial, PF) lies right of the shaft (stage-1 minus PF, lower half).
    for side in ("left", "right"):
        pf, stage1 = images[side]["drr_pf"], images[side]["drr_stage1"]
        columns = np.arange(pf.shape[1])
        shaft = np.clip(stage1 - pf, 0, None)[96:]
        assert (columns * pf.sum(0)).sum() / pf.sum() > (columns * shaft.sum(0)).sum() / shaft.sum() + 3
    # The provenance says where the case came from; each case's region puts the femoral head centre where the
    # model expects it (on the head, the PF's thickest part), and the full image's head centres lie on its sides.
    provenance = json.loads(truth["left"].provenance)
    assert provenance["ct"] == "SYNP" and provenance["side"] == "left" and provenance["view"] == "ap-pelvis"
    (column, row), _, _ = region_landmarks((128, 64))
    for side in ("left", "right"):
        pf = images[side]["drr_pf"]
        assert pf[int(round(row)), int(round(column))] > 0.6 * pf.max()
    right_head, left_head = (json.loads(truth[side].provenance)["head_centre_px"] for side in ("right", "left"))
    width = json.loads(truth["left"].provenance)["image_px"][1]
    assert right_head[0] < width / 2 < left_head[0]  # the patient's right on the image's left


def test_bilateral_cohort_holds_both_hips_in_either_view_and_resumes(tmp_path, one_torch_thread):
    from bmdgan.cohort.generator import CohortSettings, simulate_cohort
    from bmdgan.cohort.prepared_ct import save_prepared
    from bmdgan.datasets.folds import source_ct_of
    from bmdgan.datasets.format import read_manifest

    for prepared in synthetic_pelvis_hips():
        save_prepared(prepared, tmp_path / "prepared")
    for view in ("auto", "hip"):
        settings = CohortSettings(
            str(tmp_path / "prepared"),
            seed=1,
            patients_per_ct=2,
            poses=("standing",),
            image_shape=(64, 32),
            folds=2,
            view=view,
        )
        out = tmp_path / view
        summary = simulate_cohort(settings, ["SYNP"], out, workers=1, progress=False)
        records = read_manifest(out)
        assert summary["images"] == 4 and summary["patients"] == 2
        assert sorted({(source_ct_of(r), r.side) for r in records}) == [("SYNP", "left"), ("SYNP", "right")]
        assert {r.case_id for r in records} == {
            f"SYNP-v00{n}-standing-{side}" for n in (0, 1) for side in ("left", "right")
        }
        assert simulate_cohort(settings, ["SYNP"], out, workers=1, progress=False)["written_now"] == 0


def test_wider_positioning_ranges_tilt_the_same_patients_further_and_defaults_stay_the_cohorts():
    """``simulate-landmarks --ap-positioning-deg``: the AP views' rotations on the table are drawn within the
    half-ranges given (degrees about the long, left-right and beam axes); the cohorts' own ranges give exactly the
    positionings drawn before, so views rendered without the option are the same images."""
    patients = [sample_patient(0, "CT_A-landmarks", index) for index in range(200)]
    default = [sample_positioning(0, patient, "standing") for patient in patients]
    cohorts = tuple(POSITIONING_DEG.values())
    assert default == [sample_positioning(0, patient, "standing", cohorts) for patient in patients]
    wide = {"about_long_axis": 10.0, "about_left_right_axis": 15.0, "about_ap_axis": 3.0}
    drawn = [sample_positioning(0, patient, "standing", tuple(wide.values())) for patient in patients]
    for axis, limit in wide.items():
        angles = np.array([getattr(p, f"{axis}_deg") for p in drawn])
        assert np.all(np.abs(angles) <= limit) and np.abs(angles).max() > 0.9 * limit
        # the same uniform draw, scaled: each patient tilts the same way, further
        before = np.array([getattr(p, f"{axis}_deg") for p in default])
        assert np.allclose(angles, before * limit / POSITIONING_DEG[axis])
    assert [p.detector_shift_mm for p in drawn] == [p.detector_shift_mm for p in default]
    assert positioning_ranges("10,15,3") == (10.0, 15.0, 3.0)
    for bad in ("10,15", "10,15,3,1", "10,-1,3", "10,nan,3", "10,90,3"):
        with pytest.raises(argparse.ArgumentTypeError, match="half-ranges of 0-45 degrees"):
            positioning_ranges(bad)


# ---------------------------------------------------------------------- the two whole-pelvis CTs
@pytest.mark.slow
def test_two_whole_pelvis_cts_give_four_bones(prepared_whole_pelves, tmp_path_factory):
    """A cohort of Pelvic-Ref-002 and -005 holds four virtual bones: both hips of each CT, each with its side,
    as AP pelvis cases with their own ground truth."""
    from bmdgan.cohort.generator import CohortSettings, simulate_cohort
    from bmdgan.datasets.folds import source_ct_of
    from bmdgan.datasets.format import load_image, read_manifest

    out = tmp_path_factory.mktemp("four_bones")
    prepared, ct_ids, skipped = prepared_whole_pelves
    assert ct_ids == ["Pelvic-Ref-002", "Pelvic-Ref-005"] and not skipped, skipped
    settings = CohortSettings(
        str(prepared),
        seed=0,
        patients_per_ct=1,
        poses=("standing",),
        image_shape=(128, 64),
        folds=2,
        fold_by="ct",
    )
    simulate_cohort(settings, ct_ids, out, workers=1, progress=False)
    records = read_manifest(out)
    bones = sorted((source_ct_of(r), r.side) for r in records)
    assert bones == [(ct, side) for ct in ct_ids for side in ("left", "right")]
    for record in records:
        assert json.loads(record.provenance)["view"] == "ap-pelvis"
        assert record.mirrored == (record.side == "left")
        assert 0.3 < record.ct_abmd_g_cm2 < 1.6 and 100 < record.qct_vbmd_mg_cm3 < 600
        assert load_image(out, record, "drr_pf").max() > 0.3  # g/cm2: its own hip's PF region
    for ct in ct_ids:  # both hips of a CT in one fold
        assert len({r.fold for r in records if source_ct_of(r) == ct}) == 1


@pytest.mark.slow
def test_virtual_screws_in_one_hip_teach_the_detector_as_a_variant_of_its_ct(prepared_whole_pelves, tmp_path):
    """``--screw-views``: screws put into Pelvic-Ref-002's left neck are in the CT every hip of it carries (an AP
    view shows them whichever hip's volume it projects), fill three 7.3 mm cylinders in the left femur far from the
    right hip, and leave the prepared hips on disk as they were. Its views are filed under the CT as a variant, so
    whole-CT folds keep them with it and the cross-validation never measures them as the real bone."""
    folder, _, _ = prepared_whole_pelves
    hips = {hip.side: hip for hip in (load_prepared(folder, key) for key in prepared_bones(folder, "Pelvic-Ref-002"))}
    screws = screw_mask(hips["left"])
    screwed = {hip.side: hip for hip in with_screws_on(list(hips.values()), "left")}
    for hip in screwed.values():
        assert np.all(hip.hu.array[screws] == METAL_HU) and not np.any(hip.hu.array[~screws] == METAL_HU)
    for hip in hips.values():  # the loaded hips are left alone
        assert not np.any(hip.hu.array[screws] == METAL_HU) and np.all(hip.density_mg_cm3[screws] < 2000.0)
    volume_mm3 = screws.sum() * float(np.prod(hips["left"].hu.geometry.spacing_mm))
    assert 0.6 < volume_mm3 / (3 * np.pi * (SCREW_DIAMETER_MM / 2) ** 2 * 103.0) < 1.1
    assert np.mean(hips["left"].bone_mask[screws]) > 0.8 and not np.any(hips["right"].pf_mask[screws])
    centroid = hips["left"].hu.geometry.ijk_to_lps() @ np.r_[np.argwhere(screws).mean(axis=0)[::-1], 1.0]
    assert np.linalg.norm(centroid[:3] - hips["left"].head_centre_lps) < 50.0  # mm: along the neck
    assert np.linalg.norm(centroid[:3] - hips["right"].head_centre_lps) > 120.0

    # screw views alternate kind (single-hip) or side (AP) so that each of the two gets all four poses in eight views
    assert {(screw_turn(index), index % 4) for index in range(8)} == {
        (turn, pose) for turn in (0, 1) for pose in range(4)
    }
    out = tmp_path / "views"
    counts = simulate_landmark_views(
        str(folder), ["Pelvic-Ref-002"], str(out), 0, 0, seed=0, progress=False, screw_views=1
    )
    assert counts == {"hip (screws)": 2, "ap-pelvis (screws)": 1}
    views = read_views(out)
    assert {view.anatomy for view in views} == {
        "Pelvic-Ref-002_left_neck_screws",
        "Pelvic-Ref-002_right_neck_screws",
    }
    assert all(view.ct == "Pelvic-Ref-002" for view in views)
    ap = next(view for view in views if view.view == "ap-pelvis")
    assert ap.anatomy == "Pelvic-Ref-002_right_neck_screws" and all(ap.landmarks.values())


def _hu_around(prepared, centre_lps) -> np.ndarray:
    """The CT (HU, linear interpolation) on a 30 mm cube of points 1.5 mm apart around a point (LPS mm)."""
    from scipy.ndimage import map_coordinates

    offsets = np.stack(np.meshgrid(*[np.arange(-15.0, 15.1, 1.5)] * 3, indexing="ij"), -1).reshape(-1, 3)
    lps = np.c_[offsets + centre_lps, np.ones(len(offsets))].T
    ijk = np.linalg.solve(prepared.hu.geometry.ijk_to_lps(), lps)[:3]
    return map_coordinates(prepared.hu.array, ijk[::-1], order=1)


def test_femurs_moved_in_their_joints_carry_their_heads_and_views_stay_with_their_ct(prepared_whole_pelves, tmp_path):
    """``--moved-femurs``: Pelvic-Ref-005 with each femur moved in its own hip joint. The CT around each moved head
    is the CT around the original head (the femur moved rigidly, its landmark with it), the pelvis away from the
    femurs is untouched, and its AP pelvis views are filed under the CT, so whole-CT folds keep them with it."""
    import shutil

    from bmdgan.cohort.transplant import MOVE_MM, prepare_moved_femurs
    from bmdgan.detection.training import views_without

    source, _, _ = prepared_whole_pelves
    folder = tmp_path / "prepared"
    folder.mkdir()
    for path in source.glob("Pelvic-Ref-005*"):
        shutil.copy(path, folder / path.name)
    entries, refused = prepare_moved_femurs(folder, 1, seed=0, progress=False)
    assert entries == ["Pelvic-Ref-005-m00"] and refused == {}
    hips = {hip.side: hip for hip in (load_prepared(folder, key) for key in prepared_bones(folder, "Pelvic-Ref-005"))}
    for side, original in hips.items():
        moved = load_prepared(folder, f"Pelvic-Ref-005-m00_{side}")
        move = moved.head_centre_lps - original.head_centre_lps
        assert 1.0 < np.linalg.norm(move) <= np.sqrt(3) * MOVE_MM and moved.donor_ct == "Pelvic-Ref-005"

        before = _hu_around(original, original.head_centre_lps)
        at_moved = np.abs(_hu_around(moved, moved.head_centre_lps) - before).mean()  # HU
        at_original = np.abs(_hu_around(moved, original.head_centre_lps) - before).mean()
        assert at_moved < 15.0 and at_moved < 0.4 * at_original  # measured: 7-9 HU against 29-51 HU
    femurs = hips["left"].femur_mask | hips["right"].femur_mask
    from scipy.ndimage import binary_dilation

    pelvis = hips["left"].bone_mask & ~binary_dilation(femurs, iterations=8)
    np.testing.assert_array_equal(moved.hu.array[pelvis], hips["left"].hu.array[pelvis])

    out = tmp_path / "views"
    counts = simulate_landmark_views(
        str(folder),
        ["Pelvic-Ref-005"],
        str(out),
        0,
        0,
        seed=0,
        progress=False,
        anatomies={"Pelvic-Ref-005": entries},
        ap_per_anatomy=1,
    )
    assert counts == {"ap-pelvis (anatomies)": 1}
    (view,) = read_views(out)
    assert view.ct == "Pelvic-Ref-005" and view.anatomy == "Pelvic-Ref-005-m00" and all(view.landmarks.values())
    assert views_without([view], {"Pelvic-Ref-005"}) == [] and views_without([view], {"Pelvic-Ref-002"}) == [view]
