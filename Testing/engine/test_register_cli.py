"""``bmdgan register``'s traps and failure report: spacing warnings only where the spacing is guessed, --pixel-mm /
--sid-mm refused with --geometry, the geometry JSON's keys in --help, an output prefix that keeps the whole file
name, exit code 3 for a failed registration with the likely cause (wrong pixel spacing, start far off, side) in the
JSON. Hip phantom of ``test_registration_pipeline.py`` (1 mm detector pixels): a registration takes seconds."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from test_registration_pipeline import FAST, _points, _start, hip_phantom

from bmdgan.cli.commands import register as register_command
from bmdgan.cli.main import main
from bmdgan.io import Radiograph
from bmdgan.projection import ProjectionGeometry, default_ap_geometry
from bmdgan.projection.geometry import GEOMETRY_FORMAT, GEOMETRY_VERSION
from bmdgan.projection.image_io import write_png16
from bmdgan.projection.simulator import SimulationParameters, simulate_radiograph
from bmdgan.registration import mean_projection_distance_mm, register
from bmdgan.registration.quality import FAILED_GC, GOOD_GC, GRADE_BASIS, assess_quality


@pytest.fixture(scope="module")
def hip(tmp_path_factory):
    """Phantom CT (and its NIfTI), femur points (mm), true geometry (1 mm pitch, SID 1000 mm), the simulated
    radiograph (float pixels) and its clinically processed PNG."""
    from bmdgan.io import write_volume

    torch.set_num_threads(1)  # on a busy shared CPU, 2 threads measured 4.5x slower than 1 here
    folder = tmp_path_factory.mktemp("hip")
    ct, femur = hip_phantom()
    geometry = default_ap_geometry(ct, pixel_spacing_mm=1.0)
    simulated = simulate_radiograph(ct, geometry, SimulationParameters(), rng=0)
    ct_path = write_volume(ct, folder / "hip.nii.gz")
    png_path = write_png16(folder / "hip.png", simulated.processed)
    return ct, ct_path, _points(femur, ct), geometry, simulated, png_path


def test_help_documents_geometry_keys_and_exit_codes(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # one line per option: no hyphen is broken
    assert main(["register", "--help"]) == 0
    text = capsys.readouterr().out
    keys = set(ProjectionGeometry(1000.0, 4, 3, 1.0, 1.0, (1.5, 1.0), np.eye(4)).to_dict()) - {"conventions"}
    for key in keys:  # every key that ProjectionGeometry.from_dict reads
        assert f'"{key}"' in text, key
    assert f'"format": "{GEOMETRY_FORMAT}"' in text and f'"version": {GEOMETRY_VERSION}' in text
    assert "SID, mm" in text and "detector pixel pitch, mm" in text and "4x4 matrix from CT LPS mm" in text
    assert "--pixel-mm and --sid-mm are refused with it" in text
    assert "3 when it ran but failed its quality check" in text and "with --strict also when uncertain" in text


@pytest.mark.parametrize("extra", [["--pixel-mm", "1.0"], ["--sid-mm", "1000"], ["--pixel-mm", "1", "--sid-mm", "9"]])
def test_pixel_or_sid_with_geometry_is_refused_in_one_line(tmp_path, capsys, extra):
    geometry = ProjectionGeometry(1000.0, 4, 3, 1.0, 1.0, (1.5, 1.0), np.eye(4)).save(tmp_path / "g.json")
    out = tmp_path / "out"
    code = main(
        [
            "register",
            str(tmp_path / "missing.png"),
            str(tmp_path / "missing.nii.gz"),
            "-o",
            str(out),
            "--geometry",
            str(geometry),
            *extra,
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert "cannot be combined with --geometry" in error and extra[0] in error
    assert not out.exists()  # refused before reading anything


def test_output_prefix_keeps_the_whole_name_but_a_known_ending():
    from pathlib import Path

    prefix = register_command.output_prefix
    assert prefix(Path("a.b.dcm")) == "a.b"
    assert prefix(Path("case.v2.PNG")) == "case.v2"
    assert prefix(Path("x/hip.nii.gz")) == "hip"
    assert prefix(Path("1.2.840.113619.2.55.3")) == "1.2.840.113619.2.55.3"  # DICOM file named by its UID
    assert prefix(Path("left.tiff")) == "left" and prefix(Path(".png")) == ".png"


def _args(**values) -> argparse.Namespace:
    defaults = {"geometry": None, "pixel_mm": None, "sid_mm": None, "radiograph": "r.dcm"}
    return argparse.Namespace(**{**defaults, **values})


def test_spacing_is_warned_about_only_where_it_is_guessed(hip, tmp_path):
    ct, _, _, truth, simulated, _ = hip
    pixels = simulated.pixels.astype(np.float32)
    given = truth.save(tmp_path / "truth.json")
    png = Radiograph(pixels, source="hip.png", warnings=["image files (.png) carry no pixel spacing: ..."])
    # --geometry or --pixel-mm: the pitch is known; the log says where it comes from, and warns of nothing
    for args, source in ((_args(geometry=given), "(--geometry)"), (_args(pixel_mm=1.0, sid_mm=1000.0), "(--pixel-mm)")):
        geometry, start, notes = register_command.detector_geometry(args, png, ct)
        assert geometry.column_spacing_mm == geometry.row_spacing_mm == 1.0
        assert len(notes) == 1 and source in notes[0] and "pitch 1 x 1 mm" in notes[0]
        assert not any("warning" in note for note in notes)
    # a DICOM with ImagerPixelSpacing: the detector pitch is known as well
    tagged = Radiograph(pixels, source="hip.dcm", imager_pixel_spacing_mm=(0.8, 0.8), source_to_detector_mm=1100.0)
    geometry, _, notes = register_command.detector_geometry(_args(), tagged, ct)
    assert geometry.column_spacing_mm == 0.8 and geometry.source_to_detector_mm == 1100.0
    assert not any("warning" in note for note in notes)
    # --pixel-mm and --sid-mm replace the file's tags, and the log says so
    geometry, _, notes = register_command.detector_geometry(_args(pixel_mm=1.0, sid_mm=1000.0), tagged, ct)
    assert geometry.column_spacing_mm == 1.0 and geometry.source_to_detector_mm == 1000.0
    assert any("differs from the file's ImagerPixelSpacing 0.8 x 0.8 mm" in note for note in notes)
    assert any("--sid-mm 1000 replaces the file's DistanceSourceToDetector 1100 mm" in note for note in notes)
    # only PixelSpacing (at the patient) without a magnification: taken as the detector pitch, a guess: warned
    guessed = Radiograph(
        pixels,
        source="hip.dcm",
        pixel_spacing_mm=(0.7, 0.7),
        spacing_source="PixelSpacing",
        source_to_detector_mm=1000.0,
    )
    geometry, _, notes = register_command.detector_geometry(_args(), guessed, ct)
    assert geometry.column_spacing_mm == 0.7
    assert any(note.startswith("warning: the pixel spacing is guessed") for note in notes)
    # ... unless the source-to-patient distance gives the magnification: then it is derived, not guessed
    derived = Radiograph(
        pixels,
        source="hip.dcm",
        pixel_spacing_mm=(0.7, 0.7),
        spacing_source="PixelSpacing",
        source_to_detector_mm=1000.0,
        source_to_patient_mm=800.0,
    )
    geometry, _, notes = register_command.detector_geometry(_args(), derived, ct)
    assert geometry.column_spacing_mm == pytest.approx(0.875)
    assert "(PixelSpacing x magnification 1.25)" in notes[0] and not any("warning" in note for note in notes)


def test_png_with_geometry_registers_without_a_spacing_warning_and_keeps_the_dotted_name(hip, tmp_path, capsys):
    import shutil

    _, ct_path, points, truth, _, png_path = hip
    radiograph = shutil.copy(png_path, tmp_path / "case.v2.png")
    shutil.copy(png_path, tmp_path / "case.v3.png")
    start = _start(truth, points).save(tmp_path / "start.json")
    out = tmp_path / "out"
    code = main(["register", str(radiograph), str(ct_path), "-o", str(out), "--geometry", str(start), "--threads", "1"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "case.v2.geometry.json",
        "case.v2.log",
        "case.v2.overlay.png",
        "case.v2.registration.json",
    ]
    log = (out / "case.v2.log").read_text()
    assert "pixel spacing" not in log and "warning" not in log
    assert "pitch 1 x 1 mm (--geometry), SID 1000 mm" in log
    record = json.loads((out / "case.v2.registration.json").read_text())
    assert record["quality"]["flag"] == "good" and record["exit_code"] == 0
    assert record["quality"]["cause"] is None and record["quality"]["grade_basis"] == GRADE_BASIS["good"]
    registered = ProjectionGeometry.load(out / "case.v2.geometry.json")
    assert mean_projection_distance_mm(truth, points, truth.camera_from_lps, registered.camera_from_lps) < 1.0
    assert "registration GOOD" in capsys.readouterr().out


def test_wrong_pixel_spacing_fails_with_exit_3_and_names_the_spacing(hip, tmp_path, capsys):
    """The radiograph has 1 mm pixels; --pixel-mm 1.4 makes the bone 1.4x too large: the registration runs, fails
    (exit 3, outputs written) and the reason gives the pitch that fits (about 1 mm)."""
    _, ct_path, _, _, _, png_path = hip
    out = tmp_path / "out"
    code = main(
        [
            "register",
            str(png_path),
            str(ct_path),
            "-o",
            str(out),
            "--pixel-mm",
            "1.4",
            "--sid-mm",
            "1000",
            "--global-search",
            "off",
            "--threads",
            "1",
        ]
    )
    assert code == register_command.EXIT_FAILED_QUALITY == 3
    record = json.loads((out / "hip.registration.json").read_text())
    quality = record["quality"]
    assert quality["flag"] == "failed" and record["exit_code"] == 3
    assert quality["cause"] == "pixel_spacing"
    assert quality["checks"]["gradient_correlation"] < FAILED_GC
    assert 0.65 < quality["diagnosis"]["best_scale_ratio"] < 0.78  # the truth: 1 / 1.4 = 0.71
    assert "detector pitch of about 1" in quality["reason"] and "--pixel-mm" in quality["reason"]
    assert quality["grade_basis"] == GRADE_BASIS["failed"]
    assert "pixel spacing" not in (out / "hip.log").read_text().split("likely cause")[0]  # no reader warning
    error = capsys.readouterr().err
    assert "registration FAILED" in error and "likely cause pixel_spacing" in error


def test_far_start_and_wrong_side_are_named(hip):
    """A start 60 mm off in the image plane, beyond the search's reach (global search off): failed, cause
    start_pose with the placement that fits. A mirrored radiograph: failed, cause side."""
    ct, _, points, truth, simulated, _ = hip
    pixels = simulated.pixels.astype(np.float32)
    far = register(pixels, _start(truth, points, np.array([0.0, 0.0, 0.0, 60.0, 0.0, 0.0])), ct, settings=FAST)
    assert mean_projection_distance_mm(truth, points, truth.camera_from_lps, far.geometry.camera_from_lps) > 20.0
    assert far.quality.flag == "failed" and far.quality.cause == "start_pose"
    assert "start pose too far off" in far.quality.reason and "--landmarks" in far.quality.reason
    shift = np.hypot(*far.quality.diagnosis["in_plane_best_shift_mm"])
    assert shift > 30.0
    mirrored = register(pixels[:, ::-1].copy(), _start(truth, points), ct, settings=FAST)
    assert mirrored.quality.flag == "failed" and mirrored.quality.cause == "side"
    diagnosis = mirrored.quality.diagnosis
    assert diagnosis["mirrored_fft_score_best"] > diagnosis["in_plane_fft_score_best"] + 0.1


def test_grades_rest_on_the_documented_measurements():
    common = {"bone_volume_cm3": 100.0, "bone_in_view": 1.0}
    good = assess_quality(GOOD_GC + 0.1, **common)
    uncertain = assess_quality(0.5 * (GOOD_GC + FAILED_GC), **common)
    failed = assess_quality(FAILED_GC - 0.1, **common)
    scaled = assess_quality(GOOD_GC + 0.1, scale_ratio=1.3, **common)
    assert [q.flag for q in (good, uncertain, failed, scaled)] == ["good", "uncertain", "failed", "uncertain"]
    assert good.cause is None and uncertain.cause == "low_similarity" and scaled.cause == "pixel_spacing"
    assert "magnification ended 1.30" in scaled.reason
    assert "as low as 0.43" in uncertain.to_dict()["grade_basis"] and "0.62-0.90" in good.to_dict()["grade_basis"]
    assert "none beyond 5 mm graded good" in good.to_dict()["grade_basis"]
    # a hard check fails whatever the similarity
    cut = assess_quality(GOOD_GC + 0.2, bone_volume_cm3=100.0, bone_in_view=0.5)
    assert cut.flag == "failed" and cut.cause == "field_of_view"
    exit_code = register_command.exit_code
    assert [exit_code(q, False) for q in (good, uncertain, failed)] == [0, 0, 3]
    assert [exit_code(q, True) for q in (good, uncertain, failed)] == [0, 3, 3]
