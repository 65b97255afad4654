"""The report picture of an estimate: the radiograph with each detected hip (femoral head centre, neck axis, the
model's input region) and its PF region outlined, each PF-DRR as a colour density map with its scale bar
(g/cm2), and the numbers with their warnings; a radiograph with no hip found says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import Radiograph


def _outline_in_source(hip_decomposition, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Source-image (row, column) coordinates of the PF region's boundary pixels."""
    from scipy import ndimage

    region = hip_decomposition.pf_drr_g_cm2 >= threshold
    boundary = region & ~ndimage.binary_erosion(region)
    rows, columns = np.nonzero(boundary)
    return hip_decomposition.roi.output_to_source(rows, columns)


DISPLAY_PIXELS = 1600
"""Longest side of the radiograph as drawn (pixels): the picture is about 700 pixels wide at 110 dpi, and
matplotlib would spend several float64 RGBA copies of a 50-megapixel radiograph (2.4 GB) drawing it whole."""


def display_copy(pixels: np.ndarray) -> np.ndarray:
    """Every n-th row and column of ``pixels`` so that the longest side is at most :data:`DISPLAY_PIXELS`."""
    step = max(1, int(np.ceil(max(pixels.shape) / DISPLAY_PIXELS)))
    return pixels[::step, ::step]


def _caption(hip) -> str:
    lines = [f"{hip.side} hip ({hip.method}; detector confidence {hip.detector_confidence:.2f})"]
    coverage = f"{100 * hip.interval_coverage:.0f} %" if hip.interval_coverage else ""
    if hip.dxa_bmd_g_cm2 is not None:
        interval = hip.dxa_bmd_interval_g_cm2
        lines.append(
            f"aBMD {hip.dxa_bmd_g_cm2:.3f} g/cm2 (DXA-like)"
            + (f", {coverage} interval {interval[0]:.2f}-{interval[1]:.2f}" if interval else "")
        )
        if hip.t_score is None:
            lines.append("no T-score, no category")
        elif hip.who_category_probability is None:
            lines.append(f"T-score {hip.t_score:+.1f}: {hip.who_category}")
        else:
            lines.append(
                f"T-score {hip.t_score:+.1f}: {hip.who_category} (probability {hip.who_category_probability:.2f}); "
                f"P(T <= -2.5) {hip.probability_t_score_at_or_below_minus_2_5:.2f}"
            )
    if hip.qct_bmd_mg_cm3 is not None:
        interval = hip.qct_bmd_interval_mg_cm3
        lines.append(
            f"vBMD {hip.qct_bmd_mg_cm3:.0f} mg/cm3 (QCT-like)"
            + (f", {coverage} interval {interval[0]:.0f}-{interval[1]:.0f}" if interval else "")
        )
    lines += [f"WARNING: {w}" for w in hip.warnings]
    return "\n".join(lines)


def draw_report(
    path: str | Path, radiograph: Radiograph, results, region_threshold_g_cm2: float, no_hip_reason: str | None = None
) -> Path:
    """Write the report PNG for ``results`` = [(HipEstimate, Decomposition)]; the PF region is outlined where
    the PF-DRR reaches the model's threshold (the one its BMD averages over); ``no_hip_reason`` is written under
    a radiograph without results."""
    import matplotlib

    matplotlib.use("Agg")
    import textwrap

    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        1,
        1 + len(results),
        figsize=(4.5 * (1 + len(results)), 8.0),
        gridspec_kw={"width_ratios": [1.6] + [1] * len(results)},
    )
    axes = np.atleast_1d(axes)
    shown_pixels = display_copy(radiograph.pixels)
    low, high = np.percentile(shown_pixels, [0.5, 99.5])
    rows, columns = radiograph.pixels.shape
    axes[0].imshow(
        shown_pixels, cmap="gray", vmin=low, vmax=high, extent=(-0.5, columns - 0.5, rows - 0.5, -0.5)
    )  # axes in source pixels, as the outlines
    axes[0].set_title(Path(radiograph.source).name or "radiograph", fontsize=9)
    for (hip, decomposition), axis, colour in zip(results, axes[1:], ("tab:orange", "tab:cyan")):
        rows, columns = _outline_in_source(decomposition, region_threshold_g_cm2)
        axes[0].scatter(columns, rows, s=0.3, c=colour, label=f"{hip.side} PF region")
        corners = np.array(hip.roi_corners_px + hip.roi_corners_px[:1])
        axes[0].plot(corners[:, 0], corners[:, 1], color=colour, linewidth=0.8, linestyle="--")
        head, neck = np.array(hip.femoral_head_centre_px), np.array(hip.neck_point_px)
        axes[0].plot([head[0], neck[0]], [head[1], neck[1]], color=colour, linewidth=1.2)
        axes[0].plot(*head, marker="+", markersize=10, color=colour, label=f"{hip.side} head centre, axis, region")
        shown = axis.imshow(decomposition.pf_drr_g_cm2, cmap="inferno", vmin=0)
        figure.colorbar(shown, ax=axis, fraction=0.08, label="areal BMD along the ray (g/cm2)")
        axis.set_title(f"PF-DRR, {hip.side} hip" + (" (mirrored)" if decomposition.roi.mirrored else ""), fontsize=9)
        axis.set_xlabel(
            "\n".join(textwrap.fill(line, 48) for line in _caption(hip).splitlines()),
            fontsize=8,
            color="darkred" if hip.warnings else "black",
        )
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    if results:
        axes[0].legend(loc="lower right", fontsize=7, markerscale=2)
    else:
        axes[0].set_xlabel("\n".join(textwrap.wrap(no_hip_reason or "", 60)), fontsize=8, color="darkred")
    figure.suptitle("BMD-GAN estimate: research software, not for clinical use", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
