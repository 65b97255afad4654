"""Commands ``bmdgan drr``, ``simulate-xray`` and ``drr-gallery``; atomic output files."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from bmdgan.atomic import atomic_path
from bmdgan.cli.main import main
from bmdgan.io import Volume, VolumeGeometry, read_radiograph, write_volume
from bmdgan.projection import ProjectionGeometry
from bmdgan.projection.image_io import read_drr_tiff


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory):
    """A 2 mm CT in HU (water cube with a bone block) and its label map (1 soft tissue, 2 bone), NIfTI."""
    folder = tmp_path_factory.mktemp("ct")
    hu = np.full((30, 32, 34), -1000.0, np.float32)
    labels = np.zeros(hu.shape, np.int16)
    hu[5:25, 6:26, 7:27] = 0.0
    labels[5:25, 6:26, 7:27] = 1
    hu[10:20, 12:20, 20:26] = 1000.0
    labels[10:20, 12:20, 20:26] = 2
    geometry = VolumeGeometry((2.0, 2.0, 2.0), (-33.0, -31.0, -29.0))
    ct = write_volume(Volume(hu, geometry), folder / "ct.nii.gz")
    label_path = write_volume(Volume(labels, geometry, unit="label"), folder / "labels.nii.gz")
    density = write_volume(
        Volume(np.where(labels > 0, 1000.0, 0.0).astype(np.float32), geometry), folder / "density.nii.gz"
    )
    return ct, label_path, density


def test_drr_command_writes_a_masked_float_tiff_with_units_and_geometry(ct_files, tmp_path):
    ct, labels, _ = ct_files
    out = tmp_path / "drr.tif"
    code = main(
        [
            "drr",
            str(ct),
            "--out",
            str(out),
            "--labels",
            str(labels),
            "--channel",
            "soft=1",
            "--channel",
            "bone=2",
            "--include-unmasked",
            "--geometry-out",
            str(tmp_path / "g.json"),
            "--png",
            str(tmp_path / "drr.png"),
            "--pixel-mm",
            "1.0",
            "--hu-model",
            "water",
        ]
    )
    assert code == 0
    drr, metadata = read_drr_tiff(out)
    assert drr.channels == ["all", "soft", "bone"] and drr.unit == "1" and metadata["energy_kev"] == 50.0
    assert metadata["hu_model"] == "water"
    assert drr.image.dtype == np.float32 and drr.image.shape[0] == 3
    np.testing.assert_allclose(drr.image[1] + drr.image[2], drr.image[0], rtol=1e-5, atol=1e-6)
    saved = ProjectionGeometry.load(tmp_path / "g.json")
    assert saved.shape == drr.image.shape[1:] and np.allclose(saved.camera_from_lps, drr.geometry.camera_from_lps)
    # water: mu = 0.02269 /mm at 50 keV over the 40 mm of the cube along the central ray
    centre = tuple(int(round(v)) for v in saved.principal_point_px[::-1])
    assert drr.image[1][centre] == pytest.approx(40.0 * 0.02269, rel=0.01)
    assert read_radiograph(tmp_path / "drr.png").bits_stored == 16
    # the same geometry read back from JSON gives the same image
    again = tmp_path / "again.tif"
    assert (
        main(["drr", str(ct), "--out", str(again), "--geometry", str(tmp_path / "g.json"), "--hu-model", "water"]) == 0
    )
    np.testing.assert_allclose(read_drr_tiff(again)[0].image[0], drr.image[0], rtol=1e-6)


def test_drr_command_npy_output_in_g_per_cm2(ct_files, tmp_path):
    _, _, density = ct_files
    out = tmp_path / "drr.npy"
    assert (
        main(["drr", str(density), "--input-unit", "mg/cm3", "--out", str(out), "--parallel", "--pixel-mm", "1.0"]) == 0
    )
    image = np.load(out)
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["unit"] == "g/cm2" and metadata["geometry"]["projection"] == "parallel"
    rows, columns = image.shape[1:]
    assert image[0, rows // 2, columns // 2] == pytest.approx(4.0, rel=0.01)  # 40 mm of 1 g/cm3


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--out", "x.png"], "unknown output type"),
        (["--out", "x.tif", "--channel", "bone=2"], "--channel needs --labels"),
        (["--out", "x.tif", "--labels", "{labels}", "--channel", "bone"], "NAME=VALUE"),
        (["--out", "x.tif", "--columns", "10"], "--columns and --rows"),
    ],
)
def test_drr_command_reports_bad_input(ct_files, tmp_path, capsys, arguments, message):
    ct, labels, _ = ct_files
    arguments = [a.replace("{labels}", str(labels)) for a in arguments]
    arguments[1] = str(tmp_path / arguments[1])
    assert main(["drr", str(ct), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_simulate_xray_command_writes_reproducible_dicom_png_and_geometry(ct_files, tmp_path):
    ct, _, _ = ct_files
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"bits_stored": 16, "effective_energy_kev": 45.0}))
    arguments = [
        "simulate-xray",
        str(ct),
        "--count",
        "2",
        "--seed",
        "4",
        "--params",
        str(params),
        "--patient-id",
        "TEST",
        "--pixel-mm",
        "1.0",
    ]
    assert main(arguments + ["--out", str(tmp_path / "a")]) == 0
    assert main(arguments[:3] + ["1"] + arguments[4:] + ["--out", str(tmp_path / "b")]) == 0
    for seed in (4, 5):
        stem = tmp_path / "a" / f"ct_seed{seed}"
        radiograph = read_radiograph(stem.with_suffix(".dcm"))
        assert radiograph.bits_stored == 16 and radiograph.source_to_detector_mm == 1000.0
        record = json.loads(stem.with_suffix(".params.json").read_text())
        assert record["seed"] == seed and record["parameters"]["effective_energy_kev"] == 45.0
        geometry = ProjectionGeometry.load(stem.with_suffix(".geometry.json"))
        assert geometry.shape == radiograph.shape and read_radiograph(stem.with_suffix(".png")).bits_stored == 16
        assert pydicom.dcmread(stem.with_suffix(".dcm")).PatientID == f"TEST-{seed:05d}"
    first = pydicom.dcmread(tmp_path / "a" / "ct_seed4.dcm")
    repeated = pydicom.dcmread(tmp_path / "b" / "ct_seed4.dcm")
    assert first.PixelData == repeated.PixelData and first.SOPInstanceUID == repeated.SOPInstanceUID
    assert first.PixelData != pydicom.dcmread(tmp_path / "a" / "ct_seed5.dcm").PixelData
    assert not list((tmp_path / "a").glob(".partial-*"))


def test_drr_gallery_writes_a_picture_per_ct(shared_data, tmp_path):
    from bmdgan.cli.commands.drr_gallery import find_cts

    found = find_cts(shared_data)
    names = [path.name for path in found]
    assert "example_ct.nii.gz" in names and "vhm_pelvis.nii.gz" in names and "STS_001.nii.gz" in names
    assert not any("femur" in name or "multilabel" in name for name in names)
    cts = [
        shared_data / "ct" / "totalsegmentator_example" / "example_ct.nii.gz",
        shared_data / "ct" / "ibsi_sts" / "STS_003.nii.gz",
    ]
    assert main(["drr-gallery", *map(str, cts), "--out", str(tmp_path), "--max-side", "192"]) == 0
    summary = json.loads((tmp_path / "gallery.json").read_text())
    assert [entry["picture"] for entry in summary["cts"]] == ["example_ct_drr.png", "STS_003_drr.png"]
    for entry in summary["cts"]:
        picture = read_radiograph(tmp_path / entry["picture"])
        assert max(picture.shape) <= 192 and picture.pixels.std() > 10  # a picture with content
        assert entry["max_radiological_path"] > 3.0  # a body is in the beam
    assert (tmp_path / "gallery.png").stat().st_size > 10_000


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert not target.exists() and not list(tmp_path.iterdir())
    with atomic_path(target) as temporary:
        temporary.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_compare_xray_writes_real_simulated_and_bone_panels(shared_data, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    out = tmp_path / "compare.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmdgan",
            "compare-xray",
            str(shared_data / "ct" / "ibsi_sts" / "STS_012.nii.gz"),
            str(shared_data / "xray" / "ddh_pediatric" / "331_DDH_1.dcm"),
            "--out",
            str(out),
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    picture = np.asarray(Image.open(out).convert("L"), dtype=float)
    assert picture.shape[1] > 2 * picture.shape[0]  # three panels side by side
    thirds = np.array_split(picture, 3, axis=1)
    assert all(third.std() > 10 for third in thirds)  # each panel shows an image, not a blank
