"""Pictures of an evaluation: Bland-Altman and correlation plots (paper Figs. 6 and 9), robustness (Fig. 8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import bland_altman, pearson

UNITS = {"g_cm2": "g/cm2", "mg_cm3": "mg/cm3"}


def _label(target: str) -> str:
    for suffix, unit in UNITS.items():
        if target.endswith(suffix):
            return f"{target[: -len(suffix) - 1]} ({unit})"
    return target


def _figure(columns: int = 1, size: tuple[float, float] = (5, 4.5)):
    """(pyplot, figure, axes): one axis, or a row of ``columns`` of them, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(1, columns, figsize=size)


def plot_bland_altman(path: Path, estimate: np.ndarray, truth: np.ndarray, target: str) -> None:
    plt, figure, axis = _figure()
    limits = bland_altman(estimate, truth)
    axis.scatter((estimate + truth) / 2, estimate - truth, s=12, alpha=0.7)
    for value, style, text in (
        (limits.mean_difference, "-", "mean"),
        (limits.upper_limit, "--", "+1.96 SD"),
        (limits.lower_limit, "--", "-1.96 SD"),
    ):
        axis.axhline(value, color="darkred", linestyle=style, linewidth=1)
        axis.annotate(
            f"{text} {value:+.3g}",
            (1.0, value),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=8,
            color="darkred",
        )
    axis.set_xlabel(f"mean of estimate and ground truth, {_label(target)}")
    axis.set_ylabel("estimate - ground truth")
    axis.set_title(f"Bland-Altman, {target} (n = {len(estimate)})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_correlation(path: Path, estimate: np.ndarray, truth: np.ndarray, target: str) -> None:
    plt, figure, axis = _figure()
    axis.scatter(truth, estimate, s=12, alpha=0.7)
    low, high = float(min(truth.min(), estimate.min())), float(max(truth.max(), estimate.max()))
    axis.plot([low, high], [low, high], color="gray", linewidth=1, label="identity")
    axis.set_xlabel(f"ground truth, {_label(target)}")
    axis.set_ylabel(f"estimate, {_label(target)}")
    axis.set_title(f"{target}: PCC {pearson(estimate, truth):.3f} (n = {len(estimate)})", fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_robustness(path: Path, robustness: dict) -> None:
    """PCC against JPEG quality and against bit depth, one line per target."""
    plt, figure, axes = _figure(len(robustness), (5 * len(robustness), 4))
    for axis, (kind, levels) in zip(np.atleast_1d(axes), sorted(robustness.items())):
        x = [int(level) for level in levels]
        for target in sorted(next(iter(levels.values()))):
            axis.plot(
                x,
                [levels[str(level)][target] if levels[str(level)][target] is not None else np.nan for level in x],
                marker="o",
                label=target,
            )
        axis.set_xlabel(kind.replace("_", " "))
        axis.set_ylabel("PCC with the ground truth")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_learning_curve(path: Path, points: list[dict], target: str) -> None:
    """Pooled held-out PCC and MAE of ``target`` against the real bones trained on, one line per method and bone
    set (filled circles, solid: real bones only; open squares, dashed: with their virtual anatomies)."""
    plt, figure, (pcc_axis, mae_axis) = _figure(2, (10, 4.8))
    bone_sets = list(dict.fromkeys(point.get("bone_set", "real") for point in points))
    for method_index, method in enumerate(points[-1]["methods"]):
        for bone_set in bone_sets:
            curve = [point for point in points if point.get("bone_set", "real") == bone_set]
            bones = [point["training_bones"] for point in curve]
            metrics = [point["methods"].get(method, {}).get(target, {}) for point in curve]
            label = (
                method if len(bone_sets) == 1 else f"{method}, {'real bones' if bone_set == 'real' else 'with virtual'}"
            )
            real = bone_set == "real"
            style = {
                "color": f"C{method_index}",
                "linestyle": "-" if real else "--",
                "marker": "o" if real else "s",
                "markersize": 7,
                "markerfacecolor": f"C{method_index}" if real else "none",
            }
            for axis, key in ((pcc_axis, "pcc"), (mae_axis, "mae")):
                axis.plot(bones, [m.get(key, np.nan) for m in metrics], label=label, **style)
    pcc_axis.set_ylabel("pooled PCC on held-out CTs")
    mae_axis.set_ylabel(f"pooled MAE, {_label(target)}")
    for axis in (pcc_axis, mae_axis):
        axis.set_xlabel("real bones in training (mean over folds)")
    handles, labels = pcc_axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8)
    images = points[-1]["images"]
    figure.suptitle(f"{target}: whole CTs held out ({images} images), every point trained as many steps", fontsize=10)
    figure.tight_layout(rect=(0, 0.05 * (1 + (len(labels) - 1) // 3), 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
