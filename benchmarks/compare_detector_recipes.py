"""Hip-detector recipes side by side on the same whole-CT folds: head centres within 5 mm per view kind, hips found,
false hips, no-hip images with a hip, each held-out CT's AP pelvis hips, and the per-CT offset; with a picture of the
cumulative head-centre error, AP pelvis views and all views.

Why: one training of a detector on 9-12 CTs is a noisy measurement, so recipes are compared on the same folds and
held-out views (``train-detector --cross-validate --measured-views``), each as an ensemble of three seeds, and a
recipe trained fold by fold in several folders is read together.

Usage (NAME=FOLDER pairs; a folder is a ``train-detector --cross-validate`` output or its ``cross_validation``;
several folders of one recipe joined with ``+``):

    python benchmarks/compare_detector_recipes.py bundled=detector_moved anatomies=anat_f0+anat_f1 --folds 0,1 \\
        --picture docs/images/hip_detector_anatomies_ap_views.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

VIEW_KINDS = ("ap-pelvis", "hip", "thigh", "ct-as-scanned")
TOLERANCE_MM = 5.0


def read_rows(folders: str, folds: set[int]) -> list[dict]:
    """The detection rows of the given folds from ``+``-joined cross-validation folders."""
    rows = []
    for folder in folders.split("+"):
        path = Path(folder)
        path = path / "cross_validation" if (path / "cross_validation").is_dir() else path
        rows += [row for row in json.loads((path / "detections.json").read_text()) if row["fold"] in folds]
    return rows


def report(name: str, rows: list[dict], threshold: float) -> None:
    from bmdgan.detection.training import offsets_by_ct, summarise

    summary, offsets = summarise(rows, TOLERANCE_MM, threshold), offsets_by_ct(rows, TOLERANCE_MM, threshold)
    per_view = ", ".join(
        f"{kind} {summary[kind]['within_tolerance']}/{summary[kind]['hips']}" for kind in VIEW_KINDS if kind in summary
    )
    ap_hips = [row for row in rows if row["kind"] == "hip" and row["view"] == "ap-pelvis"]
    ap_by_ct = {
        ct: summarise([row for row in ap_hips if row["ct"] == ct], TOLERANCE_MM, threshold)["all"]
        for ct in sorted({row["ct"] for row in ap_hips})
    }
    print(
        f"{name}: within {TOLERANCE_MM:g} mm {summary['all']['within_tolerance']}/{summary['all']['hips']} "
        f"({per_view}); "
        f"found {summary['all']['found']}; false hips {summary['false_hips']}; no-hip images with a hip "
        f"{summary['no_hip_images_with_a_detection']}; AP pelvis by CT "
        + ", ".join(f"{ct} {ap['within_tolerance']}/{ap['hips']}" for ct, ap in ap_by_ct.items())
        + f"; per-CT offset {offsets['median_offset_length_mm']:.1f} mm, spread {offsets['median_spread_mm']:.1f} mm"
    )


def draw(recipes: dict[str, list[dict]], threshold: float, path: Path, folds: str) -> None:
    """Cumulative share of hips found within each head-centre error (mm), AP pelvis views and all views."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bmdgan.detection.training import sorted_head_errors

    figure, axes = plt.subplots(1, 2, figsize=(10.0, 4.0), sharey=True)
    for axis, (title, kinds) in zip(axes, (("AP pelvis views", ("ap-pelvis",)), ("all views", VIEW_KINDS))):
        for (name, rows), style in zip(recipes.items(), ("--", "-", ":", "-.")):
            hips = [row for row in rows if row["kind"] == "hip" and row["view"] in kinds]
            errors = sorted_head_errors(hips, threshold)
            share = 100.0 * np.arange(1, len(errors) + 1) / max(len(errors), 1)
            within = 100.0 * np.mean(errors <= TOLERANCE_MM)
            axis.step(errors, share, where="post", linestyle=style, label=f"{name}: {within:.1f} % within 5 mm")
        axis.axvline(TOLERANCE_MM, color="grey", linestyle=":", linewidth=0.8)
        axis.set_xlim(0, 3 * TOLERANCE_MM)
        axis.set_ylim(0, 100)
        axis.set_title(f"{title} ({len(hips)} hips), folds {folds}", fontsize=9)
        axis.set_xlabel("femoral head centre error (mm at the patient)")
        axis.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("hips found within it (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="NAME=FOLDER[+FOLDER...]")
    parser.add_argument("--folds", default="0,1,2,3", help="the folds to read, comma-separated")
    parser.add_argument("--threshold", type=float, default=0.25, help="the found confidence (0-1)")
    parser.add_argument("--picture", type=Path, help="write the cumulative-error picture here (PNG)")
    args = parser.parse_args()
    folds = {int(fold) for fold in args.folds.split(",")}
    recipes = {}
    for recipe in args.recipes:
        name, _, folders = recipe.partition("=")
        if not folders:
            parser.error(f"{recipe!r} is not NAME=FOLDER")
        recipes[name] = read_rows(folders, folds)
        if not recipes[name]:
            parser.error(f"{folders} holds no detections of folds {args.folds}")
        report(name, recipes[name], args.threshold)
    if args.picture:
        draw(recipes, args.threshold, args.picture, args.folds)
        print(f"picture: {args.picture}")


if __name__ == "__main__":
    main()
