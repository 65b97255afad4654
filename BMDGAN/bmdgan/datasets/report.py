"""Pictures of a dataset for review: a montage of sample cases (radiograph | stage-1 DRR | PF-DRR) and the
distributions of the ground-truth BMD columns."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from .format import BMD_COLUMNS, load_image, read_manifest

UNITS = {"dxa_bmd_g_cm2": "g/cm2", "ct_abmd_g_cm2": "g/cm2", "qct_vbmd_mg_cm3": "mg/cm3"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_montage(folder: str | Path, path: str | Path, samples: int = 8, seed: int = 0) -> Path:
    """``samples`` random cases, one row each: radiograph (grey), stage-1 DRR and PF-DRR (g/cm2, shared scale)."""
    records = read_manifest(folder)
    if not records:
        raise InputError(folder, "the dataset has no case", "build it first")
    chosen = [
        records[i]
        for i in sorted(np.random.default_rng(seed).choice(len(records), min(samples, len(records)), replace=False))
    ]
    channels = [c for c in ("radiograph", "drr_stage1", "drr_pf") if any(c in r.images for r in chosen)]
    plt = _pyplot()
    figure, axes = plt.subplots(
        len(chosen), len(channels), figsize=(2.2 * len(channels), 3.6 * len(chosen)), squeeze=False
    )
    peak = (
        max(
            float(load_image(folder, r, c).max())
            for r in chosen
            for c in channels
            if c != "radiograph" and c in r.images
        )
        if len(channels) > 1
        else 1.0
    )
    for row, record in enumerate(chosen):
        for column, channel in enumerate(channels):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if channel not in record.images:
                continue
            image = load_image(folder, record, channel)
            if channel == "radiograph":
                low, high = np.percentile(image, [0.5, 99.5])
                axis.imshow(image, cmap="gray", vmin=low, vmax=high)
                axis.set_ylabel(
                    f"{record.case_id}\n{record.pose}, {record.side}"
                    + (f"\naBMD {record.ct_abmd_g_cm2:.2f}" if math.isfinite(record.ct_abmd_g_cm2) else ""),
                    fontsize=7,
                )
            else:
                shown = axis.imshow(image, cmap="inferno", vmin=0, vmax=peak)
            if row == 0:
                axis.set_title(
                    {"radiograph": "radiograph", "drr_stage1": "pelvis+femur DRR", "drr_pf": "PF-DRR"}[channel],
                    fontsize=8,
                )
    if len(channels) > 1:
        figure.colorbar(shown, ax=axes[:, 1:], fraction=0.04, label="g/cm2")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def write_histograms(folder: str | Path, path: str | Path) -> Path:
    """One histogram per known ground-truth column, with n, mean, SD and range in the title."""
    records = read_manifest(folder)
    columns = [c for c in BMD_COLUMNS if any(math.isfinite(getattr(r, c)) for r in records)]
    if not columns:
        raise InputError(folder, "no ground-truth BMD in the manifest", "build the dataset with ground truth")
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    for axis, column in zip(axes[0], columns):
        values = np.array([getattr(r, column) for r in records if math.isfinite(getattr(r, column))])
        axis.hist(values, bins=30, color="tab:blue", alpha=0.8)
        axis.set_xlabel(f"{column} ({UNITS[column]})")
        axis.set_ylabel("images")
        axis.set_title(
            f"n={values.size}, {values.mean():.3g} +/- {values.std():.2g}\n"
            f"range {values.min():.3g} to {values.max():.3g}",
            fontsize=8,
        )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
