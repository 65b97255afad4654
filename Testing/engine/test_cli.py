"""The ``bmdgan`` command line: help, version, the main job, and exit codes on bad input."""

from __future__ import annotations

import subprocess
import sys

import bmdgan


def run_bmdgan(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bmdgan", *arguments],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )


def test_help_and_version():
    result = run_bmdgan("--help")
    assert result.returncode == 0
    assert "info" in result.stdout and "demo" in result.stdout
    version = run_bmdgan("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"bmdgan {bmdgan.__version__}"


def test_engine_import_does_not_import_monai():
    code = "import sys, bmdgan, bmdgan.io; print('monai' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", check=True
    )
    assert result.stdout.strip() == "False"


def test_info_reads_real_files(shared_data):
    result = run_bmdgan(
        "info",
        str(shared_data / "ct" / "ibsi_sts" / "STS_003.nii.gz"),
        str(shared_data / "xray" / "ddh_pediatric" / "331_DDH_10.dcm"),
    )
    assert result.returncode == 0, result.stderr
    assert "154 x 158 x 51 voxels, spacing 0.977 x 0.977 x 3.270 mm" in result.stdout
    assert "radiograph 331 x 331 pixels, 1.000 x 1.000 mm (PixelSpacing)" in result.stdout


def test_bad_file_exits_with_code_2_and_names_it(tmp_path):
    bad = tmp_path / "scan.dcm"
    bad.write_text("not dicom")
    result = run_bmdgan("info", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "not a readable DICOM" in result.stderr
    assert "Traceback" not in result.stderr
