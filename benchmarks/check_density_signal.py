"""How much does a cohort's radiograph say about its aBMD across bones? A ceiling check for whole-CT folds.

For every image of a cohort (``simulate-cohort`` folder with whole-CT folds), grey-level features are measured in
the true proximal-femur region (from the case's own PF-DRR, so no segmentation error) after the image's own
1/99 percentile scaling: the region's mean, the mean of a ring 3-8 pixels around it, their contrast, the region's
spread and 10-90 % range, its area and the image mean. A linear fit of CT-aBMD (g/cm2) on them, trained on the
other folds' CTs, predicts each held-out CT's images. Where such a fit with perfect masks cannot follow aBMD across
bones, a network has to find what the grey levels alone do not show; within one CT the same features do follow it
(printed per CT), which tells how much of the difficulty is the change of bone rather than the imaging.

Usage: python benchmarks/check_density_signal.py COHORT [COHORT ...]
"""

from __future__ import annotations

import argparse

import numpy as np

FEATURES = ("PF mean", "ring mean", "PF - ring contrast", "PF spread", "PF 10-90 % range", "PF area", "image mean")


def image_features(radiograph: np.ndarray, pf_drr_g_cm2: np.ndarray) -> list[float]:
    """The :data:`FEATURES` of one image (grey levels scaled by the image's own 1/99 percentiles)."""
    from scipy import ndimage

    region = pf_drr_g_cm2 > 0.05
    ring = ndimage.binary_dilation(region, iterations=8) & ~ndimage.binary_dilation(region, iterations=3)
    low, high = np.percentile(radiograph, [1, 99])
    scaled = (radiograph - low) / max(float(high - low), 1e-6)
    inside, around = scaled[region], scaled[ring]
    return [
        float(inside.mean()),
        float(around.mean()),
        float(inside.mean() - around.mean()),
        float(inside.std()),
        float(np.percentile(inside, 90) - np.percentile(inside, 10)),
        float(region.mean()),
        float(scaled.mean()),
    ]


def held_out_predictions(features: np.ndarray, truth: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each fold's images predicted by a least-squares line fitted on the other folds."""
    predictions = np.empty_like(truth)
    for fold in np.unique(folds):
        train = folds != fold
        design = np.c_[features[train], np.ones(train.sum())]
        weights = np.linalg.lstsq(design, truth[train], rcond=None)[0]
        predictions[~train] = np.c_[features[~train], np.ones((~train).sum())] @ weights
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohorts", nargs="+")
    args = parser.parse_args()

    from bmdgan.datasets.folds import source_ct_of
    from bmdgan.datasets.format import read_manifest

    for cohort in args.cohorts:
        records = read_manifest(cohort)
        features = np.array(
            [
                image_features(np.load(f"{cohort}/{r.images['radiograph']}"), np.load(f"{cohort}/{r.images['drr_pf']}"))
                for r in records
            ]
        )
        truth = np.array([r.ct_abmd_g_cm2 for r in records])
        folds = np.array([r.fold for r in records])
        sources = np.array([source_ct_of(r) for r in records])
        print(f"{cohort}: {len(records)} images, {len(set(sources))} CTs, aBMD SD {truth.std():.3f} g/cm2")
        print("| features | held-out-CT PCC | MAE (g/cm2) |\n| --- | --- | --- |")
        for name, columns in (("PF - ring contrast", [2]), ("all seven", list(range(len(FEATURES))))):
            predicted = held_out_predictions(features[:, columns], truth, folds)
            pcc = np.corrcoef(predicted, truth)[0, 1]
            print(f"| {name} | {pcc:.2f} | {np.abs(predicted - truth).mean():.3f} |")
        within = {
            ct: np.corrcoef(features[sources == ct, 2], truth[sources == ct])[0, 1] for ct in sorted(set(sources))
        }
        print("PF - ring contrast vs aBMD within each CT: " + ", ".join(f"{ct} {r:.2f}" for ct, r in within.items()))


if __name__ == "__main__":
    main()
