"""Every bad input and careless use of issue 20, as a table run through the command line in process: exit code 2,
one line on stderr and no traceback, and not one byte outside the output folder changed. Then what a table cannot
show: batches that keep every result, overwriting only bmdgan's own results, the umask, stale temporaries, DICOM
files without a suffix, duplicate radiographs and privacy in build_report.json, model files outside the model
folder, and SIGKILL of simulate-cohort and train (subprocesses: no worker left, no history line twice)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bmdgan.cli.main import build_parser, main
from bmdgan.inference.default_model import resolve_model_folder
from bmdgan.io import Volume, VolumeGeometry, write_volume
from bmdgan.outputs import MARKER
from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir
from dicom_factory import hip_like_phantom, write_dx

REPOSITORY = Path(__file__).resolve().parents[2]
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
QUICK = ("--side", "right", "--method", "decomposition")
"""One hip, no stage-3 regressors: the tests of outputs need a result, not the best estimate (4x faster)."""


# ---------------------------------------------------------------- inputs


def hip_dx(path: Path, mirrored: bool = False, **attributes) -> Path:
    """The bundled sample's right hip (simulated from a real CT) as a 12-bit DX, at its own pixel spacing unless
    overridden; ``mirrored``: the same image as a left hip."""
    sample = pydicom.dcmread(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH)
    pixels = sample.pixel_array.astype(np.float64)
    stored = np.rint(4095 * pixels / pixels.max()).astype(np.uint16)
    attributes.setdefault("PixelSpacing", [float(v) for v in sample.PixelSpacing])
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_dx(path, np.ascontiguousarray(stored[:, ::-1] if mirrored else stored), **attributes)


def png_of_zeros(path: Path, width: int, height: int, rows_stored: int | None = None) -> Path:
    """An 8-bit grey PNG of ``width`` x ``height`` zeros compressed as one stream: a 12000 x 12000 image is 144 MB
    of pixels but 140 kB on disk, what a decompression bomb is. ``rows_stored``: only so many rows of data (what a
    reader that refuses from the header never notices; saves compressing hundreds of MB in the tests)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    rows_per_block = max(1, 4_000_000 // len(row))
    chunks, done, stored = [], 0, height if rows_stored is None else rows_stored
    while done < stored:
        count = min(rows_per_block, stored - done)
        chunks.append(compressor.compress(row * count))
        done += count
    chunks.append(compressor.flush())

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(chunks)) + chunk(b"IEND", b"")
    )
    return path


def ct_array(shape=(12, 40, 40)) -> np.ndarray:
    """HU: a soft-tissue body (40 HU) with a fat layer and a bone block, in air."""
    hu = np.full(shape, -1000.0, np.float32)
    hu[:, 6:34, 6:34] = -100.0
    hu[:, 9:31, 9:31] = 40.0
    hu[:, 16:24, 16:24] = 700.0
    return hu


def nifti_ct(path: Path, array: np.ndarray | None = None, spacing=(0.8, 0.8, 2.0)) -> Path:
    return write_volume(Volume(ct_array() if array is None else array, VolumeGeometry(spacing, (0.0, 0.0, 0.0))), path)


def ct_dicom_series(folder: Path, pixel_spacing: bool = True, suffix: str = ".dcm") -> Path:
    """A CT series written with pydicom (so that PixelSpacing can be left out)."""
    folder.mkdir(parents=True, exist_ok=True)
    series, hu = generate_uid(), ct_array((4, 40, 40))
    for k, slice_hu in enumerate(hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset = FileDataset(str(folder / f"IM{k:04d}{suffix}"), {}, file_meta=meta, preamble=b"\0" * 128)
        dataset.SOPClassUID, dataset.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        dataset.Modality, dataset.SeriesInstanceUID, dataset.StudyInstanceUID = "CT", series, series + ".1"
        dataset.InstanceNumber = k + 1
        dataset.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        if pixel_spacing:
            dataset.PixelSpacing = [0.8, 0.8]
        dataset.Rows, dataset.Columns = slice_hu.shape
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 1
        dataset.RescaleIntercept, dataset.RescaleSlope = 0, 1
        dataset.PixelData = slice_hu.astype(np.int16).tobytes()
        dataset.save_as(folder / f"IM{k:04d}{suffix}", enforce_file_format=True)
    return folder


def model_copy(folder: Path) -> Path:
    shutil.copytree(resolve_model_folder(None), folder)
    return folder


def set_model_json(folder: Path, change) -> None:
    description = json.loads((folder / "model.json").read_text())
    change(description)
    (folder / "model.json").write_text(json.dumps(description))


# ---------------------------------------------------------------- the table


def _existing_user_folder(tmp: Path):
    (tmp / "out" / "hip").mkdir(parents=True)
    (tmp / "out" / "hip" / "my_notes.txt").write_text("kept by the user")
    return ["estimate", str(hip_dx(tmp / "in" / "hip.dcm")), "--out", str(tmp / "out")], "did not write"


def _overwrite_with_user_file(tmp: Path):
    result = tmp / "out" / "hip"
    result.mkdir(parents=True)
    (result / "result.json").write_text("{}")
    (result / MARKER).write_text(json.dumps({"command": "estimate", "files": ["result.json"]}))
    (result / "my_notes.txt").write_text("added by the user to an earlier result")
    return (
        ["estimate", str(hip_dx(tmp / "in" / "hip.dcm")), "--out", str(tmp / "out"), "--overwrite"],
        "--overwrite would delete them",
    )


def _out_is_a_file(tmp: Path):
    (tmp / "out.txt").write_text("a file, not a folder")
    return ["estimate", str(hip_dx(tmp / "in" / "hip.dcm")), "--out", str(tmp / "out.txt")], "is a file"


def _out_read_only(tmp: Path):
    (tmp / "locked").mkdir()
    os.chmod(tmp / "locked", 0o555)
    return ["estimate", str(hip_dx(tmp / "in" / "hip.dcm")), "--out", str(tmp / "locked" / "out")], "not writable"


def _package_into_user_folder(tmp: Path):
    model_copy(tmp / "run" / "model")
    (tmp / "shipped").mkdir()
    (tmp / "shipped" / "thesis.docx").write_text("the user's own file")
    return (
        [
            "package-model",
            str(tmp / "run"),
            "--out",
            str(tmp / "shipped"),
            "--training-command",
            "x",
            "--cts",
            "STS_001",
            "--held-out-cts",
            "STS_012",
        ],
        "did not write",
    )


def _package_without_run_json(tmp: Path):
    model_copy(tmp / "run" / "model")
    return (
        [
            "package-model",
            str(tmp / "run"),
            "--out",
            str(tmp / "shipped"),
            "--training-command",
            "x",
            "--cts",
            "STS_001",
            "--held-out-cts",
            "STS_012",
        ],
        "run.json",
    )


def _decompression_bomb(tmp: Path):
    return [
        "estimate",
        str(png_of_zeros(tmp / "bomb.png", 30000, 30000, rows_stored=8)),
        "--out",
        str(tmp / "out"),
    ], "decompression bomb"


def _huge_png(tmp: Path):
    return [
        "estimate",
        str(png_of_zeros(tmp / "huge.png", 12000, 12000, rows_stored=8)),
        "--out",
        str(tmp / "out"),
    ], "megapixels"


def _huge_dicom_header(tmp: Path):
    path = hip_dx(tmp / "big.dcm")
    dataset = pydicom.dcmread(path)
    dataset.Rows, dataset.Columns = 9000, 9000  # 81 megapixels claimed; the data are not even there
    dataset.save_as(path)
    return ["estimate", str(path), "--out", str(tmp / "out")], "megapixels"


def _bad_rescale_slope(tmp: Path):
    path = hip_dx(tmp / "slope.dcm", RescaleSlope="7.25", RescaleIntercept="0")
    data = path.read_bytes()
    assert data.count(b"7.25") == 1
    path.write_bytes(data.replace(b"7.25", b"abc "))  # pydicom refuses to write it: patch the bytes
    return ["estimate", str(path), "--out", str(tmp / "out")], "RescaleSlope"


def _zero_rescale_slope(tmp: Path):
    return [
        "estimate",
        str(hip_dx(tmp / "zero.dcm", RescaleSlope=0, RescaleIntercept=0)),
        "--out",
        str(tmp / "out"),
    ], "RescaleSlope"


def _truncated_safetensors(tmp: Path):
    model = model_copy(tmp / "model")
    data = (model / "generator.safetensors").read_bytes()
    (model / "generator.safetensors").write_bytes(data[: len(data) // 2])
    return [
        "estimate",
        str(hip_dx(tmp / "hip.dcm")),
        "--model",
        str(model),
        "--out",
        str(tmp / "out"),
    ], "generator.safetensors"


def _broken_model_json(tmp: Path):
    model = model_copy(tmp / "model")
    text = (model / "model.json").read_text()
    (model / "model.json").write_text(text[: len(text) // 2])
    return ["estimate", str(hip_dx(tmp / "hip.dcm")), "--model", str(model), "--out", str(tmp / "out")], "model.json"


def _model_json_without_calibrations(tmp: Path):
    model = model_copy(tmp / "model")
    set_model_json(model, lambda d: d.pop("calibrations"))
    return ["estimate", str(hip_dx(tmp / "hip.dcm")), "--model", str(model), "--out", str(tmp / "out")], "model.json"


def _regressor_name_outside(tmp: Path):
    model = model_copy(tmp / "model")
    (tmp / "secret.safetensors").write_bytes(b"not for bmdgan")

    def point_outside(description):
        description["regressors"]["../secret"] = description["regressors"].pop(next(iter(description["regressors"])))

    set_model_json(model, point_outside)
    return [
        "estimate",
        str(hip_dx(tmp / "hip.dcm")),
        "--model",
        str(model),
        "--out",
        str(tmp / "out"),
    ], "not a plain file name"


def _regressor_symlink_outside(tmp: Path):
    model = model_copy(tmp / "model")
    name = next(iter(json.loads((model / "model.json").read_text())["regressors"]))
    (tmp / "elsewhere.safetensors").write_bytes((model / f"{name}.safetensors").read_bytes())
    (model / f"{name}.safetensors").unlink()
    (model / f"{name}.safetensors").symlink_to(tmp / "elsewhere.safetensors")
    return ["estimate", str(hip_dx(tmp / "hip.dcm")), "--model", str(model), "--out", str(tmp / "out")], "leads outside"


def _cuda_without_cuda(tmp: Path):
    return ["estimate", str(hip_dx(tmp / "hip.dcm")), "--device", "cuda", "--out", str(tmp / "out")], "CUDA"


def _image_size_abc(tmp: Path):
    (tmp / "cases.csv").write_text("radiograph,ct,side,geometry\nx.dcm,ct.nii.gz,right,pose.json\n")
    return [
        "build-dataset",
        str(tmp / "cases.csv"),
        "--out",
        str(tmp / "out"),
        "--key",
        "k",
        "--image-size",
        "abc",
    ], "abc"


def _nrrd_without_spacing(tmp: Path):
    path = tmp / "ct.nrrd"
    array = ct_array().astype(np.int16)
    header = (
        f"NRRD0004\ntype: short\ndimension: 3\nsizes: {array.shape[2]} {array.shape[1]} {array.shape[0]}\n"
        "endian: little\nencoding: raw\n\n"
    )
    path.write_bytes(header.encode() + array.tobytes())
    return ["info", "--as", "ct", str(path)], "spacings"


def _mha_without_spacing(tmp: Path):
    array = ct_array().astype(np.int16)
    (tmp / "ct.raw").write_bytes(array.tobytes())
    (tmp / "ct.mhd").write_text(
        f"ObjectType = Image\nNDims = 3\nDimSize = {array.shape[2]} {array.shape[1]} "
        f"{array.shape[0]}\nElementType = MET_SHORT\nElementDataFile = ct.raw\n"
    )
    return ["info", "--as", "ct", str(tmp / "ct.mhd")], "ElementSpacing"


def _nifti_without_spacing(tmp: Path):
    path = nifti_ct(tmp / "ct.nii")
    data = bytearray(path.read_bytes())
    data[80:92] = struct.pack("<3f", 0.0, 0.0, 0.0)  # pixdim[1..3]
    path.write_bytes(bytes(data))
    return ["info", "--as", "ct", str(path)], "spacing"


def _dicom_ct_without_pixel_spacing(tmp: Path):
    return ["info", "--as", "ct", str(ct_dicom_series(tmp / "series", pixel_spacing=False))], "PixelSpacing"


def _spacing_in_metres(tmp: Path):
    return ["info", "--as", "ct", str(nifti_ct(tmp / "ct.nii.gz", spacing=(0.0008, 0.0008, 0.002)))], "0.05-20 mm"


def _mr_like(tmp: Path):
    rng = np.random.default_rng(0)
    mr = np.zeros((12, 40, 40), np.float32)
    mr[:, 8:32, 8:32] = rng.uniform(200, 900, (12, 24, 24))  # arbitrary MR signal on a zero background
    return ["info", "--as", "ct", str(nifti_ct(tmp / "mr.nii.gz", mr))], "Hounsfield"


def _ct_plus_1024(tmp: Path):
    return ["info", "--as", "ct", str(nifti_ct(tmp / "raw.nii.gz", ct_array() + 1024))], "+1024"


def _nan_voxels(tmp: Path):
    hu = ct_array()
    hu[5, 20, 20] = np.nan
    return ["info", "--as", "ct", str(nifti_ct(tmp / "nan.nii.gz", hu))], "NaN"


ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

CASES = [
    pytest.param(_existing_user_folder, id="estimate-out-holds-user-folder"),
    pytest.param(_overwrite_with_user_file, id="estimate-overwrite-would-delete-user-file"),
    pytest.param(_out_is_a_file, id="estimate-out-is-a-file"),
    pytest.param(
        _out_read_only,
        id="estimate-out-read-only",
        marks=pytest.mark.skipif(ROOT, reason="root may write into read-only folders"),
    ),
    pytest.param(_package_into_user_folder, id="package-model-out-holds-user-files"),
    pytest.param(_package_without_run_json, id="package-model-run-without-run-json"),
    pytest.param(_decompression_bomb, id="decompression-bomb-png"),
    pytest.param(_huge_png, id="png-12000x12000"),
    pytest.param(_huge_dicom_header, id="dicom-claims-81-megapixels"),
    pytest.param(_bad_rescale_slope, id="dicom-rescale-slope-abc"),
    pytest.param(_zero_rescale_slope, id="dicom-rescale-slope-0"),
    pytest.param(_truncated_safetensors, id="truncated-safetensors"),
    pytest.param(_broken_model_json, id="truncated-model-json"),
    pytest.param(_model_json_without_calibrations, id="model-json-without-calibrations"),
    pytest.param(_regressor_name_outside, id="model-json-names-file-outside"),
    pytest.param(_regressor_symlink_outside, id="model-regressor-symlink-outside"),
    pytest.param(_cuda_without_cuda, id="device-cuda-without-cuda"),
    pytest.param(_image_size_abc, id="image-size-abc"),
    pytest.param(_nrrd_without_spacing, id="ct-nrrd-without-spacing"),
    pytest.param(_mha_without_spacing, id="ct-mha-without-spacing"),
    pytest.param(_nifti_without_spacing, id="ct-nifti-pixdim-0"),
    pytest.param(_dicom_ct_without_pixel_spacing, id="ct-dicom-without-pixel-spacing"),
    pytest.param(_spacing_in_metres, id="ct-spacing-in-metres"),
    pytest.param(_mr_like, id="ct-mr-like"),
    pytest.param(_ct_plus_1024, id="ct-plus-1024-offset"),
    pytest.param(_nan_voxels, id="ct-nifti-nan-voxels"),
]


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (links by their target, folders by name)."""
    digest = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            digest[str(path)] = "link:" + os.readlink(path)
        elif path.is_file():
            digest[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digest[str(path)] = "folder"
    return digest


@pytest.mark.parametrize("make", CASES)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(make, tmp_path, capsys):
    """A refusal changes no byte anywhere: not the inputs, not the output folder (the user's files in it), and it
    leaves no new file or folder behind."""
    if make is _cuda_without_cuda:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    argv, expected = make(tmp_path)
    before = tree_digest(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and expected in err, err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
    assert tree_digest(tmp_path) == before


# ---------------------------------------------------------------- batches and outputs


def test_batch_of_same_names_keeps_every_result(tmp_path, capsys):
    """``a/x.dcm``, ``b/x.dcm`` and ``c/x-2.dcm``: three result folders, each with its own input's source."""
    files = [
        hip_dx(tmp_path / "a" / "x.dcm"),
        hip_dx(tmp_path / "b" / "x.dcm", PixelSpacing=[0.42, 0.42]),
        hip_dx(tmp_path / "c" / "x-2.dcm", PixelSpacing=[0.45, 0.45]),
    ]
    assert main(["estimate", *map(str, files), *QUICK, "--out", str(tmp_path / "out")]) == 0
    sources = {p.name: json.loads((p / "result.json").read_text())["source"] for p in (tmp_path / "out").iterdir()}
    assert sources == {"x-1": str(files[0]), "x-3": str(files[1]), "x-2": str(files[2])}


def test_a_failing_input_does_not_abort_the_batch(tmp_path, capsys):
    bomb = png_of_zeros(tmp_path / "bomb.png", 30000, 30000, rows_stored=8)
    good = hip_dx(tmp_path / "good.dcm")
    assert main(["estimate", str(bomb), str(good), *QUICK, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bomb.png: is a decompression bomb" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good"]


def test_overwrite_replaces_only_an_earlier_estimate_and_folders_follow_the_umask(tmp_path, capsys):
    radiograph = hip_dx(tmp_path / "hip.dcm")
    previous = os.umask(0o027)
    try:
        assert main(["estimate", str(radiograph), *QUICK, "--out", str(tmp_path / "out")]) == 0
        result = tmp_path / "out" / "hip"
        assert (result.stat().st_mode & 0o777) == 0o750  # not mkdtemp's 0700
        assert ((result / "result.json").stat().st_mode & 0o777) == 0o640
        assert ((result / "pf_drr_right.tif").stat().st_mode & 0o777) == 0o640
        first = (result / "result.json").read_bytes()
        assert main(["estimate", str(radiograph), *QUICK, "--out", str(tmp_path / "out")]) == 2
        assert "pass --overwrite" in capsys.readouterr().err
        hip_dx(radiograph, mirrored=True)  # the same name now holds a left hip
        arguments = ["estimate", str(radiograph), "--method", "decomposition", "--out", str(tmp_path / "out")]
        assert main([*arguments, "--overwrite"]) == 0
    finally:
        os.umask(previous)
    assert (result / "result.json").read_bytes() != first and (result / "pf_drr_left.tif").is_file()
    assert not (result / "pf_drr_right.tif").exists()  # the earlier result is replaced as a whole
    assert json.loads((result / MARKER).read_text())["command"] == "estimate"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hip"]


def test_temporaries_of_a_killed_run_are_removed_on_the_next_run(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    (tmp_path / "out").mkdir()
    stale = tmp_path / "out" / f".partial-{dead.pid}-0a1b2c3d-hip"
    stale.mkdir()
    (stale / "result.json").write_text("{")
    live = tmp_path / "out" / f".partial-{os.getpid()}-0a1b2c3d-other"  # a running process's: kept
    live.mkdir()
    assert main(["estimate", str(hip_dx(tmp_path / "hip.dcm")), *QUICK, "--out", str(tmp_path / "out")]) == 0
    assert not stale.exists() and live.exists()


def test_a_dicom_folder_is_read_by_content_not_by_suffix(tmp_path, capsys):
    from bmdgan.inference.estimation import input_files

    folder = tmp_path / "export"
    hip_dx(folder / "IM0001")
    hip_dx(folder / "IM0002.dcm")
    (folder / "README.txt").write_text("exported by the PACS")
    (folder / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    assert [p.name for p in input_files([str(folder)])] == ["IM0001", "IM0002.dcm"]
    assert main(["estimate", str(folder), *QUICK, "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["IM0001", "IM0002"]


def test_a_ct_dicom_series_without_suffixes_is_read(tmp_path):
    from bmdgan.io import read_ct

    volume = read_ct(ct_dicom_series(tmp_path / "series", suffix=""))
    assert volume.shape_ijk == (40, 40, 4)
    np.testing.assert_allclose(volume.geometry.spacing_mm, (0.8, 0.8, 2.0), atol=1e-4)
    assert float(volume.array.min()) == -1000.0 and float(volume.array.max()) == 700.0


def test_warnings_ask_only_for_options_that_exist(tmp_path):
    from PIL import Image

    from bmdgan.io import read_radiograph

    options = {option for action in _all_actions(build_parser()) for option in action.option_strings}
    png = tmp_path / "hip.png"
    Image.fromarray((255 * hip_like_phantom(96, 64)[0]).astype(np.uint8)).save(png)
    no_spacing = hip_dx(tmp_path / "nospacing.dcm")
    dataset = pydicom.dcmread(no_spacing)
    del dataset.PixelSpacing
    dataset.save_as(no_spacing)
    for path in (png, no_spacing):
        warnings = read_radiograph(path).warnings
        assert any("no pixel spacing" in warning for warning in warnings)
        for warning in warnings:
            asked = set(re.findall(r"--[a-z][a-z0-9-]+", warning))
            assert asked <= options, (warning, asked - options)


def _all_actions(parser):
    for action in parser._actions:
        yield action
        for sub in (
            getattr(action, "choices", None).values() if isinstance(getattr(action, "choices", None), dict) else ()
        ):
            yield from _all_actions(sub)


# ---------------------------------------------------------------- datasets: duplicates and privacy


def test_one_radiograph_under_two_patient_keys_and_no_identifier_in_the_report(tmp_path, capsys):
    """The same radiograph (a copy with the same SOPInstanceUID) listed for two patients: the second row is refused,
    so it cannot reach another fold. The report names no patient, path component or file name of the source, and
    a pose of free text is refused."""
    identifying = {"PatientName": "Doe^Jane", "PatientID": "MRN-987654"}
    source = tmp_path / "DOE_JANE_1950" / "hip_MRN987654.dcm"
    hip_dx(source, **identifying)
    copy = tmp_path / "copies" / "Smith_John_scan.dcm"
    copy.parent.mkdir()
    shutil.copyfile(source, copy)
    rows = [
        {
            "radiograph": str(source),
            "ct": "missing_ct_of_Jane_Doe.nii.gz",
            "side": "right",
            "geometry": "pose.json",
            "patient": "",
        },
        {
            "radiograph": str(copy),
            "ct": "missing_ct_of_Jane_Doe.nii.gz",
            "side": "right",
            "geometry": "pose.json",
            "patient": "John Smith",
        },
        {
            "radiograph": str(hip_dx(tmp_path / "other.dcm", PatientID="MRN-111", RescaleSlope=2, RescaleIntercept=0)),
            "ct": str(source),
            "side": "left",
            "geometry": str(source),
            "patient": "",
            "pose": "Jane Doe standing, ward 4",
        },
    ]
    with open(tmp_path / "cases.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "dataset"
    assert main(["build-dataset", str(tmp_path / "cases.csv"), "--out", str(out), "--key", "secret"]) == 0
    report = json.loads((out / "build_report.json").read_text())
    assert report["built"] == [] and set(report["skipped"]) == {"row 1", "row 2", "row 3"}
    assert report["skipped"]["row 1"] == "ct file: the case's ct file does not exist (fix the case table)"
    assert "same radiograph as row 1" in report["skipped"]["row 2"]
    assert "the pose is not a short label" in report["skipped"]["row 3"]  # free text never reaches the manifest
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace").lower()
            for secret in (r"\bdoe\b", "jane", r"\bmrn", "987654", "smith", "john", "1950", re.escape(str(tmp_path))):
                assert not re.search(secret, text, re.IGNORECASE), (path.name, secret, text[:400])


# ---------------------------------------------------------------- model files outside the model folder


def test_train_never_deletes_a_file_outside_the_model_folder(tmp_path):
    from bmdgan.errors import InputError
    from bmdgan.training.run import regressors_still_valid

    model = model_copy(tmp_path / "run" / "model")
    victim = tmp_path / "precious.safetensors"
    victim.write_bytes(b"someone else's file")

    def stale_entry_outside(description):
        description["regressors"]["../../precious"] = {
            "kind": "decomposition",
            "target": "ct_abmd_g_cm2",
            "encoder_sha256": "an older encoder",
        }

    set_model_json(model, stale_entry_outside)
    with pytest.raises(InputError, match="not a plain file name"):
        regressors_still_valid(model, tmp_path / "run")
    assert victim.read_bytes() == b"someone else's file"


# ---------------------------------------------------------------- SIGKILL: no process left, no history line twice


def _children_of(pid: int) -> set[int]:
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.add(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


COHORT_SCRIPT = """
import sys
from pathlib import Path
sys.path[:0] = [{engine!r}]
from test_cohort import synthetic_femur
from bmdgan.cohort.generator import CohortSettings, simulate_cohort
from bmdgan.cohort.prepared_ct import save_prepared
prepared = Path({folder!r}) / "prepared"
save_prepared(synthetic_femur(), prepared)
settings = CohortSettings(str(prepared), patients_per_ct=200, poses=("standing",), image_shape=(64, 32), folds=2)
simulate_cohort(settings, ["SYN"], Path({folder!r}) / "cohort", workers=2, progress=False)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to list processes")
def test_sigkill_of_simulate_cohort_leaves_no_worker(tmp_path):
    script = COHORT_SCRIPT.format(engine=str(Path(__file__).parent), folder=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
        workers |= _children_of(parent.pid)
        time.sleep(0.05)
    assert len(workers) >= 2, "the pool did not start"
    time.sleep(random.Random().uniform(0.2, 2.0))  # a random point of the simulation
    assert parent.poll() is None, "the cohort finished before it could be killed"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"pool workers {left} outlived the killed simulate-cohort"


TRAIN_SCRIPT = """
import sys
from dataclasses import replace
from pathlib import Path
sys.path[:0] = [{testing!r}]
import torch
torch.set_num_threads(1)
from bmdgan.datasets.synthetic import make_pairs_dataset
from bmdgan.training.config import load_config
from bmdgan.training.run import train_run
dataset = Path({folder!r}) / "pairs"
if not (dataset / "manifest.csv").exists():
    make_pairs_dataset(dataset)
config = replace(load_config("smoke"), epochs={{"stage1": {epochs}, "stage2": 1}}, checkpoint_every_epochs=1000,
                 sample_every_epochs=1000)
train_run(config, dataset, Path({folder!r}) / "run", fold=0, stages=("stage1",), progress=False)
"""


def test_sigkill_of_train_before_its_first_checkpoint_duplicates_no_history_line(tmp_path):
    history = tmp_path / "run" / "stage1" / "history.jsonl"

    def train(epochs: int) -> subprocess.Popen:
        script = TRAIN_SCRIPT.format(testing=str(Path(__file__).parents[1]), folder=str(tmp_path), epochs=epochs)
        return subprocess.Popen(
            [sys.executable, "-c", script],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    first = train(1000)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and first.poll() is None:
        lines = history.read_text().splitlines() if history.exists() else []
        if len({json.loads(line)["epoch"] for line in lines if line.endswith("}")}) >= 2:
            break
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, 0.3))
    assert first.poll() is None, first.stderr.read()
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert not (tmp_path / "run" / "stage1" / "checkpoints" / "latest.json").exists()
    stale = tmp_path / "run" / "stage1" / f".partial-{first.pid}-x1y2z3.npy"  # as the kill could leave it
    stale.write_bytes(b"half a sample")
    second = train(3)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    records = [json.loads(line) for line in history.read_text().splitlines()]
    keys = [(r["epoch"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), "a history line is duplicated"
    assert sorted({r["epoch"] for r in records}) == [0, 1, 2]
    assert len(records) == 3 * len([r for r in records if r["epoch"] == 0])
    assert not stale.exists()
