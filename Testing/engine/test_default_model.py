"""The shipped default model: safetensors only, the main job, and an estimate within 25% of the truth of a
radiograph simulated from a CT it never saw (measured: +18 % on the bundled sample through the hip detector; the
model's whole-CT error is issue 22's, so this guards the pipeline against breakage, not the model's accuracy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bmdgan.inference.default_model import resolve_model_folder
from bmdgan.sample_data import HELD_OUT_CT_IDS, SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

REPOSITORY = Path(__file__).resolve().parents[2]


def run_bmdgan(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bmdgan", *arguments],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
        cwd=REPOSITORY,
    )


def test_default_model_is_small_safetensors_and_never_saw_the_sample_ct():
    folder = resolve_model_folder(None)
    files = {p.suffix for p in folder.iterdir() if p.is_file()}
    assert files <= {".safetensors", ".json", ".md"}, files  # no pickle anywhere
    assert sum(p.stat().st_size for p in folder.glob("*.safetensors")) < 30e6
    description = json.loads((folder / "model.json").read_text())
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "never on clinical" in card and "Not for clinical use" in card
    training_lines = [line for line in card.splitlines() if line.startswith("- Real CTs")]
    assert training_lines
    for ct_id in HELD_OUT_CT_IDS:
        assert not any(ct_id in line for line in training_lines)
    assert {c["target"] for c in description["calibrations"]} >= {"ct_abmd_g_cm2", "qct_vbmd_mg_cm3"}


def test_estimate_on_the_held_out_sample_is_within_25_percent(tmp_path):
    sample = sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH
    truth = json.loads(sample.with_name(sample.stem + "_truth.json").read_text())
    result = run_bmdgan("estimate", str(sample), "--out", str(tmp_path))  # as a user types it: the detector finds it
    assert result.returncode == 0, result.stderr
    hip = json.loads((tmp_path / sample.stem / "result.json").read_text())["hips"][0]
    assert hip["dxa_bmd_g_cm2"] == pytest.approx(truth["ct_abmd_g_cm2"], rel=0.25)
    assert (tmp_path / sample.stem / "report.png").stat().st_size > 20_000


def test_main_job_prints_the_estimate_beside_the_truth(tmp_path):
    result = run_bmdgan("demo", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "areal BMD (DXA-like)" in result.stdout and "truth" in result.stdout and "T-score" in result.stdout
    assert (tmp_path / Path(SAMPLE_SIMULATED_RADIOGRAPH).stem / "report.png").is_file()


@pytest.mark.slow
def test_full_demo_runs_every_stage_on_the_bundled_ct(tmp_path):
    """``demo --full``: the bundled CT measured, a 20-image cohort, a tiny model trained, evaluated on the held-out
    virtual patients of fold 0, with the pictures (about 35 s here)."""
    result = run_bmdgan("demo", "--full", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for stage in (
        "[1/4] measuring 1 CT",
        "[2/4] simulating 10 virtual patients x 2 poses",
        "[3/4] training",
        "[4/4] evaluating",
    ):
        assert stage in result.stdout
    manifest = (tmp_path / "cohort" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 20
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    held_out = [row for row in manifest[1:] if row.split(",")[5] == "0"]
    assert metrics["fold"] == 0 and metrics["cases"] == len(held_out) > 0
    abmd = metrics["methods"]["decomposition"]["ct_abmd_g_cm2"]["all"]
    assert -1.0 <= abmd["pcc"] <= 1.0 and 0.0 <= abmd["mae"] < 5.0  # g/cm2: 12 epochs on 16 images, a smoke run
    assert f"ct_abmd_g_cm2: PCC {abmd['pcc']:.3f}" in result.stdout
    for picture in (
        "cohort_montage.png",
        "cohort_histograms.png",
        "evaluation/robustness.png",
        "evaluation/bland_altman_decomposition_ct_abmd_g_cm2.png",
    ):
        assert (tmp_path / picture).stat().st_size > 5_000, picture
    assert (tmp_path / "run" / "model" / "model.json").is_file()


def test_full_demo_refuses_a_folder_without_cts(tmp_path):
    (tmp_path / "notes.txt").write_text("no CT here")
    result = run_bmdgan("demo", "--full", "--data", str(tmp_path), "--out", str(tmp_path / "demo"))
    assert result.returncode == 2
    assert "holds no CT volume" in result.stderr
    assert not (tmp_path / "demo").exists()


def test_bundled_sample_is_what_make_sample_makes_today(tmp_path):
    """The bundled radiograph and its truth are reproducible from the bundled CT with the current simulator and
    bone-density model (a stale sample would show the main job a truth the cohort code no longer makes). The truth
    must match exactly; the image up to its quantum noise, whose draw NumPy does not keep from one release to the
    next (NEP 19): the 15-pixel local means agree within 1 % of the image's mean at the 99th percentile (another
    seed's sample is 110 % off)."""
    import pydicom
    from scipy.ndimage import uniform_filter

    result = run_bmdgan("make-sample", str(sample_data_dir() / "STS_012.nii.gz"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [SAMPLE_SIMULATED_RADIOGRAPH, Path(SAMPLE_SIMULATED_RADIOGRAPH).stem + "_truth.json"]
    )
    bundled = sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH
    made = tmp_path / SAMPLE_SIMULATED_RADIOGRAPH
    truth_bundled = json.loads(bundled.with_name(bundled.stem + "_truth.json").read_text())
    truth_made = json.loads(made.with_name(made.stem + "_truth.json").read_text())
    assert truth_made["ct_abmd_g_cm2"] == pytest.approx(truth_bundled["ct_abmd_g_cm2"], rel=1e-9)
    assert truth_made["qct_vbmd_mg_cm3"] == pytest.approx(truth_bundled["qct_vbmd_mg_cm3"], rel=1e-9)
    assert truth_made["provenance"] == truth_bundled["provenance"]
    made_pixels = pydicom.dcmread(made).pixel_array.astype(np.float64)
    bundled_pixels = pydicom.dcmread(bundled).pixel_array.astype(np.float64)
    assert made_pixels.shape == bundled_pixels.shape
    local_mean_difference = np.abs(uniform_filter(made_pixels - bundled_pixels, 15))
    assert np.percentile(local_mean_difference, 99) < 0.01 * bundled_pixels.mean()
    assert np.median(local_mean_difference) < 0.002 * bundled_pixels.mean()
