"""``bmdgan estimate`` with a smoke-trained model: results, report, out-of-distribution warnings, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from bmdgan.datasets.format import load_image, read_manifest
from bmdgan.tscore import load_reference, t_score, who_category


def run_estimate(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bmdgan", "estimate", *arguments], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_estimate_writes_result_pf_drr_and_report(trained, dataset, tmp_path):
    run_folder, _ = trained
    record = [r for r in read_manifest(dataset) if r.fold == 0][0]
    tifffile.imwrite(tmp_path / "held_out.tif", (load_image(dataset, record, "radiograph") * 10000).astype(np.uint16))
    result = run_estimate(str(tmp_path / "held_out.tif"), "--model", str(run_folder / "model"), "--side", "right",
                          "--single-hip", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "out" / "held_out"
    summary = json.loads((folder / "result.json").read_text())
    hip = summary["hips"][0]
    assert hip["side"] == "right" and hip["method"] == "decomposition"
    assert hip["dxa_like_source"] == "ct_abmd_g_cm2" and hip["reference"] == "nhanes3_total_hip_female"
    reference = load_reference()
    assert hip["t_score"] == pytest.approx(t_score(hip["dxa_bmd_g_cm2"], reference))
    assert hip["who_category"] == who_category(hip["t_score"])
    assert (folder / "pf_drr_right.tif").is_file() and (folder / "report.png").stat().st_size > 10_000
    assert not list((tmp_path / "out").glob(".partial-*"))


@pytest.mark.slow
def test_paediatric_radiograph_is_flagged_out_of_distribution(trained, shared_data, tmp_path):
    run_folder, _ = trained
    result = run_estimate(str(shared_data / "xray" / "ddh_pediatric" / "331_DDH_1.dcm"), "--model",
                          str(run_folder / "model"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "331_DDH_1" / "result.json").read_text())
    assert [hip["side"] for hip in summary["hips"]] == ["right", "left"]  # no laterality tag: both hips
    for hip in summary["hips"]:
        assert not hip["trustworthy"]
        assert any("out of distribution" in warning for warning in hip["warnings"])
    assert "NOT TRUSTWORTHY" in result.stdout


@pytest.mark.slow
def test_corrupt_input_exits_2_and_writes_nothing(trained, tmp_path):
    run_folder, _ = trained
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"\x00" * 50)
    result = run_estimate(str(bad), "--model", str(run_folder / "model"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "not a readable DICOM" in result.stderr
    assert not (tmp_path / "out" / "scan").exists()


def test_missing_default_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BMDGAN_MODEL", str(tmp_path / "nowhere"))
    result = run_estimate(str(tmp_path / "x.png"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no default model is installed" in result.stderr
