"""Shared options of every subcommand (bmdgan.cli.options), one-line errors and exit codes, the generated
command-line reference, and progress display in a pipe (bmdgan.progress)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bmdgan.cli import main as cli_main
from bmdgan.cli import options
from bmdgan.cli.commands import info as info_command

REPOSITORY = Path(__file__).resolve().parents[2]
READ_ONLY_COMMANDS = {"info"}
"""Subcommands that write nothing (every other one takes -o/--out)."""


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli_main.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {name: action for action in parser._actions for name in action.option_strings}


def run_bmdgan(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bmdgan", *arguments],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_every_writing_command_takes_out_and_no_other_output_spelling():
    found = subcommands()
    assert {"build-dataset", "compare-xray", "make-sample", "package-model"} <= set(found)
    for name, parser in found.items():
        actions = option_actions(parser)
        assert not {"--output", "--out-dir", "--output-dir"} & set(actions), name
        if name in READ_ONLY_COMMANDS:
            assert "--out" not in actions, name
        else:
            assert actions.get("-o") is actions.get("--out") is not None, name
            assert actions["--out"].type is Path, name


def test_device_list_and_size_options_are_one_definition_everywhere():
    devices = image_sizes = 0
    for name, parser in subcommands().items():
        actions = option_actions(parser)
        if "--device" in actions:
            devices += 1
            assert actions["--device"].type is options.device and actions["--device"].default == "auto", name
        if "--image-size" in actions:
            image_sizes += 1
            assert actions["--image-size"].type is options.image_size, name
        for option, action in actions.items():
            assert not option.endswith("-count") or action.type in (int, options.positive_int), (name, option)
    assert devices >= 7 and image_sizes == 2
    # --folds is a list of fold numbers; a number of folds is --fold-count.
    assert option_actions(subcommands()["cross-validate"])["--folds"].type("0,2") == (0, 2)
    assert option_actions(subcommands()["simulate-cohort"])["--fold-count"].type is options.positive_int


def test_option_types_parse_and_refuse():
    assert options.image_size("512x256") == (512, 256) and options.image_size(" 64X32 ") == (64, 32)
    assert options.comma_list(int)("0, 1,,4") == (0, 1, 4) and options.comma_list()("") == ()
    assert options.share("10%") == pytest.approx(0.1) and options.share("0.35") == 0.35
    assert options.magnification("1") == 1.0 and options.magnification("1.15") == 1.15
    assert [options.device(text) for text in ("auto", "CPU", "cuda", "cuda:1")] == ["auto", "cpu", "cuda", "cuda:1"]
    for parse, text in (
        (options.image_size, "abc"),
        (options.image_size, "0x256"),
        (options.device, "gpu"),
        (options.device, "cuda:x"),
        (options.comma_list(int), "1,a"),
        (options.comma_list(), "a,a"),
        (options.positive_int, "0"),
        (options.non_negative_int, "-1"),
        (options.share, "35"),
        (options.share, "ten"),
        (options.magnification, "0.9"),  # a diverging beam does not shrink
        (options.magnification, "2.5"),
        (options.comma_list(choices=("standing", "supine")), "standing,sitting"),
    ):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
    assert options.resolve_device("cpu") == "cpu"


@pytest.mark.skipif(os.path.exists("/proc/driver/nvidia/version"), reason="a machine with an NVIDIA driver")
def test_an_estimate_refused_from_its_header_imports_no_torch(tmp_path):
    """On a machine without a GPU driver, --device auto is cpu without importing torch, so a decompression bomb is
    refused from its header at a small cost (issue 20: under 200 MB, benchmarks/bench_memory.py)."""
    bomb = tmp_path / "bomb.png"
    Image.new("L", (9000, 9000)).save(bomb)  # 81 megapixels: over MAX_RADIOGRAPH_PIXELS
    code = (
        "import sys\nfrom bmdgan.cli.main import main\n"
        f"code = main(['estimate', {str(bomb)!r}, '-o', {str(tmp_path / 'out')!r}])\n"
        "print(code, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", check=True)
    assert result.stdout.split() == ["2", "False"] and "megapixels" in result.stderr


def test_engine_defaults_quoted_by_the_help_are_the_engine_defaults():
    from bmdgan.cli import projection_options
    from bmdgan.datasets.folds import FOLD_GROUPS
    from bmdgan.projection import geometry

    assert projection_options.SID_HELP_MM == geometry.DEFAULT_SOURCE_TO_DETECTOR_MM
    assert projection_options.OBJECT_TO_DETECTOR_HELP_MM == geometry.DEFAULT_OBJECT_TO_DETECTOR_MM
    assert option_actions(subcommands()["simulate-cohort"])["--fold-by"].choices == FOLD_GROUPS


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["cross-validate", "DATASET", "-o", "CV", "--folds", "0,a"], ["argument --folds", "'a'"]),
        (["simulate-cohort", "CT", "-o", "OUT", "--image-size", "abc"], ["argument --image-size", "'abc'"]),
        (["build-dataset", "T.csv", "-o", "OUT", "--image-size", "512x"], ["argument --image-size"]),
        (
            ["decompose", "X.dcm", "--model", "M", "--side", "left", "-o", "X.tif", "--device", "gpu"],
            ["argument --device", "'gpu'"],
        ),
        (["train", "DATASET", "-o", "RUN", "--poses", "standing,standing"], ["argument --poses", "twice"]),
        (["register", "X.dcm", "CT.nii.gz", "-o", "OUT", "--threads", "0"], ["argument --threads"]),
        (["evaluate", "--model", "M", "--dataset", "D", "-o", "OUT", "--fold", "first"], ["argument --fold"]),
        (["simulate-xray", "CT.nii.gz", "--out-dir", "OUT"], ["required: -o/--out"]),
    ],
)
def test_bad_option_values_are_one_line_usage_errors(arguments, expected):
    assert_one_line_error(run_bmdgan(*arguments), f"bmdgan {arguments[0]}: error:", *expected)


def test_cuda_device_without_cuda_is_refused_before_any_work(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_bmdgan(
        "decompose",
        str(tmp_path / "missing.dcm"),
        "--model",
        str(tmp_path / "missing"),
        "--side",
        "left",
        "-o",
        str(tmp_path / "pf.tif"),
        "--device",
        "cuda",
    )
    assert_one_line_error(
        result, "bmdgan decompose: error: --device cuda:", "no usable CUDA device", "use --device cpu"
    )
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_an_existing_file_or_below_one_is_a_one_line_error(tmp_path, shared_data):
    """Root may write into read-only folders, so an unwritable --out is made by putting a file where a folder
    must be: the error names the path and says what to do, and no traceback is printed."""
    existing = tmp_path / "existing.txt"
    existing.write_text("kept")
    folder_output = run_bmdgan("dataset-report", str(tmp_path / "no-dataset"), "-o", str(existing))
    assert_one_line_error(folder_output, f"{existing}: File exists", "choose another output path")
    below_a_file = run_bmdgan("dataset-report", str(tmp_path / "no-dataset"), "-o", str(existing / "report"))
    assert_one_line_error(below_a_file, str(existing / "report"), "Not a directory", "not a folder")
    file_output = run_bmdgan(
        "calibrate",
        str(shared_data / "ct" / "ibsi_sts" / "STS_003.nii.gz"),
        "--phantomless",
        "-o",
        str(existing / "calibration.json"),
    )
    assert_one_line_error(file_output, "bmdgan calibrate: error:", str(existing), "choose another")
    assert existing.read_text() == "kept"
    if sys.platform.startswith("linux"):  # sysfs refuses new folders to everyone, root included
        refused = run_bmdgan("dataset-report", str(tmp_path / "no-dataset"), "-o", "/sys/bmdgan-report")
        assert_one_line_error(refused, "bmdgan dataset-report: error: /sys/bmdgan-report: ")


def test_damaged_model_files_are_one_line_errors(tmp_path):
    """A truncated safetensors file and a broken model.json (issue 20) are user errors, not tracebacks."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(REPOSITORY / "Resources" / "Models" / "default", model)
    weights = model / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    arguments = [
        "decompose",
        str(tmp_path / "x.dcm"),
        "--model",
        str(model),
        "--side",
        "left",
        "-o",
        str(tmp_path / "pf.tif"),
        "--device",
        "cpu",
    ]
    assert_one_line_error(
        run_bmdgan(*arguments), "bmdgan decompose: error:", "generator.safetensors", "truncated or damaged"
    )
    (model / "model.json").write_text('{"backbone": ')
    assert_one_line_error(run_bmdgan(*arguments), "bmdgan decompose: error:", "JSON")


def test_decompression_bomb_is_named_in_one_line_and_the_batch_goes_on(tmp_path):
    """Issue 20: a decompression-bomb PNG aborted a whole estimate batch with a traceback."""
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 Mpixel of zeros in 49 kB
    assert_one_line_error(run_bmdgan("info", str(bomb)), f"bmdgan info: error: {bomb}: ", "decompression bomb")
    sample = REPOSITORY / "Resources" / "SampleData" / "STS_012_simulated_standing.dcm"
    batch = run_bmdgan(
        "estimate",
        str(bomb),
        str(sample),
        "--single-hip",
        "--side",
        "right",
        "-o",
        str(tmp_path / "out"),
        "--device",
        "cpu",
    )
    assert batch.returncode == 2
    errors = [line for line in batch.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"bmdgan estimate: error: {bomb}: ")
    assert "Traceback" not in batch.stderr and re.search(r"right hip: aBMD \d\.\d{3} g/cm2", batch.stdout)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [sample.stem]


def test_internal_error_is_one_line_exit_1_and_debug_shows_the_traceback(monkeypatch, capsys, tmp_path):
    """A bug (here: a KeyError inside a command) is not dressed up as a user error: exit code 1, one line that
    says so and how to see the traceback; ``bmdgan --debug`` re-raises it."""

    def broken_run(args):
        return {}["missing key"]

    monkeypatch.setattr(info_command, "run", broken_run)
    assert cli_main.main(["info", str(tmp_path)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "internal error: KeyError" in lines[0] and "bmdgan --debug info" in lines[0]
    with pytest.raises(KeyError):
        cli_main.main(["--debug", "info", str(tmp_path)])


def test_help_imports_no_numpy_torch_scipy_or_simpleitk():
    """``bmdgan --help`` and every ``bmdgan CMD --help`` build parsers only: no heavy package is imported."""
    code = """
import contextlib, io, json, sys
from bmdgan.cli.main import build_parser, main
names = []
with contextlib.redirect_stdout(io.StringIO()):
    commands = sorted(build_parser()._subparsers._group_actions[0].choices)
    for argv in [["--help"]] + [[name, "--help"] for name in commands]:
        names.append(argv[0])
        try:
            main(argv)
        except SystemExit:
            pass
heavy = sorted(m for m in ("numpy", "torch", "scipy", "SimpleITK", "matplotlib", "PIL", "pydicom") if m in sys.modules)
print(json.dumps({"commands": len(names), "heavy": heavy}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", check=True)
    report = json.loads(result.stdout)
    assert report["heavy"] == [] and report["commands"] == len(subcommands()) + 1
    timing = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bmdgan", "--help"],
        capture_output=True,
        encoding="utf-8",
        check=True,
    )
    imported = {line.split("|")[-1].strip().split(".")[0] for line in timing.stderr.splitlines()}
    assert not {"numpy", "torch", "scipy", "SimpleITK"} & imported


def test_reference_document_is_up_to_date():
    """docs/cli.md is generated from the parser: regenerate with python -m bmdgan.cli.reference > docs/cli.md."""
    from bmdgan.cli.reference import reference

    text = reference()
    assert (REPOSITORY / "docs" / "cli.md").read_text(encoding="utf-8") == text
    for name in subcommands():
        assert f"\n## {name}\n" in text


def test_line_progress_in_a_pipe_writes_a_few_lines():
    code = (
        "from bmdgan.progress import progress_bar\n"
        "for _ in progress_bar(range(1024), desc='steps', unit='step'):\n    pass\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", check=True)
    lines = result.stderr.splitlines()
    assert 11 <= len(lines) <= 12 and "\r" not in result.stderr
    assert lines[0].startswith("steps: 0/1024 step (0 %)") and lines[1].startswith("steps: 103/1024 step (10 %)")
    assert lines[-1].startswith("steps: 1024/1024 step (100 %)")


def test_projection_of_a_thousand_chunks_in_a_pipe_writes_one_line():
    """The projector's transient bar (leave=False) of ~1000 chunks writes its last state only; the line integral
    through 64 mm of 100 mg/cm3 is 0.64 g/cm2."""
    code = """
import numpy as np
from bmdgan.io.volume import Volume, VolumeGeometry
from bmdgan.projection.geometry import default_ap_geometry
from bmdgan.projection.projector import Projector
volume = Volume(np.full((32, 32, 32), 100.0, np.float32), VolumeGeometry((2.0, 2.0, 2.0), (0.0, 0.0, 0.0)),
                unit="mg/cm3")
projector = Projector(volume.array, volume.geometry.ijk_to_lps(), unit="mg/cm3", chunk_bytes=2048)
image = projector.project(default_ap_geometry(volume, pixel_spacing_mm=1.0, parallel=True), progress=True)
print(float(image.max()))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", check=True)
    assert float(result.stdout) == pytest.approx(0.64, rel=1e-5)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("projecting: ")
    chunks = int(lines[0].split()[1].split("/")[0])
    assert chunks >= 1000


def test_expected_errors_are_told_apart_from_bugs(tmp_path):
    """Real exceptions, raised by the standard library: what a user can fix gets one line naming the file."""
    from bmdgan.errors import InputError, about_file, describe_expected_error

    def raised(function):
        try:
            function()
        except Exception as error:  # noqa: BLE001 - the point is to classify any error
            return error
        raise AssertionError("nothing raised")

    missing = tmp_path / "missing.json"
    assert describe_expected_error(raised(missing.read_text)) == (
        f"{missing}: No such file or directory (check the path)"
    )
    assert describe_expected_error(InputError(missing, "is empty", "give a model.json")) == (
        f"{missing}: is empty (give a model.json)"
    )

    def read_broken_json():
        with about_file(missing):
            json.loads('{"backbone": ')

    assert describe_expected_error(raised(read_broken_json)).startswith(f"{missing}: Expecting value: line 1")
    assert "cannot be read: could not convert string to float: 'n/a'" in describe_expected_error(
        raised(lambda: float("n/a"))
    )
    import numpy as np

    for bug in (
        raised(lambda: {}["key"]),
        raised(lambda: [][1]),
        raised(lambda: None.shape),
        raised(lambda: np.ones(2) + np.ones(3)),
    ):
        assert describe_expected_error(bug) is None
