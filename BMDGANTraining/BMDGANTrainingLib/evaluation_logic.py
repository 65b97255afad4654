"""Evaluate a training run, without Qt: every function takes the scene or nodes.

* **Evaluate**: :meth:`EvaluationLogic.start` runs ``bmdgan evaluate --model RUN/model --dataset DATASET --fold F
  --out RUN/evaluation/fold_F`` in a separate process. Why a process: an evaluation predicts every held-out case once,
  and once more per robustness level (JPEG quality, bit depth), minutes of PyTorch that in Slicer's GUI thread would
  freeze the application; a process keeps the GUI live, is stopped like Ctrl+C (:meth:`EvaluationLogic.cancel`) and
  reports its progress through its log (:meth:`EvaluationJob.progress`).
* **Results into the scene**: :meth:`EvaluationLogic.load` reads the evaluation folder back: a table node of the
  agreement metrics of ``metrics.json`` (a row per method, target and pose), and for every method and target of
  ``predictions.csv`` a correlation chart (estimate vs ground truth, with the identity line) and a Bland-Altman chart
  (mean vs difference with the mean difference and the mean +/- 1.96 SD limits), plot chart nodes with their series;
  optionally the PNG pictures ``bmdgan evaluate`` drew, as RGB volume nodes.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk

from bmdgan.datasets.format import read_manifest
from bmdgan.errors import BMDGANError, InputError
from bmdgan.evaluation.evaluation_folder import estimate_columns, read_metrics, read_predictions
from bmdgan.evaluation.metrics import bland_altman
from bmdgan.evaluation.plots import UNITS
from bmdgan.io import LPS_TO_RAS
from BMDGANLib.engine_process import interrupt, log_tail, start_engine_process
from BMDGANLib.mrml_conversion import vtk_matrix

EVALUATION_FOLDER = "evaluation"
"""Sub-folder of a run folder holding its evaluations, one folder per fold (``fold_0``, ... ``all_cases``)."""
MIN_CASES = 3
"""Fewest cases ``bmdgan evaluate`` accepts (its agreement metrics need three pairs)."""
METRIC_COLUMNS = ("n", "pcc", "icc", "mae", "see", "rms_cv_percent")
"""Numeric columns of the metrics table, as ``metrics.json`` names them; MAE and SEE are in the target's unit."""
# A tqdm bar ("evaluating:  40%|####  | 4/10") on a terminal, a line ("evaluating: 4/10 it (40 %), 2.1 s") in the log
# the process writes here (bmdgan.progress): both give the phase and done/total.
_PROGRESS = re.compile(r"(evaluating|robustness):\s*(?:\d+%\|[^|\n]*\|\s*)?(\d+)/(\d+)")


def target_unit(target: str) -> str:
    """The unit of a BMD target from its name's suffix: ``ct_abmd_g_cm2`` -> "g/cm2", ``*_mg_cm3`` -> "mg/cm3"."""
    return next((unit for suffix, unit in UNITS.items() if target.endswith(suffix)), "")


# --- the evaluation process ----------------------------------------------------------------------------------


@dataclass
class EvaluationRequest:
    """What to evaluate: a run's exported model on a dataset's held-out fold (None: every case)."""

    run_folder: str
    dataset: str
    fold: int | None = None
    device: str = "cpu"
    robustness: bool = True

    @property
    def model_folder(self) -> Path:
        return Path(self.run_folder) / "model"

    @property
    def out_folder(self) -> Path:
        return Path(self.run_folder) / EVALUATION_FOLDER / ("all_cases" if self.fold is None else f"fold_{self.fold}")

    @property
    def log_path(self) -> Path:
        return self.out_folder / "evaluate.log"

    def robustness_levels(self) -> int:
        """How many degraded copies of the cases (JPEG qualities and bit depths) the evaluation predicts."""
        from bmdgan.evaluation.evaluate import DEFAULT_BIT_DEPTHS, DEFAULT_JPEG_QUALITIES

        return len(DEFAULT_JPEG_QUALITIES) + len(DEFAULT_BIT_DEPTHS) if self.robustness else 0

    def arguments(self) -> list[str]:
        """The ``bmdgan`` command line after ``python -m bmdgan``."""
        arguments = [
            "evaluate",
            "--model",
            str(self.model_folder),
            "--dataset",
            self.dataset,
            "--out",
            str(self.out_folder),
            "--device",
            self.device,
        ]
        arguments += ["--fold", "all" if self.fold is None else str(self.fold)]  # None: every case, as chosen
        if not self.robustness:
            arguments += ["--jpeg-qualities", "", "--bit-depths", ""]
        return arguments


def check_request(request: EvaluationRequest) -> int:
    """Refuse, with what to fix, a run without an exported model and a dataset or fold without enough cases;
    returns the number of cases to evaluate."""
    if not (request.model_folder / "model.json").is_file():
        raise InputError(
            request.run_folder,
            "has no exported model (model/model.json)",
            "train stages 1 and 2 to the end first, or choose a run folder that has a model",
        )
    records = read_manifest(request.dataset)
    chosen = [r for r in records if request.fold is None or r.fold == request.fold]
    if len(chosen) < MIN_CASES:
        folds = ", ".join(str(f) for f in sorted({r.fold for r in records}))
        where = "in all" if request.fold is None else f"in fold {request.fold}"
        raise InputError(
            request.dataset,
            f"has {len(chosen)} cases {where} (its folds: {folds or 'none'}); evaluation needs at least {MIN_CASES}",
            "choose one of its folds, or -1 for every case",
        )
    return len(chosen)


@dataclass(frozen=True)
class EvaluationProgress:
    phase: str  # "starting", "evaluating", "robustness", "finished" or "stopped"
    fraction: float  # 0-1 of the whole evaluation


@dataclass
class EvaluationJob:
    """A running (or finished) ``bmdgan evaluate`` process and what it was asked."""

    process: subprocess.Popen
    request: EvaluationRequest

    def running(self) -> bool:
        return self.process.poll() is None

    def progress(self) -> EvaluationProgress:
        """How far the process is, from the last progress bar in its log: the held-out cases count one part, every
        robustness level one more."""
        if not self.running():
            return EvaluationProgress(
                "finished" if self.process.returncode == 0 else "stopped", 1.0 if self.process.returncode == 0 else 0.0
            )
        text = self.request.log_path.read_text(errors="replace") if self.request.log_path.exists() else ""
        matches = _PROGRESS.findall(text)
        if not matches:
            return EvaluationProgress("starting", 0.0)
        phase, done, total = matches[-1]
        parts = 1 + self.request.robustness_levels()
        completed = int(done) / max(int(total), 1) if phase == "evaluating" else 1 + int(done)
        return EvaluationProgress(phase, min(1.0, completed / parts))


@dataclass
class EvaluationResult:
    """The nodes an evaluation folder was loaded into; charts keyed by (method, target)."""

    folder: Path
    report: dict
    table_node: object
    correlation_charts: dict[tuple[str, str], object] = field(default_factory=dict)
    bland_altman_charts: dict[tuple[str, str], object] = field(default_factory=dict)
    picture_nodes: list = field(default_factory=list)


class EvaluationLogic:
    """Runs one evaluation process at a time and loads its results into the scene."""

    @staticmethod
    def start(request: EvaluationRequest, python: str | None = None) -> EvaluationJob:
        """Check the request (:func:`check_request`) and start ``bmdgan evaluate``; its output goes to
        ``request.log_path``."""
        check_request(request)
        return EvaluationJob(start_engine_process(request.arguments(), request.log_path, python), request)

    @staticmethod
    def cancel(job: EvaluationJob, timeout_s: float = 10.0) -> int:
        """Stop the process like Ctrl+C (it then writes no results); returns its exit code."""
        return interrupt(job.process, timeout_s)

    def finish(self, job: EvaluationJob, scene, load_pictures: bool = False) -> EvaluationResult:
        """The finished job's results loaded into the scene (:meth:`load`); a failed or stopped job raises with the
        end of its log."""
        if job.running():
            raise BMDGANError("the evaluation is still running")
        if job.process.returncode != 0:
            raise BMDGANError(
                f"the evaluation stopped with exit code {job.process.returncode}: {log_tail(job.request.log_path)}"
            )
        name = f"{Path(job.request.run_folder).name} {job.request.out_folder.name}"
        return self.load(job.request.out_folder, scene, name, load_pictures)

    @staticmethod
    def load(
        folder: str | Path, scene, name: str = "BMD-GAN evaluation", load_pictures: bool = False
    ) -> EvaluationResult:
        """An evaluation folder (``metrics.json``, ``predictions.csv``, pictures) into nodes named after ``name``;
        nodes of that name are updated in place, so evaluating again replaces the previous results."""
        folder = Path(folder)
        report = read_metrics(folder)
        result = EvaluationResult(folder, report, metrics_table_node(report, scene, f"{name} metrics"))
        for method, target, estimate, truth in prediction_pairs(prediction_columns(folder)):
            label = f"{name} {method} {target}"
            result.correlation_charts[(method, target)] = correlation_chart(
                scene, f"{label} correlation", estimate, truth, target
            )
            result.bland_altman_charts[(method, target)] = bland_altman_chart(
                scene, f"{label} Bland-Altman", estimate, truth, target
            )
        if load_pictures:
            result.picture_nodes = [
                picture_node(path, scene, f"{name} {path.stem}") for path in sorted(folder.glob("*.png"))
            ]
        return result


def summary(report: dict) -> str:
    """One line of a ``metrics.json`` report: cases, fold, the PF-DRR's mean PSNR (dB) and Dice."""
    fold = "every case" if report["fold"] is None else f"fold {report['fold']}"
    return (
        f"{report['cases']} cases ({fold}): PF-DRR PSNR {report['pf_drr']['psnr_db_mean']:.1f} dB, "
        f"Dice {report['pf_drr']['dice_mean']:.3f}"
    )


# --- metrics table ---------------------------------------------------------------------------------------------


def metrics_rows(report: dict) -> list[dict]:
    """One row per method, target and pose ("all" first, then each pose) of a ``metrics.json`` report: method,
    target, unit, pose and the numbers of :data:`METRIC_COLUMNS` (NaN where the report has none, e.g. RMS-CV
    without repeated patients)."""
    rows = []
    for method, targets in report["methods"].items():
        for target, metrics in targets.items():
            if not metrics:
                continue  # fewer than three finite pairs: evaluate wrote no metrics
            for pose, values in [("all", metrics["all"]), *metrics["per_pose"].items()]:
                numbers = {c: math.nan if values.get(c) is None else float(values[c]) for c in METRIC_COLUMNS}
                rows.append({"method": method, "target": target, "unit": target_unit(target), "pose": pose, **numbers})
    return rows


def fill_table(table_node, columns: dict[str, list]) -> None:
    """Replace a table node's columns: text columns (str values) as strings, the others as doubles."""
    table = vtk.vtkTable()
    for name, values in columns.items():
        text = bool(values) and isinstance(values[0], str)
        array = vtk.vtkStringArray() if text else vtk.vtkDoubleArray()
        array.SetName(name)
        for value in values:
            array.InsertNextValue(value if text else float(value))
        table.AddColumn(array)
    table_node.SetAndObserveTable(table)


def _node(scene, class_name: str, name: str):
    return scene.GetFirstNodeByName(name) or scene.AddNewNodeByClass(class_name, name)


def metrics_table_node(report: dict, scene, name: str):
    """A table node of :func:`metrics_rows` (columns: method, target, unit, pose, n, pcc, icc, mae, see,
    rms_cv_percent)."""
    rows = metrics_rows(report)
    keys = ("method", "target", "unit", "pose", *METRIC_COLUMNS)
    node = _node(scene, "vtkMRMLTableNode", name)
    fill_table(node, {key: [row[key] for row in rows] for key in keys})
    return node


# --- predictions and charts ------------------------------------------------------------------------------------


def prediction_columns(folder: str | Path) -> dict[str, list[str]]:
    """An evaluation folder's ``predictions.csv`` as columns of text, keyed by its header."""
    rows = read_predictions(folder)
    return {key: [row[key] for row in rows] for key in rows[0]}


def prediction_pairs(columns: dict[str, list[str]]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(method, target, estimate, truth) for every ``TARGET_METHOD`` column of ``predictions.csv`` with its
    ``TARGET_truth`` column, cases with a non-finite value left out and pairs of fewer than :data:`MIN_CASES`
    cases skipped (as ``bmdgan evaluate``'s plots do)."""
    pairs = []
    for method, target, key in estimate_columns(columns):
        truth = np.array(columns[f"{target}_truth"], dtype=float)
        estimate = np.array(columns[key], dtype=float)
        finite = np.isfinite(estimate) & np.isfinite(truth)
        if finite.sum() >= MIN_CASES:
            pairs.append((method, target, estimate[finite], truth[finite]))
    return pairs


def _series(scene, name: str, table_node, x: str, y: str, points: bool, colour=None):
    """A scatter series of two table columns: markers only (``points``) or a line only."""
    series = _node(scene, "vtkMRMLPlotSeriesNode", name)
    series.SetAndObserveTableNodeID(table_node.GetID())
    series.SetXColumnName(x)
    series.SetYColumnName(y)
    series.SetPlotType(series.PlotTypeScatter)
    series.SetMarkerStyle(series.MarkerStyleCircle if points else series.MarkerStyleNone)
    series.SetLineStyle(series.LineStyleNone if points else series.LineStyleSolid)
    if colour is not None:
        series.SetColor(*colour)
    return series


def _chart(scene, name: str, title: str, x_title: str, y_title: str, series: list):
    chart = _node(scene, "vtkMRMLPlotChartNode", name)
    chart.RemoveAllPlotSeriesNodeIDs()
    chart.SetTitle(title)
    chart.SetXAxisTitle(x_title)
    chart.SetYAxisTitle(y_title)
    for one in series:
        chart.AddAndObservePlotSeriesNodeID(one.GetID())
    return chart


def correlation_chart(scene, name: str, estimate: np.ndarray, truth: np.ndarray, target: str):
    """Estimate (y) against ground truth (x), one point per case, with the identity line; in the target's unit."""
    unit = target_unit(target)
    points = _node(scene, "vtkMRMLTableNode", f"{name} table")
    fill_table(points, {"truth": list(truth), "estimate": list(estimate)})
    low, high = float(min(truth.min(), estimate.min())), float(max(truth.max(), estimate.max()))
    identity = _node(scene, "vtkMRMLTableNode", f"{name} identity table")
    fill_table(identity, {"truth": [low, high], "identity": [low, high]})
    series = [
        _series(scene, f"{name} cases", points, "truth", "estimate", points=True),
        _series(scene, f"{name} identity", identity, "truth", "identity", points=False, colour=(0.5, 0.5, 0.5)),
    ]
    pcc = float(np.corrcoef(estimate, truth)[0, 1])
    return _chart(
        scene,
        name,
        f"{target}: PCC {pcc:.3f} (n = {len(truth)})",
        f"ground truth ({unit})",
        f"estimate ({unit})",
        series,
    )


def bland_altman_chart(scene, name: str, estimate: np.ndarray, truth: np.ndarray, target: str):
    """Difference (estimate - truth, y) against the mean of the two (x), one point per case, with horizontal lines
    at the mean difference and the limits of agreement across the range of the means; in the target's unit."""
    unit = target_unit(target)
    points = _node(scene, "vtkMRMLTableNode", f"{name} table")
    fill_table(points, {"mean": list((estimate + truth) / 2.0), "difference": list(estimate - truth)})
    limits = bland_altman(estimate, truth)  # the engine's limits, as in metrics.json
    mean, lower, upper = limits.mean_difference, limits.lower_limit, limits.upper_limit
    span = [float(((estimate + truth) / 2.0).min()), float(((estimate + truth) / 2.0).max())]
    lines = _node(scene, "vtkMRMLTableNode", f"{name} limits table")
    fill_table(
        lines, {"mean": span, "mean difference": [mean] * 2, "lower limit": [lower] * 2, "upper limit": [upper] * 2}
    )
    dark_red = (0.55, 0.0, 0.0)
    series = [_series(scene, f"{name} cases", points, "mean", "difference", points=True)]
    series += [
        _series(scene, f"{name} {column}", lines, "mean", column, points=False, colour=dark_red)
        for column in ("mean difference", "lower limit", "upper limit")
    ]
    for line in series[2:]:
        line.SetLineStyle(line.LineStyleDash)
    return _chart(
        scene,
        name,
        f"Bland-Altman, {target} (n = {len(truth)})",
        f"mean of estimate and ground truth ({unit})",
        f"estimate - ground truth ({unit})",
        series,
    )


# --- pictures --------------------------------------------------------------------------------------------------


def picture_node(path: str | Path, scene, name: str):
    """A PNG picture as an RGB vector volume node laid out like a 2D image file in Slicer (row 0 at the top of the
    slice view, 1 mm pixels: a picture has no physical size); updated in place when the name exists."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    node = _node(scene, "vtkMRMLVectorVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, pixels[np.newaxis])
    node.SetIJKToRASMatrix(vtk_matrix(LPS_TO_RAS))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node
