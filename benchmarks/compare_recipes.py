"""Which training recipe generalises to bones it never saw? Whole-CT cross-validations of several recipes, pooled over
the same folds and set side by side (issue 22 item 4: augmentation, pretraining, model size, ...).

Each FOLDER is a ``bmdgan cross-validate`` (or ``learning-curve``) output with a ``fold<N>`` run per held-out fold;
every recipe is pooled over the folds given, which all of them must have finished, so the held-out images are the
same. For each recipe and method it prints the pooled aBMD agreement (PCC, ICC, MAE, g/cm2), the spread diagnosis
(median PCC within one held-out CT, pooled PCC once each CT's bias is removed, SD of the estimates over the truth's)
and each held-out CT's bias. A training of one recipe moves the per-CT figures by up to 0.4 between seeds
(docs/results.md), so give a second seed of the reference as one of the recipes to see that noise beside the gaps.
``--picture`` draws the pooled PCCs and each CT's bias.

Usage: python benchmarks/compare_recipes.py --folds 0,1,2,3 shipped=OUT/curve/all seed1=OUT/seed1 ...
       [--target ct_abmd_g_cm2] [--picture recipes.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

METHODS = ("decomposition", "decomposition+regression", "baseline")


def recipe_summary(folder: Path, folds: list[int], target: str) -> dict:
    """Pooled agreement, spread diagnosis and per-CT bias of one recipe's fold runs (``target`` only)."""
    from bmdgan.evaluation.cross_validation import held_out_rows, per_source_bias, pooled_metrics, spread_diagnosis

    pairs = held_out_rows(folder, folds)
    rows = [row for _, row in pairs]
    source_of = {row["case_id"]: ct for ct, row in pairs}
    metrics, bias, diagnosis = pooled_metrics(rows), per_source_bias(rows, source_of), spread_diagnosis(rows, source_of)
    return {
        method: {
            "images": len(rows),
            **metrics[method][target],
            **{k: v for k, v in diagnosis[method][target].items() if k != "per_ct_pcc"},
            "bias": {ct: b["bias"] for ct, b in bias[method][target].items()},
        }
        for method in METHODS
        if method in metrics and target in metrics[method]
    }


def print_table(summaries: dict[str, dict]) -> None:
    print(
        f"{'recipe':<14}{'method':<26}{'PCC':>6}{'ICC':>7}{'MAE':>8}{'within-CT PCC':>15}{'PCC w/o bias':>14}"
        f"{'SD ratio':>10}"
    )
    for name, summary in summaries.items():
        for method, m in summary.items():
            print(
                f"{name:<14}{method:<26}{m['pcc']:>6.2f}{m['icc']:>7.2f}{m['mae']:>8.3f}"
                f"{m['within_ct_pcc_median']:>15.2f}{m['pcc_without_ct_bias']:>14.2f}"
                f"{m['estimate_sd_over_truth_sd']:>10.2f}"
            )
    print("bias per held-out CT (mean estimate - truth), decomposition:")
    cts = sorted({ct for summary in summaries.values() for ct in summary["decomposition"]["bias"]})
    print(f"{'recipe':<14}" + "".join(f"{ct[:14]:>15}" for ct in cts))
    for name, summary in summaries.items():
        print(
            f"{name:<14}" + "".join(f"{summary['decomposition']['bias'].get(ct, float('nan')):>+15.3f}" for ct in cts)
        )


def draw(summaries: dict[str, dict], path: Path, target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(summaries)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 1.3]})
    width = 0.8 / len(METHODS)
    for index, method in enumerate(METHODS):
        values = [summaries[name].get(method, {}).get("pcc", np.nan) for name in names]
        left.bar(np.arange(len(names)) + (index - 1) * width, values, width, label=method)
    left.set_xticks(np.arange(len(names)), names, rotation=20)
    left.set_ylabel(f"pooled PCC, {target}")
    left.axhline(0.85, color="grey", linestyle=":", label="goal 0.85")
    left.legend(fontsize=8)
    cts = sorted({ct for summary in summaries.values() for ct in summary["decomposition"]["bias"]})
    for index, name in enumerate(names):
        bias = summaries[name]["decomposition"]["bias"]
        right.plot(
            [bias.get(ct, np.nan) for ct in cts], np.arange(len(cts)) + (index - len(names) / 2) * 0.1, "o", label=name
        )
    right.axvline(0, color="grey", linewidth=0.8)
    right.set_yticks(np.arange(len(cts)), cts)
    right.set_xlabel(f"decomposition bias per held-out CT (estimate - truth, {target})")
    right.legend(fontsize=8)
    fig.suptitle(
        f"Training recipes on whole-CT folds ({summaries[names[0]]['decomposition']['images']} held-out images)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"picture: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", help="NAME=FOLDER of a cross-validation with fold<N> runs")
    parser.add_argument("--folds", required=True, help="held-out folds to pool, comma-separated (e.g. 0,1,2,3)")
    parser.add_argument("--target", default="ct_abmd_g_cm2", help="BMD column (default ct_abmd_g_cm2)")
    parser.add_argument("--picture", type=Path, default=None, help="PNG of the pooled PCCs and per-CT biases")
    args = parser.parse_args()
    folds = [int(fold) for fold in args.folds.split(",")]
    summaries = {}
    for recipe in args.recipes:
        name, _, folder = recipe.partition("=")
        summaries[name] = recipe_summary(Path(folder), folds, args.target)
    print_table(summaries)
    if args.picture is not None:
        draw(summaries, args.picture, args.target)


if __name__ == "__main__":
    main()
