"""Smoke training on a tiny dataset: losses fall, checkpoints reload exactly, a stopped run resumes exactly,
and two DDP processes (gloo, CPU) follow the same trajectory as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bmdgan.errors import BMDGANError
from bmdgan.models.generator import build_generator
from bmdgan.training.checkpoint import latest_checkpoint, load_weights, weights_sha256
from bmdgan.training.run import train_run


def _read_history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_losses_fall_and_model_reloads_identically(trained):
    tmp_path, histories = trained
    stage1 = histories["stage1"]
    first = np.mean([h["g_l1"] for h in stage1 if h["epoch"] == 0])
    last = np.mean([h["g_l1"] for h in stage1 if h["epoch"] == 3])
    assert last < 0.7 * first, (first, last)
    # Stage 2 starts from stage 1 (hierarchical learning): its first L1 is already below stage 1's first.
    assert histories["stage2"][0]["g_l1"] < stage1[0]["g_l1"]
    model = tmp_path / "model"
    description = json.loads((model / "model.json").read_text())
    assert description["backbone"] == "hrformer-tiny-cpu" and description["output_unit"] == "g/cm2"
    assert {c["target"] for c in description["calibrations"]} == {"ct_abmd_g_cm2", "qct_vbmd_mg_cm3"}
    # The exported weights equal the last checkpoint's, and a fresh generator gives identical outputs.
    exported = load_file(str(model / "generator.safetensors"))
    checkpoint = load_file(str(latest_checkpoint(tmp_path / "stage2" / "checkpoints") / "generator.safetensors"))
    assert all(torch.equal(exported[k], checkpoint[k]) for k in exported)
    first_generator, second_generator = build_generator("hrformer-tiny-cpu"), build_generator("hrformer-tiny-cpu")
    load_weights(model, "generator", first_generator)
    load_weights(model, "generator", second_generator)
    x = torch.randn(2, 1, 64, 32)
    with torch.no_grad():
        assert torch.equal(first_generator.eval()(x), second_generator.eval()(x))
    assert (tmp_path / "stage1" / "tensorboard").is_dir()


@pytest.mark.slow
def test_stopped_run_resumes_exactly(dataset, smoke, tmp_path):
    torch.set_num_threads(2)
    config = replace(smoke, epochs={"stage1": 3, "stage2": 1})
    straight = train_run(config, dataset, tmp_path / "straight", fold=0, stages=("stage1",), progress=False)
    train_run(config, dataset, tmp_path / "stopped", fold=0, stages=("stage1",), stop_after_epochs=1, progress=False)
    resumed = train_run(config, dataset, tmp_path / "stopped", fold=0, stages=("stage1",), progress=False)
    assert [h["epoch"] for h in resumed["stage1"]][0] == 1  # it did not start over
    logged = _read_history(tmp_path / "stopped" / "stage1" / "history.jsonl")
    assert len(logged) == len(straight["stage1"])
    for a, b in zip(logged, straight["stage1"]):
        assert a["g_total"] == pytest.approx(b["g_total"], rel=1e-5) and a["d"] == pytest.approx(b["d"], rel=1e-5)
    weights = [
        load_file(str(latest_checkpoint(tmp_path / run / "stage1" / "checkpoints") / "generator.safetensors"))
        for run in ("straight", "stopped")
    ]
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[0])


def test_a_finished_run_resumed_keeps_its_exported_model(trained, dataset, smoke):
    """Resuming a finished run (same stage-2 weights) neither refits the DRR -> BMD lines nor rewrites the model:
    its fingerprint, and so any evaluation of it, stays valid."""
    run_folder, _ = trained
    model = run_folder / "model" / "model.json"
    description = json.loads(model.read_text(encoding="utf-8"))
    stage2 = latest_checkpoint(run_folder / "stage2" / "checkpoints")
    assert description["provenance"]["encoder_sha256"] == weights_sha256(stage2, "generator")
    before = (model.stat().st_mtime_ns, model.read_bytes())
    train_run(replace(smoke, epochs={"stage1": 4, "stage2": 2}), dataset, run_folder, fold=0, progress=False)
    assert (model.stat().st_mtime_ns, model.read_bytes()) == before


def test_hierarchical_stage2_needs_stage1_and_mismatched_weights_are_refused(dataset, smoke, tmp_path):
    with pytest.raises(BMDGANError, match="needs stage 1"):
        train_run(smoke, dataset, tmp_path, fold=0, stages=("stage2",), progress=False)
    other = build_generator("resnet")
    with pytest.raises(BMDGANError):
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in build_generator("hrformer-tiny-cpu").state_dict().items()},
            str(tmp_path / "generator.safetensors"),
        )
        load_weights(tmp_path, "generator", other)


def test_a_pretrained_start_replaces_stage1_and_must_not_have_seen_the_held_out(trained, dataset, smoke, tmp_path):
    """Pretraining (issue 22 item 4): another run's stage-2 weights start stage 2, so its first steps fit far better
    than a random start; the run remembers that start, and a run that trained on the held-out patients is refused."""
    torch.set_num_threads(2)
    pretrained, _ = trained  # fold 0 held out
    config = replace(smoke, epochs={"stage1": 4, "stage2": 1})
    scratch = train_run(config, dataset, tmp_path / "scratch", 0, ("stage2",), hierarchical=False, progress=False)
    started = train_run(config, dataset, tmp_path / "started", fold=0, pretrained=pretrained, progress=False)
    assert list(started) == ["stage2"] and not (tmp_path / "started" / "stage1").exists()
    assert started["stage2"][0]["g_l1"] < 0.5 * scratch["stage2"][0]["g_l1"]
    start = weights_sha256(latest_checkpoint(pretrained / "stage2" / "checkpoints"), "generator")
    settings = json.loads((tmp_path / "started" / "run.json").read_text(encoding="utf-8"))
    assert settings["pretrained"] == {"run": str(pretrained.resolve()), "generator_sha256": start}
    model = json.loads((tmp_path / "started" / "model" / "model.json").read_text(encoding="utf-8"))
    assert model["provenance"]["pretrained"]["generator_sha256"] == start
    with pytest.raises(BMDGANError, match="started from the pretrained run"):
        train_run(config, dataset, tmp_path / "started", fold=0, progress=False)
    with pytest.raises(BMDGANError, match="which fold 1 holds out here"):
        train_run(config, dataset, tmp_path / "leak", fold=1, pretrained=pretrained, progress=False)
    with pytest.raises(BMDGANError, match="made for"):
        train_run(replace(config, backbone="resnet"), dataset, tmp_path / "other", 0, pretrained=pretrained)
    assert not (tmp_path / "leak").exists() and not (tmp_path / "other").exists()


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(dataset, tmp_path):
    """Same global batch (1 x 4 vs 2 x 2): same loss trajectory. GroupNorm makes samples independent.
    Accumulation (micro-batches of 1: 2 processes x 2 vs 1 process x 4) follows its own single-process trajectory:
    batch-1 convolutions round differently, and Adam's first steps amplify that."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    common = [
        "train",
        str(dataset),
        "--config",
        "smoke",
        "--fold",
        "0",
        "--stages",
        "stage1",
        "--epochs",
        "2",
        "--device",
        "cpu",
    ]
    single = subprocess.run(
        [sys.executable, "-m", "bmdgan", *common, "--out", str(tmp_path / "one"), "--batch-size", "4"],
        env=environment,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "bmdgan",
            *common,
            "--out",
            str(tmp_path / "two"),
            "--batch-size",
            "2",
        ],
        env=environment,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    from bmdgan.training.config import CONFIG_FOLDER

    for steps, launcher in ((2, ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]), (4, [])):
        accumulating = tmp_path / f"accumulating{steps}.yaml"
        accumulating.write_text(
            (CONFIG_FOLDER / "smoke.yaml").read_text().replace("accumulation_steps: 1", f"accumulation_steps: {steps}")
        )
        arguments = [str(accumulating) if a == "smoke" else a for a in common]
        micro = subprocess.run(
            [
                sys.executable,
                *launcher,
                "-m",
                "bmdgan",
                *arguments,
                "--out",
                str(tmp_path / f"micro{steps}"),
                "--batch-size",
                "1",
            ],
            env=environment,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=600,
        )
        assert micro.returncode == 0, micro.stderr[-3000:]
    one = _read_history(tmp_path / "one" / "stage1" / "history.jsonl")
    two = _read_history(tmp_path / "two" / "stage1" / "history.jsonl")
    accumulated_ddp = _read_history(tmp_path / "micro2" / "stage1" / "history.jsonl")
    accumulated = _read_history(tmp_path / "micro4" / "stage1" / "history.jsonl")
    assert len(one) == len(two) == len(accumulated_ddp) == len(accumulated) == 2 * 3  # 12 cases / 4, two epochs
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2
    for a, b in zip(one, two):
        assert a["g_total"] == pytest.approx(b["g_total"], rel=2e-3), (a, b)
        assert a["d"] == pytest.approx(b["d"], rel=2e-3), (a, b)
    for a, b in zip(accumulated, accumulated_ddp):
        assert a["g_total"] == pytest.approx(b["g_total"], rel=2e-3), (a, b)
        assert a["d"] == pytest.approx(b["d"], rel=2e-3), (a, b)
    # Before any update the logged loss is the mean over the whole accumulated batch, as without accumulation.
    assert accumulated_ddp[0]["g_total"] == pytest.approx(one[0]["g_total"], rel=1e-4)


@pytest.mark.slow
def test_decompose_command_writes_pf_drr_with_units(trained, dataset, tmp_path):
    from bmdgan.io.float_image import read_float_image
    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

    run_folder, _ = trained
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmdgan",
            "decompose",
            str(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH),
            "--model",
            str(run_folder / "model"),
            "--side",
            "right",
            "--out",
            str(tmp_path / "pf.tif"),
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    drr, metadata = read_float_image(tmp_path / "pf.tif")
    assert metadata["unit"] == "g/cm2" and drr.shape == (64, 32) and drr.min() >= 0
    assert set(metadata["bmd"]) == {"ct_abmd_g_cm2", "qct_vbmd_mg_cm3"}
    assert metadata["region"]["side"] == "right" and len(metadata["region"]["corners_px"]) == 4
    (run_folder / "broken").mkdir(exist_ok=True)
    (run_folder / "broken" / "model.json").write_text(json.dumps({"format": "bmdgan-model", "version": 7}))
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmdgan",
            "decompose",
            str(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH),
            "--model",
            str(run_folder / "broken"),
            "--side",
            "right",
            "--out",
            str(tmp_path / "no.tif"),
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert refused.returncode == 2 and "version 7" in refused.stderr and not (tmp_path / "no.tif").exists()


@pytest.mark.slow
def test_stage3_regression_and_baseline_train_resume_and_estimate(trained, dataset, smoke, tmp_path):
    """Stage 3 from the stage-2 encoder (frozen, then end to end) and the direct baseline: losses fall, a stopped
    run resumes into the right phase, and estimate then reports decomposition+regression."""
    import shutil

    from bmdgan.training.regression import load_regressor, train_regression

    run_folder = tmp_path / "run"
    shutil.copytree(trained[0], run_folder)
    config = replace(smoke, epochs={**smoke.epochs, "stage3_frozen": 3, "stage3_finetune": 2, "baseline": 4})
    first = train_regression(
        config, dataset, run_folder, "ct_abmd_g_cm2", "decomposition", fold=0, stop_after_epochs=2, progress=False
    )
    assert {h["phase"] for h in first} == {0}
    assert not (run_folder / "model" / "regressor_decomposition_ct_abmd_g_cm2.safetensors").exists()
    rest = train_regression(config, dataset, run_folder, "ct_abmd_g_cm2", "decomposition", fold=0, progress=False)
    assert [h["epoch"] for h in rest][0] == 2 and {h["phase"] for h in rest} == {0, 1}
    logged = _read_history(run_folder / "regression_decomposition_ct_abmd_g_cm2" / "history.jsonl")
    assert [h["epoch"] for h in logged] == [h["epoch"] for h in first + rest]  # resumed without gaps or repeats
    exported = run_folder / "model" / "regressor_decomposition_ct_abmd_g_cm2.safetensors"
    trained_weights = load_file(str(exported))
    assert (
        train_regression(config, dataset, run_folder, "ct_abmd_g_cm2", "decomposition", fold=0, progress=False) == []
    )  # already done: re-exports the trained weights, not a fresh head
    assert all(torch.equal(trained_weights[k], v) for k, v in load_file(str(exported)).items())
    baseline = train_regression(config, dataset, run_folder, "ct_abmd_g_cm2", "baseline", fold=0, progress=False)
    assert np.mean([h["loss"] for h in baseline[-3:]]) < np.mean([h["loss"] for h in baseline[:3]])
    description = json.loads((run_folder / "model" / "model.json").read_text())
    assert set(description["regressors"]) == {
        "regressor_decomposition_ct_abmd_g_cm2",
        "regressor_baseline_ct_abmd_g_cm2",
    }
    regressor = load_regressor(run_folder / "model", "regressor_decomposition_ct_abmd_g_cm2")
    with torch.no_grad():
        value = float(regressor(torch.zeros(1, 1, 64, 32))[0, 0])
    assert 0.2 < value < 1.5  # g/cm2, around the training mean
    from bmdgan.datasets.format import load_image, read_manifest
    from bmdgan.datasets.normalise import region_landmarks
    from bmdgan.detection.detector import DetectedHip
    from bmdgan.inference.estimation import estimate_hip
    from bmdgan.inference.model import DecompositionModel
    from bmdgan.inference.tscore import load_reference
    from bmdgan.io import Radiograph

    record = [r for r in read_manifest(dataset) if r.fold == 0][0]
    model = DecompositionModel.load(run_folder / "model")
    case = Radiograph(load_image(dataset, record, "radiograph"))
    head, neck, case.pixel_spacing_mm = region_landmarks(case.shape)  # the case is an input region already
    right_hip = DetectedHip("right", head, neck, 1.0, 1.0)
    hip, _ = estimate_hip(model, case, right_hip, load_reference())
    assert hip.method == "decomposition+regression" and hip.dxa_like_source == "ct_abmd_g_cm2"
    assert hip.qct_bmd_mg_cm3 is not None  # no vBMD regressor: vBMD still comes from the decomposition
    decomposition_only, _ = estimate_hip(model, case, right_hip, load_reference(), method="decomposition")
    assert decomposition_only.method == "decomposition"
    from bmdgan.evaluation.evaluate import evaluate

    report = evaluate(model, dataset, fold=0, jpeg_qualities=(), bit_depths=(), progress=False)["report"]
    assert list(report["methods"]) == ["decomposition", "decomposition+regression", "baseline"]
    assert report["methods"]["baseline"]["ct_abmd_g_cm2"]["all"]["n"] == 4

    # Another held-out fold (here: none) in the same run folder would train on fold 0's cases: refused.
    with pytest.raises(BMDGANError, match="fold: run 0, now None"):
        train_regression(config, dataset, run_folder, "ct_abmd_g_cm2", "baseline", fold=None, progress=False)
    # Stage 2 run again with nothing left to train re-exports the model and keeps both regressors.
    train_run(
        replace(smoke, epochs={"stage1": 4, "stage2": 2}),
        dataset,
        run_folder,
        fold=0,
        stages=("stage2",),
        progress=False,
    )
    assert set(json.loads((run_folder / "model" / "model.json").read_text())["regressors"]) == {
        "regressor_decomposition_ct_abmd_g_cm2",
        "regressor_baseline_ct_abmd_g_cm2",
    }
    # Stage 2 trained one epoch further: the stage-3 head learned the old encoder, so it leaves the model (the
    # baseline, which never used the generator, stays) and resuming it is refused.
    train_run(
        replace(smoke, epochs={"stage1": 4, "stage2": 3}),
        dataset,
        run_folder,
        fold=0,
        stages=("stage2",),
        progress=False,
    )
    assert set(json.loads((run_folder / "model" / "model.json").read_text())["regressors"]) == {
        "regressor_baseline_ct_abmd_g_cm2"
    }
    assert not exported.exists()
    with pytest.raises(BMDGANError, match="delete this folder"):
        train_regression(config, dataset, run_folder, "ct_abmd_g_cm2", "decomposition", fold=0, progress=False)
    # The frozen phase made longer after the end-to-end phase began: refused, not frozen again.
    shutil.rmtree(run_folder / "regression_decomposition_ct_abmd_g_cm2")
    train_regression(
        config, dataset, run_folder, "ct_abmd_g_cm2", "decomposition", fold=0, stop_after_epochs=4, progress=False
    )
    with pytest.raises(BMDGANError, match="stage3_frozen changed mid-run"):
        train_regression(
            replace(config, epochs={**config.epochs, "stage3_frozen": 6}),
            dataset,
            run_folder,
            "ct_abmd_g_cm2",
            "decomposition",
            fold=0,
            progress=False,
        )


def test_pose_filters_for_the_unseen_pose_experiment(trained, dataset):
    """Fig. 7 of the paper: train on some poses, evaluate on the others."""
    from bmdgan.evaluation.evaluate import evaluate
    from bmdgan.inference.model import DecompositionModel
    from bmdgan.training.run import training_records

    records = training_records(dataset, fold=0, poses=("pose0",))
    assert records and {r.pose for r in records} == {"pose0"} and all(r.fold != 0 for r in records)
    with pytest.raises(BMDGANError, match="no case has a pose"):
        training_records(dataset, fold=0, poses=("lateral",))
    model = DecompositionModel.load(trained[0] / "model")
    report = evaluate(model, dataset, poses=("pose1",), jpeg_qualities=(), bit_depths=(), progress=False)["report"]
    assert report["cases"] == 8  # 8 patients, one pose1 image each
    assert list(report["methods"]["decomposition"]["ct_abmd_g_cm2"]["per_pose"]) == ["pose1"]
